//! A hand-driven agent stream, for tests that break the protocol's rules on purpose (too
//! large, too many, too fast, someone else's node) and for aggregators started with flags the
//! [`crate::harness`] does not set. Messages are built with the real `StreamEncoder`, so
//! what is legal looks exactly like a real agent's traffic.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kubepulse_model::{ContainerName, NodeView, PodKey, PodView, Sample, Timestamp, Usage, Window};
use kubepulse_proto::v1::ingest_client::IngestClient;
use kubepulse_proto::v1::{self, agent_message, aggregator_message};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tonic::Streaming;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// An aggregator replica run in this process with the given flags (`--standalone` unless
/// the flags say otherwise).
pub struct Aggregator {
    /// gRPC ingest.
    pub grpc: SocketAddr,
    /// HTTPS Metrics API.
    pub https: SocketAddr,
    /// Its serving certificate directory (`kubepulse.crt` is the CA to trust).
    pub cert_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Aggregator {
    /// Starts one on free loopback ports. `flags` come after the defaults (`--standalone`,
    /// `--grpc-plaintext`, `--cert-dir`), so they can add to them; pass `--kubeconfig=…` and
    /// leave out `--standalone` through [`Aggregator::start_with`] for Kubernetes mode.
    pub async fn start(dir: &Path, flags: &[&str]) -> anyhow::Result<Self> {
        let mut args = vec!["--grpc-plaintext".to_owned()];
        // an aggregator built before its Kubernetes mode is standalone already
        if crate::control_plane::stack::aggregator_has_kubernetes_mode() {
            args.push("--standalone".to_owned());
        }
        args.extend(flags.iter().map(|f| (*f).to_owned()));
        Self::start_with(dir, args).await
    }

    /// [`Aggregator::start`] with its gRPC port at `grpc` (a restart on the same address).
    pub async fn start_on(dir: &Path, grpc: SocketAddr, flags: &[&str]) -> anyhow::Result<Self> {
        let mut args = vec!["--grpc-plaintext".to_owned()];
        if crate::control_plane::stack::aggregator_has_kubernetes_mode() {
            args.push("--standalone".to_owned());
        }
        args.extend(flags.iter().map(|f| (*f).to_owned()));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // the old listener's port may take a moment to be free
            match tokio::net::TcpListener::bind(grpc).await {
                Ok(listener) => return Self::start_listening(dir, args, listener).await,
                Err(err) if Instant::now() < deadline => {
                    let _ = err;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// Starts one with exactly `args` (plus `--cert-dir` and the listen addresses).
    pub async fn start_with(dir: &Path, args: Vec<String>) -> anyhow::Result<Self> {
        let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        Self::start_listening(dir, args, grpc_listener).await
    }

    async fn start_listening(
        dir: &Path,
        args: Vec<String>,
        grpc_listener: tokio::net::TcpListener,
    ) -> anyhow::Result<Self> {
        use clap::Parser as _;
        let https_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let (https, grpc) = (https_listener.local_addr()?, grpc_listener.local_addr()?);
        // a fresh directory per start: a restarted replica makes a new certificate
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cert_dir = dir.join(format!("aggregator-{}-{n}", grpc.port()));
        let mut argv = vec![
            "kubepulse-aggregator".to_owned(),
            format!("--cert-dir={}", cert_dir.display()),
        ];
        argv.extend(args);
        let config = kubepulse_aggregator::Config::try_parse_from(argv)?;
        config
            .validate()
            .map_err(|p| anyhow::anyhow!("aggregator config: {}", p.join("; ")))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let listeners = kubepulse_aggregator::Listeners {
            https: https_listener,
            grpc: grpc_listener,
        };
        let task = tokio::spawn(kubepulse_aggregator::run(config, listeners, async {
            let _ = stopped.await;
        }));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cert_dir.join("kubepulse.crt").exists() {
            anyhow::ensure!(
                !task.is_finished(),
                "the aggregator stopped during start-up"
            );
            anyhow::ensure!(Instant::now() < deadline, "the aggregator did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self {
            grpc,
            https,
            cert_dir,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// GET `path` from its Metrics API.
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, bytes::Bytes)> {
        crate::harness::https_get(self.https, &self.cert_dir.join("kubepulse.crt"), path, None)
            .await
    }

    /// Stops it and waits (at most 10 s).
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

impl Drop for Aggregator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// One open agent stream.
pub struct RawStream {
    /// Messages to the aggregator.
    pub tx: mpsc::Sender<v1::AgentMessage>,
    /// Messages from it.
    pub rx: Streaming<v1::AggregatorMessage>,
}

/// The hello of `node`.
pub fn hello(node: &str, token: &str) -> v1::AgentMessage {
    message(
        0,
        agent_message::Kind::Hello(v1::Hello {
            node_name: node.to_owned(),
            epoch: 1,
            poll_interval_ms: 1000,
            agent_version: "test".to_owned(),
            token: token.to_owned(),
        }),
    )
}

/// A message of `kind` with sequence number `seq`.
pub fn message(seq: u64, kind: agent_message::Kind) -> v1::AgentMessage {
    v1::AgentMessage {
        kind: Some(kind),
        seq,
    }
}

/// A snapshot of `n_pods` pods (`default/pod-<i>`) with `containers_per_pod` containers
/// each, sampled at `ms`.
pub fn snapshot(n_pods: usize, containers_per_pod: usize, ms: i64) -> v1::AgentMessage {
    snapshot_of("pod", n_pods, containers_per_pod, ms)
}

/// [`snapshot`] with pods named `default/<prefix>-<i>`.
pub fn snapshot_of(
    prefix: &str,
    n_pods: usize,
    containers_per_pod: usize,
    ms: i64,
) -> v1::AgentMessage {
    let sample = Sample {
        usage: Usage {
            cpu_nanocores: 1_000_000,
            memory_bytes: 1 << 20,
        },
        timestamp: Timestamp::from_millis(ms),
        window: Window(10_000_000_000),
    };
    let mut view = NodeView {
        node: Some(sample),
        ..NodeView::default()
    };
    for p in 0..n_pods {
        let mut pod = PodView::default();
        for c in 0..containers_per_pod {
            let name = ContainerName::new(&format!("c{c}")).expect("container name");
            pod.containers.insert(name, sample);
        }
        let key = PodKey::new("default", &format!("{prefix}-{p}")).expect("pod key");
        view.pods.insert(key, pod);
    }
    let wire = kubepulse_proto::StreamEncoder::new().snapshot(&view);
    message(0, agent_message::Kind::Snapshot(wire))
}

/// An empty delta with sequence number `seq`.
pub fn empty_delta(seq: u64) -> v1::AgentMessage {
    message(seq, agent_message::Kind::Delta(v1::Delta::default()))
}

/// A plaintext channel to `addr`.
pub async fn channel(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?)
}

/// A TLS channel to `addr`, trusting `ca_pem` for `server_name`.
pub async fn tls_channel(
    addr: SocketAddr,
    ca_pem: &str,
    server_name: &str,
) -> anyhow::Result<Channel> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem))
        .domain_name(server_name);
    Ok(Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?)
}

/// Opens a stream on `channel` that starts with `opening` (normally a hello); the call
/// returns once the aggregator accepted or refused it.
pub async fn open(
    channel: Channel,
    opening: Vec<v1::AgentMessage>,
) -> Result<RawStream, tonic::Status> {
    let (tx, rx) = mpsc::channel(1024);
    for m in opening {
        tx.send(m).await.expect("fresh channel");
    }
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        IngestClient::new(channel)
            .max_encoding_message_size(64 << 20)
            .report(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
    .await
    .map_err(|_| tonic::Status::deadline_exceeded("no answer to the hello within 10 s"))??;
    Ok(RawStream {
        tx,
        rx: response.into_inner(),
    })
}

/// What came back on a stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// An acknowledgement of `seq`.
    Ack(u64),
    /// A resync request with its reason.
    Resync(String),
    /// The stream ended with this status code and message.
    Closed(tonic::Code, String),
    /// The stream ended cleanly.
    Ended,
}

impl RawStream {
    /// Sends one message.
    pub async fn send(&self, m: v1::AgentMessage) -> anyhow::Result<()> {
        self.tx
            .send(m)
            .await
            .map_err(|_| anyhow::anyhow!("the stream is closed"))
    }

    /// The next reply, within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> anyhow::Result<Reply> {
        let msg = tokio::time::timeout(timeout, self.rx.message())
            .await
            .map_err(|_| anyhow::anyhow!("no reply within {timeout:?}"))?;
        Ok(match msg {
            Ok(Some(m)) => match m.kind {
                Some(aggregator_message::Kind::Ack(a)) => Reply::Ack(a.seq),
                Some(aggregator_message::Kind::Resync(r)) => Reply::Resync(r.reason),
                None => anyhow::bail!("an empty aggregator message"),
            },
            Ok(None) => Reply::Ended,
            Err(status) => Reply::Closed(status.code(), status.message().to_owned()),
        })
    }
}

/// One open relay stream: many agent streams ("links") in batches.
pub struct RawRelay {
    /// Batches to the aggregator.
    pub tx: mpsc::Sender<v1::RelayBatch>,
    /// Replies from it.
    pub rx: Streaming<v1::RelayReplies>,
    /// Replies received but not yet taken.
    pending: std::collections::VecDeque<v1::RelayReply>,
}

/// A frame carrying `message` on `link`.
pub fn frame(link: u32, message: v1::AgentMessage) -> v1::RelayFrame {
    v1::RelayFrame {
        link,
        message: Some(message),
        closed: false,
    }
}

/// The frame that ends `link`.
pub fn closed_frame(link: u32) -> v1::RelayFrame {
    v1::RelayFrame {
        link,
        message: None,
        closed: true,
    }
}

/// What came back about one link.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkReply {
    /// A resync request with its reason.
    Resync(String),
    /// An acknowledgement (the aggregator sends none on links: seeing one is a bug).
    Ack(u64),
    /// The link was ended with this status code and message.
    Closed(tonic::Code, String),
}

impl RawRelay {
    /// Opens a relay stream on `channel`.
    pub async fn open(channel: Channel) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::channel(64);
        let response = tokio::time::timeout(
            Duration::from_secs(10),
            IngestClient::new(channel)
                .max_encoding_message_size(64 << 20)
                .relay(tokio_stream::wrappers::ReceiverStream::new(rx)),
        )
        .await
        .map_err(|_| anyhow::anyhow!("no answer to the relay stream within 10 s"))??;
        Ok(Self {
            tx,
            rx: response.into_inner(),
            pending: Default::default(),
        })
    }

    /// Sends one batch.
    pub async fn send(&self, frames: Vec<v1::RelayFrame>) -> anyhow::Result<()> {
        self.tx
            .send(v1::RelayBatch { frames })
            .await
            .map_err(|_| anyhow::anyhow!("the relay stream is closed"))
    }

    /// The next reply about any link, within `timeout`: `None` when nothing came.
    pub async fn next(&mut self, timeout: Duration) -> anyhow::Result<Option<(u32, LinkReply)>> {
        if self.pending.is_empty() {
            match tokio::time::timeout(timeout, self.rx.message()).await {
                Err(_) => return Ok(None),
                Ok(Ok(Some(replies))) => self.pending.extend(replies.replies),
                Ok(Ok(None)) => anyhow::bail!("the aggregator ended the relay stream"),
                Ok(Err(status)) => anyhow::bail!("the relay stream failed: {status}"),
            }
        }
        let Some(r) = self.pending.pop_front() else {
            anyhow::bail!("an empty batch of replies");
        };
        let reply = if r.closed_code != 0 {
            LinkReply::Closed(tonic::Code::from(r.closed_code as i32), r.closed_message)
        } else {
            match r.message.and_then(|m| m.kind) {
                Some(aggregator_message::Kind::Resync(s)) => LinkReply::Resync(s.reason),
                Some(aggregator_message::Kind::Ack(a)) => LinkReply::Ack(a.seq),
                None => anyhow::bail!("an empty reply for link {}", r.link),
            }
        };
        Ok(Some((r.link, reply)))
    }
}
