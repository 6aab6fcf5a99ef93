//! Every command in `README.md` is run by a test or by the demo. Each ```` ```sh ```` block
//! carries a comment right above it, `<!-- tested: KIND[, KIND…] -->`, saying by what:
//!
//! - `here`: this test runs each line, verbatim, from the repository root, with the
//!   workspace's binaries (`kubepulse-agent`, `kubepulse-aggregator`, `kubectl-pulse`, …) first
//!   on `PATH`; every line must exit 0;
//! - `demo`: this test runs the demo (`scripts/demo.sh`, what `make demo` runs after building;
//!   here with the debug binaries) and, while it runs, every line of the block that is not a
//!   `make` target; the demo must exit 0 (kubectl listed every simulated pod), and its agents
//!   must not have logged per poll;
//! - `kube-apiserver`: `tests/tests/explain.rs` runs each line verbatim against a real
//!   kube-apiserver holding the README's example objects;
//! - `ci`: `make test`, which `.ci/run` runs;
//! - a path (`tests/tests/deploy.rs`): that test runs it (the README says how).
//!
//! An unmarked block, an unknown kind or a path that does not exist fails the test. kubectl
//! (for the demo) comes from `tests/tools/build.sh kubectl`; under `CI=true` a missing kubectl
//! fails the test, elsewhere the demo part prints SKIP.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One ```` ```sh ```` block of the README: what runs it, and its command lines.
#[derive(Debug)]
struct Block {
    line: usize,
    kinds: Vec<String>,
    commands: Vec<String>,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The README's shell blocks with their markers (`Err` lists the unmarked ones).
fn blocks(readme: &str) -> Result<Vec<Block>, String> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut out = Vec::new();
    let mut unmarked = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_end() != "```sh" {
            i += 1;
            continue;
        }
        let marker = lines[..i]
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .and_then(|l| l.trim().strip_prefix("<!-- tested:"))
            .and_then(|l| l.strip_suffix("-->"));
        let start = i;
        let mut commands = Vec::new();
        i += 1;
        while i < lines.len() && lines[i].trim_end() != "```" {
            let command = lines[i].split(" # ").next().unwrap_or_default().trim();
            if !command.is_empty() && !command.starts_with('#') {
                commands.push(command.to_owned());
            }
            i += 1;
        }
        match marker {
            Some(kinds) => out.push(Block {
                line: start + 1,
                kinds: kinds.split(',').map(|k| k.trim().to_owned()).collect(),
                commands,
            }),
            None => unmarked.push(format!("README.md:{}", start + 1)),
        }
        i += 1;
    }
    if unmarked.is_empty() {
        Ok(out)
    } else {
        Err(format!(
            "shell blocks without a `<!-- tested: … -->` marker: {}",
            unmarked.join(", ")
        ))
    }
}

#[test]
fn every_readme_command_is_marked_with_what_runs_it() {
    let root = repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks = blocks(&readme).unwrap_or_else(|e| panic!("{e}"));
    assert!(blocks.len() >= 6, "{blocks:#?}");
    let mut wrong = Vec::new();
    for block in &blocks {
        for kind in &block.kinds {
            let known = matches!(kind.as_str(), "here" | "demo" | "ci" | "kube-apiserver")
                || (kind.contains('/') && root.join(kind).is_file());
            if !known {
                wrong.push(format!("README.md:{}: unknown marker {kind:?}", block.line));
            }
        }
        if block.commands.is_empty() {
            wrong.push(format!("README.md:{}: an empty block", block.line));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // the kube-apiserver blocks have a runner
    let explain = std::fs::read_to_string(root.join("tests/tests/explain.rs")).unwrap();
    assert!(
        explain.contains("\"kube-apiserver\""),
        "explain.rs runs no README block"
    );
}

#[test]
fn readme_commands_marked_here_run() {
    let root = repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let bin_dir = workspace_binaries(&[
        "kubepulse-agent",
        "kubepulse-aggregator",
        "kubepulse-kubectl-plugin",
    ]);
    let mut ran = 0;
    for block in blocks(&readme).unwrap() {
        if !block.kinds.iter().any(|k| k == "here") {
            continue;
        }
        for command in &block.commands {
            let out = shell(&root, &bin_dir, command)
                .output()
                .unwrap_or_else(|e| panic!("README.md:{}: {command}: {e}", block.line));
            assert!(
                out.status.success(),
                "README.md:{}: `{command}` failed ({}):\n{}{}",
                block.line,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            ran += 1;
        }
    }
    assert!(ran >= 4, "only {ran} commands marked `here`");
}

#[test]
fn readme_demo_commands_run_while_the_demo_runs() {
    let Some(kubectl) = kubepulse_tests::control_plane::binaries::require_kubectl(
        "readme_demo_commands_run_while_the_demo_runs",
    ) else {
        return;
    };
    let root = repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let commands: Vec<(usize, String)> = blocks(&readme)
        .unwrap()
        .into_iter()
        .filter(|b| b.kinds.iter().any(|k| k == "demo"))
        .flat_map(|b| {
            let line = b.line;
            b.commands.into_iter().map(move |c| (line, c))
        })
        .filter(|(_, c)| !c.starts_with("make "))
        .collect();
    assert!(
        !commands.is_empty(),
        "no `demo` command besides make targets"
    );

    // what `make demo` runs once its binaries are built (debug ones here)
    let bin_dir =
        workspace_binaries(&["kubepulse-agent", "kubepulse-aggregator", "kubepulse-tests"]);
    let profile = bin_dir.file_name().unwrap().to_string_lossy().into_owned();
    let port_base = free_port_block();
    let kubeconfig = root.join("target/demo/kubeconfig");
    let _ = std::fs::remove_file(&kubeconfig);
    let demo = Command::new(root.join("scripts/demo.sh"))
        .current_dir(&root)
        .env("DEMO_PROFILE", &profile)
        .env("DEMO_SECONDS", "45")
        .env("DEMO_NODES", "2")
        .env("DEMO_PODS_PER_NODE", "3")
        .env("DEMO_PORT_BASE", port_base.to_string())
        .env("KUBECTL", &kubectl)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start scripts/demo.sh");
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut last = String::new();
    let mut pending = commands.clone();
    while !pending.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(2));
        if !kubeconfig.is_file() {
            continue;
        }
        pending.retain(|(line, command)| {
            let out = shell(&root, &bin_dir, command).output().unwrap();
            if out.status.success() && !out.stdout.is_empty() {
                return false;
            }
            last = format!(
                "README.md:{line}: `{command}`: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            true
        });
    }
    let finished = demo.wait_with_output().expect("wait for the demo");
    assert!(
        pending.is_empty(),
        "README demo commands never succeeded: {pending:?}\nlast: {last}\ndemo: {}",
        String::from_utf8_lossy(&finished.stderr)
    );
    assert!(
        finished.status.success(),
        "the demo failed ({}):\n{}{}",
        finished.status,
        String::from_utf8_lossy(&finished.stdout),
        String::from_utf8_lossy(&finished.stderr)
    );
    // no per-poll noise: 45 s of one read per second leave a handful of lines per agent
    for entry in std::fs::read_dir(root.join("target/demo/logs")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("agent-") {
            continue;
        }
        let log = std::fs::read_to_string(&path).unwrap();
        assert!(
            log.lines().count() <= 12,
            "{name} logs per poll at INFO:\n{log}"
        );
    }
}

/// `bash -c command` from `root`, the workspace binaries first on `PATH`.
fn shell(root: &Path, bin_dir: &Path, command: &str) -> Command {
    let path = std::env::join_paths(std::iter::once(bin_dir.to_owned()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    let mut cmd = Command::new("bash");
    cmd.args(["-c", command])
        .current_dir(root)
        .env("PATH", path)
        .stdin(Stdio::null());
    cmd
}

/// Builds the binaries of `packages` in this test's profile; their directory.
fn workspace_binaries(packages: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // <target>/<profile>/deps/readme-<hash>
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_owned();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "-q", "--bins"]);
    for p in packages {
        build.args(["-p", p]);
    }
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build.status().expect("run cargo build");
    assert!(status.success(), "cargo build of {packages:?} failed");
    profile_dir
}

/// The first of 21 consecutive free ports (the demo uses base, +1, +10, +11, +20).
fn free_port_block() -> u16 {
    for _ in 0..50 {
        let base = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if base > 65000 {
            continue;
        }
        let free = [0, 1, 10, 11, 20]
            .iter()
            .all(|d| std::net::TcpListener::bind(("127.0.0.1", base + d)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no free block of ports for the demo");
}
