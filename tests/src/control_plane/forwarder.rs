//! A TCP forwarder standing in for a Service with several endpoints. An ExternalName Service can
//! name one `127.0.0.1:port` only, so the APIService points here and each connection goes to
//! the next replica in turn; a replica that refuses the connection is skipped (as kube-proxy
//! stops routing to an endpoint that is gone).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

struct Backend {
    addr: SocketAddr,
    connections: AtomicU64,
    /// Bytes the backend sent back (answers), so a test can tell who served.
    answered: Arc<AtomicU64>,
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
                    answered: Arc::new(AtomicU64::new(0)),
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

    /// Bytes each backend has answered so far.
    pub fn answered_bytes(&self) -> Vec<u64> {
        self.backends
            .iter()
            .map(|b| b.answered.load(Ordering::Relaxed))
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

async fn forward(client: TcpStream, backends: &Arc<Vec<Backend>>, first: usize) {
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
        let mut client = client;
        backend.connections.fetch_add(1, Ordering::Relaxed);
        let answered = backend.answered.clone();
        let task = tokio::spawn(async move {
            let (mut client_read, mut client_write) = client.split();
            let (mut upstream_read, mut upstream_write) = upstream.split();
            let requests = async {
                let _ = tokio::io::copy(&mut client_read, &mut upstream_write).await;
                let _ = upstream_write.shutdown().await;
            };
            let answers = async {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match upstream_read.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            answered.fetch_add(n as u64, Ordering::Relaxed);
                            if client_write.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = client_write.shutdown().await;
            };
            // each direction ends with its side's EOF, passed on as a shutdown
            tokio::join!(requests, answers);
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
