//! A TCP proxy that can be cut: every open connection closed and new ones closed on arrival
//! until it is restored. Put between two components (agent ↔ aggregator, aggregator ↔
//! kube-apiserver) it scripts a network partition without touching either, and records when
//! connections were attempted, so a test can see a client's reconnect backoff.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

struct State {
    target: SocketAddr,
    up: AtomicBool,
    open: Mutex<Vec<AbortHandle>>,
    attempts: Mutex<Vec<(Instant, bool)>>,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            target,
            up: AtomicBool::new(true),
            open: Mutex::new(Vec::new()),
            attempts: Mutex::new(Vec::new()),
        });
        let accept = tokio::spawn(accept_loop(listener, state.clone()));
        Ok(Self {
            addr,
            state,
            accept,
        })
    }

    /// Closes every open connection; connections arriving until [`FaultProxy::restore`] are
    /// closed at once.
    pub fn cut(&self) {
        self.state.up.store(false, Ordering::SeqCst);
        for conn in lock(&self.state.open).drain(..) {
            conn.abort();
        }
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.state.up.store(true, Ordering::SeqCst);
    }

    /// When connections arrived, and whether they were forwarded.
    pub fn attempts(&self) -> Vec<(Instant, bool)> {
        lock(&self.state.attempts).clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for conn in lock(&self.state.open).drain(..) {
            conn.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        let up = state.up.load(Ordering::SeqCst);
        lock(&state.attempts).push((Instant::now(), up));
        if !up {
            drop(inbound);
            continue;
        }
        let target = state.target;
        let task = tokio::spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(target).await {
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
        let mut open = lock(&state.open);
        open.retain(|h| !h.is_finished());
        open.push(task.abort_handle());
    }
}
