//! The agents' side: the tonic `Ingest` service. `Report` accepts an agent stream exactly as an
//! aggregator does at its start (a hello first, within `--hello-timeout`, with a valid node name
//! and a positive poll interval; messages within `--max-message-bytes`; at most
//! `--max-streams` streams), opens a link in the hub and forwards every later message to it.
//! The identity token and the per-node bounds are checked by the aggregators, which see each
//! link's hello; their verdict comes back as the stream's final status. `Relay` is refused:
//! relays do not chain.

use std::hash::Hasher as _;
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use kubepulse_model::NodeName;
use kubepulse_proto::v1::ingest_server::Ingest;
use kubepulse_proto::v1::{self, agent_message};
use kubepulse_relay_core::{HubError, LinkKey, MessageKind};
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status, Streaming};

use crate::hub::{AgentHandle, HubMsg};
use crate::telemetry;

/// How many messages may wait for one agent (resync requests and the final status).
const AGENT_QUEUE: usize = 4;

/// The tonic service.
#[derive(Clone)]
pub struct RelayService {
    hub: mpsc::Sender<HubMsg>,
    hello_timeout: Duration,
}

impl RelayService {
    /// A service feeding `hub`.
    pub fn new(hub: mpsc::Sender<HubMsg>, hello_timeout: Duration) -> Self {
        Self { hub, hello_timeout }
    }
}

type Outbound<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Ingest for RelayService {
    type ReportStream = Outbound<v1::AggregatorMessage>;
    type RelayStream = Outbound<v1::RelayReplies>;

    async fn report(
        &self,
        request: Request<Streaming<v1::AgentMessage>>,
    ) -> Result<Response<Self::ReportStream>, Status> {
        let remote = kubepulse_shell::grpc::remote(&request);
        self.accept(request.into_inner(), &remote).await
    }

    async fn relay(
        &self,
        _request: Request<Streaming<v1::RelayBatch>>,
    ) -> Result<Response<Self::RelayStream>, Status> {
        Err(Status::unimplemented(
            "this is a kubepulse relay: it accepts agent streams (Report); relays do not chain",
        ))
    }
}

impl RelayService {
    async fn accept(
        &self,
        mut inbound: Streaming<v1::AgentMessage>,
        remote: &str,
    ) -> Result<Response<Outbound<v1::AggregatorMessage>>, Status> {
        let first = tokio::time::timeout(self.hello_timeout, inbound.message())
            .await
            .map_err(|_| {
                refuse(
                    "bad_hello",
                    remote,
                    Status::deadline_exceeded("no hello within the hello timeout"),
                )
            })?
            .map_err(|status| too_large(remote, status))?
            .ok_or_else(|| {
                refuse(
                    "bad_hello",
                    remote,
                    Status::invalid_argument("stream ended before its hello"),
                )
            })?;
        let node = match &first.kind {
            Some(agent_message::Kind::Hello(hello)) => {
                let node = NodeName::new(&hello.node_name).map_err(|e| {
                    refuse(
                        "bad_hello",
                        remote,
                        Status::invalid_argument(format!("hello: {e}")),
                    )
                })?;
                if hello.poll_interval_ms == 0 {
                    return Err(refuse(
                        "bad_hello",
                        remote,
                        Status::invalid_argument("hello: poll interval must be positive"),
                    ));
                }
                node
            }
            _ => {
                return Err(refuse(
                    "bad_hello",
                    remote,
                    Status::invalid_argument("the first message must be a hello"),
                ));
            }
        };
        let (outbound, outbound_rx) = mpsc::channel(AGENT_QUEUE);
        let (ended, ended_rx) = oneshot::channel();
        let (opened, opened_rx) = oneshot::channel();
        let bytes = first.encoded_len();
        let open = HubMsg::Open {
            node: node.to_string(),
            hello: first,
            bytes,
            agent: AgentHandle {
                outbound: outbound.clone(),
                ended,
            },
            opened,
        };
        let stopping = || Status::unavailable("the relay is shutting down");
        self.hub.send(open).await.map_err(|_| stopping())?;
        let link = match opened_rx.await.map_err(|_| stopping())? {
            Ok(link) => link,
            Err(err @ HubError::TooManyLinks { .. }) => {
                return Err(refuse(
                    "max_streams",
                    remote,
                    Status::resource_exhausted(err.to_string()),
                ));
            }
            Err(err) => return Err(Status::internal(err.to_string())),
        };
        tokio::spawn(forward(
            inbound,
            link,
            self.hub.clone(),
            ended_rx,
            outbound,
            remote.to_owned(),
        ));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(outbound_rx),
        )))
    }
}

/// Reads one agent's stream after its hello and hands every message to the hub, until the
/// agent leaves or the hub ends the link (and has queued the stream's final status).
async fn forward(
    mut inbound: Streaming<v1::AgentMessage>,
    link: LinkKey,
    hub: mpsc::Sender<HubMsg>,
    mut ended: oneshot::Receiver<()>,
    outbound: mpsc::Sender<Result<v1::AggregatorMessage, Status>>,
    remote: String,
) {
    loop {
        let message = tokio::select! {
            _ = &mut ended => return,
            message = inbound.message() => message,
        };
        let message = match message {
            Ok(Some(message)) => message,
            Ok(None) => break,
            Err(status) => {
                let status = too_large(&remote, status);
                let _ = outbound.try_send(Err(status));
                break;
            }
        };
        let Some(kind) = message_kind(&message) else {
            let status = refuse(
                "bad_hello",
                &remote,
                Status::invalid_argument("a hello after the first message"),
            );
            let _ = outbound.try_send(Err(status));
            break;
        };
        let bytes = message.encoded_len();
        let push = HubMsg::Push {
            link,
            message,
            bytes,
            kind,
        };
        // a full hub channel waits here: this stream is not read, HTTP/2 slows the agent
        if hub.send(push).await.is_err() {
            return;
        }
    }
    let _ = hub.send(HubMsg::Close { link }).await;
}

/// How the hub treats an agent's message after its hello (`None`: a hello, which only opens a
/// link). A benchmark that batches messages as a relay does classifies them with this.
pub fn message_kind(message: &v1::AgentMessage) -> Option<MessageKind> {
    Some(match &message.kind {
        Some(agent_message::Kind::Hello(_)) => return None,
        Some(agent_message::Kind::Snapshot(_)) => MessageKind::Snapshot,
        Some(agent_message::Kind::Status(status)) => MessageKind::Status {
            fingerprint: fingerprint(status),
        },
        Some(agent_message::Kind::Delta(_)) | None => MessageKind::Delta,
    })
}

/// Equal statuses have equal fingerprints (the encoding of a message is deterministic).
pub fn fingerprint(status: &v1::ScrapeStatus) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    hasher.write(&status.encode_to_vec());
    hasher.finish()
}

fn refuse(reason: &'static str, remote: &str, status: Status) -> Status {
    telemetry::link_refused(reason, remote, status.message());
    status
}

/// A message over `--max-message-bytes` (tonic says OUT_OF_RANGE) ends the stream with
/// RESOURCE_EXHAUSTED naming the flag, as the aggregator does.
fn too_large(remote: &str, status: Status) -> Status {
    if status.code() != tonic::Code::OutOfRange {
        return status;
    }
    let message = format!("{} (--max-message-bytes)", status.message());
    refuse(
        "max_message_bytes",
        remote,
        Status::resource_exhausted(message),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_statuses_share_a_fingerprint() {
        let ok = v1::ScrapeStatus {
            ok: true,
            ..v1::ScrapeStatus::default()
        };
        let failed = v1::ScrapeStatus {
            ok: false,
            error: "kubelet answered 500".into(),
            ..v1::ScrapeStatus::default()
        };
        assert_eq!(fingerprint(&ok), fingerprint(&ok.clone()));
        assert_ne!(fingerprint(&ok), fingerprint(&failed));
    }
}
