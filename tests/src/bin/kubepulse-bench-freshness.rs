//! `kubepulse-bench-freshness`: how long after the kubelet's sample a value is visible in the
//! Metrics API. Runs the in-process harness (simulated kubelets stamping whole-second refresh
//! instants, real agents, one aggregator replica), polls `GET …/nodes` every 10 ms over HTTPS,
//! and records, for every new node timestamp, `first seen − kubelet sample time`. Prints
//! p50/p90/p99/max against the goal (poll interval + 250 ms).
//!
//! Usage: `kubepulse-bench-freshness [SECONDS] [POLL_INTERVAL_MS]` (defaults 30 and 1000).

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use kubepulse_tests::harness::{Cluster, ClusterOptions};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(30);
    let poll_ms: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(
        Duration::from_secs(seconds),
        Duration::from_millis(poll_ms),
    ))
}

async fn run(duration: Duration, poll: Duration) -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        nodes: 3,
        pods_per_node: 30,
        replicas: 1,
        poll_interval: poll,
        refresh: Duration::from_secs(1),
        ..ClusterOptions::default()
    })
    .await?;
    let mut last: HashMap<String, String> = HashMap::new();
    let mut lags_ms: Vec<f64> = Vec::new();
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let (code, list) = cluster
            .get_json(0, "/apis/metrics.k8s.io/v1beta1/nodes")
            .await?;
        let seen = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?;
        if code == 200 {
            for item in list["items"].as_array().into_iter().flatten() {
                let name = item["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let ts = item["timestamp"].as_str().unwrap_or_default().to_owned();
                if last.get(&name) != Some(&ts) {
                    if last.contains_key(&name) {
                        let sample = parse_rfc3339(&ts)?;
                        lags_ms.push((seen.as_secs_f64() - sample as f64) * 1e3);
                    }
                    last.insert(name, ts);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cluster.shutdown().await;
    anyhow::ensure!(!lags_ms.is_empty(), "no new samples observed");
    lags_ms.sort_by(f64::total_cmp);
    let pct = |p: f64| lags_ms[((lags_ms.len() - 1) as f64 * p).round() as usize];
    let goal = poll.as_secs_f64() * 1e3 + 250.0;
    println!(
        "freshness (kubelet sample -> visible in the API), {} samples, poll {} ms: p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms; goal <= {:.0} ms: {}",
        lags_ms.len(),
        poll.as_millis(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        lags_ms[lags_ms.len() - 1],
        goal,
        if pct(0.99) <= goal { "met" } else { "missed" }
    );
    Ok(())
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SSZ`.
fn parse_rfc3339(s: &str) -> anyhow::Result<i64> {
    let b = s.as_bytes();
    anyhow::ensure!(
        b.len() == 20 && b[19] == b'Z',
        "not a whole-second UTC time: {s}"
    );
    let num = |r: std::ops::Range<usize>| -> anyhow::Result<i64> { Ok(s[r].parse()?) };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // days from civil (Howard Hinnant's algorithm)
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(days * 86_400 + hh * 3600 + mm * 60 + ss)
}
