//! Logging setup and the relay's named events: each recurring event has one wording and level
//! and updates its [`metrics`](crate::metrics::Metrics) in the same place. Per-message events
//! only count; per-stream ones log at DEBUG (a relay carries thousands of streams), per-replica
//! ones at INFO or WARN.

use std::time::Duration;

use crate::metrics;

pub use kubepulse_shell::{LogFormat, init_logging as init, shutdown_signal};

/// A hub starts with no link and no replica (the gauges may hold another hub's values: tests
/// run several relays in one process).
pub fn hub_started() {
    let m = metrics::get();
    m.links_open.set(0);
    m.upstreams_connected.set(0);
}

/// An agent stream opened a link.
pub fn link_opened(node: &str, link: u32, open: usize) {
    metrics::get().links_open.set(open as i64);
    tracing::debug!(node, link, "agent stream opened");
}

/// A link closed (the agent left, or a replica ended it).
pub fn link_closed(link: u32, open: usize) {
    metrics::get().links_open.set(open as i64);
    tracing::debug!(link, "agent stream closed");
}

/// An agent stream was refused or ended by the relay (`reason` is one of
/// [`metrics::REFUSALS`]).
pub fn link_refused(reason: &'static str, remote: &str, message: &str) {
    metrics::get()
        .links_refused
        .get_or_create(&[("reason", reason)])
        .inc();
    tracing::debug!(reason, remote, message, "agent stream refused");
}

/// An aggregator replica ended a link; the agent's stream ends with its status.
pub fn link_ended_by_aggregator(node: &str, code: u32, message: &str) {
    metrics::get()
        .links_refused
        .get_or_create(&[("reason", "aggregator")])
        .inc();
    tracing::info!(
        node,
        code,
        message,
        "an aggregator replica ended an agent stream"
    );
}

/// Agent messages: forwarded or coalesced.
pub fn frame_pushed(forwarded: bool) {
    let m = metrics::get();
    if forwarded {
        m.frames_forwarded.inc();
    } else {
        m.frames_coalesced.inc();
    }
}

/// A batch went to a replica.
pub fn batch_sent(bytes: usize) {
    let m = metrics::get();
    m.batches_sent.inc();
    m.batch_bytes_sent.inc_by(bytes as u64);
}

/// A resync request went to an agent.
pub fn resync(reason: &str) {
    metrics::get().resyncs.inc();
    tracing::debug!(reason, "asked an agent for a snapshot");
}

/// A replica's relay stream is up.
pub fn upstream_up(endpoint: &str, connected: usize) {
    metrics::get().upstreams_connected.set(connected as i64);
    tracing::info!(endpoint, "relay stream to an aggregator replica up");
}

/// The hub counts the replicas connected.
pub fn upstreams_connected(connected: usize) {
    metrics::get().upstreams_connected.set(connected as i64);
}

/// A replica fell behind and is disconnected.
pub fn upstream_dropped_for_lag(endpoint: &str, pending_bytes: usize) {
    metrics::get().upstreams_dropped_for_lag.inc();
    tracing::warn!(
        endpoint,
        pending_bytes,
        "aggregator replica fell behind (--max-pending-bytes); disconnecting it, it gets every agent's hello and snapshot again when it reconnects"
    );
}

/// A replica's relay stream ended; retried after `wait`.
pub fn upstream_down(endpoint: &str, error: &str, wait: Duration, failures: u32) {
    metrics::get().upstream_reconnects.inc();
    if failures <= 1 {
        tracing::warn!(endpoint, error, retry_in = ?wait, "relay stream to an aggregator replica down");
    } else {
        tracing::debug!(endpoint, error, retry_in = ?wait, failures, "relay stream to an aggregator replica still down");
    }
}
