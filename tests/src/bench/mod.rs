//! The scale benchmark (`make bench-scale`, `kubepulse-bench-scale`): the real aggregator
//! binary in its own process, fed by one real gRPC stream per simulated node, measured from
//! `/proc` while it ingests and answers HPA- and VPA-shaped queries; upstream metrics-server
//! side by side against the same simulated cluster through a real kube-apiserver; the real
//! agent binary against a simulated kubelet. Results are JSON files that
//! [`report`] turns into the tables and the plot of `BENCHMARKS.md`.
//!
//! - [`shapes`]: the simulated cluster and its recorded agent streams;
//! - [`agents`]: the simulated agents (gRPC streams, many loopback source addresses);
//! - [`api`]: Metrics API load: ingest-lag probe, HPA and VPA queries;
//! - [`procstat`]: RSS and CPU time from `/proc`;
//! - [`ours`]: one scale run against `kubepulse-aggregator`;
//! - [`upstream`]: etcd + kube-apiserver + metrics-server over the simulated kubelets;
//! - [`compare`]: both at once on the same cluster, and kubelet reads with two replicas;
//! - [`agent`]: the real agent against a 110-pod simulated node;
//! - [`report`]: tables and the SVG plot.

pub mod agent;
pub mod agents;
pub mod api;
pub mod compare;
pub mod ours;
pub mod procstat;
pub mod relayed;
pub mod report;
pub mod shapes;
pub mod stats;
pub mod upstream;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;

/// Wall-clock milliseconds since the epoch.
pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Raises this process's open-file limit (soft and hard) to `n`, or when that is refused
/// (no CAP_SYS_RESOURCE) the soft limit to the hard one; children inherit it. Returns the
/// limit in force.
pub fn raise_nofile(n: u64) -> anyhow::Result<u64> {
    let pid = std::process::id().to_string();
    let set = |limit: &str| {
        Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={limit}")])
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if !set(&format!("{n}:{n}")) {
        let out = Command::new("prlimit")
            .args(["--pid", &pid, "--nofile", "--output=HARD", "--noheadings"])
            .output()
            .context("run prlimit")?;
        let hard = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        anyhow::ensure!(
            set(&format!("{hard}:{hard}")),
            "prlimit --nofile={hard} failed"
        );
    }
    let out = Command::new("prlimit")
        .args(["--pid", &pid, "--nofile", "--output=SOFT", "--noheadings"])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// A free TCP port on 127.0.0.1 (free when asked; tiny race until the server binds).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A binary next to this one (the release build puts every binary in one folder).
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe
        .parent()
        .map(|d| d.join(name))
        .ok_or_else(|| anyhow::anyhow!("no folder for {}", exe.display()))?;
    anyhow::ensure!(
        path.is_file(),
        "{} is missing: build the release binaries first (make release)",
        path.display()
    );
    Ok(path)
}

/// A child process killed when dropped.
pub struct Proc {
    /// The child.
    pub child: Child,
    /// What it is.
    pub name: String,
}

impl Proc {
    /// Spawns `program args…` with stdout and stderr to `log`.
    pub fn spawn(name: &str, program: &Path, args: &[String], log: &Path) -> anyhow::Result<Self> {
        let out = std::fs::File::create(log)?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("start {}", program.display()))?;
        Ok(Self {
            child,
            name: name.to_owned(),
        })
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when it exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!("{} exited: {status}", self.name);
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub fn stop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until `addr` accepts TCP connections.
pub async fn wait_listening(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{addr} not listening after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Machine facts for the report.
pub fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    serde_json::json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "mem_total_gib": mem_kb as f64 / 1048576.0,
        "loadavg_at_start": load.trim(),
    })
}
