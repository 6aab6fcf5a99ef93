//! Logging setup and the agent's named events: call sites read like
//! `telemetry::scrape_failed(&err)`, so each recurring event has one wording and level.

pub use kubepulse_shell::{LogFormat, init_logging as init, shutdown_signal};

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

/// Some lines of a kubelet body could not be decoded.
pub fn decode_issues(count: usize, first: &str) {
    tracing::warn!(
        count,
        first,
        "kubelet body had lines that could not be decoded"
    );
}

/// A stream to an aggregator replica is up.
pub fn stream_up(endpoint: &str) {
    tracing::info!(endpoint, "streaming to aggregator");
}

/// A stream to an aggregator replica ended; it is retried after `backoff`.
pub fn stream_down(endpoint: &str, error: &str, backoff: std::time::Duration) {
    tracing::warn!(
        endpoint,
        error,
        backoff_ms = backoff.as_millis() as u64,
        "aggregator stream down; reconnecting"
    );
}

/// An aggregator asked for a fresh snapshot.
pub fn resync(endpoint: &str, reason: &str) {
    tracing::info!(endpoint, reason, "aggregator asked for a resync");
}
