//! Logging setup and the aggregator's named events. Call sites read like
//! `telemetry::stream_opened(&node, epoch)`, so every recurring event has one wording.

use kubepulse_model::NodeName;

pub use kubepulse_shell::{LogFormat, init_logging as init, shutdown_signal};

/// An agent stream said hello.
pub fn stream_opened(node: &NodeName, epoch: u64, remote: &str) {
    tracing::info!(node = %node, epoch, remote, "agent stream opened");
}

/// An agent stream ended.
pub fn stream_closed(node: &NodeName, reason: &str) {
    tracing::info!(node = %node, reason, "agent stream closed");
}

/// The aggregator asked an agent for a fresh snapshot.
pub fn resync_requested(node: &NodeName, reason: &str) {
    tracing::warn!(node = %node, reason, "asked agent for a resync");
}

/// A node's data expired.
pub fn node_expired(node: &NodeName) {
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
