//! The agent's self-metrics, served as OpenMetrics text on the health port's `/metrics`.
//!
//! Names are `kubepulse_agent_*`; events update them through [`crate::telemetry`], never
//! directly. Every label value is a `&'static str` from a fixed set, so no series is ever
//! named after a pod, container or node: the agent's series count does not grow with its
//! node's pods (one agent runs per node, so its node is the scrape target, not a label).
//!
//! The families live in one process-wide set: a process runs one agent (tests that run
//! several in one process see their sum).

use std::sync::LazyLock;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// A label set of fixed names and values.
pub type Labels = [(&'static str, &'static str); 1];

/// `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every family the agent exports.
pub struct Metrics {
    /// Kubelet reads by `result` (`ok`, `failed`, `unusable`).
    pub kubelet_reads: Family<Labels, Counter>,
    /// Kubelet reads whose body repeated the last one decoded (not decoded again).
    pub kubelet_bodies_repeated: Counter,
    /// Duration of kubelet reads (request and body), seconds.
    pub kubelet_read_duration: Histogram,
    /// Kubelet body lines that could not be decoded.
    pub decode_issues: Counter,
    /// Pods in the node's view (served).
    pub pods_served: Gauge,
    /// Pods the kubelet reported that are held back (a container without usage).
    pub pods_held_back: Gauge,
    /// Containers held back.
    pub containers_held_back: Gauge,
    /// Container restarts detected from start times.
    pub restarts_detected: Counter,
    /// Aggregator streams currently up.
    pub streams_up: Gauge,
    /// Aggregator streams that went down (each is retried).
    pub stream_reconnects: Counter,
    /// Resyncs the aggregators asked for.
    pub resyncs: Counter,
    /// Messages sent to aggregators by `kind` (`hello`, `snapshot`, `delta`, `status`).
    pub messages_sent: Family<Labels, Counter>,
    /// Encoded bytes sent to aggregators (protobuf payload, summed over replicas).
    pub bytes_sent: Counter,
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

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("kubepulse_agent");
        let m = Metrics {
            kubelet_reads: Family::default(),
            kubelet_read_duration: Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            kubelet_bodies_repeated: Counter::default(),
            decode_issues: Counter::default(),
            pods_served: Gauge::default(),
            pods_held_back: Gauge::default(),
            containers_held_back: Gauge::default(),
            restarts_detected: Counter::default(),
            streams_up: Gauge::default(),
            stream_reconnects: Counter::default(),
            resyncs: Counter::default(),
            messages_sent: Family::default(),
            bytes_sent: Counter::default(),
            registry: Registry::default(),
        };
        // every labelled series exists from the start, at 0
        for result in ["ok", "failed", "unusable"] {
            let _ = m.kubelet_reads.get_or_create(&[("result", result)]);
        }
        for kind in ["hello", "snapshot", "delta", "status"] {
            let _ = m.messages_sent.get_or_create(&[("kind", kind)]);
        }
        let r = &mut registry;
        r.register(
            "kubelet_reads",
            "Kubelet /metrics/resource reads by result (ok; failed: no answer or an error status; unusable: an answer without usable samples)",
            m.kubelet_reads.clone(),
        );
        r.register(
            "kubelet_bodies_repeated",
            "Kubelet reads whose body had the bytes of the last one decoded, so it was not decoded again (the kubelet refreshes its stats every 10-15 s)",
            m.kubelet_bodies_repeated.clone(),
        );
        r.register_with_unit(
            "kubelet_read_duration",
            "Duration of one kubelet read, request and body",
            Unit::Seconds,
            m.kubelet_read_duration.clone(),
        );
        r.register(
            "decode_issues",
            "Kubelet body lines that could not be decoded",
            m.decode_issues.clone(),
        );
        r.register(
            "pods_served",
            "Pods in the node's view, sent to the aggregators",
            m.pods_served.clone(),
        );
        r.register(
            "pods_held_back",
            "Pods the kubelet reports that are held back because a container has no usage yet",
            m.pods_held_back.clone(),
        );
        r.register(
            "containers_held_back",
            "Containers without usage (waiting for a second sample, restarted, ...)",
            m.containers_held_back.clone(),
        );
        r.register(
            "container_restarts_detected",
            "Container restarts detected from the kubelet's start times",
            m.restarts_detected.clone(),
        );
        r.register(
            "streams_up",
            "Aggregator streams currently up",
            m.streams_up.clone(),
        );
        r.register(
            "stream_reconnects",
            "Aggregator streams that went down and are retried",
            m.stream_reconnects.clone(),
        );
        r.register(
            "resyncs",
            "Fresh snapshots the aggregators asked for",
            m.resyncs.clone(),
        );
        r.register(
            "messages_sent",
            "Messages sent to aggregators, by kind",
            m.messages_sent.clone(),
        );
        r.register_with_unit(
            "sent",
            "Encoded message bytes sent to aggregators (all replicas)",
            Unit::Bytes,
            m.bytes_sent.clone(),
        );
        Metrics { registry, ..m }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::telemetry::{self, ReadResult};

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
    }

    #[test]
    fn events_move_their_series() {
        let before = super::render();
        telemetry::kubelet_read(ReadResult::Ok, Duration::from_millis(3));
        telemetry::kubelet_read(ReadResult::Failed, Duration::from_millis(3));
        telemetry::body_repeated(ReadResult::Ok, Duration::from_millis(2));
        telemetry::message_sent("delta", 40);
        let after = super::render();
        for (series, delta) in [
            ("kubepulse_agent_kubelet_reads_total{result=\"ok\"}", 2.0),
            (
                "kubepulse_agent_kubelet_reads_total{result=\"failed\"}",
                1.0,
            ),
            ("kubepulse_agent_kubelet_bodies_repeated_total", 1.0),
            ("kubepulse_agent_kubelet_read_duration_seconds_count", 3.0),
            ("kubepulse_agent_messages_sent_total{kind=\"delta\"}", 1.0),
            ("kubepulse_agent_sent_bytes_total", 40.0),
        ] {
            assert!(
                value(&after, series) - value(&before, series) >= delta,
                "{series}"
            );
        }
        assert!(after.ends_with("# EOF\n"));
    }
}
