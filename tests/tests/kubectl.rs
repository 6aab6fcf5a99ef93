//! The official kubectl 1.36.3 against an aggregator replica directly: `kubectl top pod -A
//! --containers` prints every simulated pod and container with its true usage. kubectl comes
//! from `tests/tools/build.sh kubectl`; under `CI=true` a missing kubectl fails the test.

use std::process::Command;
use std::time::Duration;

use kubepulse_tests::harness::{Cluster, ClusterOptions, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_top_pod_prints_every_simulated_container() -> anyhow::Result<()> {
    let Some(kubectl) = kubepulse_tests::control_plane::binaries::require_kubectl(
        "kubectl_top_pod_prints_every_simulated_container",
    ) else {
        return Ok(());
    };
    let cluster = Cluster::start(ClusterOptions {
        replicas: 1,
        ..ClusterOptions::default()
    })
    .await?;
    let kubeconfig = cluster.dir().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kp\n  cluster:\n    server: https://{}\n    certificate-authority: {}\n    tls-server-name: localhost\nusers:\n- name: u\n  user:\n    token: test\ncontexts:\n- name: kp\n  context: {{cluster: kp, user: u}}\ncurrent-context: kp\n",
            cluster.replicas[0].https,
            cluster.replicas[0].cert_dir.join("kubepulse.crt").display()
        ),
    )?;
    let expected: Vec<(String, String, String, u64, u64)> = {
        let fleet = cluster.fleet.fleet.lock().unwrap();
        fleet
            .nodes
            .iter()
            .flat_map(|n| &n.pods)
            .flat_map(|p| {
                p.containers.iter().map(move |c| {
                    (
                        p.namespace.clone(),
                        p.name.clone(),
                        c.name.clone(),
                        c.cpu_nanocores,
                        c.memory_bytes,
                    )
                })
            })
            .collect()
    };
    let output = eventually(
        Duration::from_secs(40),
        "kubectl top to list every container",
        || {
            let kubectl = kubectl.clone();
            let kubeconfig = kubeconfig.clone();
            let want = expected.len();
            async move {
                let out = tokio::task::spawn_blocking(move || {
                    Command::new(&kubectl)
                        .args(["top", "pod", "-A", "--containers", "--kubeconfig"])
                        .arg(&kubeconfig)
                        .output()
                })
                .await??;
                let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
                anyhow::ensure!(
                    out.status.success(),
                    "kubectl failed: {}{}",
                    stdout,
                    String::from_utf8_lossy(&out.stderr)
                );
                Ok((stdout.lines().count() == want + 1).then_some(stdout))
            }
        },
    )
    .await?;
    let mut lines = output.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAMESPACE", "POD", "NAME", "CPU(cores)", "MEMORY(bytes)"]
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    for (ns, pod, container, cpu, mem) in &expected {
        let row = rows
            .iter()
            .find(|r| r[0] == ns && r[1] == pod && r[2] == container)
            .unwrap_or_else(|| panic!("{ns}/{pod}/{container} missing from:\n{output}"));
        // kubectl prints millicores (rounded up) and MiB (truncated)
        let shown_cpu: u64 = row[3].trim_end_matches('m').parse()?;
        let true_milli = cpu.div_ceil(1_000_000);
        assert!(
            shown_cpu.abs_diff(true_milli) <= 1 + true_milli / 100,
            "{pod}/{container}: {} vs {true_milli}m in\n{output}",
            row[3]
        );
        let shown_mem: u64 = row[4].trim_end_matches("Mi").parse()?;
        assert_eq!(shown_mem, mem / (1 << 20), "{pod}/{container} memory");
    }
    cluster.shutdown().await;
    Ok(())
}
