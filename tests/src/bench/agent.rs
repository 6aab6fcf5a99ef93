//! The real `kubepulse-agent` binary against one simulated kubelet, streaming to the real
//! aggregator through a byte-counting TCP relay: RSS and CPU per tick from `/proc`, kubelet
//! reads from the simulator's counter, and the bytes the agent put on the wire against the
//! kubelet text it read.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::procstat::Sampler;
use super::{Proc, sibling_binary};
use crate::sim::{self, FleetConfig, SimOptions};

/// What the agent run measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AgentResult {
    /// Pods on the node.
    pub pods: usize,
    /// Agent poll interval, s.
    pub poll_interval_s: f64,
    /// Kubelet stats refresh period, s.
    pub kubelet_refresh_s: f64,
    /// Steady window, s.
    pub seconds: f64,
    /// Kubelet reads (agent ticks) in the window.
    pub ticks: u64,
    /// Agent RSS, median over the window, bytes.
    pub rss_median: u64,
    /// Agent peak RSS over its whole life (VmHWM), bytes.
    pub rss_peak: u64,
    /// Agent CPU per tick, µs.
    pub cpu_us_per_tick: f64,
    /// Bytes of one kubelet body.
    pub kubelet_text_bytes: u64,
    /// Agent → aggregator bytes in the window (TCP payload: HTTP/2 frames, gRPC messages,
    /// heartbeats and pings included).
    pub wire_bytes: u64,
    /// Kubelet refreshes in the window.
    pub refreshes: f64,
    /// Wire bytes per kubelet refresh (one delta plus that period's heartbeats and pings).
    pub wire_bytes_per_refresh: f64,
    /// Kubelet text bytes read per refresh period (every poll reads a whole body).
    pub kubelet_bytes_per_refresh: f64,
    /// Wire bytes per refresh ÷ one kubelet body.
    pub wire_vs_one_body: f64,
    /// Wire bytes ÷ kubelet bytes read, over the window.
    pub wire_vs_read: f64,
}

/// A relay that counts the bytes going each way.
async fn relay(
    listener: TcpListener,
    target: std::net::SocketAddr,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
) {
    while let Ok((client, _)) = listener.accept().await {
        let (up, down) = (up.clone(), down.clone());
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(target).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let a = async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = cr.read(&mut buf).await {
                    if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    up.fetch_add(n as u64, Ordering::Relaxed);
                }
            };
            let b = async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = sr.read(&mut buf).await {
                    if n == 0 || cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    down.fetch_add(n as u64, Ordering::Relaxed);
                }
            };
            tokio::join!(a, b);
        });
    }
}

/// Runs the agent for `duration` after a warm-up.
pub async fn run(
    dir: &std::path::Path,
    pods: usize,
    refresh: Duration,
    duration: Duration,
) -> anyhow::Result<AgentResult> {
    std::fs::create_dir_all(dir)?;
    let fleet = sim::start(SimOptions {
        fleet: FleetConfig {
            nodes: 1,
            pods_per_node: pods,
            refresh_ms: refresh.as_millis() as i64,
            ..FleetConfig::default()
        },
        token: Some("bench-token".to_owned()),
        ..SimOptions::default()
    })
    .await?;
    std::fs::write(dir.join("kubelet-ca.crt"), &fleet.ca_pem)?;
    std::fs::write(dir.join("token"), "bench-token")?;
    let aggregator = super::ours::start_aggregator(dir).await?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let proxy = listener.local_addr()?;
    let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    tokio::spawn(relay(listener, aggregator.grpc, up.clone(), down.clone()));
    let node = &fleet.nodes[0];
    let poll = Duration::from_secs(1);
    let mut agent = Proc::spawn(
        "kubepulse-agent",
        &sibling_binary("kubepulse-agent")?,
        &[
            format!("--node-name={}", node.name),
            format!("--kubelet-address={}", node.address),
            format!(
                "--kubelet-certificate-authority={}",
                dir.join("kubelet-ca.crt").display()
            ),
            format!("--kubelet-token-file={}", dir.join("token").display()),
            format!("--poll-interval={}ms", poll.as_millis()),
            format!("--aggregator-endpoints={proxy}"),
            "--aggregator-plaintext".to_owned(),
            "--health-address=127.0.0.1:0".to_owned(),
            "--log-level=warn".to_owned(),
        ],
        &dir.join("agent.log"),
    )?;
    // warm up: two kubelet refreshes for usage, then one more for a steady delta
    tokio::time::sleep(refresh * 3 + Duration::from_secs(2)).await;
    agent.check_alive()?;
    let mut sampler = Sampler::new(agent.pid());
    let reads = || fleet.reads[0].load(Ordering::Relaxed);
    let (r0, u0, s0) = (reads(), up.load(Ordering::Relaxed), sampler.sample()?);
    let c0 = super::procstat::cpu_precise(agent.pid())?;
    let end = tokio::time::Instant::now() + duration;
    while tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1)).await;
        agent.check_alive()?;
        sampler.sample()?;
    }
    let (r1, u1, s1) = (reads(), up.load(Ordering::Relaxed), sampler.sample()?);
    let c1 = super::procstat::cpu_precise(agent.pid())?;
    let text = {
        let f = fleet.fleet.lock().expect("fleet lock");
        sim::render::render(&f, &f.nodes[0], super::wall_ms()).len() as u64
    };
    let mut rss: Vec<u64> = sampler.readings.iter().map(|r| r.rss).collect();
    rss.sort_unstable();
    let seconds = (s1.at - s0.at).as_secs_f64();
    let ticks = r1 - r0;
    let wire = u1 - u0;
    let refreshes = seconds / refresh.as_secs_f64();
    agent.stop();
    drop(aggregator);
    Ok(AgentResult {
        pods,
        poll_interval_s: poll.as_secs_f64(),
        kubelet_refresh_s: refresh.as_secs_f64(),
        seconds,
        ticks,
        rss_median: rss[rss.len() / 2],
        rss_peak: s1.hwm,
        cpu_us_per_tick: (c1 - c0) * 1e6 / ticks.max(1) as f64,
        kubelet_text_bytes: text,
        wire_bytes: wire,
        refreshes,
        wire_bytes_per_refresh: wire as f64 / refreshes,
        kubelet_bytes_per_refresh: (ticks * text) as f64 / refreshes,
        wire_vs_one_body: wire as f64 / refreshes / text as f64,
        wire_vs_read: wire as f64 / (ticks * text).max(1) as f64,
    })
}
