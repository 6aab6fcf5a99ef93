//! Turns the JSON results of earlier runs into the Markdown tables of `BENCHMARKS.md` and an
//! SVG plot of memory and CPU against node count, for kubepulse and metrics-server.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

/// One point of the plot.
#[derive(Clone, Copy, Debug)]
struct Point {
    nodes: f64,
    mib: f64,
    cores: f64,
}

/// Reads every `results/*.json` under `out`, sorted by file name.
fn load(out: &Path) -> anyhow::Result<Vec<(String, Value)>> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(out.join("results"))? {
        let path = e?.path();
        if path.extension().is_some_and(|x| x == "json") {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            all.push((name, serde_json::from_slice(&std::fs::read(&path)?)?));
        }
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(all)
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

fn mib(v: &Value) -> f64 {
    f(v) / 1048576.0
}

fn ours_row(out: &mut String, name: &str, r: &Value) {
    let vpa = r["vpa"].as_array().cloned().unwrap_or_default();
    let mut rates: Vec<f64> = vpa.iter().map(|v| f(&v["pods_per_s"])).collect();
    rates.sort_by(f64::total_cmp);
    let rate = rates.get(rates.len() / 2).copied().unwrap_or(0.0);
    let peak = vpa.iter().map(|v| f(&v["rss_peak"])).fold(0.0, f64::max) / 1048576.0;
    let _ = writeln!(
        out,
        "| {name} | {} × {} | {} | {:.0} | {:.1} | {:.3} | {:.1} | {:.0} / {:.0} | {:.2} / {:.2} | {:.2} / {:.2} | {:.0} | {:.0} k | {:.0} | {} / {} |",
        r["nodes"],
        r["pods_per_node"],
        r["connections"],
        mib(&r["steady"]["rss_median"]),
        f(&r["rss_per_node"]) / 1024.0,
        f(&r["steady"]["cpu_per_s"]),
        f(&r["cpu_us_per_node_s"]),
        f(&r["lag"]["p50_ms"]),
        f(&r["lag"]["p99_ms"]),
        f(&r["hpa"]["paced"]["p50_ms"]),
        f(&r["hpa"]["paced"]["p99_ms"]),
        f(&r["hpa"]["saturating"]["p50_ms"]),
        f(&r["hpa"]["saturating"]["p99_ms"]),
        f(&r["hpa"]["saturating_qps"]),
        rate / 1e3,
        peak,
        r["resyncs"],
        r["failures"],
    );
}

/// Writes `report.md` and `scale.svg` under `out` (and the SVG to `svg` if given); returns
/// the Markdown.
pub fn write(out: &Path, svg: Option<&Path>) -> anyhow::Result<String> {
    let all = load(out)?;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "| run | nodes × pods | TCP conns | RSS MiB | KiB/node | CPU cores | µs CPU/node/s | lag p50/p99 ms | HPA paced p50/p99 ms | HPA saturating p50/p99 ms | HPA q/s | VPA pods/s | VPA peak RSS MiB | resyncs / stream failures |"
    );
    let _ = writeln!(
        md,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let mut ours_pts = Vec::new();
    let mut relayed_pts = Vec::new();
    let mut ms_pts = Vec::new();
    let mut quiet = String::new();
    let mut cmp = String::new();
    let mut cmp_quiet = String::new();
    let mut extra = String::new();
    for (name, v) in &all {
        let r = &v["result"];
        // the plot shows the 30-pod runs of the current code only
        let plotted = !name.contains("before") && r["pods_per_node"] == 30;
        if r.get("steady").is_some() && r.get("rss_per_node").is_some() {
            ours_row(&mut md, name, r);
            quiet_row(&mut quiet, name, r);
            if !plotted {
                continue;
            }
            let series = if f(&r["nodes_per_relay"]) > 0.0 || r["relay"].is_object() {
                &mut relayed_pts
            } else {
                &mut ours_pts
            };
            series.push(Point {
                nodes: f(&r["nodes"]),
                mib: mib(&r["steady"]["rss_median"]),
                cores: f(&r["steady"]["cpu_per_s"]),
            });
        } else if r.get("upstream").is_some() {
            let (o, u) = (&r["ours"], &r["upstream"]);
            ours_row(&mut md, name, o);
            quiet_row(&mut quiet, name, o);
            let series = if f(&o["nodes_per_relay"]) > 0.0 {
                &mut relayed_pts
            } else {
                &mut ours_pts
            };
            series.push(Point {
                nodes: f(&o["nodes"]),
                mib: mib(&o["steady"]["rss_median"]),
                cores: f(&o["steady"]["cpu_per_s"]),
            });
            ms_pts.push(Point {
                nodes: f(&u["nodes"]),
                mib: mib(&u["steady"]["rss_median"]),
                cores: f(&u["steady"]["cpu_per_s"]),
            });
            let _ = writeln!(
                cmp,
                "| {} × {} | {:.0} MiB ({:.1} KiB/node) | {:.0} MiB ({:.1} KiB/node) | **{:.1}×** | {:.3} cores ({:.1} µs/node/s) | {:.3} cores ({:.1} µs/node/s) | **{:.1}×** | {}/{} |",
                o["nodes"],
                o["pods_per_node"],
                mib(&u["steady"]["rss_median"]),
                f(&u["rss_per_node"]) / 1024.0,
                mib(&o["steady"]["rss_median"]),
                f(&o["rss_per_node"]) / 1024.0,
                f(&r["memory_ratio"]),
                f(&u["steady"]["cpu_per_s"]),
                f(&u["cpu_us_per_node_s"]),
                f(&o["steady"]["cpu_per_s"]),
                f(&o["cpu_us_per_node_s"]),
                f(&r["cpu_ratio"]),
                u["nodes_served"],
                u["nodes"],
            );
            let uq = &r["upstream_quiet"];
            if f(&r["quiet_cpu_ratio"]) > 0.0 {
                let _ = writeln!(
                    cmp_quiet,
                    "| {} × {} | {} | {:.0} MiB ({:.1} KiB/node) | {:.1} MiB ({:.2} KiB/node) | **{:.1}×** | {:.3} cores ({:.1} µs/node/s) | {:.4} cores ({:.2} µs/node/s) | **{:.1}×** |",
                    o["nodes"],
                    o["pods_per_node"],
                    relay_label(o),
                    mib(&uq["window"]["rss_median"]),
                    f(&uq["rss_per_node"]) / 1024.0,
                    mib(&o["quiet"]["rss_median"]),
                    f(&o["quiet_rss_per_node"]) / 1024.0,
                    f(&r["quiet_memory_ratio"]),
                    f(&uq["window"]["cpu_per_s"]),
                    f(&uq["cpu_us_per_node_s"]),
                    f(&o["quiet"]["cpu_per_s"]),
                    f(&o["quiet_cpu_us_per_node_s"]),
                    f(&r["quiet_cpu_ratio"]),
                );
            }
        } else if r.get("cpu_us_per_tick").is_some() {
            let _ = writeln!(
                extra,
                "agent ({} pods, poll {} s, kubelet refresh {} s, {:.0} s): RSS median {:.1} MiB (peak {:.1} MiB), CPU {:.0} µs per tick over {} ticks; wire {:.0} B per refresh vs one kubelet body {} B ({:.1}%), vs all text read {:.2}%",
                r["pods"],
                r["poll_interval_s"],
                r["kubelet_refresh_s"],
                f(&r["seconds"]),
                mib(&r["rss_median"]),
                mib(&r["rss_peak"]),
                f(&r["cpu_us_per_tick"]),
                r["ticks"],
                f(&r["wire_bytes_per_refresh"]),
                r["kubelet_text_bytes"],
                f(&r["wire_vs_one_body"]) * 100.0,
                f(&r["wire_vs_read"]) * 100.0,
            );
        } else if r.get("metrics_server").is_some() {
            let _ = writeln!(
                extra,
                "kubelet reads per node per {} s with 2 replicas ({} nodes, {:.0} s): metrics-server {:.2}, kubepulse {:.2}",
                r["interval_s"],
                r["nodes"],
                f(&r["seconds"]),
                f(&r["metrics_server"]),
                f(&r["kubepulse"]),
            );
        }
    }
    if !cmp.is_empty() {
        let _ = writeln!(
            md,
            "\n| nodes × pods | metrics-server RSS | kubepulse RSS | memory ratio | metrics-server CPU | kubepulse CPU | CPU ratio | metrics-server nodes served |\n|---|---|---|---|---|---|---|---|\n{cmp}"
        );
    }
    if !cmp_quiet.is_empty() {
        let _ = writeln!(
            md,
            "\nBoth ingesting only (kubepulse's ingest-only window: no query to either):\n\n| nodes × pods | kubepulse ingest | metrics-server RSS | kubepulse RSS | memory ratio | metrics-server CPU | kubepulse CPU | CPU ratio |\n|---|---|---|---|---|---|---|---|\n{cmp_quiet}"
        );
    }
    if !quiet.is_empty() {
        let _ = writeln!(
            md,
            "\nIngest only (no query of any kind, {} s after the steady window):\n\n| run | nodes × pods | ingest | RSS MiB | KiB/node | CPU cores | µs CPU/node/s | relay batches/s |\n|---|---|---|---|---|---|---|---|\n{quiet}",
            super::ours::QUIET.as_secs()
        );
    }
    md.push_str(&extra);
    let plot = svg_plot(&ours_pts, &relayed_pts, &ms_pts);
    std::fs::write(out.join("scale.svg"), &plot)?;
    if let Some(p) = svg {
        std::fs::write(p, &plot)?;
    }
    std::fs::write(out.join("report.md"), &md)?;
    Ok(md)
}

/// How a run's nodes reached the aggregator.
fn relay_label(r: &Value) -> String {
    if r["relay"].is_object() {
        return "through one kubepulse-relay process".to_owned();
    }
    match r["nodes_per_relay"].as_u64().unwrap_or(0) {
        0 => "one stream per node".to_owned(),
        n => format!("{n} nodes per relay"),
    }
}

fn quiet_row(out: &mut String, name: &str, r: &Value) {
    if f(&r["quiet"]["seconds"]) <= 0.0 {
        return;
    }
    let _ = writeln!(
        out,
        "| {name} | {} × {} | {} | {:.1} | {:.2} | {:.4} | {:.2} | {:.1} |",
        r["nodes"],
        r["pods_per_node"],
        relay_label(r),
        mib(&r["quiet"]["rss_median"]),
        f(&r["quiet_rss_per_node"]) / 1024.0,
        f(&r["quiet"]["cpu_per_s"]),
        f(&r["quiet_cpu_us_per_node_s"]),
        f(&r["batches_per_s"]),
    );
    let relay = &r["relay"];
    if relay.is_object() {
        let _ = writeln!(
            out,
            "| {name}: the kubepulse-relay process | {} × {} | agents' connections in, one stream out | {:.1} | {:.2} | {:.4} | {:.2} | |",
            r["nodes"],
            r["pods_per_node"],
            mib(&relay["quiet"]["rss_median"]),
            f(&relay["quiet_rss_per_node"]) / 1024.0,
            f(&relay["quiet"]["cpu_per_s"]),
            f(&relay["quiet_cpu_us_per_node_s"]),
        );
    }
}

/// Two log-log panels (memory, CPU) against nodes.
fn svg_plot(ours: &[Point], relayed: &[Point], ms: &[Point]) -> String {
    let (w, h, pad) = (460.0, 320.0, 60.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="12">"#,
        w * 2.0,
        h + 40.0
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let all: Vec<&Point> = ours.iter().chain(relayed).chain(ms).collect();
    let nodes: Vec<f64> = all.iter().map(|p| p.nodes).collect();
    let (x0, x1) = bounds(&nodes);
    type Metric = fn(&Point) -> f64;
    let panels: [(&str, Metric); 2] = [
        ("aggregator RSS (MiB)", |p| p.mib),
        ("aggregator CPU (cores)", |p| p.cores),
    ];
    for (k, (title, get)) in panels.iter().enumerate() {
        let ox = k as f64 * w;
        let ys: Vec<f64> = all.iter().map(|p| get(p)).filter(|v| *v > 0.0).collect();
        let (y0, y1) = bounds(&ys);
        let px = |n: f64| ox + pad + (n.log10() - x0) / (x1 - x0) * (w - 1.5 * pad);
        let py = |v: f64| h - pad + 20.0 - (v.log10() - y0) / (y1 - y0) * (h - 1.5 * pad);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="20" font-weight="bold">{title} vs simulated nodes (log-log)</text>"#,
            ox + pad
        );
        let _ = writeln!(
            s,
            r#"<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="gray"/>"#,
            ox + pad,
            pad - 20.0,
            w - 1.5 * pad,
            h - 1.5 * pad
        );
        for e in (x0.floor() as i32)..=(x1.ceil() as i32) {
            let n = 10f64.powi(e);
            if n.log10() < x0 - 1e-9 || n.log10() > x1 + 1e-9 {
                continue;
            }
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                px(n),
                h - 20.0,
                human(n)
            );
        }
        for e in (y0.floor() as i32)..=(y1.ceil() as i32) {
            let v = 10f64.powi(e);
            if v.log10() < y0 - 1e-9 || v.log10() > y1 + 1e-9 {
                continue;
            }
            let _ = writeln!(
                s,
                r#"<line x1="{}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="gainsboro"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
                ox + pad,
                ox + w - pad / 2.0,
                py(v),
                py(v),
                ox + pad - 4.0,
                py(v) + 4.0,
                human(v)
            );
        }
        for (pts, color, label, dy) in [
            (
                ours,
                "#1f77b4",
                "kubepulse-aggregator, one stream per node",
                0.0,
            ),
            (
                relayed,
                "#2ca02c",
                "kubepulse-aggregator behind relays",
                16.0,
            ),
            (ms, "#d62728", "metrics-server v0.9.0", 32.0),
        ] {
            let mut sorted: Vec<&Point> = pts.iter().filter(|p| get(p) > 0.0).collect();
            sorted.sort_by(|a, b| a.nodes.total_cmp(&b.nodes));
            let path: Vec<String> = sorted
                .iter()
                .map(|p| format!("{:.1},{:.1}", px(p.nodes), py(get(p))))
                .collect();
            if !path.is_empty() {
                let _ = writeln!(
                    s,
                    r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
                    path.join(" ")
                );
            }
            for p in &sorted {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{color}"/>"#,
                    px(p.nodes),
                    py(get(p))
                );
            }
            let _ = writeln!(
                s,
                r#"<rect x="{}" y="{}" width="10" height="10" fill="{color}"/><text x="{}" y="{}">{label}</text>"#,
                ox + pad + 10.0,
                pad - 8.0 + dy,
                ox + pad + 24.0,
                pad + 1.0 + dy
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

fn bounds(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min).max(1e-9);
    let hi = v.iter().copied().fold(0.0, f64::max).max(lo * 10.0);
    (lo.log10().floor(), hi.log10().ceil())
}

fn human(v: f64) -> String {
    if (1e3..1e6).contains(&v) {
        format!("{}k", v / 1e3)
    } else if v >= 1e6 {
        format!("{}M", v / 1e6)
    } else {
        format!("{v}")
    }
}
