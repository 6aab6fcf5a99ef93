//! kubepulse behind a real control plane: etcd, kube-apiserver and kube-controller-manager
//! v1.36.3 (`tests/tools/build.sh`), the official kubectl, the aggregator replicas (Kubernetes
//! mode: Pod/Node watches, delegated auth) registered as `metrics.k8s.io` through APIServices,
//! and the real HPA controller scaling a Deployment on the metrics kubepulse serves. Every value
//! is checked against the simulated fleet's ground truth. The last tests check that a control
//! plane that cannot start says precisely why.
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
use kubepulse_tests::control_plane::objects::{self as objects_mod, KubeletPlayer, Usage};
use kubepulse_tests::control_plane::objects::{NODE_CPU_CORES, NODE_MEMORY_BYTES, PodPlan};
use kubepulse_tests::control_plane::stack::{MetricsStack, StackOptions};
use kubepulse_tests::control_plane::workload::{self, Scaling};
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

/// HPA sync period the control plane runs with (`--horizontal-pod-autoscaler-sync-period`).
const SYNC: Duration = Duration::from_secs(2);
/// Each scaling step must happen within this many sync periods once usage changed (metrics of
/// new pods take two kubelet samples, the APIService a probe, the controller a sync).
const SYNCS_PER_STEP: u32 = 20;
/// CPU request of the workload's container, millicores; the HPA targets 50% of it.
const REQUEST_MILLI: u64 = 100;

/// Waits until `done` holds for the Deployment/HPA `name`, at most [`SYNCS_PER_STEP`] syncs.
async fn wait_scaling(
    client: &kube::Client,
    ns: &str,
    name: &str,
    what: &str,
    done: impl Fn(&Scaling) -> bool,
) -> anyhow::Result<(Scaling, Duration)> {
    let start = Instant::now();
    let limit = SYNC * SYNCS_PER_STEP;
    let mut last = Scaling::default();
    loop {
        if let Ok(s) = workload::scaling(client, ns, name).await {
            if done(&s) {
                eprintln!(
                    "{what}: after {:.1}s ({:.1} syncs): {s:?}",
                    start.elapsed().as_secs_f64(),
                    start.elapsed().as_secs_f64() / SYNC.as_secs_f64()
                );
                return Ok((s, start.elapsed()));
            }
            last = s;
        }
        anyhow::ensure!(
            start.elapsed() < limit,
            "{what}: not within {SYNCS_PER_STEP} HPA syncs ({limit:?}); last: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Sets up namespace `ns` with a kubelet player, Deployment `web` (2 replicas, 100m request)
/// and its HPA (2..=6, 50% CPU), usage 150m per pod.
async fn start_workload(stack: &MetricsStack, ns: &str) -> anyhow::Result<KubeletPlayer> {
    objects_mod::ensure_namespace(&stack.client, ns).await?;
    let player = KubeletPlayer::start(
        stack.client.clone(),
        stack.cluster.fleet.fleet.clone(),
        ns,
        stack.nodes.clone(),
        Usage {
            cpu_nanocores: 150_000_000,
            memory_bytes: 48 << 20,
        },
    );
    workload::create_deployment(&stack.client, ns, "web", 2, REQUEST_MILLI).await?;
    eventually(
        Duration::from_secs(30),
        "the Deployment's 2 pods running",
        || async { Ok((player.running() == 2).then_some(())) },
    )
    .await?;
    workload::create_hpa(&stack.client, ns, "web", 2, 6, 50).await?;
    Ok(player)
}

/// Scenario 3: the real HPA controller scales a Deployment on the CPU utilization kubepulse
/// serves through kube-apiserver: 150% of the request → up to the maximum of 6; 10% → down
/// to 2 (= ceil(6 × 10 / 50), also the minimum, where it stays). New pods are bound, started and given usage by the kubelet
/// player; deleted ones leave the fleet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpa_scales_a_deployment_up_and_down_on_kubepulse_metrics() {
    with_control_plane("hpa_scales", |cp| async move {
        let stack = MetricsStack::start(
            cp,
            StackOptions {
                node_prefix: "hpa-node-".into(),
                ..StackOptions::default()
            },
        )
        .await?;
        let client = stack.client.clone();
        stack.wait_available(Duration::from_secs(90)).await?;
        let ns = "hpa-up-down";
        let player = start_workload(&stack, ns).await?;

        let (up, _) = wait_scaling(&client, ns, "web", "scale up at 150%", |s| {
            s.deployment_replicas == 6
        })
        .await?;
        anyhow::ensure!(
            up.desired == 6,
            "HPA desired {} (want 6): {up:?}",
            up.desired
        );
        eventually(Duration::from_secs(30), "6 pods running", || async {
            Ok((player.running() == 6).then_some(()))
        })
        .await?;
        // the HPA's own query, through kube-apiserver: every new pod served at its usage
        check_pod_metrics(cp, ns, "app=web", 6, 150).await?;
        let (at_150, _) = wait_scaling(&client, ns, "web", "HPA reads 150%", |s| {
            s.utilization.is_some_and(|u| (145..=155).contains(&u))
        })
        .await?;
        anyhow::ensure!(at_150.deployment_replicas == 6, "{at_150:?}");

        player.set_cpu(10_000_000);
        let (down, _) = wait_scaling(&client, ns, "web", "scale down at 10%", |s| {
            s.deployment_replicas == 2
        })
        .await?;
        anyhow::ensure!(
            down.desired == 2,
            "HPA desired {} (want 2): {down:?}",
            down.desired
        );
        eventually(Duration::from_secs(30), "2 pods running", || async {
            Ok((player.running() == 2).then_some(()))
        })
        .await?;
        check_pod_metrics(cp, ns, "app=web", 2, 10).await?;
        let (at_10, _) = wait_scaling(&client, ns, "web", "HPA reads 10% and holds 2", |s| {
            s.utilization.is_some_and(|u| (9..=11).contains(&u)) && s.deployment_replicas == 2
        })
        .await?;
        eprintln!("final: {at_10:?}");
        workload::delete(&client, ns, "web").await;
        drop(player);
        stack.shutdown().await;
        Ok(())
    })
    .await;
}

/// `GET /apis/metrics.k8s.io/v1beta1/namespaces/<ns>/pods?labelSelector=<selector>` through
/// kube-apiserver (what the HPA asks) lists `count` pods, each at `milli` CPU (within 1%).
async fn check_pod_metrics(
    cp: &ControlPlane,
    ns: &str,
    selector: &str,
    count: usize,
    milli: u64,
) -> anyhow::Result<()> {
    let path =
        format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods?labelSelector={selector}");
    eventually(
        Duration::from_secs(30),
        &format!("{path} to list {count} pods at {milli}m"),
        || async {
            let list: serde_json::Value =
                serde_json::from_str(&cp.kubectl_ok(&["get", "--raw", &path]).await?)?;
            let items = list["items"].as_array().cloned().unwrap_or_default();
            anyhow::ensure!(items.len() == count, "{} pods listed: {list}", items.len());
            for item in &items {
                let cpu = parse_cpu(
                    item["containers"][0]["usage"]["cpu"]
                        .as_str()
                        .unwrap_or_default(),
                )?;
                anyhow::ensure!(
                    within_1pct(cpu, milli * 1_000_000),
                    "{}: cpu {cpu}n, want {milli}m",
                    item["metadata"]["name"]
                );
            }
            Ok(Some(()))
        },
    )
    .await
}

/// Scenario 4: both replicas sit behind the forwarder (the APIService's "Service") and each
/// serves every node; with replica 0 stopped the HPA still scales up, and with replica 0 back
/// and replica 1 stopped it still scales down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpa_keeps_scaling_while_one_replica_is_down() {
    with_control_plane("hpa_replica_down", |cp| async move {
        let mut stack = MetricsStack::start(
            cp,
            StackOptions {
                node_prefix: "ha-node-".into(),
                ..StackOptions::default()
            },
        )
        .await?;
        let client = stack.client.clone();
        stack.wait_available(Duration::from_secs(90)).await?;
        let nodes_path = "/apis/metrics.k8s.io/v1beta1/nodes";
        for i in 0..2 {
            let stack = &stack;
            eventually(
                Duration::from_secs(30),
                &format!("replica {i} to serve every node"),
                || async {
                    let body = stack.replica_get_json(cp, i, nodes_path).await?;
                    let n = body["items"].as_array().map_or(0, Vec::len);
                    Ok((n == 3).then_some(()))
                },
            )
            .await?;
        }
        let ns = "hpa-replica-down";
        let player = start_workload(&stack, ns).await?;

        // replica 0 goes away (its sockets with it); the forwarder fails over to replica 1
        stack.cluster.stop_replica(0).await;
        stack.forwarder.sever(0);
        // what a closing replica-0 connection was already sending (a TLS close_notify, an
        // HTTP/2 GOAWAY) can still be counted just after the sever: count from when it is quiet
        let before = eventually(
            Duration::from_secs(5),
            "replica 0's bytes to stop",
            || async {
                let first = stack.forwarder.answered_bytes();
                tokio::time::sleep(Duration::from_millis(300)).await;
                let then = stack.forwarder.answered_bytes();
                Ok((first[0] == then[0]).then_some(then))
            },
        )
        .await?;
        let (up, _) = wait_scaling(&client, ns, "web", "scale up with replica 0 down", |s| {
            s.deployment_replicas == 6
        })
        .await?;
        anyhow::ensure!(up.desired == 6, "{up:?}");
        check_pod_metrics(cp, ns, "app=web", 6, 150).await?;
        let after = stack.forwarder.answered_bytes();
        anyhow::ensure!(
            after[0] == before[0] && after[1] > before[1],
            "with replica 0 down only replica 1 may answer (bytes answered {before:?} → {after:?})"
        );

        // replica 0 back, replica 1 away
        // (its old sockets may take a few seconds to go: retry the start a while)
        let mut restarted = stack.cluster.start_replica(0).await;
        for _ in 0..10 {
            if restarted.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            restarted = stack.cluster.start_replica(0).await;
        }
        restarted?;
        {
            let stack = &stack;
            eventually(
                Duration::from_secs(30),
                "restarted replica 0 to serve every node",
                || async {
                    let body = stack.replica_get_json(cp, 0, nodes_path).await?;
                    let n = body["items"].as_array().map_or(0, Vec::len);
                    Ok((n == 3).then_some(()))
                },
            )
            .await?;
        }
        stack.cluster.stop_replica(1).await;
        stack.forwarder.sever(1);
        let before = stack.forwarder.answered_bytes();
        player.set_cpu(10_000_000);
        let (down, _) = wait_scaling(&client, ns, "web", "scale down with replica 1 down", |s| {
            s.deployment_replicas == 2
        })
        .await?;
        anyhow::ensure!(down.desired == 2, "{down:?}");
        check_pod_metrics(cp, ns, "app=web", 2, 10).await?;
        let after = stack.forwarder.answered_bytes();
        anyhow::ensure!(
            after[1] == before[1] && after[0] > before[0],
            "with replica 1 down only replica 0 may answer (bytes answered {before:?} → {after:?})"
        );
        eprintln!(
            "through the forwarder: connections {:?}, bytes answered {after:?}",
            stack.forwarder.connections()
        );
        workload::delete(&client, ns, "web").await;
        drop(player);
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
