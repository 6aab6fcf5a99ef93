//! The single writer: one task owns the [`Hub`] (links, per-replica pending frames) and every
//! agent stream and replica stream talks to it over one bounded channel ([`HubMsg`]). A full
//! channel makes the agents' stream tasks wait, so they stop reading and HTTP/2 flow control
//! slows the agents; nothing is dropped. Batches go to each replica's stream task over a small
//! bounded channel; while it is full, frames stay pending in the hub, and a replica that falls
//! more than `--max-pending-bytes` behind is disconnected (its task reconnects).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kubepulse_proto::v1::{self, aggregator_message};
use kubepulse_relay_core::{
    Batch, Effect, Frame, Hub, HubConfig, HubError, LinkKey, MessageKind, Pushed, Reply, UpstreamId,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::Status;

use crate::telemetry;

/// How many batches may wait for one replica's stream task.
pub const UPSTREAM_QUEUE: usize = 4;

/// While a replica's queue is full and frames are due, the hub looks again this often.
const BLOCKED_RETRY: Duration = Duration::from_millis(5);

/// What the agents' and replicas' stream tasks tell the hub.
pub enum HubMsg {
    /// An agent stream's hello passed the checks: open a link.
    Open {
        /// The node it reports for.
        node: String,
        /// The hello, as received.
        hello: v1::AgentMessage,
        /// Its encoded size.
        bytes: usize,
        /// How the hub reaches the agent.
        agent: AgentHandle,
        /// The link, or why not.
        opened: oneshot::Sender<Result<LinkKey, HubError>>,
    },
    /// An agent's message after its hello.
    Push {
        /// Its link.
        link: LinkKey,
        /// The message.
        message: v1::AgentMessage,
        /// Its encoded size.
        bytes: usize,
        /// Its kind (a status with its fingerprint).
        kind: MessageKind,
    },
    /// The agent's stream ended.
    Close {
        /// Its link.
        link: LinkKey,
    },
    /// A replica's relay stream is open.
    UpstreamUp {
        /// A new number for this connection.
        id: UpstreamId,
        /// The replica's address (for logs).
        endpoint: String,
        /// Where its batches go.
        batches: mpsc::Sender<v1::RelayBatch>,
        /// Fired when the replica fell behind and must be disconnected.
        dropped: oneshot::Sender<()>,
    },
    /// A replica's relay stream ended.
    UpstreamDown {
        /// The connection.
        id: UpstreamId,
    },
    /// A replica's replies.
    Replies {
        /// The connection.
        id: UpstreamId,
        /// The replies.
        replies: v1::RelayReplies,
    },
    /// The relay is stopping: every agent stream ends with UNAVAILABLE.
    Shutdown,
}

/// The hub's end of one agent stream.
pub struct AgentHandle {
    /// The agent's response stream (resync requests; the final status).
    pub outbound: mpsc::Sender<Result<v1::AggregatorMessage, Status>>,
    /// Fired (or dropped) when the hub ended the stream: the stream task stops reading.
    pub ended: oneshot::Sender<()>,
}

struct UpstreamHandle {
    endpoint: String,
    batches: mpsc::Sender<v1::RelayBatch>,
    dropped: Option<oneshot::Sender<()>>,
}

/// Runs the hub until every sender is gone. `connected` counts the replicas with a stream up.
pub async fn run(config: HubConfig, mut rx: mpsc::Receiver<HubMsg>, connected: Arc<AtomicUsize>) {
    let mut state = State {
        hub: Hub::new(config),
        agents: HashMap::new(),
        upstreams: BTreeMap::new(),
        connected,
    };
    let mut retry_at: Option<Instant> = None;
    loop {
        let flush_at = state
            .hub
            .next_flush_at()
            .map(Instant::from_std)
            .into_iter()
            .chain(retry_at)
            .min();
        tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                state.handle(msg);
                // take what is already queued before flushing: fewer, fuller batches
                for _ in 0..256 {
                    match rx.try_recv() {
                        Ok(msg) => state.handle(msg),
                        Err(_) => break,
                    }
                }
            }
            _ = sleep_until(flush_at), if flush_at.is_some() => {}
        }
        let blocked = state.flush(Instant::now());
        retry_at = blocked.then(|| Instant::now() + BLOCKED_RETRY);
        state.apply_effects();
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

struct State {
    hub: Hub<v1::AgentMessage>,
    /// Every open link's node and agent.
    agents: HashMap<LinkKey, (String, AgentHandle)>,
    upstreams: BTreeMap<UpstreamId, UpstreamHandle>,
    connected: Arc<AtomicUsize>,
}

impl State {
    fn handle(&mut self, msg: HubMsg) {
        let now = Instant::now().into_std();
        match msg {
            HubMsg::Open {
                node,
                hello,
                bytes,
                agent,
                opened,
            } => match self.hub.open(node.clone(), hello, bytes, now) {
                Ok(link) => {
                    if opened.send(Ok(link)).is_err() {
                        // the agent's stream task is gone already
                        let _ = self.hub.close(link, now);
                        return;
                    }
                    telemetry::link_opened(&node, link.id, self.hub.links_open());
                    self.agents.insert(link, (node, agent));
                }
                Err(err) => {
                    let _ = opened.send(Err(err));
                }
            },
            HubMsg::Push {
                link,
                message,
                bytes,
                kind,
            } => {
                // an error: the link was ended by a replica; its stream task is stopping
                if let Ok(pushed) = self.hub.push(link, message, bytes, kind, now) {
                    telemetry::frame_pushed(pushed == Pushed::Forwarded);
                }
            }
            HubMsg::Close { link } => {
                if self.hub.close(link, now).is_ok() {
                    self.agents.remove(&link);
                    telemetry::link_closed(link.id, self.hub.links_open());
                }
            }
            HubMsg::UpstreamUp {
                id,
                endpoint,
                batches,
                dropped,
            } => {
                self.hub.upstream_connected(id, now);
                telemetry::upstream_up(&endpoint, self.hub.upstreams_connected());
                self.upstreams.insert(
                    id,
                    UpstreamHandle {
                        endpoint,
                        batches,
                        dropped: Some(dropped),
                    },
                );
                self.count_upstreams();
            }
            HubMsg::UpstreamDown { id } => {
                self.hub.upstream_gone(id);
                self.upstreams.remove(&id);
                self.count_upstreams();
            }
            HubMsg::Replies { id, replies } => {
                for reply in replies.replies {
                    let link = reply.link;
                    let reply = if reply.closed_code != 0 {
                        Reply::Closed {
                            code: reply.closed_code,
                            message: reply.closed_message,
                        }
                    } else {
                        match reply.message.and_then(|m| m.kind) {
                            Some(aggregator_message::Kind::Resync(r)) => {
                                Reply::Resync { reason: r.reason }
                            }
                            // acks are not sent on relay links; nothing to do with one
                            Some(aggregator_message::Kind::Ack(_)) | None => continue,
                        }
                    };
                    self.hub.on_reply(id, link, reply, now);
                }
            }
            HubMsg::Shutdown => {
                for (_, (_, agent)) in self.agents.drain() {
                    let _ = agent
                        .outbound
                        .try_send(Err(Status::unavailable("the relay is shutting down")));
                    let _ = agent.ended.send(());
                }
            }
        }
    }

    /// Hands every due batch to its replica's queue; true when a queue was full with frames
    /// due.
    fn flush(&mut self, now: Instant) -> bool {
        let now = now.into_std();
        let mut blocked = false;
        for (id, upstream) in &self.upstreams {
            loop {
                let permit = match upstream.batches.try_reserve() {
                    Ok(permit) => permit,
                    Err(mpsc::error::TrySendError::Full(())) => {
                        blocked |= self.hub.pending_bytes(*id).unwrap_or(0) > 0;
                        break;
                    }
                    // the stream task is ending; it says so with UpstreamDown
                    Err(mpsc::error::TrySendError::Closed(())) => break,
                };
                let Some(batch) = self.hub.flush(*id, now) else {
                    break;
                };
                telemetry::batch_sent(batch.bytes);
                permit.send(to_wire(batch));
            }
        }
        blocked
    }

    fn apply_effects(&mut self) {
        let effects: Vec<Effect> = self.hub.effects().collect();
        for effect in effects {
            match effect {
                Effect::Resync { link, reason } => {
                    if let Some((_, agent)) = self.agents.get(&link)
                        // the last place stays free for the stream's final status
                        && agent.outbound.capacity() > 1
                    {
                        telemetry::resync(reason);
                        let _ = agent.outbound.try_send(Ok(v1::AggregatorMessage {
                            kind: Some(aggregator_message::Kind::Resync(v1::Resync {
                                reason: reason.to_owned(),
                            })),
                        }));
                    }
                }
                Effect::CloseAgent {
                    link,
                    code,
                    message,
                } => {
                    if let Some((node, agent)) = self.agents.remove(&link) {
                        telemetry::link_ended_by_aggregator(&node, code, &message);
                        let code = tonic::Code::from_i32(code as i32);
                        let _ = agent.outbound.try_send(Err(Status::new(code, message)));
                        let _ = agent.ended.send(());
                    }
                    telemetry::link_closed(link.id, self.hub.links_open());
                }
                Effect::DropUpstream {
                    upstream,
                    pending_bytes,
                } => {
                    if let Some(mut handle) = self.upstreams.remove(&upstream) {
                        telemetry::upstream_dropped_for_lag(&handle.endpoint, pending_bytes);
                        if let Some(dropped) = handle.dropped.take() {
                            let _ = dropped.send(());
                        }
                    }
                    self.count_upstreams();
                }
            }
        }
    }

    fn count_upstreams(&self) {
        let n = self.hub.upstreams_connected();
        self.connected.store(n, Ordering::Relaxed);
        telemetry::upstreams_connected(n);
    }
}

/// A batch as the wire carries it.
pub fn to_wire(batch: Batch<v1::AgentMessage>) -> v1::RelayBatch {
    v1::RelayBatch {
        frames: batch
            .frames
            .into_iter()
            .map(|frame| match frame {
                Frame::Message { link, message } => v1::RelayFrame {
                    link,
                    message: Some(message),
                    closed: false,
                },
                Frame::Closed { link } => v1::RelayFrame {
                    link,
                    message: None,
                    closed: true,
                },
            })
            .collect(),
    }
}
