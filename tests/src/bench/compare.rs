//! Side by side: metrics-server (`upstream`) scraping the simulated
//! kubelets while `kubepulse-aggregator` (`ours`) ingests the same cluster from
//! simulated agents, same machine, same time. And the kubelet reads per node per interval of
//! both with two replicas.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::ours;
use super::procstat::{self, Window};
use super::shapes::Layout;
use super::upstream;
use super::{Proc, sibling_binary};

/// metrics-server's side of a comparison.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct UpstreamResult {
    /// Nodes.
    pub nodes: usize,
    /// Nodes it served metrics for at the end.
    pub nodes_served: usize,
    /// Its RSS and CPU while the aggregator's steady window ran.
    pub steady: Window,
    /// RSS per node, bytes.
    pub rss_per_node: f64,
    /// CPU per node, µs per second.
    pub cpu_us_per_node_s: f64,
    /// Kubelet reads per node per metric resolution.
    pub reads_per_node_interval: f64,
    /// Seconds from its start until it served ≥ 95% of the nodes.
    pub ready_s: f64,
}

/// Both sides and the ratios.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CompareResult {
    /// kubepulse.
    pub ours: ours::Result,
    /// metrics-server.
    pub upstream: UpstreamResult,
    /// metrics-server memory per node ÷ ours.
    pub memory_ratio: f64,
    /// metrics-server CPU per node ÷ ours.
    pub cpu_ratio: f64,
    /// metrics-server in our ingest-only window (neither side queried).
    #[serde(default)]
    pub upstream_quiet: QuietResult,
    /// metrics-server memory per node ÷ ours, both ingesting only.
    #[serde(default)]
    pub quiet_memory_ratio: f64,
    /// metrics-server CPU per node ÷ ours, both ingesting only.
    #[serde(default)]
    pub quiet_cpu_ratio: f64,
}

/// One side's cost in the ingest-only window.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct QuietResult {
    /// RSS and CPU.
    pub window: Window,
    /// RSS per node, bytes.
    pub rss_per_node: f64,
    /// CPU per node, µs per second.
    pub cpu_us_per_node_s: f64,
}

/// Runs metrics-server and the aggregator on the same cluster at the same time.
pub async fn run(cfg: ours::Config) -> anyhow::Result<CompareResult> {
    let layout = Layout::new(
        cfg.nodes,
        cfg.pods_per_node,
        cfg.interval.as_millis() as i64,
    );
    let up = upstream::start(&layout, &cfg.dir.join("upstream"), 1, cfg.interval).await?;
    let pid = up.metrics_server_pids[0];
    let t = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let served = up.nodes_served(0);
        eprintln!(
            "[upstream] metrics-server serves {served}/{} nodes",
            cfg.nodes
        );
        if served * 100 >= cfg.nodes * 95 {
            break;
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(300),
            "metrics-server serves only {served} nodes after 300s"
        );
    }
    let ready_s = t.elapsed().as_secs_f64();
    // sample metrics-server for the whole of our run; keep the readings of our steady window
    let (stop, sampling) = procstat::sample_in_background(pid);
    let reads0 = (up.reads(), Instant::now());
    let started = Instant::now();
    let ours = ours::run(cfg.clone()).await?;
    let reads1 = (up.reads(), Instant::now());
    stop.store(true, Ordering::Relaxed);
    let sampler = sampling.await?;
    // our steady window ended before the query phases; approximate it by the same length
    // ending at the queries' start is not known here, so take the whole run after warm-up
    let warm = (ours.connect_s + ours.interval_s + 2.0).min(started.elapsed().as_secs_f64());
    let steady = procstat::window(&sampler.readings, Duration::from_secs_f64(warm));
    let served = up.nodes_served(0);
    let intervals = (reads1.1 - reads0.1).as_secs_f64() / cfg.interval.as_secs_f64();
    let upstream = UpstreamResult {
        nodes: cfg.nodes,
        nodes_served: served,
        steady,
        rss_per_node: steady.rss_median as f64 / cfg.nodes as f64,
        cpu_us_per_node_s: steady.cpu_per_s * 1e6 / cfg.nodes as f64,
        reads_per_node_interval: (reads1.0 - reads0.0) as f64 / cfg.nodes as f64 / intervals,
        ready_s,
    };
    // both ingesting only, same seconds: our ingest-only window
    let quiet = procstat::window_between(
        &sampler.readings,
        Duration::from_secs_f64(ours.quiet_start_s),
        Duration::from_secs_f64(ours.quiet_end_s),
    );
    let upstream_quiet = QuietResult {
        rss_per_node: quiet.rss_median as f64 / cfg.nodes as f64,
        cpu_us_per_node_s: quiet.cpu_per_s * 1e6 / cfg.nodes as f64,
        window: quiet,
    };
    drop(up);
    Ok(CompareResult {
        quiet_memory_ratio: upstream_quiet.rss_per_node / ours.quiet_rss_per_node,
        quiet_cpu_ratio: upstream_quiet.cpu_us_per_node_s / ours.quiet_cpu_us_per_node_s,
        upstream_quiet,
        memory_ratio: upstream.rss_per_node / ours.rss_per_node,
        cpu_ratio: upstream.cpu_us_per_node_s / ours.cpu_us_per_node_s,
        ours,
        upstream,
    })
}

/// Kubelet reads per node per interval with two replicas of each.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReadsResult {
    /// Nodes.
    pub nodes: usize,
    /// Seconds counted.
    pub seconds: f64,
    /// metrics-server, 2 replicas, reads per node per `--metric-resolution`.
    pub metrics_server: f64,
    /// kubepulse agents (one per node, default 1 s poll) with 2 aggregator replicas, reads per
    /// node per the same interval.
    pub kubepulse: f64,
    /// The interval, s.
    pub interval_s: f64,
}

/// Counts kubelet reads: two metrics-server replicas against one simulated fleet, then one
/// real agent per node streaming to two aggregator replicas against another.
pub async fn reads(
    dir: &Path,
    nodes: usize,
    interval: Duration,
    length: Duration,
) -> anyhow::Result<ReadsResult> {
    let layout = Layout::new(nodes, 10, interval.as_millis() as i64);
    let up = upstream::start(&layout, &dir.join("upstream"), 2, interval).await?;
    // both replicas up and scraping
    tokio::time::sleep(interval * 2 + Duration::from_secs(10)).await;
    let r0 = (up.reads(), Instant::now());
    tokio::time::sleep(length).await;
    let r1 = (up.reads(), Instant::now());
    let secs = (r1.1 - r0.1).as_secs_f64();
    let metrics_server = (r1.0 - r0.0) as f64 / nodes as f64 / (secs / interval.as_secs_f64());
    drop(up);

    let fleet = crate::sim::start_with(Default::default(), layout.fleet(super::wall_ms())).await?;
    std::fs::write(dir.join("kubelet-ca.crt"), &fleet.ca_pem)?;
    std::fs::write(dir.join("token"), "any")?;
    let a = ours::start_aggregator(&dir.join("replica-0")).await?;
    let b = ours::start_aggregator(&dir.join("replica-1")).await?;
    let bin = sibling_binary("kubepulse-agent")?;
    let mut agents = Vec::new();
    for (i, node) in fleet.nodes.iter().enumerate() {
        agents.push(Proc::spawn(
            "kubepulse-agent",
            &bin,
            &[
                format!("--node-name={}", node.name),
                format!("--kubelet-address={}", node.address),
                "--kubelet-insecure-tls".to_owned(),
                format!("--kubelet-token-file={}", dir.join("token").display()),
                format!("--aggregator-endpoints={},{}", a.grpc, b.grpc),
                "--aggregator-plaintext".to_owned(),
                "--health-address=127.0.0.1:0".to_owned(),
                "--log-level=warn".to_owned(),
            ],
            &dir.join(format!("agent-{i}.log")),
        )?);
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let total = || -> u64 { fleet.reads.iter().map(|r| r.load(Ordering::Relaxed)).sum() };
    let k0 = (total(), Instant::now());
    tokio::time::sleep(length).await;
    let k1 = (total(), Instant::now());
    let secs_k = (k1.1 - k0.1).as_secs_f64();
    for a in &mut agents {
        a.check_alive()?;
    }
    drop(agents);
    Ok(ReadsResult {
        nodes,
        seconds: secs,
        metrics_server,
        kubepulse: (k1.0 - k0.0) as f64 / nodes as f64 / (secs_k / interval.as_secs_f64()),
        interval_s: interval.as_secs_f64(),
    })
}
