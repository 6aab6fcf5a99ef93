//! The simulated agents behind simulated relays: each relay carries `nodes_per_relay` nodes'
//! agent streams over one TCP connection and one `Relay` stream, batched by the relay's own
//! state machine ([`kubepulse_relay_core::Hub`], the code `kubepulse-relay` runs, with its
//! default batching, bounds and heartbeat coalescing). Every node's messages are the same as
//! in [`super::agents`] (hello, snapshot, status, then a delta at every kubelet refresh and a
//! status heartbeat every agent heartbeat interval, from the recorded shapes); only the
//! transport between "agent" and relay is skipped, so the aggregator sees exactly what a real
//! relay would send it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kubepulse_proto::v1::ingest_client::IngestClient;
use kubepulse_proto::v1::{self, agent_message, aggregator_message};
use kubepulse_relay::hub::to_wire;
use kubepulse_relay_core::{Effect, Hub, HubConfig, LinkKey, Reply, UpstreamId};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::agents::{self, HEARTBEAT, POLL_INTERVAL_MS, Plan, message, status};
use super::wall_ms;

/// Starts one simulated relay per `plan.nodes_per_relay` nodes; returns when every node's
/// link has been opened once (or its relay failed once).
pub async fn start(plan: Arc<Plan>, set: &mut JoinSet<()>) -> anyhow::Result<()> {
    let per = plan.nodes_per_relay.max(1);
    let relays = plan.layout.nodes.div_ceil(per);
    let (up_tx, mut up_rx) = mpsc::unbounded_channel::<usize>();
    for r in 0..relays {
        let range = r * per..((r + 1) * per).min(plan.layout.nodes);
        let plan = plan.clone();
        let up = up_tx.clone();
        set.spawn(async move { run_relay(plan, r, range, up).await });
    }
    drop(up_tx);
    let mut n = 0;
    while let Some(k) = up_rx.recv().await {
        n += k;
        if n >= plan.layout.nodes {
            break;
        }
    }
    Ok(())
}

/// One simulated relay: connect, stream, reconnect after a pause on failure.
async fn run_relay(
    plan: Arc<Plan>,
    r: usize,
    range: Range<usize>,
    up: mpsc::UnboundedSender<usize>,
) {
    let mut up = Some(up);
    for attempt in 0u64.. {
        let err = match relay_once(&plan, r, range.clone(), attempt, &mut up).await {
            Ok(()) => anyhow::anyhow!("relay stream ended"),
            Err(err) => err,
        };
        plan.counters.failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            relay = r,
            error = format!("{err:#}"),
            "simulated relay stream ended"
        );
        if let Some(up) = up.take() {
            let _ = up.send(range.len());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// What is due next for a node: a delta (kubelet refresh `k`) or a heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Delta(i64),
    Heartbeat,
}

/// One node as its agent sees it.
struct Node {
    link: LinkKey,
    seq: u64,
    /// The last kubelet refresh sent.
    k: i64,
}

struct Relay<'a> {
    plan: &'a Plan,
    hub: Hub<v1::AgentMessage>,
    upstream: UpstreamId,
    nodes: HashMap<usize, Node>,
    by_link: HashMap<u32, usize>,
}

impl Relay<'_> {
    fn push(&mut self, i: usize, msg: v1::AgentMessage, now: Instant) -> anyhow::Result<()> {
        // classified exactly as the relay classifies what an agent sends it
        let kind = kubepulse_relay::ingest::message_kind(&msg)
            .ok_or_else(|| anyhow::anyhow!("a hello is not pushed, it opens the link"))?;
        let link = self.nodes[&i].link;
        let bytes = msg.encoded_len();
        self.hub.push(link, msg, bytes, kind, now)?;
        Ok(())
    }

    /// Opens node `i`'s link: hello, snapshot of its last refresh, status.
    fn open(&mut self, i: usize, now: Instant) -> anyhow::Result<()> {
        let layout = &self.plan.layout;
        let hello = message(
            0,
            agent_message::Kind::Hello(v1::Hello {
                node_name: layout.node_name(i),
                epoch: 1,
                poll_interval_ms: POLL_INTERVAL_MS,
                agent_version: "bench".to_owned(),
                token: String::new(),
            }),
        );
        let bytes = hello.encoded_len();
        let link = self.hub.open(layout.node_name(i), hello, bytes, now)?;
        let k = self.plan.last_refresh(i, wall_ms());
        self.by_link.insert(link.id, i);
        self.nodes.insert(i, Node { link, seq: 0, k });
        self.snapshot(i, now)?;
        self.push(i, status(0), now)
    }

    /// Sends node `i` a snapshot of its last refresh at its current sequence number (0 when
    /// the link opens; the caller moves it on for a resync, as the agent does).
    fn snapshot(&mut self, i: usize, now: Instant) -> anyhow::Result<()> {
        let plan = self.plan;
        let node = &self.nodes[&i];
        let (seq, at) = (node.seq, plan.refresh_ms(i, node.k));
        let snap = plan.shapes[plan.layout.shape_of(i)].snapshot_for(&plan.layout, i, at);
        self.push(i, message(seq, agent_message::Kind::Snapshot(snap)), now)
    }

    fn effects(&mut self, now: Instant) -> anyhow::Result<()> {
        let effects: Vec<Effect> = self.hub.effects().collect();
        for effect in effects {
            match effect {
                Effect::Resync { link, .. } => {
                    self.plan.counters.resyncs.fetch_add(1, Ordering::Relaxed);
                    if let Some(&i) = self.by_link.get(&link.id)
                        && self.nodes.get(&i).is_some_and(|n| n.link == link)
                    {
                        self.nodes.get_mut(&i).expect("open node").seq += 1;
                        self.snapshot(i, now)?;
                    }
                }
                Effect::CloseAgent {
                    link,
                    code,
                    message,
                } => {
                    self.plan.counters.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(link = link.id, code, message, "aggregator ended a link");
                    if let Some(i) = self.by_link.remove(&link.id) {
                        self.nodes.remove(&i);
                        self.open(i, now)?;
                    }
                }
                Effect::DropUpstream { pending_bytes, .. } => {
                    anyhow::bail!("the aggregator could not drain {pending_bytes} pending bytes")
                }
            }
        }
        Ok(())
    }
}

/// The relay's batching and bounds: its flag defaults, or with the relay flags in
/// `KUBEPULSE_BENCH_RELAY_FLAGS` (whitespace-separated, e.g. `--batch-interval=100ms`), parsed
/// and checked as the relay parses its own.
fn relay_defaults() -> anyhow::Result<HubConfig> {
    use clap::Parser as _;
    let extra = std::env::var("KUBEPULSE_BENCH_RELAY_FLAGS").unwrap_or_default();
    let config = kubepulse_relay::config::Config::try_parse_from(
        ["kubepulse-relay", "--aggregator-endpoints=127.0.0.1:1"]
            .into_iter()
            .chain(extra.split_whitespace()),
    )?;
    config
        .validate()
        .map_err(|problems| anyhow::anyhow!("relay flags: {}", problems.join("; ")))?;
    static SAID: std::sync::Once = std::sync::Once::new();
    if !extra.is_empty() {
        SAID.call_once(|| eprintln!("simulated relays with {extra}"));
    }
    Ok(config.hub())
}

async fn relay_once(
    plan: &Plan,
    r: usize,
    range: Range<usize>,
    attempt: u64,
    up: &mut Option<mpsc::UnboundedSender<usize>>,
) -> anyhow::Result<()> {
    let channel = agents::endpoint(plan, r)?.connect().await?;
    let mut client = IngestClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel::<v1::RelayBatch>(4);
    let mut relay = Relay {
        plan,
        hub: Hub::new(relay_defaults()?),
        upstream: UpstreamId(attempt),
        nodes: HashMap::with_capacity(range.len()),
        by_link: HashMap::with_capacity(range.len()),
    };
    let now = Instant::now();
    relay.hub.upstream_connected(relay.upstream, now);
    let _ = relay.hub.effects().count();
    let response = client
        .relay(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?;
    let mut inbound = response.into_inner();
    // node events, earliest first
    let mut due: BinaryHeap<Reverse<(i64, usize, Due)>> = BinaryHeap::new();
    let heartbeat_ms = HEARTBEAT.as_millis() as i64;
    let counters = &plan.counters;
    let start_ms = wall_ms();
    for i in range.clone() {
        relay.open(i, Instant::now())?;
        let k = relay.nodes[&i].k + 1;
        due.push(Reverse((plan.refresh_ms(i, k), i, Due::Delta(k))));
        let hb = start_ms + plan.phase_ms(i) % heartbeat_ms + heartbeat_ms;
        due.push(Reverse((hb, i, Due::Heartbeat)));
        // flush as it fills, so a large relay's snapshots go out in bounded batches
        while let Some(batch) = relay.hub.flush(relay.upstream, Instant::now()) {
            counters.batches.fetch_add(1, Ordering::Relaxed);
            tx.send(to_wire(batch)).await?;
        }
    }
    counters
        .open
        .fetch_add(range.len() as u64, Ordering::Relaxed);
    counters
        .opened
        .fetch_add(range.len() as u64, Ordering::Relaxed);
    if let Some(up) = up.take() {
        let _ = up.send(range.len());
    }
    let _open = OnDrop(|| {
        counters
            .open
            .fetch_sub(range.len() as u64, Ordering::Relaxed);
    });
    let tick = Duration::from_millis(10);
    loop {
        let next_event = due
            .peek()
            .map(|Reverse((at, _, _))| *at)
            .unwrap_or(i64::MAX);
        let wait_event = Duration::from_millis((next_event - wall_ms()).clamp(0, 1000) as u64);
        let wait_flush = relay
            .hub
            .next_flush_at()
            .map(|at| at.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(1));
        let wait = wait_event.min(wait_flush).max(tick.min(wait_event));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            msg = inbound.message() => match msg? {
                Some(replies) => {
                    let now = Instant::now();
                    for reply in replies.replies {
                        let what = if reply.closed_code != 0 {
                            Reply::Closed { code: reply.closed_code, message: reply.closed_message }
                        } else if let Some(aggregator_message::Kind::Resync(r)) =
                            reply.message.and_then(|m| m.kind)
                        {
                            Reply::Resync { reason: r.reason }
                        } else {
                            continue;
                        };
                        relay.hub.on_reply(relay.upstream, reply.link, what, now);
                    }
                }
                None => anyhow::bail!("aggregator closed the relay stream"),
            },
        }
        let now_ms = wall_ms();
        let now = Instant::now();
        while let Some(&Reverse((at, i, what))) = due.peek() {
            if at > now_ms {
                break;
            }
            due.pop();
            if !relay.nodes.contains_key(&i) {
                continue;
            }
            match what {
                Due::Delta(k) => {
                    let node = relay.nodes.get_mut(&i).expect("open node");
                    node.seq += 1;
                    node.k = k;
                    let seq = node.seq;
                    let late_us = ((now_ms - at) * 1000) as u64;
                    counters.send_late_us.fetch_add(late_us, Ordering::Relaxed);
                    counters
                        .send_late_max_us
                        .fetch_max(late_us, Ordering::Relaxed);
                    let shape = &plan.shapes[plan.layout.shape_of(i)];
                    let d = shape.delta_for(k as u64, at);
                    relay.push(i, message(seq, agent_message::Kind::Delta(d)), now)?;
                    counters.deltas.fetch_add(1, Ordering::Relaxed);
                    due.push(Reverse((plan.refresh_ms(i, k + 1), i, Due::Delta(k + 1))));
                }
                Due::Heartbeat => {
                    let seq = relay.nodes[&i].seq;
                    relay.push(i, status(seq), now)?;
                    counters.heartbeats.fetch_add(1, Ordering::Relaxed);
                    due.push(Reverse((at + heartbeat_ms, i, Due::Heartbeat)));
                }
            }
        }
        relay.effects(now)?;
        while let Some(batch) = relay.hub.flush(relay.upstream, now) {
            counters.batches.fetch_add(1, Ordering::Relaxed);
            tx.send(to_wire(batch)).await?;
        }
    }
}

struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}
