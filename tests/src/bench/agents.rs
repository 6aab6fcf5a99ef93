//! The simulated agents: one real gRPC stream per simulated node, each on its own TCP
//! connection (as a DaemonSet agent has), opened exactly as `kubepulse-agent`'s uplink opens
//! it (tonic channel, HTTP/2 keep-alive 20 s, hello → snapshot → status), then a delta at
//! every kubelet refresh of the node and a status heartbeat every agent heartbeat interval.
//! Messages come from the recorded [`Shape`]s.
//!
//! Client sockets are bound to many loopback source addresses (`127.0.1.x`), since one
//! source address has only ~28k ephemeral ports towards one server address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kubepulse_proto::v1::ingest_client::IngestClient;
use kubepulse_proto::v1::{self, agent_message, aggregator_message};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};

use super::shapes::{Layout, Shape};
use super::wall_ms;

/// Connections per loopback source address (below the ~28k ephemeral ports of one address).
pub const CONNECTIONS_PER_SOURCE: usize = 20_000;

/// The agent's default heartbeat (`--heartbeat-interval`).
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// The agent's default poll interval, announced in the hello.
pub const POLL_INTERVAL_MS: u32 = 1000;

/// Counters of the simulated agents.
#[derive(Debug, Default)]
pub struct Counters {
    /// Streams that said hello and are open.
    pub open: AtomicU64,
    /// Streams opened so far (reconnects included).
    pub opened: AtomicU64,
    /// Deltas sent.
    pub deltas: AtomicU64,
    /// Heartbeats sent.
    pub heartbeats: AtomicU64,
    /// Relay batches sent (relayed runs).
    pub batches: AtomicU64,
    /// Acks received.
    pub acks: AtomicU64,
    /// Resyncs asked by the aggregator.
    pub resyncs: AtomicU64,
    /// Connect or stream failures.
    pub failures: AtomicU64,
    /// Sum of how late deltas were sent after their kubelet timestamp, µs.
    pub send_late_us: AtomicU64,
    /// Most late a delta was sent, µs.
    pub send_late_max_us: AtomicU64,
}

/// The plan every simulated node follows.
pub struct Plan {
    /// The cluster.
    pub layout: Layout,
    /// Recorded shapes.
    pub shapes: Vec<Shape>,
    /// The aggregator's gRPC address.
    pub grpc: SocketAddr,
    /// Wall-clock ms every node's schedule is anchored at.
    pub epoch_ms: i64,
    /// Counters.
    pub counters: Counters,
    /// Streams sharing one HTTP/2 connection (1: every node its own connection, as agents
    /// connect; more: what a relay tier multiplexing its nodes' streams would do).
    pub streams_per_connection: usize,
    /// Nodes carried by one simulated relay over one `Relay` stream (0: no relay; every node
    /// streams itself, `streams_per_connection` to a connection).
    pub nodes_per_relay: usize,
}

impl Plan {
    /// Node `i`'s kubelet refresh phase within the interval: spread evenly.
    pub fn phase_ms(&self, i: usize) -> i64 {
        (i as i64 * self.layout.interval_ms) / self.layout.nodes.max(1) as i64
    }

    /// Kubelet timestamp of node `i`'s `k`-th refresh.
    pub fn refresh_ms(&self, i: usize, k: i64) -> i64 {
        self.epoch_ms + self.phase_ms(i) + k * self.layout.interval_ms
    }

    /// The index of node `i`'s last refresh at or before `now_ms`.
    pub fn last_refresh(&self, i: usize, now_ms: i64) -> i64 {
        (now_ms - self.epoch_ms - self.phase_ms(i)).div_euclid(self.layout.interval_ms)
    }

    /// The loopback address node `i` connects from.
    pub fn source(&self, i: usize) -> IpAddr {
        let n = i / self.streams_per_connection / CONNECTIONS_PER_SOURCE;
        IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1 + n as u8))
    }
}

/// Starts one stream per node, at most `concurrency` connecting at once; returns when every
/// stream has said hello (or failed once). The streams run until the set is dropped.
pub async fn start(
    plan: Arc<Plan>,
    concurrency: usize,
    set: &mut JoinSet<()>,
) -> anyhow::Result<()> {
    if plan.nodes_per_relay > 0 {
        return super::relayed::start(plan, set).await;
    }
    let gate = Arc::new(Semaphore::new(concurrency));
    let per = plan.streams_per_connection.max(1);
    let mut channels = Vec::with_capacity(plan.layout.nodes.div_ceil(per));
    if per > 1 {
        for c in 0..plan.layout.nodes.div_ceil(per) {
            channels.push(endpoint(&plan, c * per)?.connect_lazy());
        }
    }
    let channels = Arc::new(channels);
    let (up_tx, mut up_rx) = mpsc::unbounded_channel::<()>();
    for i in 0..plan.layout.nodes {
        let permit = gate.clone().acquire_owned().await?;
        let plan = plan.clone();
        let up = up_tx.clone();
        let channel = channels.get(i / per).cloned();
        set.spawn(async move {
            run_node(plan, i, channel, Some((permit, up))).await;
        });
    }
    drop(up_tx);
    let mut n = 0;
    while up_rx.recv().await.is_some() {
        n += 1;
        if n == plan.layout.nodes {
            break;
        }
    }
    Ok(())
}

/// A message of `kind` at `seq`.
pub(super) fn message(seq: u64, kind: agent_message::Kind) -> v1::AgentMessage {
    v1::AgentMessage {
        kind: Some(kind),
        seq,
    }
}

/// An ok status at `seq` (the heartbeat).
pub(super) fn status(seq: u64) -> v1::AgentMessage {
    message(
        seq,
        agent_message::Kind::Status(v1::ScrapeStatus {
            ok: true,
            error: String::new(),
            decode_issues: 0,
            ..Default::default()
        }),
    )
}

type Ready = (tokio::sync::OwnedSemaphorePermit, mpsc::UnboundedSender<()>);

/// One simulated node: connect, stream, reconnect after a pause on failure.
async fn run_node(plan: Arc<Plan>, i: usize, channel: Option<Channel>, mut ready: Option<Ready>) {
    loop {
        let err = match stream_once(&plan, i, channel.clone(), &mut ready).await {
            Ok(()) => anyhow::anyhow!("stream ended"),
            Err(err) => err,
        };
        plan.counters.failures.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            node = i,
            error = format!("{err:#}"),
            "simulated agent stream ended"
        );
        if let Some((_, up)) = ready.take() {
            let _ = up.send(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The agent's endpoint settings, from the source address of node `i`.
pub(super) fn endpoint(plan: &Plan, i: usize) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(format!("http://{}", plan.grpc))?
        .local_address(Some(plan.source(i)))
        .connect_timeout(Duration::from_secs(30))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .tcp_nodelay(true))
}

async fn stream_once(
    plan: &Plan,
    i: usize,
    shared: Option<Channel>,
    ready: &mut Option<Ready>,
) -> anyhow::Result<()> {
    let layout = &plan.layout;
    let shape = &plan.shapes[layout.shape_of(i)];
    let channel = match shared {
        Some(c) => c,
        None => endpoint(plan, i)?.connect().await?,
    };
    let mut client = IngestClient::new(channel);
    let (tx, rx) = mpsc::channel::<v1::AgentMessage>(8);
    let now = wall_ms();
    let mut k = plan.last_refresh(i, now);
    let hello = v1::Hello {
        node_name: layout.node_name(i),
        epoch: 1,
        poll_interval_ms: POLL_INTERVAL_MS,
        agent_version: "bench".to_owned(),
        token: String::new(),
    };
    let snapshot = |at: i64| shape.snapshot_for(layout, i, at);
    tx.send(message(0, agent_message::Kind::Hello(hello)))
        .await?;
    tx.send(message(
        0,
        agent_message::Kind::Snapshot(snapshot(plan.refresh_ms(i, k))),
    ))
    .await?;
    tx.send(status(0)).await?;
    let response = client
        .report(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?;
    let mut inbound = response.into_inner();
    let counters = &plan.counters;
    counters.open.fetch_add(1, Ordering::Relaxed);
    counters.opened.fetch_add(1, Ordering::Relaxed);
    if let Some((_, up)) = ready.take() {
        let _ = up.send(());
    }
    let _open = OnDrop(|| {
        counters.open.fetch_sub(1, Ordering::Relaxed);
    });
    let mut seq = 0u64;
    let heartbeat_ms = HEARTBEAT.as_millis() as i64;
    // heartbeats at the node's own phase, like agents started at different times
    let mut next_heartbeat = now + plan.phase_ms(i) % heartbeat_ms + heartbeat_ms;
    k += 1;
    loop {
        let next_delta = plan.refresh_ms(i, k);
        let next = next_delta.min(next_heartbeat);
        let wait = Duration::from_millis((next - wall_ms()).max(0) as u64);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {
                let now = wall_ms();
                if now >= next_delta {
                    seq += 1;
                    let late_us = ((now - next_delta) * 1000) as u64;
                    counters.send_late_us.fetch_add(late_us, Ordering::Relaxed);
                    counters.send_late_max_us.fetch_max(late_us, Ordering::Relaxed);
                    let d = shape.delta_for(k as u64, next_delta);
                    tx.send(message(seq, agent_message::Kind::Delta(d))).await?;
                    counters.deltas.fetch_add(1, Ordering::Relaxed);
                    k += 1;
                }
                if now >= next_heartbeat {
                    tx.send(status(seq)).await?;
                    counters.heartbeats.fetch_add(1, Ordering::Relaxed);
                    next_heartbeat += heartbeat_ms;
                }
            }
            msg = inbound.message() => match msg? {
                Some(m) => match m.kind {
                    Some(aggregator_message::Kind::Ack(_)) => {
                        counters.acks.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(aggregator_message::Kind::Resync(r)) => {
                        counters.resyncs.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(node = i, reason = r.reason, "resync asked");
                        seq += 1;
                        let at = plan.refresh_ms(i, k - 1);
                        tx.send(message(seq, agent_message::Kind::Snapshot(snapshot(at)))).await?;
                    }
                    None => {}
                },
                None => anyhow::bail!("aggregator closed the stream"),
            },
        }
    }
}

struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}
