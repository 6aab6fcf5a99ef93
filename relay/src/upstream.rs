//! The aggregators' side: one relay stream per aggregator replica, carrying the hub's batches
//! and bringing back the replica's replies. Replica addresses, TLS and backoff are the agent's
//! (`kubepulse_shell::upstream`): a headless Service re-resolved periodically and/or explicit
//! endpoints, the aggregators' certificate verified against a CA and a server name, jittered
//! exponential backoff up to `--max-backoff`. A replica the hub drops for lag is disconnected
//! and reconnected like a failed one; the hub replays every link's hello to it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kubepulse_proto::v1::{self, ingest_client::IngestClient};
use kubepulse_relay_core::UpstreamId;
use kubepulse_shell::upstream::{self, jitter};
use tokio::sync::{mpsc, oneshot};
use tonic::transport::ClientTlsConfig;

use crate::hub::{HubMsg, UPSTREAM_QUEUE};
use crate::{Config, telemetry};

/// A relay stream up this long counts as healthy: the backoff starts over after it ends.
const STABLE: Duration = Duration::from_secs(10);

/// What every replica stream needs.
#[derive(Clone)]
pub struct UpstreamSettings {
    /// TLS to the aggregators (`None`: plaintext).
    pub tls: Option<ClientTlsConfig>,
    /// Longest reconnect wait.
    pub max_backoff: Duration,
    /// Numbers for connections.
    pub next_id: Arc<AtomicU64>,
}

impl UpstreamSettings {
    /// Settings from the configuration (reads the aggregator CA bundle).
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let tls = config
            .aggregator_flags()
            .client_tls()
            .map_err(anyhow::Error::msg)?;
        Ok(Self {
            tls,
            max_backoff: config.max_backoff,
            next_id: Arc::new(AtomicU64::new(1)),
        })
    }
}

/// Keeps one relay stream per aggregator address until the hub is gone.
pub async fn run(
    settings: UpstreamSettings,
    endpoints: Vec<String>,
    service: Option<String>,
    resolve_every: Duration,
    hub: mpsc::Sender<HubMsg>,
) {
    upstream::follow_replicas(endpoints, service, resolve_every, |endpoint| {
        run_endpoint(settings.clone(), endpoint, hub.clone())
    })
    .await;
}

/// One replica: stream, and reconnect with jittered exponential backoff.
async fn run_endpoint(settings: UpstreamSettings, endpoint: String, hub: mpsc::Sender<HubMsg>) {
    let initial = Duration::from_millis(100);
    let mut backoff = initial;
    let mut failures = 0u32;
    loop {
        let mut up = false;
        let started = tokio::time::Instant::now();
        let err = stream_once(&settings, &endpoint, &hub, &mut up).await;
        if hub.is_closed() {
            return;
        }
        // every connect replays the hellos and asks every agent for a snapshot: a replica that
        // accepts and then drops the stream at once is retried with a growing wait, not at once
        if up && started.elapsed() >= STABLE {
            backoff = initial;
            failures = 0;
        }
        failures = failures.saturating_add(1);
        let wait = jitter(backoff);
        telemetry::upstream_down(&endpoint, &err, wait, failures);
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(settings.max_backoff);
    }
}

/// Runs one relay stream until it fails; returns why.
async fn stream_once(
    settings: &UpstreamSettings,
    endpoint: &str,
    hub: &mpsc::Sender<HubMsg>,
    up: &mut bool,
) -> String {
    let channel = match upstream::connect(endpoint, settings.tls.as_ref()).await {
        Ok(channel) => channel,
        Err(err) => return err,
    };
    let mut client = IngestClient::new(channel);
    let id = UpstreamId(settings.next_id.fetch_add(1, Ordering::Relaxed));
    let (batches, batches_rx) = mpsc::channel::<v1::RelayBatch>(UPSTREAM_QUEUE);
    let (dropped, mut dropped_rx) = oneshot::channel();
    // the hub learns of the stream once the replica accepted it (an aggregator refusing the
    // call costs no replay); it starts queueing then, hellos first
    let response = match client
        .relay(tokio_stream::wrappers::ReceiverStream::new(batches_rx))
        .await
    {
        Ok(response) => response,
        Err(status) => {
            return format!(
                "open relay stream: {:?}: {}",
                status.code(),
                status.message()
            );
        }
    };
    let opened = HubMsg::UpstreamUp {
        id,
        endpoint: endpoint.to_owned(),
        batches,
        dropped,
    };
    if hub.send(opened).await.is_err() {
        return "relay stopping".to_owned();
    }
    *up = true;
    let mut inbound = response.into_inner();
    let stream = async {
        loop {
            match inbound.message().await {
                Ok(Some(replies)) => {
                    if hub.send(HubMsg::Replies { id, replies }).await.is_err() {
                        return "relay stopping".to_owned();
                    }
                }
                Ok(None) => return "aggregator closed the relay stream".to_owned(),
                Err(status) => {
                    return format!(
                        "relay stream error: {:?}: {}",
                        status.code(),
                        status.message()
                    );
                }
            }
        }
    };
    let err = tokio::select! {
        err = stream => err,
        _ = &mut dropped_rx => "fell behind (--max-pending-bytes)".to_owned(),
    };
    let _ = hub.send(HubMsg::UpstreamDown { id }).await;
    err
}
