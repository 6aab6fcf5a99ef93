//! What `/proc` says about a process: resident memory and CPU time, sampled over a run.

use std::time::{Duration, Instant};

/// One reading.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reading {
    /// When, since the sampler started.
    pub at: Duration,
    /// `VmRSS`, bytes.
    pub rss: u64,
    /// `VmHWM` (peak RSS), bytes.
    pub hwm: u64,
    /// utime + stime, seconds.
    pub cpu: f64,
}

/// Clock ticks per second of `/proc/PID/stat` times.
fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Reads `pid` now.
pub fn read(pid: u32, tck: f64, at: Duration) -> anyhow::Result<Reading> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // fields after the command name (which may contain spaces) start at field 3
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow::anyhow!("bad /proc/{pid}/stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ok(Reading {
        at,
        rss: kb("VmRSS:"),
        hwm: kb("VmHWM:"),
        cpu: ticks as f64 / tck,
    })
}

/// Resets the process's peak RSS (`VmHWM`) to its current RSS.
pub fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// Samples a process every `every`.
pub struct Sampler {
    pid: u32,
    tck: f64,
    start: Instant,
    /// Readings so far.
    pub readings: Vec<Reading>,
}

impl Sampler {
    /// A sampler of `pid`.
    pub fn new(pid: u32) -> Self {
        Self {
            pid,
            tck: clk_tck(),
            start: Instant::now(),
            readings: Vec::new(),
        }
    }

    /// Takes one reading (kept) and returns it.
    pub fn sample(&mut self) -> anyhow::Result<Reading> {
        let r = read(self.pid, self.tck, self.start.elapsed())?;
        self.readings.push(r);
        Ok(r)
    }

    /// Reads without keeping.
    pub fn peek(&self) -> anyhow::Result<Reading> {
        read(self.pid, self.tck, self.start.elapsed())
    }

    /// The pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

/// Summary of a steady window between two readings.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Window {
    /// Seconds.
    pub seconds: f64,
    /// CPU seconds per second (1.0 = one core).
    pub cpu_per_s: f64,
    /// Median RSS over the window, bytes.
    pub rss_median: u64,
    /// Largest RSS seen in the window, bytes.
    pub rss_max: u64,
}

/// The window of `readings` from `from` on.
pub fn window(readings: &[Reading], from: Duration) -> Window {
    window_between(readings, from, Duration::MAX)
}

/// The window of `readings` from `from` to `to`.
pub fn window_between(readings: &[Reading], from: Duration, to: Duration) -> Window {
    let w: Vec<&Reading> = readings
        .iter()
        .filter(|r| r.at >= from && r.at <= to)
        .collect();
    let (Some(first), Some(last)) = (w.first(), w.last()) else {
        return Window::default();
    };
    let seconds = (last.at - first.at).as_secs_f64();
    let mut rss: Vec<u64> = w.iter().map(|r| r.rss).collect();
    rss.sort_unstable();
    Window {
        seconds,
        cpu_per_s: if seconds > 0.0 {
            (last.cpu - first.cpu) / seconds
        } else {
            0.0
        },
        rss_median: rss[rss.len() / 2],
        rss_max: *rss.last().unwrap_or(&0),
    }
}

/// CPU time of every live thread of `pid`, from `/proc/PID/task/*/schedstat` (nanosecond
/// precision, unlike the 10 ms ticks of `/proc/PID/stat`), seconds.
pub fn cpu_precise(pid: u32) -> anyhow::Result<f64> {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        if let Ok(s) = std::fs::read_to_string(path) {
            ns += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(ns as f64 / 1e9)
}

/// A [`Sampler`] of `pid` reading once a second in a task of its own, until the flag is set;
/// the task returns the sampler with its readings.
pub fn sample_in_background(
    pid: u32,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    tokio::task::JoinHandle<Sampler>,
) {
    use std::sync::atomic::Ordering;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let task = tokio::spawn(async move {
        let mut s = Sampler::new(pid);
        while !flag.load(Ordering::Relaxed) {
            let _ = s.sample();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        s
    });
    (stop, task)
}
