//! One scale run of `kubepulse-aggregator`: its own process, one gRPC stream per simulated
//! node, then a steady window at the kubelet interval with the lag probe and 100 paced HPAs,
//! then a saturating HPA loop and VPA-shaped lists.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use super::agents::{self, Plan};
use super::api::{self, ApiClient, HpaResult, VpaResult};
use super::procstat::{self, Sampler, Window};
use super::shapes::{self, Layout};
use super::stats::{Percentiles, percentiles};
use super::{Proc, free_port, sibling_binary, wait_listening, wall_ms};

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Simulated nodes.
    pub nodes: usize,
    /// Pods per node.
    pub pods_per_node: usize,
    /// Kubelet refresh interval (one delta per node per interval).
    pub interval: Duration,
    /// Steady window.
    pub duration: Duration,
    /// Where logs go.
    pub dir: PathBuf,
    /// Nodes whose ingest lag is probed.
    pub lag_probes: usize,
    /// Length of the saturating HPA loop.
    pub saturate: Duration,
    /// VPA-shaped lists taken.
    pub vpa_runs: usize,
    /// Streams connecting at once.
    pub connect_concurrency: usize,
    /// Streams per HTTP/2 connection (1 = one connection per node).
    pub streams_per_connection: usize,
    /// Nodes per simulated relay (0: no relay tier).
    pub nodes_per_relay: usize,
    /// Put one real `kubepulse-relay` process between the simulated agents (one connection
    /// per node) and the aggregator, and measure it too.
    pub through_relay: bool,
}

/// What one run measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Result {
    /// Simulated nodes.
    pub nodes: usize,
    /// Pods per node.
    pub pods_per_node: usize,
    /// Containers in the cluster.
    pub containers: usize,
    /// Kubelet interval, s.
    pub interval_s: f64,
    /// Time for every stream to connect and send its snapshot, s.
    pub connect_s: f64,
    /// Aggregator RSS with no stream, bytes.
    pub rss_idle: u64,
    /// The steady window: aggregator RSS and CPU.
    pub steady: Window,
    /// Steady RSS per node, bytes (connections included).
    pub rss_per_node: f64,
    /// Steady CPU per node, µs of CPU per second.
    pub cpu_us_per_node_s: f64,
    /// Ingest lag: kubelet timestamp → visible in the API.
    pub lag: Percentiles,
    /// Mean and largest delay of the simulated agents' sends after the kubelet timestamp, ms.
    pub send_late_mean_ms: f64,
    /// Largest send delay, ms.
    pub send_late_max_ms: f64,
    /// HPA-shaped queries.
    pub hpa: HpaResult,
    /// VPA-shaped lists.
    pub vpa: Vec<VpaResult>,
    /// Messages sent during the steady window, per second.
    pub messages_per_s: f64,
    /// Resyncs and stream failures during the run.
    pub resyncs: u64,
    /// Stream failures.
    pub failures: u64,
    /// The benchmark process's own CPU in the steady window (cores).
    pub bench_cpu_per_s: f64,
    /// Kubelet text bytes of one node, median shape.
    pub kubelet_text_bytes: usize,
    /// Machine load average when the steady window ended.
    pub loadavg: String,
    /// Streams per HTTP/2 connection.
    pub streams_per_connection: usize,
    /// TCP connections to the aggregator's ingest.
    pub connections: usize,
    /// Nodes per relay (0: agents stream directly).
    #[serde(default)]
    pub nodes_per_relay: usize,
    /// Ingest alone ([`QUIET`] after the steady window, no query of any kind): RSS and CPU.
    #[serde(default)]
    pub quiet: Window,
    /// RSS per node in the ingest-only window, bytes.
    #[serde(default)]
    pub quiet_rss_per_node: f64,
    /// CPU per node in the ingest-only window, µs of CPU per second.
    #[serde(default)]
    pub quiet_cpu_us_per_node_s: f64,
    /// When the ingest-only window started and ended, seconds after the run started.
    #[serde(default)]
    pub quiet_start_s: f64,
    /// See `quiet_start_s`.
    #[serde(default)]
    pub quiet_end_s: f64,
    /// The real relay process, when the run went through one.
    #[serde(default)]
    pub relay: Option<RelaySide>,
    /// Relay batches sent per second in the steady window (relayed runs).
    #[serde(default)]
    pub batches_per_s: f64,
}

/// What one real `kubepulse-relay` process cost, carrying every node to the aggregator.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RelaySide {
    /// RSS with no agent connected, bytes.
    pub rss_idle: u64,
    /// Over the steady window.
    pub steady: Window,
    /// Over the ingest-only window.
    pub quiet: Window,
    /// Ingest-only RSS per node, bytes.
    pub quiet_rss_per_node: f64,
    /// Ingest-only CPU per node, µs per second.
    pub quiet_cpu_us_per_node_s: f64,
}

/// Starts `kubepulse-relay` on a free loopback port, streaming to `aggregator` (plaintext).
async fn start_relay(dir: &Path, aggregator: SocketAddr) -> anyhow::Result<(Proc, SocketAddr)> {
    let bin = sibling_binary("kubepulse-relay")?;
    let grpc = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let health = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let args = vec![
        "--grpc-bind-address=127.0.0.1".to_owned(),
        format!("--grpc-port={}", grpc.port()),
        "--grpc-plaintext".to_owned(),
        format!("--aggregator-endpoints={aggregator}"),
        "--aggregator-plaintext".to_owned(),
        format!("--health-address={health}"),
        "--log-level=warn".to_owned(),
    ];
    let proc = Proc::spawn("kubepulse-relay", &bin, &args, &dir.join("relay.log"))?;
    wait_listening(grpc, Duration::from_secs(30)).await?;
    Ok((proc, grpc))
}

/// A running aggregator.
pub struct Aggregator {
    /// The process.
    pub proc: Proc,
    /// HTTPS Metrics API.
    pub https: SocketAddr,
    /// gRPC ingest.
    pub grpc: SocketAddr,
    /// Its self-signed serving certificate.
    pub cert: PathBuf,
}

/// Starts `kubepulse-aggregator` on free loopback ports, without a Kubernetes API.
pub async fn start_aggregator(dir: &Path) -> anyhow::Result<Aggregator> {
    let bin = sibling_binary("kubepulse-aggregator")?;
    let help = std::process::Command::new(&bin).arg("--help").output()?;
    let help = String::from_utf8_lossy(&help.stdout);
    let https = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let grpc = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let cert_dir = dir.join("aggregator-certs");
    std::fs::create_dir_all(&cert_dir)?;
    let mut args = vec![
        "--bind-address=127.0.0.1".to_owned(),
        format!("--secure-port={}", https.port()),
        "--grpc-bind-address=127.0.0.1".to_owned(),
        format!("--grpc-port={}", grpc.port()),
        "--grpc-plaintext".to_owned(),
        format!("--cert-dir={}", cert_dir.display()),
        "--log-level=warn".to_owned(),
    ];
    if help.contains("--standalone") {
        args.push("--standalone".to_owned());
    }
    // KUBEPULSE_BENCH_WRAP="heaptrack -o /tmp/agg" runs the aggregator under a profiler
    let proc = match std::env::var("KUBEPULSE_BENCH_WRAP") {
        Ok(wrap) if !wrap.trim().is_empty() => {
            let mut words = wrap.split_whitespace().map(str::to_owned);
            let program = PathBuf::from(words.next().unwrap_or_default());
            let mut full: Vec<String> = words.collect();
            full.push(bin.display().to_string());
            full.extend(args);
            Proc::spawn(
                "kubepulse-aggregator (wrapped)",
                &program,
                &full,
                &dir.join("aggregator.log"),
            )?
        }
        _ => Proc::spawn(
            "kubepulse-aggregator",
            &bin,
            &args,
            &dir.join("aggregator.log"),
        )?,
    };
    wait_listening(grpc, Duration::from_secs(30)).await?;
    wait_listening(https, Duration::from_secs(30)).await?;
    Ok(Aggregator {
        proc,
        https,
        grpc,
        cert: cert_dir.join("kubepulse.crt"),
    })
}

/// Length of the ingest-only window.
pub const QUIET: Duration = Duration::from_secs(30);

/// Runs the whole measurement.
pub async fn run(cfg: Config) -> anyhow::Result<Result> {
    let run_started = Instant::now();
    std::fs::create_dir_all(&cfg.dir)?;
    let layout = Layout::new(
        cfg.nodes,
        cfg.pods_per_node,
        cfg.interval.as_millis() as i64,
    );
    let t = Instant::now();
    let shapes = shapes::record(&layout, wall_ms())?;
    eprintln!(
        "[ours] recorded {} shapes × {} deltas in {:.1}s",
        shapes.len(),
        shapes[0].deltas.len(),
        t.elapsed().as_secs_f64()
    );
    let mut aggregator = start_aggregator(&cfg.dir).await?;
    let pid = aggregator.proc.pid();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut sampler = Sampler::new(pid);
    let mut self_sampler = Sampler::new(std::process::id());
    let rss_idle = sampler.sample()?.rss;
    // the real relay, sampled every second from its start (offsets from `run_started`)
    let mut relay = None;
    if cfg.through_relay {
        let (proc, addr) = start_relay(&cfg.dir, aggregator.grpc).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let offset = run_started.elapsed();
        let (stop, sampling) = procstat::sample_in_background(proc.pid());
        relay = Some((proc, addr, offset, stop, sampling));
    }
    let ingest_addr = relay.as_ref().map_or(aggregator.grpc, |r| r.1);

    let epoch = wall_ms();
    let plan = Arc::new(Plan {
        layout: layout.clone(),
        shapes,
        grpc: ingest_addr,
        epoch_ms: epoch - epoch.rem_euclid(layout.interval_ms),
        counters: agents::Counters::default(),
        streams_per_connection: cfg.streams_per_connection.max(1),
        nodes_per_relay: cfg.nodes_per_relay,
    });
    let mut streams = JoinSet::new();
    let t = Instant::now();
    {
        let connect = agents::start(plan.clone(), cfg.connect_concurrency, &mut streams);
        tokio::pin!(connect);
        loop {
            tokio::select! {
                r = &mut connect => { r?; break; }
                _ = tokio::time::sleep(Duration::from_secs(5)) => {
                    aggregator.proc.check_alive()?;
                    let r = sampler.sample()?;
                    eprintln!(
                        "[ours] connecting: {}/{} streams open, aggregator RSS {} MiB, CPU {:.1}s",
                        plan.counters.open.load(Ordering::Relaxed), layout.nodes, r.rss >> 20, r.cpu
                    );
                }
            }
        }
    }
    // a stream that failed once reconnects after a second
    let retry_until = Instant::now() + Duration::from_secs(30);
    while (plan.counters.open.load(Ordering::Relaxed) as usize) < layout.nodes
        && Instant::now() < retry_until
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let connect_s = t.elapsed().as_secs_f64();
    let open = plan.counters.open.load(Ordering::Relaxed);
    eprintln!(
        "[ours] {open}/{} streams open after {connect_s:.1}s",
        layout.nodes
    );
    anyhow::ensure!(
        open as usize == layout.nodes,
        "only {open} of {} streams opened",
        layout.nodes
    );

    // warm up for one interval (every node sends a delta), then the steady window
    let warm = cfg.interval + Duration::from_secs(2);
    sample_for(&mut sampler, &mut self_sampler, &mut aggregator.proc, warm).await?;
    let steady_from = sampler.sample()?.at;
    let steady_start_s = run_started.elapsed().as_secs_f64();
    let self_from = self_sampler.sample()?.at;
    let batches_before = plan.counters.batches.load(Ordering::Relaxed);
    let sent_before = plan.counters.deltas.load(Ordering::Relaxed)
        + plan.counters.heartbeats.load(Ordering::Relaxed);
    let late_before = (
        plan.counters.send_late_us.load(Ordering::Relaxed),
        plan.counters.deltas.load(Ordering::Relaxed),
    );
    let until = Instant::now() + cfg.duration;
    let lag = tokio::spawn(api::probe_lag(
        plan.clone(),
        aggregator.https,
        aggregator.cert.clone(),
        cfg.lag_probes,
        until,
    ));
    let mut hpa_client = ApiClient::new(aggregator.https, &aggregator.cert)?;
    let hpa_layout = layout.clone();
    let hpa = tokio::spawn(async move {
        let r = api::hpa_paced(
            &mut hpa_client,
            &hpa_layout,
            100,
            Duration::from_secs(15),
            until,
        )
        .await;
        (hpa_client, r)
    });
    sample_for(
        &mut sampler,
        &mut self_sampler,
        &mut aggregator.proc,
        cfg.duration,
    )
    .await?;
    let steady = procstat::window(&sampler.readings, steady_from);
    let bench_cpu = procstat::window(&self_sampler.readings, self_from).cpu_per_s;
    let sent_after = plan.counters.deltas.load(Ordering::Relaxed)
        + plan.counters.heartbeats.load(Ordering::Relaxed);
    let late = (
        plan.counters.send_late_us.load(Ordering::Relaxed) - late_before.0,
        plan.counters.deltas.load(Ordering::Relaxed) - late_before.1,
    );
    let lags = lag.await??;
    let (mut hpa_client, paced) = hpa.await?;
    let (paced, answer_bytes) = paced?;
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!(
        "[ours] steady: RSS {} MiB, CPU {:.3} cores; lag {:?}",
        steady.rss_median >> 20,
        steady.cpu_per_s,
        percentiles(&lags)
    );

    let steady_end_s = run_started.elapsed().as_secs_f64();
    // ingest alone: no lag probe, no HPA, nothing but the agents' streams (what the
    // side-by-side compares with metrics-server, which is not queried at all)
    let quiet_start_s = run_started.elapsed().as_secs_f64();
    let quiet_from = sampler.sample()?.at;
    sample_for(&mut sampler, &mut self_sampler, &mut aggregator.proc, QUIET).await?;
    let quiet = procstat::window(&sampler.readings, quiet_from);
    let quiet_end_s = run_started.elapsed().as_secs_f64();
    eprintln!(
        "[ours] ingest only: RSS {} MiB, CPU {:.4} cores",
        quiet.rss_median >> 20,
        quiet.cpu_per_s
    );

    let (saturating, qps) = api::hpa_saturating(&mut hpa_client, &layout, cfg.saturate).await?;
    eprintln!("[ours] saturating HPA loop: {saturating:?}, {qps:.0} q/s");
    let mut vpa = Vec::new();
    for _ in 0..cfg.vpa_runs {
        let mut client = ApiClient::new(aggregator.https, &aggregator.cert)?;
        let r = api::vpa_list(&mut client, pid).await?;
        eprintln!(
            "[ours] VPA list: {} pods, {} MiB in {:.0} ms = {:.0} pods/s, RSS {} → peak {} MiB",
            r.pods,
            r.bytes >> 20,
            r.total_ms,
            r.pods_per_s,
            r.rss_before >> 20,
            r.rss_peak >> 20
        );
        vpa.push(r);
    }
    aggregator.proc.check_alive()?;
    // the agents go first, so that stopping the relay fails none of their streams
    streams.abort_all();
    let relay = match relay {
        Some((mut proc, _, offset, stop, sampling)) => {
            proc.check_alive()?;
            stop.store(true, Ordering::Relaxed);
            let s = sampling.await?;
            let at = |secs: f64| Duration::from_secs_f64(secs).saturating_sub(offset);
            let quiet = procstat::window_between(&s.readings, at(quiet_start_s), at(quiet_end_s));
            proc.stop();
            Some(RelaySide {
                rss_idle: s.readings.first().map_or(0, |r| r.rss),
                steady: procstat::window_between(&s.readings, at(steady_start_s), at(steady_end_s)),
                quiet_rss_per_node: quiet.rss_median as f64 / layout.nodes as f64,
                quiet_cpu_us_per_node_s: quiet.cpu_per_s * 1e6 / layout.nodes as f64,
                quiet,
            })
        }
        None => None,
    };
    aggregator.proc.stop();
    let c = &plan.counters;
    Ok(Result {
        nodes: layout.nodes,
        pods_per_node: layout.pods_per_node,
        containers: plan.shapes.iter().map(|s| s.containers).sum::<usize>() * layout.nodes
            / plan.shapes.len(),
        interval_s: cfg.interval.as_secs_f64(),
        connect_s,
        rss_idle,
        steady,
        rss_per_node: steady.rss_median as f64 / layout.nodes as f64,
        cpu_us_per_node_s: steady.cpu_per_s * 1e6 / layout.nodes as f64,
        lag: percentiles(&lags),
        send_late_mean_ms: late.0 as f64 / late.1.max(1) as f64 / 1e3,
        send_late_max_ms: c.send_late_max_us.load(Ordering::Relaxed) as f64 / 1e3,
        hpa: HpaResult {
            paced: percentiles(&paced),
            saturating,
            saturating_qps: qps,
            answer_bytes,
        },
        vpa,
        messages_per_s: (sent_after - sent_before) as f64 / steady.seconds.max(1e-9),
        resyncs: c.resyncs.load(Ordering::Relaxed),
        failures: c.failures.load(Ordering::Relaxed),
        bench_cpu_per_s: bench_cpu,
        kubelet_text_bytes: plan.shapes[0].kubelet_text_bytes,
        loadavg: loadavg.trim().to_owned(),
        streams_per_connection: cfg.streams_per_connection.max(1),
        connections: if cfg.nodes_per_relay > 0 {
            layout.nodes.div_ceil(cfg.nodes_per_relay)
        } else {
            layout.nodes.div_ceil(cfg.streams_per_connection.max(1))
        },
        nodes_per_relay: cfg.nodes_per_relay,
        relay,
        quiet_rss_per_node: quiet.rss_median as f64 / layout.nodes as f64,
        quiet_cpu_us_per_node_s: quiet.cpu_per_s * 1e6 / layout.nodes as f64,
        quiet,
        quiet_start_s,
        quiet_end_s,
        batches_per_s: (c.batches.load(Ordering::Relaxed) - batches_before) as f64
            / steady.seconds.max(1e-9),
    })
}

async fn sample_for(
    sampler: &mut Sampler,
    self_sampler: &mut Sampler,
    proc: &mut Proc,
    length: Duration,
) -> anyhow::Result<()> {
    let end = Instant::now() + length;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1)).await;
        proc.check_alive()?;
        sampler.sample()?;
        self_sampler.sample()?;
    }
    Ok(())
}
