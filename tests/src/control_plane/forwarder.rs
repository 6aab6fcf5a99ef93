//! A TCP forwarder standing in for a Service with several endpoints. An ExternalName Service can
//! name one `127.0.0.1:port` only, so the APIService points here and each connection goes to
//! the next replica in turn; a replica that refuses the connection is skipped (as kube-proxy
//! stops routing to an endpoint that is gone).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

struct Backend {
    addr: SocketAddr,
    connections: AtomicU64,
    open: Mutex<Vec<AbortHandle>>,
}

/// A running forwarder; stops when dropped.
pub struct Forwarder {
    /// Where it listens.
    pub addr: SocketAddr,
    backends: Arc<Vec<Backend>>,
    accept: JoinHandle<()>,
}

impl Forwarder {
    /// Listens on a free loopback port and forwards to `backends`.
    pub async fn start(backends: &[SocketAddr]) -> anyhow::Result<Self> {
        anyhow::ensure!(!backends.is_empty(), "a forwarder needs a backend");
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let backends: Arc<Vec<Backend>> = Arc::new(
            backends
                .iter()
                .map(|a| Backend {
                    addr: *a,
                    connections: AtomicU64::new(0),
                    open: Mutex::new(Vec::new()),
                })
                .collect(),
        );
        let next = Arc::new(AtomicUsize::new(0));
        let accept = tokio::spawn({
            let backends = backends.clone();
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    let first = next.fetch_add(1, Ordering::Relaxed);
                    let backends = backends.clone();
                    tokio::spawn(async move {
                        forward(client, &backends, first).await;
                    });
                }
            }
        });
        Ok(Self {
            addr,
            backends,
            accept,
        })
    }

    /// Connections forwarded to each backend so far.
    pub fn connections(&self) -> Vec<u64> {
        self.backends
            .iter()
            .map(|b| b.connections.load(Ordering::Relaxed))
            .collect()
    }

    /// Cuts every open connection to backend `i` (as when its pod dies: its sockets go too).
    pub fn sever(&self, i: usize) {
        for handle in self.backends[i]
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            handle.abort();
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.accept.abort();
        for i in 0..self.backends.len() {
            self.sever(i);
        }
    }
}

async fn forward(mut client: TcpStream, backends: &Arc<Vec<Backend>>, first: usize) {
    let n = backends.len();
    for k in 0..n {
        let i = (first + k) % n;
        let backend = &backends[i];
        let connect =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(backend.addr));
        let Ok(Ok(mut upstream)) = connect.await else {
            continue;
        };
        let _ = upstream.set_nodelay(true);
        let _ = client.set_nodelay(true);
        backend.connections.fetch_add(1, Ordering::Relaxed);
        let task = tokio::spawn(async move {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        });
        {
            let mut open = backend.open.lock().unwrap_or_else(|p| p.into_inner());
            open.retain(|h| !h.is_finished());
            open.push(task.abort_handle());
        }
        let _ = task.await;
        return;
    }
    // no backend answered: the client sees the connection close, as with no ready endpoint
}
