//! Where the control-plane binaries are: `tests/tools/build.sh paths` is the single source of
//! truth (versions and cache folder), so this module never guesses a path itself.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The binaries a control plane needs, all present and executable.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// etcd.
    pub etcd: PathBuf,
    /// kube-apiserver.
    pub kube_apiserver: PathBuf,
    /// kube-controller-manager.
    pub kube_controller_manager: PathBuf,
    /// kubectl.
    pub kubectl: PathBuf,
}

/// The folder holding `tools/build.sh`.
pub fn tools_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tools")
}

/// True when running under CI (`CI=true`), where a missing binary is a failure, not a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

impl Binaries {
    /// Asks `tests/tools/build.sh paths` where the binaries are. The error names every missing
    /// binary and says how to build it.
    pub fn locate() -> anyhow::Result<Self> {
        Self::locate_in(None)
    }

    /// [`Binaries::locate`] in tools cache `cache` (`KUBEPULSE_TOOLS_CACHE` of build.sh)
    /// instead of the default.
    pub fn locate_in(cache: Option<&Path>) -> anyhow::Result<Self> {
        let out = listed_paths(cache)?;
        let text = String::from_utf8_lossy(&out.stdout);
        let find = |name: &str| find_listed(&text, name);
        let mut missing = Vec::new();
        let mut get = |name: &str| -> PathBuf {
            match find(name) {
                Some(p) if is_executable(&p) => p,
                Some(p) => {
                    missing.push(format!("{name} ({})", p.display()));
                    p
                }
                None => {
                    missing.push(format!("{name} (not listed by build.sh paths)"));
                    PathBuf::new()
                }
            }
        };
        let binaries = Self {
            etcd: get("etcd"),
            kube_apiserver: get("kube-apiserver"),
            kube_controller_manager: get("kube-controller-manager"),
            kubectl: get("kubectl"),
        };
        if missing.is_empty() {
            Ok(binaries)
        } else {
            anyhow::bail!(
                "control-plane binaries missing: {}; run `tests/tools/build.sh` (builds etcd, \
                 kube-apiserver and kube-controller-manager from the Go module proxy and fetches \
                 kubectl; the cold build takes tens of minutes, cached afterwards){}",
                missing.join(", "),
                if out.stderr.is_empty() {
                    String::new()
                } else {
                    format!("\nbuild.sh said:\n{}", String::from_utf8_lossy(&out.stderr))
                }
            )
        }
    }

    /// The binaries, or `None` after printing `SKIP` when they are missing outside CI. Under
    /// `CI=true` a missing binary panics: CI must run these tests, never skip them.
    pub fn require(test: &str) -> Option<Self> {
        match Self::locate() {
            Ok(b) => Some(b),
            Err(err) if in_ci() => {
                panic!("{test}: {err:#} (CI=true: a missing binary is a failure)")
            }
            Err(err) => {
                eprintln!("SKIP {test}: {err:#}");
                None
            }
        }
    }
}

/// kubectl alone (tests that need no control plane): `$KUBECTL` when set, else the one
/// `tests/tools/build.sh paths` lists, if it has been fetched.
pub fn locate_kubectl() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("KUBECTL") {
        return Ok(PathBuf::from(p));
    }
    let out = listed_paths(None)?;
    match find_listed(&String::from_utf8_lossy(&out.stdout), "kubectl") {
        Some(p) if is_executable(&p) => Ok(p),
        Some(p) => anyhow::bail!(
            "kubectl not fetched ({}): run `tests/tools/build.sh kubectl`",
            p.display()
        ),
        None => anyhow::bail!("kubectl not listed by `tests/tools/build.sh paths`"),
    }
}

/// [`locate_kubectl`], or `None` after printing `SKIP` outside CI; under `CI=true` a missing
/// kubectl panics, as [`Binaries::require`] does.
pub fn require_kubectl(test: &str) -> Option<PathBuf> {
    match locate_kubectl() {
        Ok(p) => Some(p),
        Err(err) if in_ci() => panic!("{test}: {err:#} (CI=true: a missing binary is a failure)"),
        Err(err) => {
            eprintln!("SKIP {test}: {err:#}");
            None
        }
    }
}

/// What `tests/tools/build.sh paths` prints (`NAME=path` lines), for tools cache `cache`.
fn listed_paths(cache: Option<&Path>) -> anyhow::Result<std::process::Output> {
    let script = tools_dir().join("build.sh");
    let mut command = Command::new("bash");
    command.arg(&script).arg("paths");
    if let Some(cache) = cache {
        command.env("KUBEPULSE_TOOLS_CACHE", cache);
    }
    command
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", script.display()))
}

/// The path listed for `name` in [`listed_paths`]'s output.
fn find_listed(text: &str, name: &str) -> Option<PathBuf> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
        .map(PathBuf::from)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
