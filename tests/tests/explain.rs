//! `kubectl pulse explain`, run the way users run it: the official kubectl 1.36.3 finds the
//! `kubectl-pulse` plugin on `PATH`, which runs `kubectl get --raw …/explain` with the
//! kubeconfig it was given. Against the in-process harness (standalone aggregator, simulated
//! kubelets, real agents), it reports:
//!
//! - a pod with metrics (and its node);
//! - a pod no agent reports;
//! - a restarted container waiting for a second kubelet sample (the simulated kubelet refreshes
//!   every 6 s and node 0's agent runs without the fresh-container shortcut, so the wait is
//!   observable), then the pod served again;
//! - a node whose kubelet answers 500: the error while the last values are served, then the
//!   data expired after the node's TTL.
//!
//! The second test runs the same through the real kube-apiserver (see its doc).
//!
//! kubectl and the control plane come from `tests/tools/build.sh`; under `CI=true` a missing
//! binary fails the test, elsewhere it prints SKIP. The plugin binary is built by this test if
//! needed (`cargo build -p kubepulse-kubectl-plugin`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clap::Parser as _;
use kubepulse_tests::harness::{Cluster, ClusterOptions, eventually};
use kubepulse_tests::sim::{Fault, Target};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_pulse_explains_pods_and_nodes() -> anyhow::Result<()> {
    let Some(kubectl) = kubepulse_tests::control_plane::binaries::require_kubectl(
        "kubectl_pulse_explains_pods_and_nodes",
    ) else {
        return Ok(());
    };
    let _turn = SERIAL.lock().await;
    let plugin = plugin_binary()?;
    let mut cluster = Cluster::start(ClusterOptions {
        nodes: 2,
        pods_per_node: 2,
        replicas: 1,
        refresh: Duration::from_secs(6),
        node_ttl_min: Duration::from_secs(4),
        ..ClusterOptions::default()
    })
    .await?;
    // node 0's agent without the fresh-container shortcut, so a restart waits for a sample
    cluster.stop_agent(0).await;
    let mut args = cluster.agent_args(0);
    args.push("--fresh-container-max-age=0s".into());
    let config = kubepulse_agent::Config::try_parse_from(args)?;
    let (stop_agent, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(kubepulse_agent::run(config, async {
        let _ = stopped.await;
    }));

    let kubeconfig = cluster.dir().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kp\n  cluster:\n    server: https://{}\n    certificate-authority: {}\n    tls-server-name: localhost\nusers:\n- name: u\n  user:\n    token: test\ncontexts:\n- name: kp\n  context: {{cluster: kp, user: u, namespace: default}}\ncurrent-context: kp\n",
            cluster.replicas[0].https,
            cluster.replicas[0].cert_dir.join("kubepulse.crt").display()
        ),
    )?;
    let pulse = Pulse {
        kubectl,
        plugin_dir: plugin.parent().unwrap().to_owned(),
        kubeconfig,
    };
    let (node0, node1, (ns0, pod0, container0), (ns1, pod1)) = {
        let fleet = cluster.fleet.fleet.lock().unwrap();
        let p0 = &fleet.nodes[0].pods[0];
        let p1 = &fleet.nodes[1].pods[0];
        (
            fleet.nodes[0].name.clone(),
            fleet.nodes[1].name.clone(),
            (
                p0.namespace.clone(),
                p0.name.clone(),
                p0.containers[0].name.clone(),
            ),
            (p1.namespace.clone(), p1.name.clone()),
        )
    };

    // (a) a pod with metrics, in both output forms
    let doc = pulse
        .until(&["pod", &pod0, "-n", &ns0], "pod 0 served", |d| {
            d["hasMetrics"] == true
        })
        .await?;
    assert_eq!(doc["kind"], "PodMetricsExplanation");
    assert_eq!(doc["node"], node0.as_str());
    assert_eq!(doc["reasons"], serde_json::json!([]));
    assert!(doc["lastSample"]["timestamp"].is_string(), "{doc}");
    assert_eq!(doc["stream"]["connected"], true);
    let text = pulse.text(&["pod", &pod0, "-n", &ns0])?;
    assert_eq!(
        text.lines().next().unwrap(),
        format!("pod {ns0}/{pod0}: has metrics (node {node0})"),
        "{text}"
    );
    assert!(
        text.contains("agent stream (") && text.contains("last kubelet read ok"),
        "{text}"
    );
    let text = pulse.text(&["node", &node0])?;
    assert!(
        text.starts_with(&format!("node {node0}: has metrics\n")),
        "{text}"
    );

    // a pod nobody reports (standalone: no Kubernetes API to say more)
    let text = pulse.text(&["pod", "ghost", "-n", &ns0])?;
    assert!(
        text.starts_with(&format!(
            "pod {ns0}/ghost: NO METRICS\n  - NotReportedAnywhere: "
        )),
        "{text}"
    );

    // (d) a restarted container waits for a second sample, then is served again
    {
        let mut fleet = cluster.fleet.fleet.lock().unwrap();
        let target = Target {
            node: Some(node0.clone()),
            namespace: Some(ns0.clone()),
            pod: Some(pod0.clone()),
            container: Some(container0.clone()),
        };
        assert_eq!(
            fleet.restart(&target, kubepulse_tests::sim::server::now_ms()),
            1
        );
    }
    let doc = pulse
        .until(&["pod", &pod0, "-n", &ns0], "the restart", |d| {
            code_of(d, "ContainerRestarted")
        })
        .await?;
    assert_eq!(doc["hasMetrics"], false, "{doc}");
    let reason = &doc["reasons"][0];
    assert_eq!(reason["container"], container0.as_str());
    assert_eq!(reason["agentReason"], "restarted");
    let text = pulse.text(&["pod", &pod0, "-n", &ns0])?;
    if text.contains("NO METRICS") {
        assert!(
            text.contains(&format!(
                "  - ContainerRestarted: container {container0} restarted"
            )),
            "{text}"
        );
    }
    pulse
        .until(&["pod", &pod0, "-n", &ns0], "pod 0 served again", |d| {
            d["hasMetrics"] == true
        })
        .await?;

    // (c) node 1's kubelet fails: the error while the last values are served, then expiry
    pulse
        .until(&["pod", &pod1, "-n", &ns1], "pod 1 served", |d| {
            d["hasMetrics"] == true
        })
        .await?;
    cluster
        .fleet
        .fleet
        .lock()
        .unwrap()
        .set_fault(Some(node1.as_str()), Fault::Error500);
    let doc = pulse
        .until(&["pod", &pod1, "-n", &ns1], "the kubelet error", |d| {
            code_of(d, "KubeletReadFailed")
        })
        .await?;
    let reason = doc["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["code"] == "KubeletReadFailed")
        .unwrap();
    assert!(reason["error"].as_str().unwrap().contains("500"), "{doc}");
    assert_eq!(reason["node"], node1.as_str());
    // standalone: once the node's data expired nothing ties the pod to it any more, so the
    // node's explanation tells the rest (through kube-apiserver the pod's does too)
    let doc = pulse
        .until(&["node", &node1], "the data to expire", |d| {
            code_of(d, "DataExpired")
        })
        .await?;
    assert_eq!(doc["hasMetrics"], false, "{doc}");
    assert!(doc["stream"]["expiredAgo"].is_string(), "{doc}");
    let text = pulse.text(&["node", &node1])?;
    assert!(
        text.starts_with(&format!("node {node1}: NO METRICS\n")),
        "{text}"
    );
    assert!(text.contains("  - KubeletReadFailed: "), "{text}");
    assert!(text.contains("  - DataExpired: "), "{text}");

    let _ = stop_agent.send(());
    let _ = agent.await;
    cluster.shutdown().await;
    Ok(())
}

/// Runs `kubectl pulse explain …` through the real kubectl, the plugin found on `PATH`.
struct Pulse {
    kubectl: PathBuf,
    plugin_dir: PathBuf,
    kubeconfig: PathBuf,
}

impl Pulse {
    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let path = std::env::join_paths(
            [
                self.plugin_dir.clone(),
                self.kubectl.parent().unwrap().to_owned(),
            ]
            .into_iter()
            .chain(std::env::split_paths(
                &std::env::var_os("PATH").unwrap_or_default(),
            )),
        )?;
        let out = Command::new(&self.kubectl)
            .args(["pulse", "explain"])
            .args(args)
            .env("PATH", path)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("KUBECTL")
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "kubectl pulse explain {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    }

    fn text(&self, args: &[&str]) -> anyhow::Result<String> {
        self.run(args)
    }

    fn json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        Ok(serde_json::from_str(&self.run(&all)?)?)
    }

    /// Polls the JSON explanation until `done` holds; the error shows the last document.
    async fn until(
        &self,
        args: &[&str],
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let last = std::sync::Mutex::new(Value::Null);
        let result = eventually(Duration::from_secs(60), what, || {
            let doc = self.json(args);
            let done = &done;
            let last = &last;
            async move {
                let doc = doc?;
                let ok = done(&doc);
                *last.lock().unwrap() = doc.clone();
                Ok(ok.then_some(doc))
            }
        })
        .await;
        result.map_err(|e| anyhow::anyhow!("{e:#}; last explanation: {}", last.lock().unwrap()))
    }
}

fn code_of(doc: &Value, code: &str) -> bool {
    doc["reasons"]
        .as_array()
        .is_some_and(|r| r.iter().any(|r| r["code"] == code))
}

/// `kubectl-pulse`, built in this test's profile and copied alone into a directory of its own.
fn plugin_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // <target>/<profile>/deps/explain-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow::anyhow!("unexpected test path {}", exe.display()))?;
    let binary = profile_dir.join("kubectl-pulse");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.args([
        "build",
        "-q",
        "-p",
        "kubepulse-kubectl-plugin",
        "--bin",
        "kubectl-pulse",
    ]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build.status()?;
    anyhow::ensure!(
        status.success(),
        "cargo build -p kubepulse-kubectl-plugin failed"
    );
    anyhow::ensure!(binary.is_file(), "{} was not built", binary.display());
    // alone in its directory, as installed: `kubectl plugin list` rejects the `.d` file beside it
    let dir = profile_dir.join(format!("kubectl-plugins-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let installed = dir.join("kubectl-pulse");
    std::fs::copy(&binary, &installed)?;
    Ok(installed)
}

/// Both tests of this file take turns: each starts a fleet, agents and a replica, and the
/// machine is small.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `kubectl pulse explain` through the REAL kube-apiserver (etcd, kube-apiserver and
/// kube-controller-manager v1.36.3 from `tests/tools/build.sh`), which authorizes the
/// `pods/explain` subresource and proxies it to the aggregator registered as
/// `metrics.k8s.io`:
///
/// - (a) a Running pod with metrics, and every README command marked `kube-apiserver`
///   (verify and troubleshoot), verbatim;
/// - (b) a Pending pod (created in the API, never started): "not Running", with its phase;
/// - (c) a pod whose node's kubelet answers 500: the agent's error, then the data expired;
/// - (d) a restarted container waiting for its second kubelet sample (its agent reads every
///   6 s, so the wait is observable);
/// - the RBAC of `deploy/00-rbac.yaml`: a user bound to `system:aggregated-metrics-reader` may
///   get `pods/explain`, one without it is refused by kube-apiserver; a user granted only
///   `pods/explain` (not `pods`) gets through the aggregator's own delegated authorization too,
///   which proves its SubjectAccessReview names the subresource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_pulse_explain_through_the_real_kube_apiserver() -> anyhow::Result<()> {
    use kubepulse_tests::control_plane::objects::{self, ContainerPlan, PodPlan};
    use kubepulse_tests::control_plane::stack::{
        MetricsStack, StackOptions, aggregator_has_kubernetes_mode,
    };
    use kubepulse_tests::control_plane::{Binaries, ControlPlane};

    let Some(binaries) = Binaries::require("kubectl_pulse_explain_through_the_real_kube_apiserver")
    else {
        return Ok(());
    };
    let _turn = SERIAL.lock().await;
    let plugin = plugin_binary()?;
    let kubectl = binaries.kubectl.clone();
    let cp = tokio::task::spawn_blocking(move || {
        ControlPlane::shared(&binaries, Path::new(env!("CARGO_TARGET_TMPDIR")))
    })
    .await??;
    let result = async {
        let client = cp.client().await?;
        let kubernetes_mode = aggregator_has_kubernetes_mode();
        // a short TTL so the expiry is observable
        let mut stack = MetricsStack::start(
            cp,
            StackOptions {
                node_prefix: "worker-".into(),
                nodes: 2,
                replicas: 1,
                node_ttl_min: Duration::from_secs(4),
                ..StackOptions::default()
            },
        )
        .await?;
        stack.wait_available(Duration::from_secs(90)).await?;
        let nodes = stack.nodes.clone();
        // node 0's agent reads its kubelet every 6 s, without the fresh-container shortcut, so
        // a restarted container waits observably long for its second sample
        stack.cluster.stop_agent(0).await;
        let mut args = stack.cluster.agent_args(0);
        args.retain(|a| !a.starts_with("--poll-interval"));
        args.extend([
            "--poll-interval=6s".to_owned(),
            "--fresh-container-max-age=0s".to_owned(),
        ]);
        let config = kubepulse_agent::Config::try_parse_from(args)?;
        let (stop_agent, stopped) = tokio::sync::oneshot::channel::<()>();
        let agent = tokio::spawn(kubepulse_agent::run(config, async {
            let _ = stopped.await;
        }));

        let ns = "prod";
        objects::ensure_namespace(&client, ns).await?;
        let plan = |name: &str, node: &str| PodPlan {
            namespace: ns.into(),
            name: name.into(),
            node: node.into(),
            labels: Default::default(),
            containers: vec![ContainerPlan {
                name: "main".into(),
                cpu_request_milli: 100,
                cpu_nanocores: 50_000_000,
                memory_bytes: 64 << 20,
            }],
        };
        objects::start_pod(
            &client,
            &stack.cluster.fleet.fleet,
            &plan("web-0", &nodes[0]),
        )
        .await?;
        objects::start_pod(
            &client,
            &stack.cluster.fleet.fleet,
            &plan("db-0", &nodes[1]),
        )
        .await?;
        // created and bound, never started: the API keeps it Pending
        kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), ns)
            .create(
                &Default::default(),
                &objects::pod_object(&plan("queued-0", &nodes[0]))?,
            )
            .await?;

        let pulse = Pulse {
            kubectl: kubectl.clone(),
            plugin_dir: plugin.parent().unwrap().to_owned(),
            kubeconfig: cp.kubeconfig.clone(),
        };
        // (a)
        let doc = pulse
            .until(
                &["pod", "web-0", "-n", ns],
                "web served through kube-apiserver",
                |d| d["hasMetrics"] == true,
            )
            .await?;
        anyhow::ensure!(doc["node"] == nodes[0].as_str(), "{doc}");
        let text = pulse.text(&[
            "pod",
            "web-0",
            "-n",
            ns,
            "--kubeconfig",
            path_str(&cp.kubeconfig),
        ])?;
        anyhow::ensure!(
            text.starts_with(&format!(
                "pod {ns}/web-0: has metrics (node {})\n",
                nodes[0]
            )),
            "{text}"
        );

        // the README's `kube-apiserver` blocks, verbatim, against this cluster (it holds the
        // README's example objects: prod/web-0 on worker-0, and worker-1)
        let ran = run_readme_blocks(&kubectl, &plugin, &cp.kubeconfig)?;
        anyhow::ensure!(ran >= 6, "only {ran} README commands marked kube-apiserver");

        // (b)
        let doc = pulse.json(&["pod", "queued-0", "-n", ns])?;
        anyhow::ensure!(doc["hasMetrics"] == false, "{doc}");
        if kubernetes_mode {
            let first = &doc["reasons"][0];
            anyhow::ensure!(
                first["code"] == "PodNotRunning" && first["phase"] == "Pending",
                "a Pending pod: {doc}"
            );
            let text = pulse.text(&["pod", "queued-0", "-n", ns])?;
            anyhow::ensure!(
                text.contains("  - PodNotRunning: the pod is Pending, not Running"),
                "{text}"
            );
        } else {
            eprintln!(
                "explain: the aggregator has no Kubernetes mode yet; skipping the Pending case"
            );
        }

        // (d)
        let restarted = stack.cluster.fleet.fleet.lock().unwrap().restart(
            &Target {
                node: Some(nodes[0].clone()),
                namespace: Some(ns.into()),
                pod: Some("web-0".into()),
                container: Some("main".into()),
            },
            kubepulse_tests::sim::server::now_ms(),
        );
        anyhow::ensure!(restarted == 1, "restart: {restarted} containers");
        let doc = pulse
            .until(&["pod", "web-0", "-n", ns], "the restart", |d| {
                code_of(d, "ContainerRestarted")
            })
            .await?;
        anyhow::ensure!(
            doc["hasMetrics"] == false && doc["reasons"][0]["container"] == "main",
            "{doc}"
        );
        pulse
            .until(&["pod", "web-0", "-n", ns], "web served again", |d| {
                d["hasMetrics"] == true
            })
            .await?;

        // (c)
        pulse
            .until(&["pod", "db-0", "-n", ns], "db served", |d| {
                d["hasMetrics"] == true
            })
            .await?;
        stack
            .cluster
            .fleet
            .fleet
            .lock()
            .unwrap()
            .set_fault(Some(nodes[1].as_str()), Fault::Error500);
        let doc = pulse
            .until(&["pod", "db-0", "-n", ns], "the kubelet error", |d| {
                code_of(d, "KubeletReadFailed")
            })
            .await?;
        anyhow::ensure!(doc.to_string().contains("500"), "{doc}");
        // the pod's explanation names its node's expiry when the watch binds it to the node
        let expired = if kubernetes_mode {
            ["pod", "db-0", "-n", ns].to_vec()
        } else {
            ["node", nodes[1].as_str()].to_vec()
        };
        let doc = pulse
            .until(&expired, "db's data to expire", |d| {
                code_of(d, "DataExpired")
            })
            .await?;
        anyhow::ensure!(doc["hasMetrics"] == false, "{doc}");
        let text = pulse.text(&["node", &nodes[1]])?;
        anyhow::ensure!(
            text.starts_with(&format!("node {}: NO METRICS\n", nodes[1]))
                && text.contains("  - KubeletReadFailed: ")
                && text.contains("  - DataExpired: "),
            "{text}"
        );

        // RBAC: deploy/'s reader role grants the subresource; nobody else gets it
        let rbac = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/00-rbac.yaml");
        cp.kubectl_ok(&["apply", "-f", rbac]).await?;
        cp.kubectl_ok(&[
            "create",
            "clusterrolebinding",
            "explain-reader-jane",
            "--clusterrole=system:aggregated-metrics-reader",
            "--user=jane",
        ])
        .await?;
        let raw = format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods/web-0/explain");
        let body = eventually(Duration::from_secs(30), "jane may explain", || async {
            Ok(cp
                .kubectl_ok(&["--as=jane", "get", "--raw", &raw])
                .await
                .ok())
        })
        .await?;
        anyhow::ensure!(body.contains("PodMetricsExplanation"), "{body}");
        let out = cp.kubectl(&["--as=bob", "get", "--raw", &raw])?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        anyhow::ensure!(
            !out.status.success() && stderr.contains("Forbidden"),
            "bob must be refused: {stderr}"
        );
        if kubernetes_mode {
            // carol may get pods/explain but not pods: kube-apiserver lets her through, and so
            // does the aggregator's SubjectAccessReview only because it names the subresource
            cp.kubectl_ok(&[
                "create",
                "clusterrole",
                "explain-only",
                "--verb=get",
                "--resource=pods.metrics.k8s.io/explain",
            ])
            .await?;
            cp.kubectl_ok(&[
                "create",
                "clusterrolebinding",
                "explain-only-carol",
                "--clusterrole=explain-only",
                "--user=carol",
            ])
            .await?;
            let body = eventually(Duration::from_secs(30), "carol may explain", || async {
                Ok(cp
                    .kubectl_ok(&["--as=carol", "get", "--raw", &raw])
                    .await
                    .ok())
            })
            .await?;
            anyhow::ensure!(body.contains("PodMetricsExplanation"), "{body}");
            let metrics = format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods/web-0");
            let out = cp.kubectl(&["--as=carol", "get", "--raw", &metrics])?;
            anyhow::ensure!(
                !out.status.success(),
                "carol must not read the pod's metrics: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }

        let _ = stop_agent.send(());
        let _ = agent.await;
        stack.shutdown().await;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if result.is_err() {
        eprintln!("{}", cp.log_tails(40));
    }
    result
}

/// Runs every line of the README blocks marked `kube-apiserver` (see `tests/tests/readme.rs`)
/// with `KUBECONFIG` set and the plugin and kubectl first on `PATH`; each must exit 0 and
/// print something. Returns how many ran.
fn run_readme_blocks(kubectl: &Path, plugin: &Path, kubeconfig: &Path) -> anyhow::Result<usize> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let readme = std::fs::read_to_string(root.join("README.md"))?;
    let lines: Vec<&str> = readme.lines().collect();
    let path = std::env::join_paths(
        [plugin.parent().unwrap(), kubectl.parent().unwrap()]
            .into_iter()
            .map(Path::to_owned)
            .chain(std::env::split_paths(
                &std::env::var_os("PATH").unwrap_or_default(),
            )),
    )?;
    let mut ran = 0;
    for (i, line) in lines.iter().enumerate() {
        let marked = line
            .trim()
            .strip_prefix("<!-- tested:")
            .is_some_and(|kinds| {
                kinds
                    .trim_end_matches("-->")
                    .split(',')
                    .any(|k| k.trim() == "kube-apiserver")
            });
        if !marked || lines.get(i + 1).map(|l| l.trim_end()) != Some("```sh") {
            continue;
        }
        for command in lines[i + 2..].iter().take_while(|l| l.trim_end() != "```") {
            let command = command.split(" # ").next().unwrap_or_default().trim();
            if command.is_empty() || command.starts_with('#') {
                continue;
            }
            let out = Command::new("bash")
                .args(["-c", command])
                .env("KUBECONFIG", kubeconfig)
                .env("PATH", &path)
                .env_remove("KUBECTL")
                .output()?;
            anyhow::ensure!(
                out.status.success() && !out.stdout.is_empty(),
                "README.md:{}: `{command}` ({}): {}{}",
                i + 1,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            ran += 1;
        }
    }
    Ok(ran)
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}
