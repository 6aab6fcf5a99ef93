//! Logging setup and the aggregator's named events. Call sites read like
//! `telemetry::stream_opened(&node, epoch)`, so every recurring event has one wording, and
//! updates its [`metrics`] in the same place.
//!
//! Nothing here logs per message or per request at INFO: streams opening and closing, resyncs,
//! expiries and kubelet-read transitions are one line each (requests are DEBUG lines of
//! `kubepulse_aggregator::http`).

use std::time::SystemTime;

use kubepulse_aggregator_core::store::Update;
use kubepulse_model::{NodeName, Reshape, Sample, Timestamp};

use crate::metrics;

pub use kubepulse_shell::{LogFormat, init_logging as init, shutdown_signal};

/// Why the aggregator asks an agent for a fresh snapshot (the `reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResyncReason {
    /// A sequence number was skipped.
    Gap,
    /// A snapshot or delta could not be decoded.
    Invalid,
    /// The store could not apply a delta to the view it holds.
    Store,
}

/// What kind of ingest error (the `kind` label of `ingest_errors`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IngestError {
    /// An undecodable snapshot or delta.
    InvalidMessage,
    /// A stream breaking the protocol (no hello, a second hello, a bad hello).
    Protocol,
    /// A transport error ended a stream.
    Stream,
}

/// A metrics-server flag was given that means nothing here (one WARN per flag, at start).
pub fn flag_ignored(ignored: &crate::compat::Ignored) {
    tracing::warn!(
        flag = ignored.flag,
        value = %ignored.value,
        why = ignored.why,
        "ignoring a metrics-server flag"
    );
}

/// An agent stream said hello.
pub fn stream_opened(node: &NodeName, epoch: u64, remote: &str) {
    metrics::get().streams_connected.inc();
    tracing::info!(node = %node, epoch, remote, "agent stream opened");
}

/// An agent stream ended.
pub fn stream_closed(node: &NodeName, reason: &str) {
    metrics::get().streams_connected.dec();
    tracing::info!(node = %node, reason, "agent stream closed");
}

/// A stream was refused before its hello completed (logged: an agent that cannot connect is
/// what an operator looks for).
pub fn stream_refused(remote: &str, error: &str) {
    ingest_error(IngestError::Protocol);
    tracing::warn!(remote, error, "agent stream refused");
}

/// A stream was refused or closed by a bound (`reason`: `max_streams_per_node`,
/// `max_streams`, `max_message_bytes`, `max_pods_per_node`, `max_containers_per_node`) or an
/// identity check; one WARN line each, since the agent retries with backoff.
pub fn stream_limited(node: &str, remote: &str, reason: &'static str, message: &str) {
    metrics::get()
        .streams_refused
        .get_or_create(&[("reason", reason)])
        .inc();
    tracing::warn!(node, remote, reason, message, "agent stream refused");
}

/// How an agent token was judged (the `method` label of `agent_token_verifications`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenVerification {
    /// Against the service-account issuer's public keys.
    Local,
    /// By a TokenReview (not counted when the answer came from the cache).
    TokenReview,
}

/// An agent token was verified or refused by `method` (counted only: the stream's outcome is
/// logged by [`stream_limited`] or [`stream_opened`]).
pub fn agent_token_verified(method: TokenVerification) {
    let method = match method {
        TokenVerification::Local => "local",
        TokenVerification::TokenReview => "tokenreview",
    };
    metrics::get()
        .agent_token_verifications
        .get_or_create(&[("method", method)])
        .inc();
}

/// The service-account issuer's public keys were (re)fetched: one INFO line.
pub fn issuer_keys_fetched(issuer: &str, keys: usize, skipped: usize) {
    tracing::info!(
        issuer,
        keys,
        skipped,
        "agent tokens are verified locally against the service-account issuer's public keys"
    );
}

/// The issuer's keys could not be fetched (at most one WARN line per refetch interval);
/// `local_only`: agents are refused until they are, else their tokens are reviewed.
pub fn issuer_keys_unavailable(error: &anyhow::Error, local_only: bool) {
    let fallback = if local_only {
        "agents are refused until they can be fetched (--agent-token-verification=local)"
    } else {
        "agent tokens are reviewed by the API server (TokenReview)"
    };
    tracing::warn!(error = %format!("{error:#}"), "service-account issuer keys unavailable: {fallback}");
}

/// The writer dropped a resync request: one is already queued for the stream (counted only).
pub fn resync_coalesced() {
    metrics::get().resyncs_coalesced.inc();
}

/// A stream's message waited for its rate limit; logged once per stream (`first`).
pub fn stream_throttled(node: &NodeName, first: bool, per_second: u32) {
    metrics::get().ingest_throttled.inc();
    if first {
        tracing::warn!(
            node = %node,
            per_second,
            "agent stream throttled: it sends more than --max-messages-per-second-per-stream"
        );
    }
}

/// An API request was refused or cut off by an overload bound (`reason`:
/// `max_requests_inflight`, `request_timeout`); counted only, since a flood would flood the
/// log too.
pub fn api_overloaded(reason: &'static str) {
    metrics::get()
        .api_overloaded
        .get_or_create(&[("reason", reason)])
        .inc();
}

/// An ingest error was counted (logging, if any, is the caller's: most are logged by the
/// event they cause, a resync or a closed stream).
pub fn ingest_error(kind: IngestError) {
    let label = match kind {
        IngestError::InvalidMessage => "invalid_message",
        IngestError::Protocol => "protocol",
        IngestError::Stream => "stream",
    };
    metrics::get()
        .ingest_errors
        .get_or_create(&[("kind", label)])
        .inc();
}

/// An agent message of `kind` (`snapshot`, `delta`, `status`) arrived.
pub fn message_received(kind: &'static str) {
    metrics::get()
        .ingest_messages
        .get_or_create(&[("kind", kind)])
        .inc();
}

/// The newest kubelet sample time an update carries (`None` for a status or an update
/// without samples), for [`update_applied`].
pub fn newest_sample(update: &Update) -> Option<Timestamp> {
    match update {
        Update::Snapshot(usage) => newest(
            usage
                .pods
                .iter()
                .flat_map(|(_, p)| p.containers().map(|(_, s)| s.timestamp)),
            usage.node.as_ref(),
        ),
        Update::Samples(update) => newest(
            update.samples.iter().map(|(_, s)| s.timestamp),
            update.node.sample(),
        ),
        Update::Delta(delta) | Update::Reshape(Reshape { delta, .. }) => newest(
            delta.upserts.iter().map(|(_, _, s)| s.timestamp),
            delta.node.sample(),
        ),
        Update::Status(_) => None,
    }
}

/// The newest timestamp of the containers' samples and the node's.
fn newest(containers: impl Iterator<Item = Timestamp>, node: Option<&Sample>) -> Option<Timestamp> {
    containers.chain(node.map(|s| s.timestamp)).max()
}

/// An update whose newest sample is `newest` was applied to the store: observes the lag.
pub fn update_applied(newest: Timestamp) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default();
    let lag = now.saturating_sub(newest.as_nanos()).max(0) as f64 / 1e9;
    metrics::get().ingest_lag.observe(lag);
}

/// The aggregator asked an agent for a fresh snapshot.
pub fn resync_requested(node: &NodeName, why: ResyncReason, reason: &str) {
    let label = match why {
        ResyncReason::Gap => "gap",
        ResyncReason::Invalid => "invalid",
        ResyncReason::Store => "store",
    };
    metrics::get()
        .resyncs
        .get_or_create(&[("reason", label)])
        .inc();
    tracing::warn!(node = %node, reason, "asked agent for a resync");
}

/// A node's data expired.
pub fn node_expired(node: &NodeName) {
    metrics::get().nodes_expired.inc();
    tracing::warn!(node = %node, "node data expired: no successful kubelet read within its TTL");
}

/// An agent reported that its kubelet read failed or recovered.
pub fn scrape_status_changed(node: &NodeName, ok: bool, error: &str) {
    if ok {
        tracing::info!(node = %node, "kubelet reads recovered");
    } else {
        tracing::warn!(node = %node, error, "agent reports failing kubelet reads");
    }
}
