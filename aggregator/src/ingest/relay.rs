//! A relay's stream: many agent streams ("links") carried over one, in batches.
//!
//! Each link goes through the same [`Link`] state as an agent's own stream (hello checks,
//! identity, bounds, dictionary, sequence, resyncs), so a node reported through a relay is
//! held exactly as one reporting directly. What differs is the cost: one task and one HTTP/2
//! stream for all of a relay's links, and one writer hop per batch instead of per message.
//!
//! Differences a relay must know (also in `ingest.proto`): no acks are sent on links; a link
//! over its message rate is ended with `RESOURCE_EXHAUSTED` instead of being slowed (slowing
//! would hold back every other link of the relay); a frame for a link without a hello ends
//! that link with `FAILED_PRECONDITION`.

use std::collections::HashMap;
use std::sync::Arc;

use kubepulse_proto::v1::{self, agent_message, aggregator_message};
use tokio::sync::{mpsc, watch};
use tonic::{Status, Streaming};

use super::{IngestService, Link, Step, too_large};
use crate::telemetry::{self, IngestError, ResyncReason};
use crate::writer::{ResyncTo, WriterMsg};

/// Resync requests queued per relay session (shared by its links); a full queue drops the
/// request, and the link's next refused update asks again.
const RESYNC_QUEUE: usize = 4096;

/// Frames handled between two yields to the runtime.
const YIELD_EVERY: usize = 64;

pub(super) type RelayOutbound =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<v1::RelayReplies, Status>> + Send>>;

impl IngestService {
    /// Starts a relay session's task.
    pub(super) fn accept_relay(
        &self,
        inbound: Streaming<v1::RelayBatch>,
        remote: Arc<str>,
    ) -> RelayOutbound {
        let (out_tx, out_rx) = mpsc::channel(16);
        let (resync_tx, resync_rx) = mpsc::channel(RESYNC_QUEUE);
        let session = Session {
            service: self.clone(),
            links: HashMap::new(),
            out: out_tx,
            resync_tx,
            remote,
        };
        tracing::info!(remote = %session.remote, "relay connected");
        tokio::spawn(session.run(inbound, resync_rx, self.stopping.clone()));
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(out_rx))
    }
}

struct Session {
    service: IngestService,
    /// Boxed: a map of 1,000 links has 2,048 slots and a `Link` is 240 bytes, so unboxed the
    /// empty slots alone held ~0.25 MB per relay (heaptrack at 5,000 relayed nodes: 2.6 MB
    /// under the maps' inserts unboxed).
    links: HashMap<u32, Box<Link>>,
    out: mpsc::Sender<Result<v1::RelayReplies, Status>>,
    resync_tx: mpsc::Sender<(u32, String)>,
    remote: Arc<str>,
}

/// What one batch produced: writer messages (sent as one) and replies (sent as one).
#[derive(Default)]
struct Outcome {
    writer: Vec<WriterMsg>,
    replies: Vec<v1::RelayReply>,
}

impl Session {
    async fn run(
        mut self,
        mut inbound: Streaming<v1::RelayBatch>,
        mut resync_rx: mpsc::Receiver<(u32, String)>,
        mut stopping: watch::Receiver<bool>,
    ) {
        let reason = loop {
            let mut outcome = Outcome::default();
            tokio::select! {
                batch = inbound.message() => match batch {
                    Ok(Some(batch)) => {
                        for (i, frame) in batch.frames.into_iter().enumerate() {
                            // a batch may carry a thousand nodes' frames: let the API's
                            // requests run between slices of it
                            if i > 0 && i % YIELD_EVERY == 0 {
                                tokio::task::yield_now().await;
                            }
                            self.on_frame(frame, &mut outcome).await;
                        }
                    }
                    Ok(None) => break "relay closed the stream",
                    Err(status) if status.code() == tonic::Code::OutOfRange => {
                        let refusal = too_large("", &self.remote, status);
                        let _ = self.out.send(Err(refusal)).await;
                        break "batch over --max-message-bytes";
                    }
                    Err(status) => {
                        telemetry::ingest_error(IngestError::Stream);
                        tracing::debug!(remote = %self.remote, error = %status, "relay stream error");
                        break "stream error";
                    }
                },
                Some((id, reason)) = resync_rx.recv() => {
                    if let Some(link) = self.links.get_mut(&id) {
                        let step = link.resync(ResyncReason::Store, &reason);
                        self.act(id, step, &mut outcome);
                    }
                }
                _ = async { stopping.wait_for(|s| *s).await.map(|_| ()) } => {
                    let _ = self.out.send(Err(Status::unavailable("aggregator is shutting down"))).await;
                    break "aggregator shutting down";
                }
            }
            if !outcome.writer.is_empty()
                && self
                    .service
                    .writer
                    .send(WriterMsg::Batch(outcome.writer))
                    .await
                    .is_err()
            {
                break "aggregator shutting down";
            }
            if !outcome.replies.is_empty() {
                let replies = v1::RelayReplies {
                    replies: outcome.replies,
                };
                if self.out.send(Ok(replies)).await.is_err() {
                    break "relay went away";
                }
            }
        };
        let closes: Vec<WriterMsg> = self
            .links
            .drain()
            .map(|(_, link)| {
                telemetry::stream_closed(&link.node, reason);
                link.close()
            })
            .collect();
        if !closes.is_empty() {
            let _ = self.service.writer.send(WriterMsg::Batch(closes)).await;
        }
        tracing::info!(remote = %self.remote, reason, "relay disconnected");
    }

    async fn on_frame(&mut self, frame: v1::RelayFrame, outcome: &mut Outcome) {
        let id = frame.link;
        if frame.closed {
            if let Some(link) = self.links.remove(&id) {
                telemetry::stream_closed(&link.node, "agent closed the stream (relayed)");
                outcome.writer.push(link.close());
            }
            return;
        }
        let Some(msg) = frame.message else {
            return;
        };
        if !self.links.contains_key(&id) {
            let Some(agent_message::Kind::Hello(hello)) = msg.kind else {
                telemetry::ingest_error(IngestError::Protocol);
                let status = Status::failed_precondition(format!(
                    "relay link {id} has no hello (open it with a hello frame)"
                ));
                outcome.replies.push(closed(id, &status));
                return;
            };
            let tx = self.resync_tx.clone();
            let opened = self
                .service
                .open_link(hello, &self.remote, |_| ResyncTo::Link { tx, link: id })
                .await;
            match opened {
                Ok((link, open)) => {
                    outcome.writer.push(open);
                    self.links.insert(id, Box::new(link));
                }
                Err(status) => outcome.replies.push(closed(id, &status)),
            }
            return;
        }
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        let now = self.service.started.elapsed();
        if link.bucket.take(now).is_err() {
            let message = format!(
                "node {}: more than {} messages per second (--max-messages-per-second-per-stream)",
                link.node, self.service.bounds.messages_per_second
            );
            telemetry::stream_limited(
                link.node.as_str(),
                &self.remote,
                "max_messages_per_second",
                &message,
            );
            let step = Step::Fail(Status::resource_exhausted(message), "over its message rate");
            self.act(id, step, outcome);
            return;
        }
        let step = link.on_message(msg);
        self.act(id, step, outcome);
    }

    /// Does what a link's step asks, into this batch's outcome. Links get no acks.
    fn act(&mut self, id: u32, step: Step, outcome: &mut Outcome) {
        match step {
            Step::Nothing => {}
            Step::Update(update, _ack) => {
                if let Some(link) = self.links.get(&id) {
                    outcome.writer.push(link.update(update));
                }
            }
            Step::Resync(reason) => outcome.replies.push(v1::RelayReply {
                link: id,
                message: Some(v1::AggregatorMessage {
                    kind: Some(aggregator_message::Kind::Resync(v1::Resync { reason })),
                }),
                ..Default::default()
            }),
            Step::Fail(status, reason) => {
                if let Some(link) = self.links.remove(&id) {
                    telemetry::stream_closed(&link.node, reason);
                    outcome.writer.push(link.close());
                }
                outcome.replies.push(closed(id, &status));
            }
        }
    }
}

/// The reply that ends a link with `status`.
fn closed(link: u32, status: &Status) -> v1::RelayReply {
    v1::RelayReply {
        link,
        message: None,
        closed_code: status.code() as u32,
        closed_message: status.message().to_owned(),
    }
}
