//! The relay's self-metrics, served as OpenMetrics text on the health port's `/metrics`.
//!
//! Names are `kubepulse_relay_*`; events update them through [`crate::telemetry`]. No series
//! is named after a node, a pod or an aggregator address: the series count does not grow with
//! the cluster.

use std::sync::LazyLock;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

/// A label set of fixed names and values.
pub type Labels = [(&'static str, &'static str); 1];

/// `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every family the relay exports.
pub struct Metrics {
    /// Agent streams (links) open.
    pub links_open: Gauge,
    /// Agent streams refused or ended by the relay or an aggregator, by `reason`.
    pub links_refused: Family<Labels, Counter>,
    /// Agent messages forwarded (once per message, whatever the replica count).
    pub frames_forwarded: Counter,
    /// Status messages not forwarded because they repeated the last one (heartbeats).
    pub frames_coalesced: Counter,
    /// Batches sent to aggregator replicas.
    pub batches_sent: Counter,
    /// Frame bytes sent in batches (as counted by the hub).
    pub batch_bytes_sent: Counter,
    /// Aggregator replicas connected.
    pub upstreams_connected: Gauge,
    /// Replica streams disconnected because they fell behind (--max-pending-bytes).
    pub upstreams_dropped_for_lag: Counter,
    /// Replica streams that ended otherwise (and are retried).
    pub upstream_reconnects: Counter,
    /// Resync requests passed to agents.
    pub resyncs: Counter,
    registry: Registry,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide families.
pub fn get() -> &'static Metrics {
    &METRICS
}

/// Everything as OpenMetrics text.
pub fn render() -> String {
    let mut out = String::with_capacity(4096);
    // writing into a String cannot fail
    let _ = encode(&mut out, &get().registry);
    out
}

/// The `reason` values of `links_refused`.
pub const REFUSALS: [&str; 4] = [
    "bad_hello",
    "max_streams",
    "max_message_bytes",
    "aggregator",
];

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("kubepulse_relay");
        let m = Metrics {
            links_open: Gauge::default(),
            links_refused: Family::default(),
            frames_forwarded: Counter::default(),
            frames_coalesced: Counter::default(),
            batches_sent: Counter::default(),
            batch_bytes_sent: Counter::default(),
            upstreams_connected: Gauge::default(),
            upstreams_dropped_for_lag: Counter::default(),
            upstream_reconnects: Counter::default(),
            resyncs: Counter::default(),
            registry: Registry::default(),
        };
        for reason in REFUSALS {
            let _ = m.links_refused.get_or_create(&[("reason", reason)]);
        }
        let r = &mut registry;
        r.register("links_open", "Agent streams open", m.links_open.clone());
        r.register(
            "links_refused",
            "Agent streams refused or ended, by reason (bad_hello, max_streams, max_message_bytes; aggregator: an aggregator replica ended it)",
            m.links_refused.clone(),
        );
        r.register(
            "frames_forwarded",
            "Agent messages forwarded to the aggregator replicas (counted once)",
            m.frames_forwarded.clone(),
        );
        r.register(
            "frames_coalesced",
            "Agent status messages not forwarded because they repeated the last one forwarded",
            m.frames_coalesced.clone(),
        );
        r.register(
            "batches_sent",
            "Batches sent to aggregator replicas",
            m.batches_sent.clone(),
        );
        r.register_with_unit(
            "batch_sent",
            "Bytes of the batches sent to aggregator replicas, as counted by the relay",
            Unit::Bytes,
            m.batch_bytes_sent.clone(),
        );
        r.register(
            "upstreams_connected",
            "Aggregator replicas with a relay stream up",
            m.upstreams_connected.clone(),
        );
        r.register(
            "upstreams_dropped_for_lag",
            "Aggregator replica streams disconnected because they fell more than --max-pending-bytes behind",
            m.upstreams_dropped_for_lag.clone(),
        );
        r.register(
            "upstream_reconnects",
            "Aggregator replica streams that ended and are retried",
            m.upstream_reconnects.clone(),
        );
        r.register(
            "resyncs",
            "Fresh snapshots asked of agents (by a replica, or for a replica that connected)",
            m.resyncs.clone(),
        );
        Metrics { registry, ..m }
    }
}
