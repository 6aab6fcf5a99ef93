//! The fault matrix: what the Metrics API serves while parts fail. The control-plane scenarios
//! run kubepulse behind a real kube-apiserver and kube-controller-manager
//! (`tests/tools/build.sh`; without the binaries they print SKIP, except under `CI=true`)
//! and read the API the way the HPA does, through kube-apiserver; the network scenarios run
//! in process. The README's Reliability section lists the matrix and what each run measured.
//!
//! Scenarios already covered elsewhere are not repeated: `pipeline.rs` has garbage, truncated,
//! 500 and scrape-error kubelets, an aggregator restart and counter resets on the in-process
//! harness; here the kubelet faults (and the slow one) run again behind kube-apiserver.

use std::collections::BTreeSet;
use std::future::Future;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use clap::Parser as _;
use kubepulse_tests::control_plane::objects::{self, Usage};
use kubepulse_tests::control_plane::stack::{MetricsStack, StackOptions};
use kubepulse_tests::control_plane::{Binaries, ControlPlane, workload};
use kubepulse_tests::fault_proxy::FaultProxy;
use kubepulse_tests::harness::eventually;
use kubepulse_tests::raw_agent::{self, Aggregator, Reply};
use kubepulse_tests::sim::{self, Fault, FleetConfig, SimOptions};
use serde_json::Value;

/// One scenario at a time: they share the control plane, the process-wide metrics and the log.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// === captured log ===

/// Every log line of the process, for scenarios that check a reason is logged.
fn log() -> &'static Mutex<Vec<u8>> {
    static LOG: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buffer: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_ansi(false)
            .with_writer(move || LogWriter(buffer))
            .try_init();
        buffer
    })
}

struct LogWriter(&'static Mutex<Vec<u8>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_text() -> String {
    String::from_utf8_lossy(&log().lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

// === control plane ===

/// Runs `body` on the shared control plane; a failure prints its logs and ours.
async fn with_control_plane<F, Fut>(test: &str, body: F)
where
    F: FnOnce(&'static ControlPlane) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let Some(binaries) = Binaries::require(test) else {
        return;
    };
    let _turn = SERIAL.lock().await;
    log();
    let cp = tokio::task::spawn_blocking(move || {
        ControlPlane::shared(&binaries, Path::new(env!("CARGO_TARGET_TMPDIR")))
    })
    .await
    .expect("start the control plane")
    .unwrap_or_else(|e| panic!("{test}: {e:#}"));
    let started = Instant::now();
    if let Err(err) = body(cp).await {
        let ours = log_text();
        let tail: Vec<&str> = ours.lines().rev().take(80).collect();
        panic!(
            "{test} failed after {:.1}s: {err:#}\n--- control plane ---\n{}\n--- kubepulse ---\n{}",
            started.elapsed().as_secs_f64(),
            cp.log_tails(40),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    eprintln!("{test}: passed in {:.1}s", started.elapsed().as_secs_f64());
}

/// A planned pod's `app` label (empty when it has none).
fn app_label(plan: &objects::PodPlan) -> String {
    plan.labels.get("app").cloned().unwrap_or_default()
}

/// The planned pods whose `app` label is `app`, with `relabel` = (pod, new app) applied.
fn pods_with_app(
    plans: &[objects::PodPlan],
    app: &str,
    relabel: Option<(&str, &str)>,
) -> BTreeSet<String> {
    plans
        .iter()
        .filter(|p| match relabel {
            Some((pod, new_app)) if p.name == pod => new_app == app,
            _ => app_label(p) == app,
        })
        .map(|p| p.name.clone())
        .collect()
}

/// GET through kube-apiserver (the aggregated API), as JSON.
async fn api_get(client: &kube::Client, path: &str) -> anyhow::Result<Value> {
    let request = http::Request::get(path).body(Vec::new())?;
    Ok(client.request::<Value>(request).await?)
}

/// (name) of every item of a list answer.
fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            i["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// Scenario: one aggregator replica dies while the HPA is scaling a Deployment on CPU. The
/// Metrics API keeps answering through kube-apiserver from the other replica (every request),
/// and the HPA keeps deciding: it scales the Deployment down after the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_killed_during_hpa_scaling_the_other_answers() {
    with_control_plane(
        "replica_killed_during_hpa_scaling_the_other_answers",
        |cp| async move {
            let mut stack = MetricsStack::start(
                cp,
                StackOptions {
                    node_prefix: "faults-hpa-node-".into(),
                    nodes: 2,
                    replicas: 2,
                    ..StackOptions::default()
                },
            )
            .await?;
            stack.wait_available(Duration::from_secs(90)).await?;
            let client = stack.client.clone();
            let ns = "faults-hpa";
            objects::ensure_namespace(&client, ns).await?;
            let player = objects::KubeletPlayer::start(
                client.clone(),
                stack.cluster.fleet.fleet.clone(),
                ns,
                stack.nodes.clone(),
                Usage {
                    cpu_nanocores: 300_000_000,
                    memory_bytes: 64 << 20,
                },
            );
            workload::create_deployment(&client, ns, "web", 1, 100).await?;
            workload::create_hpa(&client, ns, "web", 1, 4, 50).await?;
            // 300m used of 100m requested: the HPA scales up to its maximum
            eventually(
                Duration::from_secs(120),
                "the HPA to scale up to 4",
                || async {
                    let s = workload::scaling(&client, ns, "web").await?;
                    Ok((s.deployment_replicas == 4 && s.utilization.is_some()).then_some(()))
                },
            )
            .await?;
            let path = format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods");
            eventually(Duration::from_secs(60), "the 4 pods served", || async {
                Ok((names(&api_get(&client, &path).await?).len() == 4).then_some(()))
            })
            .await?;

            stack.cluster.stop_replica(0).await;
            let killed = Instant::now();
            // a request in flight through a connection to the killed replica may fail (as in
            // a cluster); from the next second on every answer must come whole from the other
            let (mut ok, mut at_kill, mut failed) = (0, Vec::new(), Vec::new());
            while killed.elapsed() < Duration::from_secs(8) {
                let outcome = match api_get(&client, &path).await {
                    Ok(list) if names(&list).len() == 4 => Ok(()),
                    Ok(list) => Err(format!("{} pods", names(&list).len())),
                    Err(err) => Err(format!("{err:#}")),
                };
                match outcome {
                    Ok(()) => ok += 1,
                    Err(e) if killed.elapsed() < Duration::from_secs(1) => at_kill.push(e),
                    Err(e) => failed.push(e),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            eprintln!(
                "after the kill: {ok} whole answers, {} failed in the first second {at_kill:?}, {} later {failed:?}",
                at_kill.len(),
                failed.len()
            );
            anyhow::ensure!(failed.is_empty(), "after the kill: {failed:?}");

            // the HPA keeps deciding on the survivor's numbers: usage drops, it scales down
            player.set_cpu(10_000_000);
            eventually(
                Duration::from_secs(120),
                "the HPA to scale down",
                || async {
                    let s = workload::scaling(&client, ns, "web").await?;
                    Ok((s.deployment_replicas == 1).then_some(()))
                },
            )
            .await?;
            eprintln!(
                "scaled down {:.1}s after the kill",
                killed.elapsed().as_secs_f64()
            );
            workload::delete(&client, ns, "web").await;
            drop(player);
            stack.shutdown().await;
            Ok(())
        },
    )
    .await;
}

/// Scenario: an agent is killed and restarted. The restarted agent resyncs with a fresh
/// snapshot; no list through kube-apiserver ever shows a pod twice or a pod that does not
/// exist, and once resynced every pod is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_agent_resyncs_without_duplicate_or_missing_pods() {
    with_control_plane(
        "restarted_agent_resyncs_without_duplicate_or_missing_pods",
        |cp| async move {
            let mut stack = MetricsStack::start(
                cp,
                StackOptions {
                    node_prefix: "faults-agent-node-".into(),
                    nodes: 2,
                    replicas: 2,
                    ..StackOptions::default()
                },
            )
            .await?;
            stack.wait_available(Duration::from_secs(90)).await?;
            let ns = "faults-agent";
            let plans = stack.populate(&[ns], 3, 7).await?;
            let expected: BTreeSet<String> = plans.iter().map(|p| p.name.clone()).collect();
            let path = format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods");
            let client = stack.client.clone();
            let check = |list: &Value| -> anyhow::Result<BTreeSet<String>> {
                let served = names(list);
                let set: BTreeSet<String> = served.iter().cloned().collect();
                anyhow::ensure!(set.len() == served.len(), "a pod served twice: {served:?}");
                anyhow::ensure!(set.is_subset(&expected), "unknown pods served: {served:?}");
                Ok(set)
            };
            eventually(Duration::from_secs(60), "every pod served", || async {
                Ok((check(&api_get(&client, &path).await?)? == expected).then_some(()))
            })
            .await?;

            stack.cluster.stop_agent(0).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            stack.cluster.start_agent(0).await?;
            let restarted = Instant::now();
            // every answer is consistent; the node's pods stay (last good values) and are resynced
            let mut answers = 0;
            while restarted.elapsed() < Duration::from_secs(6) {
                let served = check(&api_get(&client, &path).await?)?;
                anyhow::ensure!(
                    served == expected,
                    "pods missing after the restart: {served:?}"
                );
                answers += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            eprintln!("{answers} consistent answers after the agent restart");
            stack.shutdown().await;
            Ok(())
        },
    )
    .await;
}

/// Scenario: a kubelet answers 500, garbage, a truncated body, or too slowly. Each time the
/// node keeps its last good values (its kubelet timestamp does not move) until the TTL, then
/// it is gone (404), and the reason is visible: the agent's failed-read counter and a log
/// line with the error. Once the kubelet is healthy the node is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_kubelet_keeps_last_good_values_until_the_ttl() {
    with_control_plane(
        "failing_kubelet_keeps_last_good_values_until_the_ttl",
        |cp| async move {
            let ttl = Duration::from_secs(5);
            let stack = MetricsStack::start(
                cp,
                StackOptions {
                    node_prefix: "faults-kubelet-node-".into(),
                    nodes: 2,
                    replicas: 1,
                    node_ttl_min: ttl,
                    ..StackOptions::default()
                },
            )
            .await?;
            stack.wait_available(Duration::from_secs(90)).await?;
            let client = stack.client.clone();
            let node = stack.nodes[1].clone();
            let path = format!("/apis/metrics.k8s.io/v1beta1/nodes/{node}");
            let set_fault = |fault: Fault| {
                stack
                    .cluster
                    .fleet
                    .fleet
                    .lock()
                    .expect("fleet")
                    .set_fault(Some(&node), fault);
            };
            let failed_reads = || {
                let reads = &kubepulse_agent::metrics::get().kubelet_reads;
                reads.get_or_create(&[("result", "failed")]).get()
                    + reads.get_or_create(&[("result", "unusable")]).get()
            };
            for (fault, logged) in [
                (Fault::Error500, "kubelet answered 500"),
                (Fault::Garbage, "no usable samples in the kubelet body"),
                (Fault::Truncated, "truncated"),
                (Fault::Slow, "timed out"),
            ] {
                let before = eventually(Duration::from_secs(30), "the node served", || async {
                    Ok(api_get(&client, &path).await.ok())
                })
                .await?;
                let reads_before = failed_reads();
                set_fault(fault);
                let faulted = Instant::now();
                // within the TTL: the last good sample, with its own kubelet timestamp
                tokio::time::sleep(Duration::from_millis(2500)).await;
                let during = api_get(&client, &path).await?;
                anyhow::ensure!(
                    during["timestamp"] == before["timestamp"]
                        && during["usage"] == before["usage"],
                    "{fault:?}: the node changed during the fault: {before} -> {during}"
                );
                // after the TTL: gone
                let gone = eventually(Duration::from_secs(20), "the node to expire", || async {
                    Ok(api_get(&client, &path)
                        .await
                        .is_err()
                        .then(|| faulted.elapsed()))
                })
                .await?;
                anyhow::ensure!(
                    gone >= ttl - Duration::from_secs(1),
                    "{fault:?}: expired after {gone:?}, before its {ttl:?} TTL"
                );
                // no value served past its TTL (plus the two poll intervals a hung read needs to
                // be noticed, and the 50 ms publishing period)
                anyhow::ensure!(
                    gone <= ttl + Duration::from_secs(3),
                    "{fault:?}: still served {gone:?} after the fault, TTL {ttl:?}"
                );
                anyhow::ensure!(
                    failed_reads() > reads_before,
                    "{fault:?}: no failed read counted"
                );
                anyhow::ensure!(
                    log_text().contains(logged),
                    "{fault:?}: no log line with {logged:?}"
                );
                eprintln!("{fault:?}: last good values kept, expired after {gone:?}");
                set_fault(Fault::None);
            }
            eventually(Duration::from_secs(30), "the node back", || async {
                Ok(api_get(&client, &path).await.ok())
            })
            .await?;
            stack.shutdown().await;
            Ok(())
        },
    )
    .await;
}

/// Scenario: kube-apiserver becomes unreachable for the aggregator (every connection cut,
/// new ones closed on arrival, as during an apiserver restart) while a pod is relabelled.
/// Meanwhile the label selector keeps answering with the labels last known (no pod lost, none
/// unlabelled); once the API server is back the watches resume and the new labels are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_api_server_watches_resume_and_labels_stay_right() {
    with_control_plane("unreachable_api_server_watches_resume_and_labels_stay_right", |cp| async move {
        if !kubepulse_tests::control_plane::stack::aggregator_has_kubernetes_mode() {
            eprintln!("SKIP: labels come from the Pod watch of the Kubernetes mode, not built here");
            return Ok(());
        }
        let proxy = FaultProxy::start(cp.apiserver).await?;
        let kubeconfig = cp.dir.join("kubeconfig-through-proxy");
        let text = std::fs::read_to_string(&cp.kubeconfig)?;
        let direct = format!("https://{}", cp.apiserver);
        anyhow::ensure!(text.contains(&direct), "kubeconfig does not name {direct}");
        std::fs::write(&kubeconfig, text.replace(&direct, &format!("https://{}", proxy.addr)))?;
        let stack = MetricsStack::start(
            cp,
            StackOptions {
                node_prefix: "faults-watch-node-".into(),
                nodes: 2,
                replicas: 1,
                // authorization answers outlive the outage
                aggregator_args: vec![
                    "--authorization-webhook-cache-authorized-ttl=5m".to_owned(),
                ],
                kubeconfig: Some(kubeconfig),
                ..StackOptions::default()
            },
        )
        .await?;
        stack.wait_available(Duration::from_secs(90)).await?;
        let client = stack.client.clone();
        let ns = "faults-watch";
        let plans = stack.populate(&[ns], 2, 11).await?;
        let selector = |app: &str| {
            format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods?labelSelector=app%3D{app}")
        };
        let moved = plans[0].name.clone();
        let old_app = app_label(&plans[0]);
        let new_app = "relabelled";
        let with_app = |app: &str, relabelled: bool| {
            pods_with_app(&plans, app, relabelled.then_some((moved.as_str(), new_app)))
        };
        let served = |app: String| {
            let client = client.clone();
            async move {
                let list = api_get(&client, &selector(&app)).await?;
                anyhow::Ok(names(&list).into_iter().collect::<BTreeSet<String>>())
            }
        };
        eventually(Duration::from_secs(60), "the pods served with their labels", || async {
            Ok((served(old_app.clone()).await? == with_app(&old_app, false)).then_some(()))
        })
        .await?;

        proxy.cut();
        let cut = Instant::now();
        let pods = kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), ns);
        pods.patch(
            &moved,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"metadata": {"labels": {"app": new_app}}})),
        )
        .await?;
        let mut during = 0;
        while cut.elapsed() < Duration::from_secs(6) {
            let now = served(old_app.clone()).await?;
            anyhow::ensure!(
                now == with_app(&old_app, false),
                "during the outage app={old_app} served {now:?}"
            );
            during += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        proxy.restore();
        let restored = Instant::now();
        let caught_up = eventually(Duration::from_secs(60), "the new labels served", || async {
            let old_now = served(old_app.clone()).await?;
            let new_now = served(new_app.to_owned()).await?;
            // every answer is one of the two consistent states
            anyhow::ensure!(
                old_now == with_app(&old_app, false) || old_now == with_app(&old_app, true),
                "app={old_app} served {old_now:?}"
            );
            Ok((new_now == with_app(new_app, true) && old_now == with_app(&old_app, true))
                .then(|| restored.elapsed()))
        })
        .await?;
        eprintln!(
            "{during} answers with the last known labels during the outage; new labels {:.1}s after it",
            caught_up.as_secs_f64()
        );
        stack.shutdown().await;
        Ok(())
    })
    .await;
}

/// Scenario: the real kube-apiserver process is killed and started again (same port, etcd
/// kept). While it is down the aggregator keeps answering (straight to the replica, as
/// `system:masters` by client certificate) with the labels last known; once it is back the
/// Pod watch resumes, and a label changed after the restart is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_kube_apiserver_watches_resume_and_labels_stay_right() {
    with_control_plane(
        "restarted_kube_apiserver_watches_resume_and_labels_stay_right",
        |cp| async move {
            if !kubepulse_tests::control_plane::stack::aggregator_has_kubernetes_mode() {
                eprintln!(
                    "SKIP: labels come from the Pod watch of the Kubernetes mode, not built here"
                );
                return Ok(());
            }
            let stack = MetricsStack::start(
                cp,
                StackOptions {
                    node_prefix: "faults-restart-node-".into(),
                    nodes: 2,
                    replicas: 1,
                    ..StackOptions::default()
                },
            )
            .await?;
            stack.wait_available(Duration::from_secs(90)).await?;
            let ns = "faults-restart";
            let plans = stack.populate(&[ns], 2, 7).await?;
            let selector = |app: &str| {
                format!(
                    "/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods?labelSelector=app%3D{app}"
                )
            };
            let moved = plans[0].name.clone();
            let old_app = app_label(&plans[0]);
            let new_app = "after-restart";
            let with_app = |app: &str, relabelled: bool| {
                pods_with_app(&plans, app, relabelled.then_some((moved.as_str(), new_app)))
            };
            let direct = |app: String| {
                let stack = &stack;
                async move {
                    let list = stack.replica_get_json(cp, 0, &selector(&app)).await?;
                    anyhow::Ok(names(&list).into_iter().collect::<BTreeSet<String>>())
                }
            };
            eventually(
                Duration::from_secs(60),
                "the pods served with their labels",
                || async {
                    Ok((direct(old_app.clone()).await? == with_app(&old_app, false)).then_some(()))
                },
            )
            .await?;

            cp.stop_kube_apiserver()?;
            let stopped = Instant::now();
            let mut during = 0;
            while stopped.elapsed() < Duration::from_secs(8) {
                let now = direct(old_app.clone()).await?;
                anyhow::ensure!(
                    now == with_app(&old_app, false),
                    "with kube-apiserver down, app={old_app} served {now:?}"
                );
                during += 1;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            let ready_in = cp.start_kube_apiserver(Duration::from_secs(90)).await?;
            let client = cp.client().await?;
            let pods = kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), ns);
            pods.patch(
                &moved,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(
                    serde_json::json!({"metadata": {"labels": {"app": new_app}}}),
                ),
            )
            .await?;
            let patched = Instant::now();
            let caught_up = eventually(
                Duration::from_secs(90),
                "the new label served after the restart",
                || async {
                    let old_now = direct(old_app.clone()).await?;
                    let new_now = direct(new_app.to_owned()).await?;
                    anyhow::ensure!(
                        old_now == with_app(&old_app, false) || old_now == with_app(&old_app, true),
                        "app={old_app} served {old_now:?}"
                    );
                    Ok(
                        (new_now == with_app(new_app, true) && old_now == with_app(&old_app, true))
                            .then(|| patched.elapsed()),
                    )
                },
            )
            .await?;
            // and through the restarted kube-apiserver again
            eventually(
                Duration::from_secs(90),
                "the Metrics API through the restarted kube-apiserver",
                || async {
                    let list = api_get(&client, &selector(new_app)).await?;
                    Ok((names(&list).into_iter().collect::<BTreeSet<String>>()
                        == with_app(new_app, true))
                    .then_some(()))
                },
            )
            .await?;
            eprintln!(
                "{during} answers with the last known labels while kube-apiserver was down 8 s; \
             it was ready {:.1}s after its start; a label patched after that served {:.1}s later",
                ready_in.as_secs_f64(),
                caught_up.as_secs_f64()
            );
            stack.shutdown().await;
            Ok(())
        },
    )
    .await;
}

// === in process: network and clocks ===

/// Scenario: the agent ↔ aggregator connection is cut (a TCP proxy between them closes every
/// connection and refuses new ones for 4 s). The agent retries with jittered exponential
/// backoff (attempts spaced out, not hammering), and once the path is back its stream is up
/// within its maximum backoff and the node's data moves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_agent_connection_reconnects_with_jittered_backoff() -> anyhow::Result<()> {
    let _turn = SERIAL.lock().await;
    log();
    let dir = tempfile::tempdir()?;
    let aggregator = Aggregator::start(dir.path(), &[]).await?;
    let proxy = FaultProxy::start(aggregator.grpc).await?;
    let fleet = sim::start(SimOptions {
        fleet: FleetConfig {
            nodes: 1,
            pods_per_node: 2,
            refresh_ms: 1000,
            ..FleetConfig::default()
        },
        ..SimOptions::default()
    })
    .await?;
    std::fs::write(dir.path().join("kubelet-ca.crt"), &fleet.ca_pem)?;
    let node = fleet.nodes[0].name.clone();
    let config = kubepulse_agent::Config::try_parse_from([
        "kubepulse-agent".to_owned(),
        format!("--node-name={node}"),
        format!("--kubelet-address={}", fleet.nodes[0].address),
        format!(
            "--kubelet-certificate-authority={}",
            dir.path().join("kubelet-ca.crt").display()
        ),
        "--kubelet-token-file=".to_owned(),
        "--aggregator-token-file=".to_owned(),
        format!("--aggregator-endpoints={}", proxy.addr),
        "--aggregator-plaintext".to_owned(),
        "--max-backoff=2s".to_owned(),
        "--health-address=127.0.0.1:0".to_owned(),
    ])?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(kubepulse_agent::run(config, async {
        let _ = stopped.await;
    }));
    let path = format!("/apis/metrics.k8s.io/v1beta1/nodes/{node}");
    let node_timestamp = || async {
        let (code, body) = aggregator.get(&path).await?;
        anyhow::ensure!(code == 200, "node not served ({code})");
        let v: Value = serde_json::from_slice(&body)?;
        Ok(v["timestamp"].as_str().unwrap_or_default().to_owned())
    };
    eventually(Duration::from_secs(30), "the node served", || async {
        Ok(node_timestamp().await.ok())
    })
    .await?;

    proxy.cut();
    let cut = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let frozen = node_timestamp().await?;
    proxy.restore();
    let restored = Instant::now();
    // one reconnect may open two connections in a row (connect, then the channel's own
    // retry when the first is closed at once): connections within 30 ms are one attempt
    let mut attempts: Vec<Duration> = Vec::new();
    for (t, up) in proxy.attempts() {
        let late = attempts
            .last()
            .is_none_or(|a| t - cut > *a + Duration::from_millis(30));
        if t > cut && !up && late {
            attempts.push(t - cut);
        }
    }
    // backoff from 100 ms doubling up to 2 s, each wait jittered over its upper half: about
    // 5 attempts in 4 s, never a tight loop
    anyhow::ensure!(
        (2..=12).contains(&attempts.len()),
        "{} reconnect attempts in 4 s: {attempts:?}",
        attempts.len()
    );
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    anyhow::ensure!(
        gaps.iter().all(|g| *g >= Duration::from_millis(40)),
        "attempts too close together: {gaps:?}"
    );
    let back = eventually(
        Duration::from_secs(10),
        "the node's data to move again",
        || async {
            let now = node_timestamp().await?;
            Ok((now != frozen).then(|| restored.elapsed()))
        },
    )
    .await?;
    eprintln!(
        "{} attempts during the cut at {attempts:?} (gaps {gaps:?}); fresh data {:.2}s after the path was back",
        attempts.len(),
        back.as_secs_f64()
    );
    anyhow::ensure!(back <= Duration::from_secs(5), "back only after {back:?}");
    let _ = stop.send(());
    let _ = agent.await;
    aggregator.stop().await;
    Ok(())
}

/// Scenario: 1,000 agents stream to one aggregator, which restarts (down 2 s). Their streams
/// come back spread out by the jittered backoff, not all in the same instant, and the
/// aggregator keeps answering its health probe while they do. Each "agent" is the real uplink
/// (`kubepulse_agent::uplink::run`) fed a fixed view, without a kubelet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_agents_reconnect_spread_out_after_an_aggregator_restart() -> anyhow::Result<()> {
    use std::sync::atomic::AtomicUsize;

    use kubepulse_agent::tick::{ScrapeStatus, TickOutput};
    use kubepulse_agent::uplink::{self, StreamSettings};

    let _turn = SERIAL.lock().await;
    log();
    const AGENTS: usize = 1000;
    let dir = tempfile::tempdir()?;
    let aggregator = Aggregator::start(dir.path(), &[]).await?;
    let grpc = aggregator.grpc;
    let view = Arc::new(single_pod_view());
    let (_tick_tx, ticks) = tokio::sync::watch::channel(Arc::new(TickOutput {
        view,
        status: ScrapeStatus {
            ok: true,
            ..ScrapeStatus::default()
        },
        ticks: 2,
        warm: true,
    }));
    let up = Arc::new(AtomicUsize::new(0));
    let mut agents = tokio::task::JoinSet::new();
    for i in 0..AGENTS {
        let settings = StreamSettings {
            node: kubepulse_model::NodeName::new(&format!("herd-{i}"))?,
            epoch: i as u64 + 1,
            poll_interval: Duration::from_secs(10),
            heartbeat: Duration::from_secs(60),
            max_backoff: Duration::from_secs(4),
            tls: None,
            token_file: None,
            streams_up: up.clone(),
        };
        agents.spawn(uplink::run(
            settings,
            vec![grpc.to_string()],
            None,
            Duration::from_secs(30),
            ticks.clone(),
        ));
    }
    let connected = || up.load(std::sync::atomic::Ordering::Relaxed);
    eventually(Duration::from_secs(60), "1,000 streams up", || async {
        Ok((connected() == AGENTS).then_some(()))
    })
    .await?;

    aggregator.stop().await;
    eventually(Duration::from_secs(20), "every stream down", || async {
        Ok((connected() == 0).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted = Aggregator::start_on(dir.path(), grpc, &[]).await?;
    let t0 = Instant::now();
    let mut samples: Vec<(Duration, usize)> = Vec::new();
    let mut slowest_probe = Duration::ZERO;
    while connected() < AGENTS && t0.elapsed() < Duration::from_secs(30) {
        samples.push((t0.elapsed(), connected()));
        let probe = Instant::now();
        let (code, _) = restarted.get("/healthz").await?;
        anyhow::ensure!(
            code == 200,
            "health probe answered {code} during the reconnects"
        );
        slowest_probe = slowest_probe.max(probe.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    samples.push((t0.elapsed(), connected()));
    let at = |fraction: f64| {
        samples
            .iter()
            .find(|(_, n)| *n as f64 >= fraction * AGENTS as f64)
            .map(|(t, _)| *t)
    };
    let (p10, p50, p90, all) = (at(0.1), at(0.5), at(0.9), at(1.0));
    let peak_per_100ms = samples
        .iter()
        .map(|(t, n)| {
            let earlier = samples
                .iter()
                .rev()
                .find(|(u, _)| *u + Duration::from_millis(100) <= *t)
                .map_or(0, |(_, m)| *m);
            n.saturating_sub(earlier)
        })
        .max()
        .unwrap_or(0);
    eprintln!(
        "1,000 agents after a 2 s aggregator outage: 10% back at {p10:?}, 50% at {p50:?}, 90% at {p90:?}, all at {all:?}; peak {peak_per_100ms} reconnects per 100 ms; slowest health probe {slowest_probe:?}"
    );
    let (Some(p10), Some(p90), Some(all)) = (p10, p90, all) else {
        anyhow::bail!("not every stream came back within 30 s: {samples:?}");
    };
    anyhow::ensure!(
        p90 - p10 >= Duration::from_millis(300),
        "reconnects bunched together: 10% at {p10:?}, 90% at {p90:?}"
    );
    anyhow::ensure!(
        all <= Duration::from_secs(12),
        "the last stream came back after {all:?}"
    );
    anyhow::ensure!(
        slowest_probe < Duration::from_secs(2),
        "a health probe took {slowest_probe:?} during the reconnects"
    );
    agents.abort_all();
    restarted.stop().await;
    Ok(())
}

fn single_pod_view() -> kubepulse_model::NodeView {
    use kubepulse_model::{ContainerName, NodeView, PodKey, PodView, Sample, Timestamp, Window};
    let sample = Sample {
        usage: kubepulse_model::Usage {
            cpu_nanocores: 1_000_000,
            memory_bytes: 1 << 20,
        },
        timestamp: Timestamp::from_millis(1_700_000_000_000),
        window: Window(10_000_000_000),
    };
    let mut pod = PodView::default();
    pod.containers
        .insert(ContainerName::new("app").expect("name"), sample);
    let mut view = NodeView {
        node: Some(sample),
        ..NodeView::default()
    };
    view.pods
        .insert(PodKey::new("default", "app").expect("key"), pod);
    view
}

/// Scenario: kubelets whose clocks are an hour ahead of and an hour behind the aggregator's.
/// The API serves each sample with the kubelet's own timestamp and window (never a window
/// derived from the aggregator's clock, never negative), and the skew does not expire either
/// node early: the TTL runs on the aggregator's own receive times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_clock_ahead_or_behind_keeps_the_kubelets_timestamps() -> anyhow::Result<()> {
    let _turn = SERIAL.lock().await;
    log();
    let dir = tempfile::tempdir()?;
    let aggregator = Aggregator::start(dir.path(), &["--node-ttl-min=3s"]).await?;
    let now_ms = sim::server::now_ms();
    let hour = 3_600_000;
    let mut streams = Vec::new();
    for (node, ms) in [("ahead", now_ms + hour), ("behind", now_ms - hour)] {
        let mut stream = raw_agent::open(
            raw_agent::channel(aggregator.grpc).await?,
            vec![
                raw_agent::hello(node, ""),
                raw_agent::snapshot_of(node, 1, 1, ms),
            ],
        )
        .await?;
        anyhow::ensure!(stream.next(Duration::from_secs(5)).await? == Reply::Ack(0));
        streams.push((node, ms, stream));
    }
    // served for longer than the TTL while reporting (heartbeats), whatever the skew
    eventually(Duration::from_secs(5), "both nodes served", || async {
        let ahead = aggregator
            .get("/apis/metrics.k8s.io/v1beta1/nodes/ahead")
            .await?;
        let behind = aggregator
            .get("/apis/metrics.k8s.io/v1beta1/nodes/behind")
            .await?;
        Ok((ahead.0 == 200 && behind.0 == 200).then_some(()))
    })
    .await?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        for (node, ms, stream) in &mut streams {
            stream
                .send(raw_agent::message(
                    0,
                    kubepulse_proto::v1::agent_message::Kind::Status(
                        kubepulse_proto::v1::ScrapeStatus {
                            ok: true,
                            ..Default::default()
                        },
                    ),
                ))
                .await?;
            let (code, body) = aggregator
                .get(&format!("/apis/metrics.k8s.io/v1beta1/nodes/{node}"))
                .await?;
            anyhow::ensure!(code == 200, "{node}: {code} after {:?}", start.elapsed());
            let v: Value = serde_json::from_slice(&body)?;
            let served = v["timestamp"].as_str().unwrap_or_default();
            let expected = kubepulse_aggregator_core::timefmt::format_time(
                kubepulse_model::Timestamp::from_millis(*ms),
            );
            anyhow::ensure!(
                served == expected,
                "{node}: timestamp {served}, sent {expected}"
            );
            anyhow::ensure!(v["window"] == "10s", "{node}: window {}", v["window"]);
            let (code, body) = aggregator
                .get(&format!(
                    "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/{node}-0"
                ))
                .await?;
            anyhow::ensure!(code == 200, "{node}'s pod not served ({code})");
            let pod: Value = serde_json::from_slice(&body)?;
            anyhow::ensure!(pod["timestamp"] == expected.as_str() && pod["window"] == "10s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // and both expire once they stop reporting, a TTL after their last report
    drop(streams);
    let stopped = Instant::now();
    for node in ["ahead", "behind"] {
        let path = format!("/apis/metrics.k8s.io/v1beta1/nodes/{node}");
        let gone = eventually(Duration::from_secs(15), "the node to expire", || async {
            Ok((aggregator.get(&path).await?.0 == 404).then(|| stopped.elapsed()))
        })
        .await?;
        anyhow::ensure!(
            gone >= Duration::from_secs(2),
            "{node} expired after {gone:?}"
        );
    }
    aggregator.stop().await;
    let _ = std::io::stderr().flush();
    Ok(())
}
