//! Logging setup and the agent's named events: call sites read like
//! `telemetry::scrape_failed(&err)`, so each recurring event has one wording and level, and
//! updates its [`metrics`](crate::metrics::Metrics) in the same place.
//!
//! Nothing here logs at INFO or above per tick: a successful read is silent, a failing one is
//! logged when it starts failing (then at DEBUG), as are new decode issues.

use std::time::Duration;

use kubepulse_agent_core::node_state::ObserveSummary;

use crate::metrics;

pub use kubepulse_shell::{LogFormat, init_logging as init, shutdown_signal};

/// How a kubelet read ended, as the `result` label says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadResult {
    /// Decoded, usable.
    Ok,
    /// No answer, an error status, a timeout, an oversized body.
    Failed,
    /// An answer without usable samples (or the kubelet's own `resource_scrape_error`).
    Unusable,
}

/// One kubelet read finished after `took`.
pub fn kubelet_read(result: ReadResult, took: Duration) {
    let m = metrics::get();
    let label = match result {
        ReadResult::Ok => "ok",
        ReadResult::Failed => "failed",
        ReadResult::Unusable => "unusable",
    };
    m.kubelet_reads.get_or_create(&[("result", label)]).inc();
    m.kubelet_read_duration.observe(took.as_secs_f64());
}

/// A kubelet read returned the bytes of the last body decoded, which is not decoded again; it
/// counts with that body's `result`.
pub fn body_repeated(result: ReadResult, took: Duration) {
    kubelet_read(result, took);
    metrics::get().kubelet_bodies_repeated.inc();
}

/// A kubelet read failed (logged on the transition from ok, then at debug level).
pub fn scrape_failed(error: &str, first: bool) {
    if first {
        tracing::warn!(
            error,
            "kubelet read failed; keeping the last good values until the aggregator's TTL"
        );
    } else {
        tracing::debug!(error, "kubelet read failed again");
    }
}

/// Kubelet reads work again.
pub fn scrape_recovered() {
    tracing::info!("kubelet reads recovered");
}

/// Some lines of a kubelet body could not be decoded; `changed` when the count differs from
/// the previous read (only then is it a WARN: a kubelet that always emits one odd line is
/// reported once, not every second).
pub fn decode_issues(count: usize, first: &str, changed: bool) {
    metrics::get().decode_issues.inc_by(count as u64);
    if changed {
        tracing::warn!(
            count,
            first,
            "kubelet body had lines that could not be decoded"
        );
    } else {
        tracing::debug!(
            count,
            first,
            "kubelet body had lines that could not be decoded"
        );
    }
}

/// A read was observed into the node's view.
pub fn observed(summary: &ObserveSummary) {
    let m = metrics::get();
    m.pods_served.set(summary.pods_served as i64);
    m.pods_held_back.set(summary.pods_held_back as i64);
    m.containers_held_back
        .set(summary.containers_pending as i64);
    m.restarts_detected.inc_by(summary.restarts_detected as u64);
}

/// A stream to an aggregator replica is up.
pub fn stream_up(endpoint: &str) {
    tracing::info!(endpoint, "streaming to aggregator");
}

/// A stream to an aggregator replica ended or could not open; it is retried after `backoff`.
/// `failures` counts the attempts since it was last up: the first is a WARN, the retries are
/// DEBUG (an aggregator that stays away is not news every ten seconds).
pub fn stream_down(endpoint: &str, error: &str, backoff: Duration, failures: u32) {
    metrics::get().stream_reconnects.inc();
    let backoff_ms = backoff.as_millis() as u64;
    if failures <= 1 {
        tracing::warn!(
            endpoint,
            error,
            backoff_ms,
            "aggregator stream down; reconnecting"
        );
    } else {
        tracing::debug!(
            endpoint,
            error,
            backoff_ms,
            failures,
            "aggregator stream still down; reconnecting"
        );
    }
}

/// An aggregator asked for a fresh snapshot.
pub fn resync(endpoint: &str, reason: &str) {
    metrics::get().resyncs.inc();
    tracing::info!(endpoint, reason, "aggregator asked for a resync");
}

/// A message of `kind` (`hello`, `snapshot`, `delta`, `status`) of `bytes` encoded bytes was
/// queued for an aggregator.
pub fn message_sent(kind: &'static str, bytes: usize) {
    let m = metrics::get();
    m.messages_sent.get_or_create(&[("kind", kind)]).inc();
    m.bytes_sent.inc_by(bytes as u64);
}
