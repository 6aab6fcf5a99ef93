//! The decoder run backwards: writes a [`ScrapeBatch`] as a kubelet ≥ 1.29 would print it on
//! `/metrics/resource` (reference §1.2–1.3). Used by the round-trip property, the tick bench
//! and simulated kubelets; the agent itself never renders.
//!
//! Layout follows the kubelet: families sorted by name with `[STABLE]` HELP and TYPE lines,
//! series sorted by label values in label-name order (`container`, `namespace`, `pod`), Go's
//! shortest float formatting (`2.4707072e+08`, `495616`, `812.44712`), integer millisecond
//! timestamps on everything but `container_start_time_seconds`, and a closing
//! `resource_scrape_error` line.
//!
//! Numbers are written so that [`decode`](crate::decode::decode) gives back the same integers:
//! CPU nanoseconds below 2^52 and bytes below 2^53 survive exactly, and start times that came
//! out of the decoder do too. Timestamps keep whole milliseconds only.

use std::fmt::Write as _;

use kubepulse_model::{ContainerName, PodKey, Timestamp};

use crate::decode::{RawContainer, ScrapeBatch};

/// Renders `batch` as kubelet exposition text.
pub fn render(batch: &ScrapeBatch) -> String {
    let mut out = String::with_capacity(200 + batch.pods.len() * 3 * 420);
    render_into(batch, &mut out);
    out
}

/// Renders `batch` as kubelet exposition text, appending to `out`.
pub fn render_into(batch: &ScrapeBatch, out: &mut String) {
    // The kubelet sorts series by label values in label-name order: container first.
    let mut series: Vec<(&ContainerName, &PodKey, &RawContainer)> = batch
        .pods
        .iter()
        .flat_map(|(pod, containers)| containers.iter().map(move |(c, raw)| (c, pod, raw)))
        .collect();
    series.sort_by(|a, b| (a.0, &a.1.namespace, &a.1.name).cmp(&(b.0, &b.1.namespace, &b.1.name)));

    family_header(
        out,
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the container in core-seconds",
        "counter",
    );
    for (container, pod, raw) in &series {
        if let Some(cpu) = raw.cpu {
            container_series(out, "container_cpu_usage_seconds_total", container, pod);
            seconds(out, cpu.cumulative_ns);
            millis(out, cpu.timestamp);
        }
    }
    family_header(
        out,
        "container_memory_working_set_bytes",
        "Current working set of the container in bytes",
        "gauge",
    );
    for (container, pod, raw) in &series {
        if let Some(memory) = raw.memory {
            container_series(out, "container_memory_working_set_bytes", container, pod);
            go_float(out, memory.bytes as f64);
            millis(out, memory.timestamp);
        }
    }
    family_header(
        out,
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds",
        "gauge",
    );
    for (container, pod, raw) in &series {
        if let Some(start) = raw.start_time {
            container_series(out, "container_start_time_seconds", container, pod);
            seconds(out, start.as_nanos().max(0) as u64);
            out.push('\n');
        }
    }
    family_header(
        out,
        "node_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the node in core-seconds",
        "counter",
    );
    if let Some(cpu) = batch.node.cpu {
        out.push_str("node_cpu_usage_seconds_total ");
        seconds(out, cpu.cumulative_ns);
        millis(out, cpu.timestamp);
    }
    family_header(
        out,
        "node_memory_working_set_bytes",
        "Current working set of the node in bytes",
        "gauge",
    );
    if let Some(memory) = batch.node.memory {
        out.push_str("node_memory_working_set_bytes ");
        go_float(out, memory.bytes as f64);
        millis(out, memory.timestamp);
    }
    family_header(
        out,
        "resource_scrape_error",
        "1 if there was an error while getting container metrics, 0 otherwise",
        "gauge",
    );
    out.push_str(if batch.resource_scrape_error {
        "resource_scrape_error 1\n"
    } else {
        "resource_scrape_error 0\n"
    });
}

/// Writes `value` as Go's `strconv.FormatFloat(value, 'g', -1, 64)` does, which is what
/// Prometheus client libraries print.
pub fn go_float(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
        return;
    }
    if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
        return;
    }
    if value == 0.0 {
        out.push('0');
        return;
    }
    // Shortest digits in scientific form; Go switches to it when the exponent is < -4 or
    // >= 21 for %v, but 'g' with shortest precision uses 6 as the limit.
    let start = out.len();
    let _ = write!(out, "{value:e}");
    let e_pos = start + out[start..].find('e').unwrap_or(out.len() - start);
    let exponent: i32 = out[e_pos + 1..].parse().unwrap_or(0);
    if (-4..6).contains(&exponent) {
        out.truncate(start);
        let _ = write!(out, "{value}");
    } else {
        out.truncate(e_pos);
        let sign = if exponent < 0 { '-' } else { '+' };
        let _ = write!(out, "e{sign}{:02}", exponent.unsigned_abs());
    }
}

fn family_header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} [STABLE] {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn container_series(out: &mut String, name: &str, container: &ContainerName, pod: &PodKey) {
    out.push_str(name);
    out.push_str("{container=\"");
    label_value(out, container.as_str());
    out.push_str("\",namespace=\"");
    label_value(out, pod.namespace.as_str());
    out.push_str("\",pod=\"");
    label_value(out, pod.name.as_str());
    out.push_str("\"} ");
}

fn label_value(out: &mut String, value: &str) {
    for ch in value.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            other => out.push(other),
        }
    }
}

/// Writes nanoseconds as seconds, choosing among the floats nearest to `nanos / 1e9` one that
/// the decoder's `trunc(v × 1e9)` maps back to `nanos`, when there is one.
fn seconds(out: &mut String, nanos: u64) {
    let nearest = nanos as f64 / 1e9;
    let round_trips = |candidate: f64| (candidate * 1e9) as u64 == nanos;
    let mut up = nearest;
    let mut down = nearest;
    let mut chosen = nearest;
    for _ in 0..8 {
        if round_trips(up) {
            chosen = up;
            break;
        }
        if round_trips(down) {
            chosen = down;
            break;
        }
        up = up.next_up();
        down = down.next_down();
    }
    go_float(out, chosen);
}

fn millis(out: &mut String, timestamp: Timestamp) {
    let _ = writeln!(out, " {}", timestamp.as_millis());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_go_float(value: f64, expected: &str) {
        let mut out = String::new();
        go_float(&mut out, value);
        assert_eq!(out, expected, "formatting {value:?}");
    }

    #[test]
    fn go_float_matches_go_shortest_g() {
        for (value, expected) in [
            (0.0, "0"),
            (495616.0, "495616"),
            (2.4707072e8, "2.4707072e+08"),
            (812.44712, "812.44712"),
            (48211.903177, "48211.903177"),
            (1.7172380016620138e9, "1.7172380016620138e+09"),
            (999999.0, "999999"),
            (1e6, "1e+06"),
            (0.0001, "0.0001"),
            (0.00001234, "1.234e-05"),
            (1.8446743709127774e19, "1.8446743709127774e+19"),
            (1e100, "1e+100"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ] {
            check_go_float(value, expected);
        }
    }
}
