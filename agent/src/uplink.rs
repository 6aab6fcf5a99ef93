//! Stage 3 of the agent: one gRPC stream to every aggregator replica. Each stream opens with a
//! hello and a snapshot, then sends a delta only when the node's view changed (which happens
//! only when the kubelet's sample timestamps advance), a status whenever the kubelet read
//! status changes, and a heartbeat status at least every --heartbeat-interval. A resync
//! request from the aggregator is answered with a fresh snapshot. A broken stream is retried
//! with jittered exponential backoff; replica addresses come from a headless Service
//! re-resolved periodically, or from an explicit list.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kubepulse_model::{NodeName, NodeView, diff};
use kubepulse_proto::StreamEncoder;
use kubepulse_proto::v1::ingest_client::IngestClient;
use kubepulse_proto::v1::{self, agent_message, aggregator_message};
use rand::Rng as _;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

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
        let tls = if config.aggregator_plaintext {
            None
        } else {
            let mut tls = ClientTlsConfig::new();
            if let Some(ca) = &config.aggregator_ca_file {
                let pem = std::fs::read(ca).map_err(|e| {
                    anyhow::anyhow!("read --aggregator-ca-file {}: {e}", ca.display())
                })?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            let name = config.aggregator_tls_server_name.clone().or_else(|| {
                config
                    .aggregator_service
                    .as_deref()
                    .and_then(crate::config::split_host_port)
                    .map(|(host, _)| host.to_owned())
            });
            if let Some(name) = name {
                tls = tls.domain_name(name);
            }
            Some(tls)
        };
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
    // every stream task is owned here: dropping this future (agent shutdown) aborts them all
    let mut streams = JoinSet::new();
    for endpoint in endpoints {
        streams.spawn(run_endpoint(settings.clone(), endpoint, ticks.clone()));
    }
    let Some(service) = service else {
        while streams.join_next().await.is_some() {}
        return;
    };
    let mut resolved: HashMap<String, AbortOnDrop> = HashMap::new();
    loop {
        match tokio::net::lookup_host(&service).await {
            Ok(addrs) => {
                let now: Vec<String> = addrs.map(|a| a.to_string()).collect();
                resolved.retain(|addr, _| {
                    let keep = now.contains(addr);
                    if !keep {
                        tracing::info!(endpoint = %addr, "aggregator replica left the service");
                    }
                    keep
                });
                for addr in now {
                    resolved.entry(addr.clone()).or_insert_with(|| {
                        AbortOnDrop(tokio::spawn(run_endpoint(
                            settings.clone(),
                            addr,
                            ticks.clone(),
                        )))
                    });
                }
            }
            Err(err) => {
                tracing::warn!(service = %service, error = %err, "resolve aggregator service failed; keeping known replicas");
            }
        }
        tokio::time::sleep(resolve_every).await;
    }
}

/// A stream task that ends when its handle is dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
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

/// Full jitter over the upper half: a fleet reconnecting after an aggregator restart spreads out.
fn jitter(backoff: Duration) -> Duration {
    let half = backoff / 2;
    half + rand::rng().random_range(Duration::ZERO..=half)
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

/// Runs one stream until it fails; returns why.
async fn stream_once(
    settings: &StreamSettings,
    endpoint: &str,
    mut ticks: watch::Receiver<Arc<TickOutput>>,
    up: &mut bool,
) -> String {
    let scheme = if settings.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let mut ep = match Endpoint::from_shared(format!("{scheme}://{endpoint}")) {
        Ok(ep) => ep
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10))
            .tcp_nodelay(true),
        Err(err) => return format!("invalid endpoint: {err}"),
    };
    if let Some(tls) = &settings.tls {
        ep = match ep.tls_config(tls.clone()) {
            Ok(ep) => ep,
            Err(err) => return format!("TLS config: {err}"),
        };
    }
    let channel = match ep.connect().await {
        Ok(c) => c,
        Err(err) => return format!("connect: {err}"),
    };
    let token = match &settings.token_file {
        Some(path) => read_token(path).await,
        None => String::new(),
    };
    let mut client = IngestClient::new(channel);
    let (tx, rx) = mpsc::channel::<v1::AgentMessage>(64);
    let mut encoder = StreamEncoder::new();
    let mut seq = 0u64;
    let current = ticks.borrow_and_update().clone();
    let hello = v1::Hello {
        node_name: settings.node.to_string(),
        epoch: settings.epoch,
        poll_interval_ms: settings.poll_interval.as_millis().min(u128::from(u32::MAX)) as u32,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        token,
    };
    let mut sent_view: Arc<NodeView> = current.view.clone();
    let mut sent_status = current.status.clone();
    let opening = [
        message(0, agent_message::Kind::Hello(hello)),
        message(
            0,
            agent_message::Kind::Snapshot(encoder.snapshot(&sent_view)),
        ),
        status_message(0, &sent_status),
    ];
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
    let mut last_read = tokio::time::Instant::now();
    let mut heartbeat = tokio::time::interval(settings.heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.tick().await;
    loop {
        let out = tokio::select! {
            changed = ticks.changed() => {
                if changed.is_err() {
                    return "agent stopping".to_owned();
                }
                last_read = tokio::time::Instant::now();
                let current = ticks.borrow_and_update().clone();
                let mut out = Vec::new();
                if !Arc::ptr_eq(&current.view, &sent_view) {
                    let delta = diff(&sent_view, &current.view);
                    if !delta.is_empty() {
                        seq += 1;
                        let kind = if encoder.needs_snapshot() {
                            agent_message::Kind::Snapshot(encoder.snapshot(&current.view))
                        } else {
                            agent_message::Kind::Delta(encoder.delta(&delta))
                        };
                        out.push(message(seq, kind));
                    }
                    sent_view = current.view.clone();
                }
                if current.status != sent_status {
                    sent_status = current.status.clone();
                    out.push(status_message(seq, &sent_status));
                }
                out
            }
            _ = heartbeat.tick() => {
                let status = heartbeat_status(&sent_status, last_read.elapsed(), settings.poll_interval);
                vec![status_message(seq, &status)]
            }
            msg = inbound.message() => match msg {
                Ok(Some(msg)) => match msg.kind {
                    Some(aggregator_message::Kind::Resync(r)) => {
                        telemetry::resync(endpoint, &r.reason);
                        seq += 1;
                        vec![message(seq, agent_message::Kind::Snapshot(encoder.snapshot(&sent_view)))]
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
