//! Kubelet `/metrics/resource` text for a simulated node, laid out as a current kubelet lays it
//! out (reference §1.2–1.3): families sorted by name with `[STABLE]` HELP lines, series sorted
//! by label values, labels sorted by name, Go's shortest float formatting, millisecond
//! timestamps, and no timestamp on `container_start_time_seconds`.

use std::fmt::Write as _;

use super::model::{Fleet, SimContainer, SimNode, SimPod};

/// Go's `strconv.FormatFloat(v, 'g', -1, 64)`: shortest digits, exponent form when the decimal
/// exponent is below -4 or at least 6 (the kubelet's `2.476032e+08`).
pub fn go_float(v: f64) -> String {
    if v == 0.0 {
        return "0".to_owned();
    }
    let exp = v.abs().log10().floor() as i32;
    if !(-4..6).contains(&exp) || !v.is_finite() {
        let s = format!("{v:e}");
        let (mantissa, e) = s.split_once('e').unwrap_or((&s, "0"));
        let e: i32 = e.parse().unwrap_or(0);
        let sign = if e < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", e.abs())
    } else {
        format!("{v}")
    }
}

fn seconds(ns: u128) -> f64 {
    ns as f64 / 1e9
}

struct Series<'a> {
    pod: &'a SimPod,
    container: &'a SimContainer,
}

/// Renders one node's body as its kubelet would answer at `now_ms`.
pub fn render(fleet: &Fleet, node: &SimNode, now_ms: i64) -> String {
    let at = fleet.sample_instant(now_ms);
    // only containers already started at the refresh instant are known to the kubelet
    let mut series: Vec<Series<'_>> = node
        .pods
        .iter()
        .flat_map(|pod| {
            pod.containers
                .iter()
                .filter(move |c| c.start_ms <= at)
                .map(move |container| Series { pod, container })
        })
        .collect();
    series.sort_by(|a, b| {
        (&a.container.name, &a.pod.namespace, &a.pod.name).cmp(&(
            &b.container.name,
            &b.pod.namespace,
            &b.pod.name,
        ))
    });
    let mut out = String::with_capacity(series.len() * 420 + 1024);
    let labels = |s: &Series<'_>| {
        format!(
            "container=\"{}\",namespace=\"{}\",pod=\"{}\"",
            s.container.name, s.pod.namespace, s.pod.name
        )
    };
    let ts = |s: &Series<'_>| (at - s.container.offset_ms).max(s.container.start_ms);

    family(
        &mut out,
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the container in core-seconds",
        "counter",
    );
    for s in &series {
        let t = ts(s);
        let _ = writeln!(
            out,
            "container_cpu_usage_seconds_total{{{}}} {} {t}",
            labels(s),
            go_float(seconds(s.container.cum_at(t)))
        );
    }
    family(
        &mut out,
        "container_memory_working_set_bytes",
        "Current working set of the container in bytes",
        "gauge",
    );
    for s in &series {
        let _ = writeln!(
            out,
            "container_memory_working_set_bytes{{{}}} {} {}",
            labels(s),
            go_float(s.container.memory_bytes as f64),
            ts(s)
        );
    }
    family(
        &mut out,
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds",
        "gauge",
    );
    for s in &series {
        let _ = writeln!(
            out,
            "container_start_time_seconds{{{}}} {}",
            labels(s),
            go_float(s.container.start_ms as f64 / 1e3)
        );
    }
    family(
        &mut out,
        "node_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the node in core-seconds",
        "counter",
    );
    let _ = writeln!(
        out,
        "node_cpu_usage_seconds_total {} {at}",
        go_float(seconds(node.node_cum_at(at)))
    );
    family(
        &mut out,
        "node_memory_working_set_bytes",
        "Current working set of the node in bytes",
        "gauge",
    );
    let _ = writeln!(
        out,
        "node_memory_working_set_bytes {} {at}",
        go_float(node.memory_bytes() as f64)
    );
    family(
        &mut out,
        "node_swap_usage_bytes",
        "Current swap usage of the node in bytes. Reported only on non-windows systems",
        "gauge",
    );
    let _ = writeln!(out, "node_swap_usage_bytes 0 {at}");

    let mut pods: Vec<&SimPod> = node
        .pods
        .iter()
        .filter(|p| p.containers.iter().any(|c| c.start_ms <= at))
        .collect();
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    family(
        &mut out,
        "pod_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the pod in core-seconds",
        "counter",
    );
    for p in &pods {
        let cum: u128 = p.containers.iter().map(|c| c.cum_at(at)).sum();
        let _ = writeln!(
            out,
            "pod_cpu_usage_seconds_total{{namespace=\"{}\",pod=\"{}\"}} {} {at}",
            p.namespace,
            p.name,
            go_float(seconds(cum))
        );
    }
    family(
        &mut out,
        "pod_memory_working_set_bytes",
        "Current working set of the pod in bytes",
        "gauge",
    );
    for p in &pods {
        let mem: u64 = p.containers.iter().map(|c| c.memory_bytes).sum();
        let _ = writeln!(
            out,
            "pod_memory_working_set_bytes{{namespace=\"{}\",pod=\"{}\"}} {} {at}",
            p.namespace,
            p.name,
            go_float(mem as f64)
        );
    }
    family(
        &mut out,
        "resource_scrape_error",
        "1 if there was an error while getting container metrics, 0 otherwise",
        "gauge",
    );
    out.push_str("resource_scrape_error 0\n");
    out
}

/// The body of a kubelet that could not gather stats.
pub fn render_scrape_error() -> String {
    let mut out = String::new();
    family(
        &mut out,
        "resource_scrape_error",
        "1 if there was an error while getting container metrics, 0 otherwise",
        "gauge",
    );
    out.push_str("resource_scrape_error 1\n");
    out
}

fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} [STABLE] {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_like_go() {
        assert_eq!(go_float(2.476032e8), "2.476032e+08");
        assert_eq!(go_float(495616.0), "495616");
        assert_eq!(go_float(812.44712), "812.44712");
        assert_eq!(go_float(1.7172380016620138e9), "1.7172380016620138e+09");
        assert_eq!(go_float(0.0), "0");
        assert_eq!(go_float(0.00001), "1e-05");
        assert_eq!(go_float(999999.0), "999999");
        assert_eq!(go_float(1e6), "1e+06");
    }
}
