//! kubepulse behind a real control plane: etcd, kube-apiserver and kube-controller-manager
//! v1.36.3 (`tests/tools/build.sh`), the official kubectl, and the aggregator replicas
//! registered as `metrics.k8s.io` through APIServices, as in a cluster. Every value is checked
//! against the simulated fleet's ground truth. The last tests check that a control plane that
//! cannot start says precisely why.
//!
//! One control plane is shared by the tests of this file (started on first use, a few seconds
//! once the binaries are built); the tests take turns, each with its own fleet, nodes
//! (`<test>-node-N`), namespaces and registration. Without the binaries the tests print SKIP,
//! except under `CI=true` where they fail. A failing test prints the tails of the control
//! plane's logs.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use kubepulse_aggregator_core::quantity::{parse_cpu, parse_memory};
use kubepulse_tests::control_plane::objects::{NODE_CPU_CORES, NODE_MEMORY_BYTES, PodPlan};
use kubepulse_tests::control_plane::stack::{MetricsStack, StackOptions};
use kubepulse_tests::control_plane::{Binaries, ControlPlane};
use kubepulse_tests::harness::eventually;

/// The tests of this file take turns on the shared control plane (one registration at a time).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Prints the control plane's log tails when a test panics.
struct LogsOnPanic(&'static ControlPlane);

impl Drop for LogsOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.0.log_tails(60));
        }
    }
}

/// Runs `body` against the shared control plane; `Err` fails the test with the log tails.
async fn with_control_plane<F, Fut>(test: &str, body: F)
where
    F: FnOnce(&'static ControlPlane) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let Some(binaries) = Binaries::require(test) else {
        return;
    };
    let _turn = SERIAL.lock().await;
    let cp = tokio::task::spawn_blocking(move || {
        ControlPlane::shared(&binaries, Path::new(env!("CARGO_TARGET_TMPDIR")))
    })
    .await
    .expect("start the control plane")
    .unwrap_or_else(|e| panic!("{test}: {e:#}"));
    let _logs = LogsOnPanic(cp);
    let start = Instant::now();
    if let Err(err) = body(cp).await {
        panic!(
            "{test} failed after {:.1}s: {err:#}",
            start.elapsed().as_secs_f64()
        );
    }
    cp.check_alive().unwrap_or_else(|e| panic!("{test}: {e:#}"));
    eprintln!("{test}: passed in {:.1}s", start.elapsed().as_secs_f64());
}

fn within_1pct(served: u64, truth: u64) -> bool {
    served.abs_diff(truth) as f64 <= truth as f64 * 0.01 + 1.0
}

/// node → (cpu nanocores, memory bytes), per the fleet.
fn node_truth(stack: &MetricsStack) -> BTreeMap<String, (u64, u64)> {
    let fleet = stack.cluster.fleet.fleet.lock().unwrap();
    fleet
        .nodes
        .iter()
        .map(|n| (n.name.clone(), (n.cpu_nanocores(), n.memory_bytes())))
        .collect()
}

/// Scenario 1: both APIServices turn Available; the NodeMetrics list read through
/// kube-apiserver (v1beta1 and v1) holds exactly the fleet's nodes with their true usage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiservice_available_and_node_metrics_through_kube_apiserver() {
    with_control_plane("apiservice_available", |cp| async move {
        let stack = MetricsStack::start(
            cp,
            StackOptions {
                node_prefix: "avail-node-".into(),
                ..StackOptions::default()
            },
        )
        .await?;
        let took = stack.wait_available(Duration::from_secs(90)).await?;
        eprintln!("APIServices Available after {:.1}s", took.as_secs_f64());
        // kube-apiserver's availability probes went through the forwarder to the replicas
        let connections = stack.forwarder.connections();
        anyhow::ensure!(
            connections.iter().sum::<u64>() > 0,
            "Available without a single connection to a replica: {connections:?}"
        );
        let truth = node_truth(&stack);
        for version in ["v1beta1", "v1"] {
            let path = format!("/apis/metrics.k8s.io/{version}/nodes");
            let served = eventually(
                Duration::from_secs(40),
                &format!("{path} through kube-apiserver to list every node"),
                || async {
                    let body = cp.kubectl_ok(&["get", "--raw", &path]).await?;
                    let list: serde_json::Value = serde_json::from_str(&body)?;
                    let mut served = BTreeMap::new();
                    for item in list["items"].as_array().cloned().unwrap_or_default() {
                        let name = item["metadata"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned();
                        let cpu = parse_cpu(item["usage"]["cpu"].as_str().unwrap_or_default())?;
                        let mem =
                            parse_memory(item["usage"]["memory"].as_str().unwrap_or_default())?;
                        served.insert(name, (cpu, mem));
                    }
                    Ok((served.len() == truth.len()).then_some((list, served)))
                },
            )
            .await?;
            let (list, served) = served;
            anyhow::ensure!(
                list["kind"] == "NodeMetricsList"
                    && list["apiVersion"] == format!("metrics.k8s.io/{version}"),
                "{path}: unexpected kind/apiVersion {} {}",
                list["kind"],
                list["apiVersion"]
            );
            anyhow::ensure!(
                served.keys().collect::<Vec<_>>() == truth.keys().collect::<Vec<_>>(),
                "{path}: nodes {:?}, fleet {:?}",
                served.keys(),
                truth.keys()
            );
            for (node, (cpu, mem)) in &served {
                let (tcpu, tmem) = truth[node];
                anyhow::ensure!(within_1pct(*cpu, tcpu), "{node}: cpu {cpu}n, truth {tcpu}n");
                anyhow::ensure!(*mem == tmem, "{node}: memory {mem}, truth {tmem}");
            }
        }
        stack.shutdown().await;
        Ok(())
    })
    .await;
}

/// Scenario 2: `kubectl top node` and `kubectl top pod -A --containers` through
/// kube-apiserver print every simulated node and container within one display unit (and 1%)
/// of the truth, node percentages against the Node objects' allocatable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_top_through_kube_apiserver_matches_ground_truth() {
    with_control_plane("kubectl_top", |cp| async move {
        let stack = MetricsStack::start(
            cp,
            StackOptions {
                node_prefix: "top-node-".into(),
                ..StackOptions::default()
            },
        )
        .await?;
        let namespaces = ["top-shop", "top-batch"];
        let plans = stack.populate(&namespaces, 4, 7).await?;
        stack.wait_available(Duration::from_secs(90)).await?;

        // Values settle once every agent has two kubelet samples after the pods started.
        let truth = node_truth(&stack);
        let out = eventually(
            Duration::from_secs(60),
            "kubectl top node to show every node at its true usage",
            || async {
                let out = cp.kubectl_ok(&["top", "node"]).await?;
                check_top_node(&out, &truth)?;
                Ok(Some(out))
            },
        )
        .await?;
        eprintln!("{out}");
        let out = eventually(
            Duration::from_secs(60),
            "kubectl top pod -A --containers to show every container at its true usage",
            || async {
                let out = cp.kubectl_ok(&["top", "pod", "-A", "--containers"]).await?;
                check_top_pod(&out, &plans, &namespaces)?;
                Ok(Some(out))
            },
        )
        .await?;
        eprintln!("{out}");
        stack.shutdown().await;
        Ok(())
    })
    .await;
}

/// Scenario 5: every manifest in `deploy/` passes kube-apiserver's validation and admission
/// (`kubectl apply --dry-run=server -f deploy/`), object by object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_manifests_pass_server_side_dry_run() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let yaml: Vec<_> = std::fs::read_dir(&deploy)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.extension()
                        .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
                })
                .collect()
        })
        .unwrap_or_default();
    if yaml.is_empty() {
        let msg = format!("no manifests in {}", deploy.display());
        if kubepulse_tests::control_plane::binaries::in_ci() {
            panic!("deploy_dry_run: {msg} (CI=true)");
        }
        eprintln!("SKIP deploy_dry_run: {msg}");
        return;
    }
    let documents: usize = yaml
        .iter()
        .map(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .split("\n---")
                .filter(|doc| doc.lines().any(|l| l.starts_with("kind:")))
                .count()
        })
        .sum();
    with_control_plane("deploy_dry_run", |cp| async move {
        let deploy = deploy.to_string_lossy().into_owned();
        let out = cp
            .kubectl_ok(&["apply", "--dry-run=server", "-f", &deploy])
            .await?;
        let applied = out
            .lines()
            .filter(|l| l.ends_with("(server dry run)"))
            .count();
        eprintln!("{out}");
        anyhow::ensure!(
            applied == documents,
            "{applied} objects applied, {documents} documents in deploy/:\n{out}"
        );
        Ok(())
    })
    .await;
}

/// `kubectl top node` shows exactly the fleet's nodes (among others' rows, if any), each within
/// one display unit and 1% of the truth, percentages against the Node objects' allocatable.
fn check_top_node(out: &str, truth: &BTreeMap<String, (u64, u64)>) -> anyhow::Result<()> {
    let mut lines = out.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    anyhow::ensure!(
        header.starts_with(&["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]),
        "kubectl top node header: {header:?}"
    );
    let mut seen = BTreeSet::new();
    for line in lines {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let Some((tcpu, tmem)) = truth.get(cols[0]).copied() else {
            continue;
        };
        seen.insert(cols[0].to_owned());
        let milli: u64 = cols[1].trim_end_matches('m').parse()?;
        let true_milli = tcpu / 1_000_000;
        anyhow::ensure!(
            milli.abs_diff(true_milli) <= 1 + true_milli / 100,
            "{}: cpu {} shown, truth {true_milli}m\n{out}",
            cols[0],
            cols[1]
        );
        let pct: u64 = cols[2].trim_end_matches('%').parse()?;
        let true_pct = tcpu * 100 / (NODE_CPU_CORES * 1_000_000_000);
        anyhow::ensure!(
            pct.abs_diff(true_pct) <= 1,
            "{}: cpu {pct}%, truth {true_pct}%\n{out}",
            cols[0]
        );
        let mi: u64 = cols[3].trim_end_matches("Mi").parse()?;
        anyhow::ensure!(
            mi.abs_diff(tmem >> 20) <= 1,
            "{}: memory {mi}Mi, truth {}Mi\n{out}",
            cols[0],
            tmem >> 20
        );
        let mpct: u64 = cols[4].trim_end_matches('%').parse()?;
        let true_mpct = tmem * 100 / NODE_MEMORY_BYTES;
        anyhow::ensure!(
            mpct.abs_diff(true_mpct) <= 1,
            "{}: memory {mpct}%, truth {true_mpct}%\n{out}",
            cols[0]
        );
    }
    anyhow::ensure!(
        seen.len() == truth.len(),
        "kubectl top node shows {seen:?}, the fleet has {:?}\n{out}",
        truth.keys()
    );
    Ok(())
}

/// `kubectl top pod -A --containers` shows, in `namespaces`, exactly the planned containers,
/// each within one display unit and 1% of the truth (millicores rounded up, MiB truncated).
fn check_top_pod(out: &str, plans: &[PodPlan], namespaces: &[&str]) -> anyhow::Result<()> {
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    anyhow::ensure!(
        header == ["NAMESPACE", "POD", "NAME", "CPU(cores)", "MEMORY(bytes)"],
        "kubectl top pod header: {header:?}"
    );
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|r| r.len() == 5 && namespaces.contains(&r[0]))
        .collect();
    let want: usize = plans.iter().map(|p| p.containers.len()).sum();
    anyhow::ensure!(
        rows.len() == want,
        "{} rows in {namespaces:?}, {want} containers planned\n{out}",
        rows.len()
    );
    for plan in plans {
        for c in &plan.containers {
            let row = rows
                .iter()
                .find(|r| r[0] == plan.namespace && r[1] == plan.name && r[2] == c.name)
                .ok_or_else(|| {
                    anyhow::anyhow!("{}/{}/{} missing\n{out}", plan.namespace, plan.name, c.name)
                })?;
            let milli: u64 = row[3].trim_end_matches('m').parse()?;
            let true_milli = c.cpu_nanocores.div_ceil(1_000_000);
            anyhow::ensure!(
                milli.abs_diff(true_milli) <= 1 + true_milli / 100,
                "{}/{}/{}: {} shown, truth {true_milli}m\n{out}",
                plan.namespace,
                plan.name,
                c.name,
                row[3]
            );
            let mi: u64 = row[4].trim_end_matches("Mi").parse()?;
            anyhow::ensure!(
                mi == c.memory_bytes >> 20,
                "{}/{}/{}: {} shown, truth {}Mi",
                plan.namespace,
                plan.name,
                c.name,
                row[4],
                c.memory_bytes >> 20
            );
        }
    }
    Ok(())
}

// ---- start-up failures are reported precisely (no real binaries needed) ----

/// A folder with fake binaries: `etcd` runs `etcd_script`, the others exit at once.
fn fake_binaries(dir: &Path, etcd_script: &str) -> Binaries {
    use std::os::unix::fs::PermissionsExt as _;
    let write = |name: &str, body: &str| {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    };
    Binaries {
        etcd: write("etcd", etcd_script),
        kube_apiserver: write("kube-apiserver", "exit 1"),
        kube_controller_manager: write("kube-controller-manager", "exit 1"),
        kubectl: write("kubectl", "exit 1"),
    }
}

#[test]
fn missing_binaries_are_named_with_the_command_that_builds_them() {
    let empty = tempfile::tempdir().unwrap();
    let err = Binaries::locate_in(Some(empty.path()))
        .unwrap_err()
        .to_string();
    for name in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kubectl",
    ] {
        assert!(err.contains(name), "{name} not named in: {err}");
    }
    assert!(
        err.contains("tests/tools/build.sh"),
        "no build hint in: {err}"
    );
}

#[tokio::test]
async fn etcd_that_exits_is_reported_with_its_status_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let binaries = fake_binaries(
        dir.path(),
        "echo 'fatal: cannot access data dir' >&2; exit 3",
    );
    let err = ControlPlane::start(binaries, &dir.path().join("cp"))
        .await
        .err()
        .expect("start must fail");
    let err = format!("{err:#}");
    assert!(err.contains("etcd exited during start-up"), "{err}");
    assert!(err.contains("exit status: 3"), "{err}");
    assert!(
        err.contains("fatal: cannot access data dir"),
        "log tail missing: {err}"
    );
    assert!(!err.contains("port was taken"), "{err}");
}

#[tokio::test]
async fn taken_port_is_retried_then_reported() {
    let dir = tempfile::tempdir().unwrap();
    let binaries = fake_binaries(
        dir.path(),
        "echo 'listen tcp 127.0.0.1:2379: bind: address already in use' >&2; exit 1",
    );
    let err = ControlPlane::start(binaries, &dir.path().join("cp"))
        .await
        .err()
        .expect("start must fail");
    let err = format!("{err:#}");
    assert!(err.contains("etcd exited during start-up"), "{err}");
    assert!(err.contains("its port was taken"), "{err}");
    // three attempts, each with its own etcd data folder
    let attempts = std::fs::read_to_string(dir.path().join("cp/logs/etcd.log"))
        .unwrap()
        .matches("address already in use")
        .count();
    assert_eq!(attempts, 3, "{err}");
}

#[tokio::test]
async fn unhealthy_etcd_times_out_with_its_log_and_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("etcd.pid");
    let binaries = fake_binaries(
        dir.path(),
        &format!(
            "echo $$ > {}; echo 'waiting for quorum' >&2; exec sleep 60",
            pid_file.display()
        ),
    );
    let err = kubepulse_tests::control_plane::ControlPlane::start_with(
        binaries,
        &dir.path().join("cp"),
        kubepulse_tests::control_plane::Timeouts {
            etcd: Duration::from_secs(2),
            ..Default::default()
        },
    )
    .await
    .err()
    .expect("start must fail");
    let err = format!("{err:#}");
    assert!(err.contains("etcd not healthy after 2s"), "{err}");
    assert!(
        err.contains("waiting for quorum"),
        "log tail missing: {err}"
    );
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_owned();
    assert!(
        !Path::new("/proc").join(&pid).exists(),
        "the fake etcd (pid {pid}) survived the failed start"
    );
}
