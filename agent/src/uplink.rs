//! Stage 3 of the agent: one gRPC stream to every aggregator replica. Each stream opens with a
//! hello and a snapshot, then sends a delta only when the node's view changed (which happens
//! only when the kubelet's sample timestamps advance), a status whenever the kubelet read
//! status changes, and a heartbeat status after every --heartbeat-interval in which nothing
//! else was sent (any message proves the stream alive). A resync
//! request from the aggregator is answered with a fresh snapshot. A broken stream is retried
//! with jittered exponential backoff; replica addresses come from a headless Service
//! re-resolved periodically, or from an explicit list.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kubepulse_model::{NodeName, NodeView, diff};
use kubepulse_proto::StreamEncoder;
use kubepulse_proto::v1::ingest_client::IngestClient;
use kubepulse_proto::v1::{self, agent_message, aggregator_message};
use kubepulse_shell::upstream::{self, jitter};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::transport::ClientTlsConfig;

use crate::Config;
use crate::telemetry;
use crate::tick::{ScrapeStatus, TickOutput};

/// What every stream needs to know.
#[derive(Clone)]
pub struct StreamSettings {
    /// This node.
    pub node: NodeName,
    /// This agent run.
    pub epoch: u64,
    /// The kubelet poll interval (announced in the hello).
    pub poll_interval: Duration,
    /// Heartbeat period.
    pub heartbeat: Duration,
    /// Longest reconnect wait.
    pub max_backoff: Duration,
    /// TLS to the aggregators (`None`: plaintext).
    pub tls: Option<ClientTlsConfig>,
    /// `--aggregator-token-file` (`None`: send no token).
    pub token_file: Option<PathBuf>,
    /// Streams currently up (for readiness).
    pub streams_up: Arc<AtomicUsize>,
}

impl StreamSettings {
    /// Settings from the configuration (reads the aggregator CA bundle).
    pub fn new(config: &Config, epoch: u64, streams_up: Arc<AtomicUsize>) -> anyhow::Result<Self> {
        let tls = config
            .aggregator_flags()
            .client_tls()
            .map_err(anyhow::Error::msg)?;
        Ok(Self {
            node: config.node(),
            epoch,
            poll_interval: config.poll_interval,
            heartbeat: config.heartbeat_interval,
            max_backoff: config.max_backoff,
            tls,
            token_file: (!config.aggregator_token_file.is_empty())
                .then(|| PathBuf::from(&config.aggregator_token_file)),
            streams_up,
        })
    }
}

/// Keeps one stream per aggregator address: explicit endpoints are fixed; the service name is
/// resolved every `resolve_every` and streams follow its addresses.
pub async fn run(
    settings: StreamSettings,
    endpoints: Vec<String>,
    service: Option<String>,
    resolve_every: Duration,
    ticks: watch::Receiver<Arc<TickOutput>>,
) {
    upstream::follow_replicas(endpoints, service, resolve_every, |endpoint| {
        run_endpoint(settings.clone(), endpoint, ticks.clone())
    })
    .await;
}

/// One replica: stream, and reconnect with jittered exponential backoff. Ends when the tick
/// loop is gone (the agent is stopping).
async fn run_endpoint(
    settings: StreamSettings,
    endpoint: String,
    ticks: watch::Receiver<Arc<TickOutput>>,
) {
    let initial = Duration::from_millis(100);
    let mut backoff = initial;
    let mut failures = 0u32;
    {
        let mut warm = ticks.clone();
        if warm.wait_for(|t| t.warm).await.is_err() {
            return;
        }
    }
    loop {
        let mut up = false;
        let err = stream_once(&settings, &endpoint, ticks.clone(), &mut up).await;
        if ticks.has_changed().is_err() {
            if up {
                settings.streams_up.fetch_sub(1, Ordering::Relaxed);
            }
            return;
        }
        if up {
            settings.streams_up.fetch_sub(1, Ordering::Relaxed);
            backoff = initial;
            failures = 0;
        }
        failures = failures.saturating_add(1);
        let wait = jitter(backoff);
        telemetry::stream_down(&endpoint, &err, wait, failures);
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(settings.max_backoff);
    }
}

/// What a heartbeat says: the last read's status, unless no read has finished for two poll
/// intervals (a kubelet that does not answer, until --kubelet-request-timeout): then not ok,
/// so the aggregators stop counting the node fresh and its TTL runs from the last good read
/// instead of from the end of the hung one.
fn heartbeat_status(last: &ScrapeStatus, since_read: Duration, poll: Duration) -> ScrapeStatus {
    let overdue = (poll * 2).max(poll + Duration::from_secs(1));
    if last.ok && since_read > overdue {
        return ScrapeStatus {
            ok: false,
            error: format!(
                "kubelet read in progress for {}s: no answer yet",
                since_read.as_secs()
            ),
            ..ScrapeStatus::default()
        };
    }
    last.clone()
}

/// The identity token, read on every connect (the kubelet rotates projected tokens). A missing
/// or unreadable file sends none, with one warning per agent run: an aggregator that checks
/// identity then refuses the stream and says why.
async fn read_token(path: &Path) -> String {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    match tokio::fs::read_to_string(path).await {
        Ok(token) => token.trim().to_owned(),
        Err(err) => {
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(path = %path.display(), error = %err, "no aggregator identity token (--aggregator-token-file); streams go without one");
            }
            String::new()
        }
    }
}

fn message(seq: u64, kind: agent_message::Kind) -> v1::AgentMessage {
    v1::AgentMessage {
        kind: Some(kind),
        seq,
    }
}

/// Counts a message and its encoded size.
fn record_sent(m: &v1::AgentMessage) {
    let kind = match &m.kind {
        Some(agent_message::Kind::Hello(_)) => "hello",
        Some(agent_message::Kind::Snapshot(_)) => "snapshot",
        Some(agent_message::Kind::Delta(_)) => "delta",
        Some(agent_message::Kind::Status(_)) | None => "status",
    };
    telemetry::message_sent(kind, prost::Message::encoded_len(m));
}

fn status_message(seq: u64, status: &ScrapeStatus) -> v1::AgentMessage {
    message(
        seq,
        agent_message::Kind::Status(v1::ScrapeStatus {
            ok: status.ok,
            error: status.error.clone(),
            decode_issues: status.decode_issues,
            pending: status
                .pending
                .iter()
                .map(|(pod, container, reason)| v1::Pending {
                    namespace: pod.namespace.to_string(),
                    pod: pod.name.to_string(),
                    container: container.to_string(),
                    reason: (*reason).to_owned(),
                })
                .collect(),
            pending_dropped: status.pending_dropped,
            node_pending: status.node_pending.unwrap_or_default().to_owned(),
        }),
    )
}

/// One stream's sending side, without I/O: which messages each event calls for, and when the
/// next heartbeat is due. Every instant is an argument.
///
/// A heartbeat proves the stream and the kubelet reads alive. Any message does that as well
/// (the aggregators count a snapshot, a delta or an ok status as a fresh report), so a heartbeat
/// goes out only after a full heartbeat period in which nothing else was sent: with the kubelet
/// refreshing every 15 s and a 5 s period, a refresh period carries its delta and two
/// heartbeats instead of three.
struct Outbox {
    encoder: StreamEncoder,
    /// The last snapshot-or-delta sequence number sent.
    seq: u64,
    /// The view the aggregator holds from this stream.
    sent_view: Arc<NodeView>,
    /// The last kubelet read status the tick loop published.
    read_status: ScrapeStatus,
    /// The status the aggregator holds from this stream (heartbeats included: an overdue read
    /// sends a not-ok heartbeat, and the next good read must then say ok again).
    wire_status: ScrapeStatus,
    /// When the tick loop last published a read.
    last_read: Instant,
    /// When the last message went out on this stream.
    last_sent: Instant,
    heartbeat: Duration,
    poll_interval: Duration,
}

impl Outbox {
    /// The stream's opening: hello, snapshot, status.
    fn open(
        heartbeat: Duration,
        poll_interval: Duration,
        hello: v1::Hello,
        current: &TickOutput,
        now: Instant,
    ) -> (Self, [v1::AgentMessage; 3]) {
        let mut encoder = StreamEncoder::new();
        let snapshot = encoder.snapshot(&current.view);
        let outbox = Self {
            encoder,
            seq: 0,
            sent_view: current.view.clone(),
            read_status: current.status.clone(),
            wire_status: current.status.clone(),
            last_read: now,
            last_sent: now,
            heartbeat,
            poll_interval,
        };
        let opening = [
            message(0, agent_message::Kind::Hello(hello)),
            message(0, agent_message::Kind::Snapshot(snapshot)),
            status_message(0, &outbox.wire_status),
        ];
        (outbox, opening)
    }

    /// The tick loop published a read: a delta if the view changed, a status if it differs
    /// from the one the aggregator holds.
    fn on_read(&mut self, current: &TickOutput, now: Instant) -> Vec<v1::AgentMessage> {
        self.last_read = now;
        let mut out = Vec::new();
        if !Arc::ptr_eq(&current.view, &self.sent_view) {
            let delta = diff(&self.sent_view, &current.view);
            if !delta.is_empty() {
                self.seq += 1;
                let kind = if self.encoder.needs_snapshot() {
                    agent_message::Kind::Snapshot(self.encoder.snapshot(&current.view))
                } else {
                    agent_message::Kind::Delta(self.encoder.delta(&delta))
                };
                out.push(message(self.seq, kind));
            }
            self.sent_view = current.view.clone();
        }
        if current.status != self.read_status {
            self.read_status = current.status.clone();
        }
        if self.read_status != self.wire_status {
            self.wire_status = self.read_status.clone();
            out.push(status_message(self.seq, &self.wire_status));
        }
        self.sent(out, now)
    }

    /// When the next heartbeat is due: a full period after the last message sent.
    fn heartbeat_due(&self) -> Instant {
        self.last_sent + self.heartbeat
    }

    /// The heartbeat timer fired: a status if nothing was sent for a full period.
    fn on_heartbeat_timer(&mut self, now: Instant) -> Vec<v1::AgentMessage> {
        if now < self.heartbeat_due() {
            return Vec::new();
        }
        let since_read = now.saturating_duration_since(self.last_read);
        self.wire_status = heartbeat_status(&self.read_status, since_read, self.poll_interval);
        let out = vec![status_message(self.seq, &self.wire_status)];
        self.sent(out, now)
    }

    /// The aggregator asked for a resync: a fresh snapshot of what it should hold.
    fn on_resync(&mut self, now: Instant) -> Vec<v1::AgentMessage> {
        self.seq += 1;
        let snapshot = self.encoder.snapshot(&self.sent_view);
        let out = vec![message(self.seq, agent_message::Kind::Snapshot(snapshot))];
        self.sent(out, now)
    }

    fn sent(&mut self, out: Vec<v1::AgentMessage>, now: Instant) -> Vec<v1::AgentMessage> {
        if !out.is_empty() {
            self.last_sent = now;
        }
        out
    }
}

/// Runs one stream until it fails; returns why.
async fn stream_once(
    settings: &StreamSettings,
    endpoint: &str,
    mut ticks: watch::Receiver<Arc<TickOutput>>,
    up: &mut bool,
) -> String {
    let channel = match upstream::connect(endpoint, settings.tls.as_ref()).await {
        Ok(c) => c,
        Err(err) => return err,
    };
    let token = match &settings.token_file {
        Some(path) => read_token(path).await,
        None => String::new(),
    };
    let mut client = IngestClient::new(channel);
    let (tx, rx) = mpsc::channel::<v1::AgentMessage>(64);
    let current = ticks.borrow_and_update().clone();
    let hello = v1::Hello {
        node_name: settings.node.to_string(),
        epoch: settings.epoch,
        poll_interval_ms: settings.poll_interval.as_millis().min(u128::from(u32::MAX)) as u32,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        token,
    };
    let (mut outbox, opening) = Outbox::open(
        settings.heartbeat,
        settings.poll_interval,
        hello,
        &current,
        Instant::now(),
    );
    for m in opening {
        record_sent(&m);
        if tx.send(m).await.is_err() {
            return "stream closed while opening".to_owned();
        }
    }
    let response = match client
        .report(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    {
        Ok(r) => r,
        // a refusal says why (identity, limits): keep its code
        Err(status) => return format!("open stream: {:?}: {}", status.code(), status.message()),
    };
    let mut inbound = response.into_inner();
    *up = true;
    settings.streams_up.fetch_add(1, Ordering::Relaxed);
    telemetry::stream_up(endpoint);
    // the opening counts from here: the stream is up
    outbox.last_read = Instant::now();
    outbox.last_sent = outbox.last_read;
    loop {
        let out = tokio::select! {
            changed = ticks.changed() => {
                if changed.is_err() {
                    return "agent stopping".to_owned();
                }
                let current = ticks.borrow_and_update().clone();
                outbox.on_read(&current, Instant::now())
            }
            _ = tokio::time::sleep_until(outbox.heartbeat_due()) => {
                outbox.on_heartbeat_timer(Instant::now())
            }
            msg = inbound.message() => match msg {
                Ok(Some(msg)) => match msg.kind {
                    Some(aggregator_message::Kind::Resync(r)) => {
                        telemetry::resync(endpoint, &r.reason);
                        outbox.on_resync(Instant::now())
                    }
                    Some(aggregator_message::Kind::Ack(_)) | None => Vec::new(),
                },
                Ok(None) => return "aggregator closed the stream".to_owned(),
                Err(status) => return format!("stream error: {}", status.message()),
            },
        };
        for m in out {
            record_sent(&m);
            if tx.send(m).await.is_err() {
                return "stream closed".to_owned();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use kubepulse_model::{ContainerName, PodKey, PodView, Sample, Timestamp, Usage, Window};

    const PERIOD: Duration = Duration::from_secs(5);
    const POLL: Duration = Duration::from_secs(1);

    /// A published read whose view has one pod at CPU `cpu`.
    fn read(cpu: u64, status: &ScrapeStatus) -> TickOutput {
        let sample = Sample {
            usage: Usage {
                cpu_nanocores: cpu,
                memory_bytes: 1 << 20,
            },
            timestamp: Timestamp::from_millis(1_700_000_000_000 + cpu as i64),
            window: Window(15_000_000_000),
        };
        let mut pod = PodView::default();
        pod.containers
            .insert(ContainerName::new("app").unwrap(), sample);
        let mut view = NodeView::default();
        view.pods.insert(PodKey::new("shop", "web-1").unwrap(), pod);
        TickOutput {
            view: Arc::new(view),
            status: status.clone(),
            ticks: 1,
            warm: true,
        }
    }

    fn ok() -> ScrapeStatus {
        ScrapeStatus {
            ok: true,
            ..ScrapeStatus::default()
        }
    }

    fn hello() -> v1::Hello {
        v1::Hello {
            node_name: "node-1".to_owned(),
            ..v1::Hello::default()
        }
    }

    /// The kinds of `messages`, in order.
    fn kinds(messages: &[v1::AgentMessage]) -> Vec<&'static str> {
        messages
            .iter()
            .map(|m| match &m.kind {
                Some(agent_message::Kind::Hello(_)) => "hello",
                Some(agent_message::Kind::Snapshot(_)) => "snapshot",
                Some(agent_message::Kind::Delta(_)) => "delta",
                Some(agent_message::Kind::Status(s)) if s.ok => "status",
                Some(agent_message::Kind::Status(_)) => "status not ok",
                None => "none",
            })
            .collect()
    }

    #[test]
    fn the_opening_is_hello_snapshot_status() {
        let t0 = Instant::now();
        let (outbox, opening) = Outbox::open(PERIOD, POLL, hello(), &read(1, &ok()), t0);
        assert_eq!(kinds(&opening), ["hello", "snapshot", "status"]);
        assert!(opening.iter().all(|m| m.seq == 0));
        assert_eq!(outbox.heartbeat_due(), t0 + PERIOD);
    }

    /// A 1 s poll, a kubelet refreshing every 15 s, the heartbeat timer firing every second
    /// (the old fixed 5 s schedule included): only a full period without any message sends one.
    #[test]
    fn no_heartbeat_follows_a_delta_inside_the_period() {
        let s = Duration::from_secs;
        let t0 = Instant::now();
        let (mut outbox, _) = Outbox::open(PERIOD, POLL, hello(), &read(1, &ok()), t0);
        let mut current = read(1, &ok());
        let mut sent = Vec::new();
        for second in 1..=40u64 {
            let now = t0 + s(second);
            if second % 15 == 2 {
                current = read(second, &ok()); // the kubelet refreshed
            }
            for m in outbox.on_read(&current, now) {
                sent.push((second, kinds(&[m])[0]));
            }
            // the timer firing every second covers the old fixed schedule and the due times
            for m in outbox.on_heartbeat_timer(now) {
                sent.push((second, kinds(&[m])[0]));
            }
        }
        let deltas: Vec<u64> = sent
            .iter()
            .filter(|(_, k)| *k == "delta")
            .map(|(at, _)| *at)
            .collect();
        assert_eq!(deltas, [2, 17, 32]);
        let mut last = 0;
        for &(at, kind) in &sent {
            if kind == "status" {
                assert!(
                    at >= last + PERIOD.as_secs(),
                    "a heartbeat at {at}s, {}s after the message at {last}s: {sent:?}",
                    at - last
                );
            }
            last = at;
        }
        // one delta and two heartbeats per 15 s refresh
        assert_eq!(
            sent,
            [
                (2, "delta"),
                (7, "status"),
                (12, "status"),
                (17, "delta"),
                (22, "status"),
                (27, "status"),
                (32, "delta"),
                (37, "status")
            ]
        );
    }

    #[test]
    fn a_quiet_stream_sends_a_heartbeat_every_period() {
        let t0 = Instant::now();
        let (mut outbox, _) = Outbox::open(PERIOD, POLL, hello(), &read(1, &ok()), t0);
        let current = read(1, &ok());
        assert!(outbox.on_heartbeat_timer(t0 + PERIOD / 2).is_empty());
        for n in 1..=3u32 {
            assert!(outbox.on_read(&current, t0 + PERIOD * n - POLL).is_empty());
            let beat = outbox.on_heartbeat_timer(outbox.heartbeat_due());
            assert_eq!(kinds(&beat), ["status"]);
            assert_eq!(outbox.heartbeat_due(), t0 + PERIOD * (n + 1));
        }
    }

    #[test]
    fn a_status_change_is_sent_at_once_and_counts_as_a_message() {
        let t0 = Instant::now();
        let (mut outbox, _) = Outbox::open(PERIOD, POLL, hello(), &read(1, &ok()), t0);
        let failed = ScrapeStatus {
            ok: false,
            error: "kubelet answered 500".to_owned(),
            ..ScrapeStatus::default()
        };
        let mut current = read(1, &failed);
        let out = outbox.on_read(&current, t0 + POLL);
        assert_eq!(kinds(&out), ["status not ok"]);
        assert_eq!(outbox.heartbeat_due(), t0 + POLL + PERIOD);
        // a failing kubelet: heartbeats repeat the failure
        assert!(outbox.on_read(&current, t0 + POLL * 2).is_empty());
        let beat = outbox.on_heartbeat_timer(t0 + POLL + PERIOD);
        assert_eq!(kinds(&beat), ["status not ok"]);
        current.status = ok();
        assert_eq!(
            kinds(&outbox.on_read(&current, t0 + PERIOD * 2)),
            ["status"]
        );
    }

    /// A hung kubelet read: the heartbeat says not ok; the next good read must say ok again
    /// even though its status equals the last one the tick loop published, or the aggregator
    /// would keep "not ok" while deltas hold heartbeats back.
    #[test]
    fn a_good_read_after_an_overdue_heartbeat_says_ok_again() {
        let t0 = Instant::now();
        let (mut outbox, _) = Outbox::open(PERIOD, POLL, hello(), &read(1, &ok()), t0);
        let beat = outbox.on_heartbeat_timer(t0 + PERIOD);
        assert_eq!(kinds(&beat), ["status not ok"]);
        let out = outbox.on_read(&read(2, &ok()), t0 + PERIOD + POLL);
        assert_eq!(kinds(&out), ["delta", "status"]);
        assert!(out.iter().all(|m| m.seq == 1));
    }

    #[test]
    fn a_resync_sends_a_snapshot_and_counts_as_a_message() {
        let t0 = Instant::now();
        let (mut outbox, _) = Outbox::open(PERIOD, POLL, hello(), &read(1, &ok()), t0);
        let out = outbox.on_resync(t0 + POLL * 3);
        assert_eq!(kinds(&out), ["snapshot"]);
        assert_eq!(out[0].seq, 1);
        assert!(outbox.on_heartbeat_timer(t0 + PERIOD).is_empty());
        assert_eq!(outbox.heartbeat_due(), t0 + POLL * 3 + PERIOD);
    }

    #[test]
    fn a_heartbeat_during_a_hung_kubelet_read_is_not_ok() {
        let ok = ScrapeStatus {
            ok: true,
            ..ScrapeStatus::default()
        };
        let poll = Duration::from_secs(1);
        assert_eq!(heartbeat_status(&ok, Duration::from_millis(1500), poll), ok);
        let overdue = heartbeat_status(&ok, Duration::from_secs(3), poll);
        assert!(!overdue.ok);
        assert_eq!(
            overdue.error,
            "kubelet read in progress for 3s: no answer yet"
        );
        let failed = ScrapeStatus {
            ok: false,
            error: "kubelet answered 500".to_owned(),
            ..ScrapeStatus::default()
        };
        assert_eq!(
            heartbeat_status(&failed, Duration::from_secs(9), poll),
            failed
        );
    }
}
