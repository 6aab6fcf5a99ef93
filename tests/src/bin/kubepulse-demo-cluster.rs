//! `kubepulse-demo-cluster` (`make demo-cluster`): the demo on a real control plane. etcd,
//! kube-apiserver and kube-controller-manager v1.36.3 on loopback, the simulated fleet as Node
//! and Pod objects, one agent per node, two aggregator replicas registered as
//! `metrics.k8s.io`; then the official kubectl runs `kubectl top node`, `kubectl top pod -A`
//! and `kubectl get podmetrics -A` through kube-apiserver every few seconds until Ctrl-C.
//!
//! Environment: `DEMO_SECONDS=N` stops after N seconds and exits 0 only if kubectl showed
//! every simulated pod; `DEMO_NODES` (3) and `DEMO_PODS_PER_NODE` (10) shape the fleet;
//! `DEMO_DIR` (target/demo-cluster) holds the kubeconfig, certificates and every log.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use kubepulse_tests::control_plane::stack::{MetricsStack, StackOptions};
use kubepulse_tests::control_plane::{Binaries, ControlPlane};

const NAMESPACES: [&str; 3] = ["default", "shop", "monitoring"];

fn env_num(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a whole number")),
        _ => Ok(default),
    }
}

fn main() -> ExitCode {
    let config = (|| -> Result<_, String> {
        let seconds = env_num("DEMO_SECONDS", 0)?;
        let nodes = env_num("DEMO_NODES", 3)?;
        let pods = env_num("DEMO_PODS_PER_NODE", 10)?;
        if nodes == 0 || nodes > 50 || pods > 100 {
            return Err("DEMO_NODES must be 1..=50 and DEMO_PODS_PER_NODE at most 100".into());
        }
        Ok((seconds, nodes as usize, pods as usize))
    })();
    let (seconds, nodes, pods) = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("demo-cluster: {e}");
            return ExitCode::from(64);
        }
    };
    let dir = std::env::var_os("DEMO_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
            tests.parent().unwrap_or(tests).join("target/demo-cluster")
        });
    let binaries = match Binaries::locate() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("demo-cluster: {e:#}");
            return ExitCode::from(1);
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(dir.join("logs")) {
        eprintln!("demo-cluster: create {}: {e}", dir.display());
        return ExitCode::from(1);
    }
    // kubepulse's own logs (agents, replicas, fleet) go to a file, not over the demo screen
    match std::fs::File::create(dir.join("logs/kubepulse.log")) {
        Ok(file) => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .try_init();
        }
        Err(e) => eprintln!("demo-cluster: kubepulse logs go to the terminal ({e})"),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("demo-cluster: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(binaries, dir, seconds, nodes, pods)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("demo-cluster: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(
    binaries: Binaries,
    dir: PathBuf,
    seconds: u64,
    nodes: usize,
    pods_per_node: usize,
) -> anyhow::Result<bool> {
    let t0 = Instant::now();
    println!(
        "demo-cluster: starting etcd, kube-apiserver, kube-controller-manager (logs in {}/logs)",
        dir.display()
    );
    let mut cp = ControlPlane::start(binaries, &dir).await?;
    cp.keep_dir = true;
    println!(
        "demo-cluster: control plane ready in {:.1}s at https://{}",
        t0.elapsed().as_secs_f64(),
        cp.apiserver
    );
    let stack = MetricsStack::start(
        &cp,
        StackOptions {
            node_prefix: "demo-node-".into(),
            nodes,
            replicas: 2,
            ..StackOptions::default()
        },
    )
    .await?;
    let plans = stack.populate(&NAMESPACES, pods_per_node, 1).await?;
    println!(
        "demo-cluster: {nodes} Node objects, {} Pods (Running) served by the simulated kubelets; \
         one agent per node; aggregator replicas {} and {} behind 127.0.0.1:{}",
        plans.len(),
        stack.cluster.replicas[0].https,
        stack
            .cluster
            .replicas
            .get(1)
            .map_or_else(String::new, |r| r.https.to_string()),
        stack.forwarder.addr.port()
    );
    let available = stack.wait_available(Duration::from_secs(90)).await?;
    println!(
        "demo-cluster: APIServices v1beta1.metrics.k8s.io and v1.metrics.k8s.io Available after {:.1}s{}",
        available.as_secs_f64(),
        if stack.kubernetes_mode {
            ""
        } else {
            " (aggregator in standalone mode)"
        }
    );
    println!("demo-cluster: from another terminal:");
    println!("  export KUBECONFIG={}", cp.kubeconfig.display());
    println!("  .tools/bin/kubectl top node; .tools/bin/kubectl top pod -A --containers");
    println!(
        "  .tools/bin/kubectl get podmetrics -A; .tools/bin/kubectl get apiservice v1beta1.metrics.k8s.io"
    );

    let expected = plans.len();
    let mut best = 0usize;
    let start = Instant::now();
    let tty = std::io::stdout().is_terminal();
    let ctrl_c = kubepulse_shell::shutdown_signal();
    tokio::pin!(ctrl_c);
    loop {
        let top_node = kubectl(&cp, &["top", "node"]).await;
        let top_pod = kubectl(&cp, &["top", "pod", "-A"]).await;
        let podmetrics = kubectl(&cp, &["get", "podmetrics", "-A"]).await;
        let shown = top_pod
            .lines()
            .skip(1)
            .filter(|l| NAMESPACES.iter().any(|ns| l.starts_with(&format!("{ns} "))))
            .count();
        best = best.max(shown);
        if tty {
            print!("\x1b[2J\x1b[H");
        }
        println!(
            "kubectl top node / top pod -A / get podmetrics -A through kube-apiserver https://{} \
             ({shown} of {expected} pods; Ctrl-C to stop)\n",
            cp.apiserver
        );
        println!("$ kubectl top node\n{top_node}\n$ kubectl top pod -A\n{top_pod}");
        let pm: Vec<&str> = podmetrics.lines().collect();
        println!(
            "$ kubectl get podmetrics -A   (first 5 of {})\n{}\n",
            pm.len().saturating_sub(1),
            pm.iter().take(6).copied().collect::<Vec<_>>().join("\n")
        );
        if seconds > 0 && start.elapsed() >= Duration::from_secs(seconds) {
            break;
        }
        tokio::select! {
            () = &mut ctrl_c => break,
            () = tokio::time::sleep(Duration::from_secs(3)) => {}
        }
        if let Err(e) = cp.check_alive() {
            eprintln!("demo-cluster: {e:#}");
            break;
        }
    }
    println!("demo-cluster: stopping");
    stack.shutdown().await;
    drop(cp);
    if best < expected {
        eprintln!(
            "demo-cluster: kubectl never showed all {expected} pods (best: {best}); logs were in {}/logs",
            dir.display()
        );
        return Ok(false);
    }
    println!("demo-cluster: kubectl showed all {expected} simulated pods through kube-apiserver");
    Ok(true)
}

/// kubectl's output, or its error text.
async fn kubectl(cp: &ControlPlane, args: &[&str]) -> String {
    match cp.kubectl_ok(args).await {
        Ok(out) => out.trim_end().to_owned(),
        Err(e) => format!("{e:#}"),
    }
}
