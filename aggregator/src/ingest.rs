//! The gRPC ingest: one task per agent stream. It reads the hello, decodes snapshots and
//! deltas with the stream's dictionary ([`NodeDecoder`], where all wire validation happens:
//! a steady delta becomes samples by slot of the node's table, a snapshot the whole table),
//! checks sequence numbers, forwards the updates to the writer over a bounded channel
//! (backpressure: a slow writer slows the streams, nothing is dropped), acknowledges, and asks
//! the agent for a fresh snapshot whenever the two sides may disagree.
//!
//! Bounds ([`IngestBounds`], `kubepulse_aggregator_core::limits`): a stream over
//! `--max-streams-per-node` or `--max-streams` is refused at its hello, and one whose message
//! exceeds `--max-message-bytes` or whose node exceeds `--max-pods-per-node` /
//! `--max-containers-per-node` is closed, each with `RESOURCE_EXHAUSTED` and a message naming
//! the flag (the agent retries with backoff); a stream sending faster than
//! `--max-messages-per-second-per-stream` is throttled: its task stops reading until the
//! stream's token bucket allows the next message, so HTTP/2 flow control slows the agent and
//! nothing is dropped.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use kubepulse_aggregator_core::limits::{StreamCounts, StreamLimits, TokenBucket};
use kubepulse_aggregator_core::store::{
    PendingContainer, ScrapeStatus, StreamId, StreamInfo, Update,
};
use kubepulse_model::{Epoch, Names, NodeName, Seq};
use kubepulse_proto::v1::ingest_server::Ingest;
use kubepulse_proto::v1::{self, agent_message, aggregator_message};
use kubepulse_proto::{Limits, NodeDecoder, NodeDelta, WireError};
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming};

use crate::identity::{self, AgentIdentity};
use crate::telemetry::{self, IngestError, ResyncReason};
use crate::writer::{ResyncTo, WriterMsg};

mod relay;

/// The tonic service.
#[derive(Clone)]
pub struct IngestService {
    writer: mpsc::Sender<WriterMsg>,
    stopping: watch::Receiver<bool>,
    limits: Limits,
    hello_timeout: Duration,
    next_stream: Arc<AtomicU64>,
    bounds: IngestBounds,
    /// Open streams per node and in total; locked briefly at each hello and close.
    streams: Arc<Mutex<StreamCounts>>,
    /// The origin of the token buckets' time.
    started: tokio::time::Instant,
    /// Who may report for which node (`None`: not checked, `--standalone`).
    identity: Option<Arc<AgentIdentity>>,
    /// Namespace and container names, shared by every stream's dictionary and the store.
    names: Arc<Names>,
}

/// Stream counts and rates (the pods and containers per node are [`Limits`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IngestBounds {
    /// `--max-streams-per-node` and `--max-streams`.
    pub streams: StreamLimits,
    /// `--max-messages-per-second-per-stream`.
    pub messages_per_second: u32,
    /// `--max-message-burst-per-stream`.
    pub message_burst: u32,
}

impl Default for IngestBounds {
    /// The flags' defaults.
    fn default() -> Self {
        Self {
            streams: StreamLimits {
                per_node: 4,
                total: 200_000,
            },
            messages_per_second: 10,
            message_burst: 50,
        }
    }
}

impl IngestService {
    /// A service feeding `writer`; every stream ends with `UNAVAILABLE` once `stopping` turns
    /// true, so agents move to another replica at once and the server can drain.
    pub fn new(
        writer: mpsc::Sender<WriterMsg>,
        stopping: watch::Receiver<bool>,
        limits: Limits,
        hello_timeout: Duration,
    ) -> Self {
        Self {
            writer,
            stopping,
            limits,
            hello_timeout,
            next_stream: Arc::new(AtomicU64::new(1)),
            bounds: IngestBounds::default(),
            streams: Arc::new(Mutex::new(StreamCounts::new(
                IngestBounds::default().streams,
            ))),
            started: tokio::time::Instant::now(),
            identity: None,
            names: Arc::default(),
        }
    }

    /// The same service, accepting a stream only from the agent pod of the node it claims.
    pub fn with_identity(mut self, identity: Arc<AgentIdentity>) -> Self {
        self.identity = Some(identity);
        self
    }

    /// The same service with other stream counts and rates.
    pub fn with_bounds(mut self, bounds: IngestBounds) -> Self {
        self.bounds = bounds;
        self.streams = Arc::new(Mutex::new(StreamCounts::new(bounds.streams)));
        self
    }
}

/// One open stream's place in the counts; given back when dropped.
struct StreamSlot {
    streams: Arc<Mutex<StreamCounts>>,
    node: NodeName,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        lock(&self.streams).close(&self.node);
    }
}

fn lock(streams: &Mutex<StreamCounts>) -> std::sync::MutexGuard<'_, StreamCounts> {
    // the counts stay consistent even if a holder panicked: every change is one call
    streams.lock().unwrap_or_else(|e| e.into_inner())
}

type Outbound = Pin<Box<dyn Stream<Item = Result<v1::AggregatorMessage, Status>> + Send>>;

/// What a stream task queues for its agent. Small on purpose: the queue's storage is
/// allocated in blocks of 32 items per stream, and a `Status` is ~180 bytes.
enum Out {
    Message(v1::AggregatorMessage),
    Fail(Box<Status>),
}

#[tonic::async_trait]
impl Ingest for IngestService {
    type ReportStream = Outbound;

    async fn report(
        &self,
        request: Request<Streaming<v1::AgentMessage>>,
    ) -> Result<Response<Self::ReportStream>, Status> {
        let remote: Arc<str> = kubepulse_shell::grpc::remote(&request).into();
        let accepted = self.accept(request.into_inner(), &remote).await;
        // bounds and identity report their refusals themselves (`telemetry::stream_limited`)
        if let Err(status) = &accepted
            && !matches!(
                status.code(),
                tonic::Code::Unavailable
                    | tonic::Code::ResourceExhausted
                    | tonic::Code::PermissionDenied
                    | tonic::Code::Unauthenticated
            )
        {
            telemetry::stream_refused(&remote, status.message());
        }
        accepted
    }

    type RelayStream = relay::RelayOutbound;

    async fn relay(
        &self,
        request: Request<Streaming<v1::RelayBatch>>,
    ) -> Result<Response<Self::RelayStream>, Status> {
        let remote = kubepulse_shell::grpc::remote(&request);
        Ok(Response::new(
            self.accept_relay(request.into_inner(), remote.into()),
        ))
    }
}

impl IngestService {
    /// Checks a hello (name, interval, identity, stream bounds) and opens a link for it: the
    /// protocol state of one agent stream, and the writer message that registers it.
    async fn open_link(
        &self,
        hello: v1::Hello,
        remote: &Arc<str>,
        resync: impl FnOnce(StreamId) -> ResyncTo,
    ) -> Result<(Link, WriterMsg), Status> {
        let node = NodeName::new(&hello.node_name)
            .map_err(|e| Status::invalid_argument(format!("hello: {e}")))?;
        if hello.poll_interval_ms == 0 {
            return Err(Status::invalid_argument(
                "hello: poll interval must be positive",
            ));
        }
        if let Some(checker) = &self.identity {
            match checker.verify(&hello.token, &node).await {
                Ok(pod) => tracing::debug!(node = %node, pod = %pod, "agent identity verified"),
                Err(refusal) => {
                    let message = refusal.to_string();
                    telemetry::stream_limited(node.as_str(), remote, refusal.reason(), &message);
                    return Err(identity::status(&refusal));
                }
            }
        }
        let slot = {
            let mut streams = lock(&self.streams);
            match streams.open(&node) {
                Ok(()) => StreamSlot {
                    streams: self.streams.clone(),
                    node: node.clone(),
                },
                Err(refusal) => {
                    drop(streams);
                    let message = refusal.to_string();
                    telemetry::stream_limited(node.as_str(), remote, refusal.reason(), &message);
                    return Err(Status::resource_exhausted(message));
                }
            }
        };
        let stream = StreamId(self.next_stream.fetch_add(1, Ordering::Relaxed));
        let info = StreamInfo {
            epoch: Epoch(hello.epoch),
            poll_interval: Duration::from_millis(u64::from(hello.poll_interval_ms)),
            agent_version: hello
                .agent_version
                .chars()
                .take(64)
                .collect::<String>()
                .into(),
        };
        let open = WriterMsg::Open {
            node: node.clone(),
            stream,
            info,
            resync: resync(stream),
        };
        telemetry::stream_opened(&node, hello.epoch, remote);
        let link = Link {
            node,
            stream,
            decoder: NodeDecoder::with_names(self.limits, self.names.clone()),
            expected: None,
            last_status: None,
            bucket: TokenBucket::new(
                self.bounds.messages_per_second,
                self.bounds.message_burst,
                self.started.elapsed(),
            ),
            throttled: false,
            remote: Arc::clone(remote),
            _slot: slot,
        };
        Ok((link, open))
    }

    /// Reads the hello, registers the stream with the writer and starts its task.
    async fn accept(
        &self,
        mut inbound: Streaming<v1::AgentMessage>,
        remote: &Arc<str>,
    ) -> Result<Response<Outbound>, Status> {
        let first = tokio::time::timeout(self.hello_timeout, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no hello within the hello timeout"))?
            .map_err(|status| too_large("", remote, status))?
            .ok_or_else(|| Status::invalid_argument("stream ended before its hello"))?;
        let hello = match first.kind {
            Some(agent_message::Kind::Hello(h)) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be a hello",
                ));
            }
        };
        let (resync_tx, resync_rx) = mpsc::channel(4);
        let (link, open) = self
            .open_link(hello, remote, |_| ResyncTo::Stream(resync_tx))
            .await?;
        self.writer
            .send(open)
            .await
            .map_err(|_| Status::unavailable("aggregator is shutting down"))?;
        let (out_tx, out_rx) = mpsc::channel(16);
        let task = StreamTask {
            link,
            writer: self.writer.clone(),
            out: out_tx,
            bucket_origin: self.started,
            per_second: self.bounds.messages_per_second,
        };
        tokio::spawn(task.run(inbound, resync_rx, self.stopping.clone()));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out_rx).map(|out| match out {
                Out::Message(m) => Ok(m),
                Out::Fail(status) => Err(*status),
            }),
        )))
    }
}

/// One agent stream's protocol state, whether the agent opened a stream of its own or a relay
/// carries it as a link: the dictionary, the sequence check, the status seen last, its rate.
/// It does no I/O: [`Link::on_message`] says what to do and the caller does it.
struct Link {
    node: NodeName,
    stream: StreamId,
    decoder: NodeDecoder,
    /// The last snapshot-or-delta sequence number applied; `None` while a snapshot is awaited.
    expected: Option<Seq>,
    last_status: Option<(bool, String)>,
    bucket: TokenBucket,
    /// Whether this stream was throttled already (logged once).
    throttled: bool,
    /// The peer (a relay's links share its text).
    remote: Arc<str>,
    _slot: StreamSlot,
}

/// What one message asks of the link's owner.
enum Step {
    /// Give the writer this update; acknowledge `seq` when it is set.
    Update(Update, Option<Seq>),
    /// Ask the agent for a fresh snapshot, with this reason.
    Resync(String),
    /// End the stream with this status; the reason is for the log.
    Fail(Status, &'static str),
    /// Nothing to do.
    Nothing,
}

impl Link {
    fn on_message(&mut self, msg: v1::AgentMessage) -> Step {
        let seq = Seq(msg.seq);
        match msg.kind {
            Some(agent_message::Kind::Snapshot(snapshot)) => {
                telemetry::message_received("snapshot");
                match self.decoder.snapshot(&snapshot) {
                    Ok(usage) => {
                        self.expected = Some(seq);
                        Step::Update(Update::Snapshot(usage), Some(seq))
                    }
                    Err(err @ WireError::TooMany { .. }) => self.over_limit(&err),
                    Err(err) => {
                        telemetry::ingest_error(IngestError::InvalidMessage);
                        self.resync(ResyncReason::Invalid, &format!("invalid snapshot: {err}"))
                    }
                }
            }
            Some(agent_message::Kind::Delta(delta)) => {
                telemetry::message_received("delta");
                let Some(last) = self.expected else {
                    // still waiting for the snapshot we asked for
                    return Step::Nothing;
                };
                if last.is_gap(seq) {
                    return self.resync(
                        ResyncReason::Gap,
                        &format!("sequence gap: expected {}, got {}", last.next().0, seq.0),
                    );
                }
                match self.decoder.delta(&delta) {
                    Ok(delta) => {
                        self.expected = Some(seq);
                        let update = match delta {
                            NodeDelta::Samples(samples) => Update::Samples(samples),
                            NodeDelta::Reshape(reshape) => Update::Reshape(reshape),
                        };
                        Step::Update(update, Some(seq))
                    }
                    Err(err @ WireError::TooMany { .. }) => self.over_limit(&err),
                    Err(err) => {
                        telemetry::ingest_error(IngestError::InvalidMessage);
                        self.resync(ResyncReason::Invalid, &format!("invalid delta: {err}"))
                    }
                }
            }
            Some(agent_message::Kind::Status(status)) => {
                telemetry::message_received("status");
                let changed = self.last_status.as_ref() != Some(&(status.ok, status.error.clone()));
                // the first report of a stream is news only when it is a failure
                if changed && (self.last_status.is_some() || !status.ok) {
                    telemetry::scrape_status_changed(&self.node, status.ok, &status.error);
                }
                self.last_status = Some((status.ok, status.error.clone()));
                Step::Update(Update::Status(scrape_status(&status)), None)
            }
            Some(agent_message::Kind::Hello(_)) => {
                telemetry::ingest_error(IngestError::Protocol);
                Step::Fail(
                    Status::invalid_argument("hello sent twice on one stream"),
                    "protocol violation: second hello",
                )
            }
            None => Step::Nothing,
        }
    }

    /// Ends the stream with `RESOURCE_EXHAUSTED` for a node over its pod or container limit:
    /// resending the same snapshot would only fail again, so the agent backs off instead.
    fn over_limit(&self, err: &WireError) -> Step {
        let (reason, flag) = match err {
            WireError::TooMany { what: "pods", .. } => ("max_pods_per_node", "--max-pods-per-node"),
            _ => ("max_containers_per_node", "--max-containers-per-node"),
        };
        let message = format!("node {}: {err} ({flag})", self.node);
        telemetry::stream_limited(self.node.as_str(), &self.remote, reason, &message);
        Step::Fail(
            Status::resource_exhausted(message),
            "node over its pod or container limit",
        )
    }

    /// Forgets the sequence and asks for a snapshot.
    fn resync(&mut self, why: ResyncReason, reason: &str) -> Step {
        telemetry::resync_requested(&self.node, why, reason);
        self.expected = None;
        Step::Resync(reason.to_owned())
    }

    fn update(&self, update: Update) -> WriterMsg {
        WriterMsg::Update {
            node: self.node.clone(),
            stream: self.stream,
            update,
        }
    }

    fn close(&self) -> WriterMsg {
        WriterMsg::Close {
            node: self.node.clone(),
            stream: self.stream,
        }
    }
}

struct StreamTask {
    link: Link,
    writer: mpsc::Sender<WriterMsg>,
    out: mpsc::Sender<Out>,
    bucket_origin: tokio::time::Instant,
    per_second: u32,
}

enum Flow {
    Continue,
    Stop(&'static str),
}

impl StreamTask {
    async fn run(
        mut self,
        mut inbound: Streaming<v1::AgentMessage>,
        mut resync_rx: mpsc::Receiver<String>,
        mut stopping: watch::Receiver<bool>,
    ) {
        let reason = loop {
            let flow = tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(msg)) => {
                        self.throttle().await;
                        let step = self.link.on_message(msg);
                        self.act(step).await
                    }
                    Ok(None) => Flow::Stop("agent closed the stream"),
                    Err(status) if status.code() == tonic::Code::OutOfRange => {
                        let refusal = too_large(self.link.node.as_str(), &self.link.remote, status);
                        let _ = self.out.send(Out::Fail(Box::new(refusal))).await;
                        Flow::Stop("message over --max-message-bytes")
                    }
                    Err(status) => {
                        telemetry::ingest_error(IngestError::Stream);
                        tracing::debug!(node = %self.link.node, error = %status, "stream error");
                        Flow::Stop("stream error")
                    }
                },
                Some(reason) = resync_rx.recv() => {
                    let step = self.link.resync(ResyncReason::Store, &reason);
                    self.act(step).await
                }
                _ = async { stopping.wait_for(|s| *s).await.map(|_| ()) } => {
                    let _ = self.out.send(Out::Fail(Box::new(Status::unavailable("aggregator is shutting down")))).await;
                    Flow::Stop("aggregator shutting down")
                }
            };
            if let Flow::Stop(reason) = flow {
                break reason;
            }
        };
        let _ = self.writer.send(self.link.close()).await;
        telemetry::stream_closed(&self.link.node, reason);
    }

    /// Waits, if need be, until the stream's rate allows one more message: meanwhile nothing
    /// is read from the agent, so HTTP/2 flow control holds it back.
    async fn throttle(&mut self) {
        let link = &mut self.link;
        if let Err(wait) = link.bucket.take(self.bucket_origin.elapsed()) {
            telemetry::stream_throttled(&link.node, !link.throttled, self.per_second);
            link.throttled = true;
            tokio::time::sleep(wait).await;
            // the wait was computed for exactly one token
            let _ = link.bucket.take(self.bucket_origin.elapsed());
        }
    }

    async fn act(&mut self, step: Step) -> Flow {
        let reply = match step {
            Step::Nothing => return Flow::Continue,
            Step::Update(update, ack) => {
                if self.writer.send(self.link.update(update)).await.is_err() {
                    return Flow::Stop("aggregator is shutting down");
                }
                let Some(seq) = ack else {
                    return Flow::Continue;
                };
                aggregator_message::Kind::Ack(v1::Ack { seq: seq.0 })
            }
            Step::Resync(reason) => aggregator_message::Kind::Resync(v1::Resync { reason }),
            Step::Fail(status, reason) => {
                let _ = self.out.send(Out::Fail(Box::new(status))).await;
                return Flow::Stop(reason);
            }
        };
        let msg = v1::AggregatorMessage { kind: Some(reply) };
        match self.out.send(Out::Message(msg)).await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Stop("agent went away"),
        }
    }
}

/// tonic refuses a message over `max_decoding_message_size` with `OUT_OF_RANGE`; the agent is
/// told `RESOURCE_EXHAUSTED` (what gRPC uses for a message over the receiver's limit) with the
/// flag named, and other errors pass through.
fn too_large(node: &str, remote: &str, status: Status) -> Status {
    if status.code() != tonic::Code::OutOfRange {
        return status;
    }
    let message = format!("{} (--max-message-bytes)", status.message());
    telemetry::stream_limited(node, remote, "max_message_bytes", &message);
    Status::resource_exhausted(message)
}

/// Most held-back containers kept per node status.
const MAX_PENDING: usize = 256;

/// The store's view of an agent status: bounded, names validated (an invalid entry is dropped
/// and counted, never trusted).
fn scrape_status(status: &v1::ScrapeStatus) -> ScrapeStatus {
    let clip = |s: &str, n: usize| s.chars().take(n).collect::<String>();
    let mut dropped = status.pending_dropped;
    let mut pending = Vec::new();
    for p in &status.pending {
        let entry = kubepulse_model::PodKey::new(&p.namespace, &p.pod)
            .and_then(|pod| Ok((pod, kubepulse_model::ContainerName::new(&p.container)?)));
        match entry {
            Ok((pod, container)) if pending.len() < MAX_PENDING => pending.push(PendingContainer {
                pod,
                container,
                reason: clip(&p.reason, 64),
            }),
            _ => dropped = dropped.saturating_add(1),
        }
    }
    ScrapeStatus {
        ok: status.ok,
        error: clip(&status.error, 1024),
        decode_issues: status.decode_issues,
        pending,
        pending_dropped: dropped,
        node_pending: clip(&status.node_pending, 64),
    }
}
