//! Child processes of the control plane, each in its own process group with its output in a
//! log file, killed (the whole group) when dropped.
//!
//! Children must also die when the test process dies without running destructors (a shared
//! control plane lives in a `static`, and statics are never dropped). The workspace forbids
//! `unsafe`, so `PR_SET_PDEATHSIG` cannot be set through `CommandExt::pre_exec`; instead every
//! child is started through util-linux `setpriv --pdeathsig KILL`, which sets it and then execs
//! the binary (same pid). The parent-death signal fires when the *thread* that forked exits, so
//! every child is forked by one spawner thread that lives as long as the process.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use anyhow::Context as _;

type Job = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Forks `command` from the process-lifetime spawner thread.
fn spawn_from_spawner(command: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("control-plane-spawner".into())
            .spawn(move || {
                // The static sender never drops, so this loop ends only with the process.
                while let Ok((mut command, reply)) = rx.recv() {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("start the spawner thread");
        Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    sender
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((command, reply))
        .map_err(|_| std::io::Error::other("spawner thread gone"))?;
    answer
        .recv()
        .map_err(|_| std::io::Error::other("spawner thread gone"))?
}

/// Whether `setpriv --pdeathsig` is available (util-linux ≥ 2.33).
pub fn has_pdeathsig() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        Command::new("setpriv")
            .arg("--help")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--pdeathsig"))
    })
}

/// A running child process.
pub struct Proc {
    /// Short name (`etcd`, `kube-apiserver`, …).
    pub name: String,
    /// Its combined stdout and stderr.
    pub log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    /// Starts `program args…` in a new process group, output appended to `log`.
    pub fn spawn(name: &str, program: &Path, args: &[String], log: &Path) -> anyhow::Result<Self> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("create log file {}", log.display()))?;
        let err = out.try_clone()?;
        let mut command = if has_pdeathsig() {
            let mut c = Command::new("setpriv");
            c.args(["--pdeathsig", "KILL", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        use std::os::unix::process::CommandExt as _;
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = spawn_from_spawner(command)
            .with_context(|| format!("start {name} ({})", program.display()))?;
        Ok(Self {
            name: name.to_owned(),
            log: log.to_owned(),
            child: Some(child),
        })
    }

    /// The process id.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// Kills the whole process group and reaps the child.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if child.try_wait().ok().flatten().is_none() {
            let pgid = rustix::process::Pid::from_child(&child);
            if rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL).is_err() {
                let _ = child.kill();
            }
        }
        // SIGKILL cannot be ignored; waiting is brief.
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `lines` lines of a file (reads at most its last 256 KiB).
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(256 * 1024);
    let _ = f.seek(SeekFrom::Start(start));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
