//! Upstream metrics-server side by side: etcd and kube-apiserver (built by
//! `tests/tools/build.sh`) hold one Node object per simulated node, whose status points at
//! that node's simulated kubelet (`InternalIP` 127.0.0.1, `daemonEndpoints.kubeletEndpoint`
//! its port); metrics-server v0.9.0 finds and scrapes them with `--kubelet-use-node-status-port
//! --kubelet-preferred-address-types=InternalIP --kubelet-insecure-tls`. The kubelets serve
//! the same simulated cluster ([`Layout::fleet`]) the aggregator's simulated agents report.
//!
//! metrics-server gets Node objects only, no Pod objects: it scrapes and stores every pod
//! regardless, but does not cache pods here as it would in a real cluster, so its measured
//! cost is a lower bound (conservative for the ratio).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::shapes::Layout;
use super::{Proc, free_port, wall_ms};
use crate::sim::{self, SimFleet, SimOptions};

/// Paths of the control-plane binaries, from `tests/tools/build.sh paths`.
pub fn tool_paths() -> anyhow::Result<HashMap<String, PathBuf>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("paths")
        .output()
        .context("run tests/tools/build.sh paths")?;
    anyhow::ensure!(
        out.status.success(),
        "control-plane binaries missing: run tests/tools/build.sh all"
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), PathBuf::from(v)))
        .collect())
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .context("run openssl")?;
    anyhow::ensure!(status.success(), "openssl {args:?} failed");
    Ok(())
}

fn ca(dir: &Path, name: &str, cn: &str) -> anyhow::Result<()> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    )
}

fn leaf(dir: &Path, name: &str, ca: &str, subject: &str, ext: &str) -> anyhow::Result<()> {
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            subject,
        ],
    )?;
    std::fs::write(dir.join(format!("{name}.ext")), ext)?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.crt"),
        ],
    )
}

/// A running control plane with metrics-server over a simulated fleet.
pub struct Upstream {
    /// etcd, kube-apiserver, metrics-server (in start order).
    pub procs: Vec<Proc>,
    /// metrics-server's pid(s).
    pub metrics_server_pids: Vec<u32>,
    /// metrics-server HTTPS ports.
    pub metrics_server_ports: Vec<u16>,
    /// The simulated kubelets.
    pub fleet: SimFleet,
    /// Scratch folder with certificates and the admin kubeconfig.
    pub dir: PathBuf,
}

impl Upstream {
    /// Kubelet reads so far, summed over nodes.
    pub fn reads(&self) -> u64 {
        self.fleet
            .reads
            .iter()
            .map(|r| r.load(Ordering::Relaxed))
            .sum()
    }

    /// Nodes metrics-server replica `r` serves metrics for (via its own API, admin client
    /// certificate).
    pub fn nodes_served(&self, r: usize) -> usize {
        let url = format!(
            "https://127.0.0.1:{}/apis/metrics.k8s.io/v1beta1/nodes",
            self.metrics_server_ports[r]
        );
        let out = Command::new("curl")
            .args(["-sk", "--max-time", "20", "--cert"])
            .arg(self.dir.join("admin.crt"))
            .arg("--key")
            .arg(self.dir.join("admin.key"))
            .arg(&url)
            .output();
        out.ok()
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
            .and_then(|v| v["items"].as_array().map(Vec::len))
            .unwrap_or(0)
    }
}

/// Starts the simulated kubelets, etcd, kube-apiserver with one Node per kubelet, and
/// `replicas` metrics-server processes scraping every `resolution`.
pub async fn start(
    layout: &Layout,
    dir: &Path,
    replicas: usize,
    resolution: Duration,
) -> anyhow::Result<Upstream> {
    let tools = tool_paths()?;
    let bin = |name: &str| {
        tools
            .get(name)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("{name} not built"))
    };
    // absolute: the kubeconfig names its certificates by path, and kubectl resolves relative
    // ones against the kubeconfig's folder, not the working directory
    let dir = &std::path::absolute(dir)?;
    // a fresh etcd: Node objects of an earlier run would be in the way
    let _ = std::fs::remove_dir_all(dir.join("etcd"));
    std::fs::create_dir_all(dir)?;
    let t = Instant::now();
    let fleet = sim::start_with(
        SimOptions {
            fleet: Default::default(),
            ..SimOptions::default()
        },
        layout.fleet(wall_ms()),
    )
    .await?;
    eprintln!(
        "[upstream] {} simulated kubelets up in {:.1}s",
        fleet.nodes.len(),
        t.elapsed().as_secs_f64()
    );

    ca(dir, "ca", "kubepulse-bench-ca")?;
    leaf(
        dir,
        "apiserver",
        "ca",
        "/CN=kube-apiserver",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n",
    )?;
    leaf(
        dir,
        "admin",
        "ca",
        "/O=system:masters/CN=admin",
        "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n",
    )?;
    ca(dir, "front-proxy-ca", "kubepulse-bench-front-proxy-ca")?;
    leaf(
        dir,
        "front-proxy-client",
        "front-proxy-ca",
        "/CN=front-proxy-client",
        "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n",
    )?;
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "sa.key",
        ],
    )?;
    openssl(dir, &["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"])?;

    let (ep, pp, ap) = (free_port()?, free_port()?, free_port()?);
    let d = dir.display();
    std::fs::write(
        dir.join("admin.kubeconfig"),
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: bench\n  cluster: {{server: \"https://127.0.0.1:{ap}\", certificate-authority: \"{d}/ca.crt\"}}\nusers:\n- name: admin\n  user: {{client-certificate: \"{d}/admin.crt\", client-key: \"{d}/admin.key\"}}\ncontexts:\n- name: bench\n  context: {{cluster: bench, user: admin}}\ncurrent-context: bench\n"
        ),
    )?;
    let mut procs = Vec::new();
    procs.push(Proc::spawn(
        "etcd",
        &bin("etcd")?,
        &[
            "--name=b0".to_owned(),
            format!("--data-dir={d}/etcd"),
            "--unsafe-no-fsync".to_owned(),
            "--log-level=warn".to_owned(),
            format!("--listen-client-urls=http://127.0.0.1:{ep}"),
            format!("--advertise-client-urls=http://127.0.0.1:{ep}"),
            format!("--listen-peer-urls=http://127.0.0.1:{pp}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{pp}"),
            format!("--initial-cluster=b0=http://127.0.0.1:{pp}"),
            "--quota-backend-bytes=8589934592".to_owned(),
        ],
        &dir.join("etcd.log"),
    )?);
    super::wait_listening(([127, 0, 0, 1], ep).into(), Duration::from_secs(30)).await?;
    let arg = |s: &str| s.to_owned();
    procs.push(Proc::spawn(
        "kube-apiserver",
        &bin("kube-apiserver")?,
        &[
            format!("--etcd-servers=http://127.0.0.1:{ep}"),
            arg("--endpoint-reconciler-type=none"),
            arg("--bind-address=127.0.0.1"),
            arg("--advertise-address=127.0.0.1"),
            format!("--secure-port={ap}"),
            format!("--tls-cert-file={d}/apiserver.crt"),
            format!("--tls-private-key-file={d}/apiserver.key"),
            format!("--client-ca-file={d}/ca.crt"),
            arg("--service-account-issuer=https://kubernetes.default.svc"),
            arg("--service-cluster-ip-range=10.0.0.0/24"),
            format!("--service-account-key-file={d}/sa.pub"),
            format!("--service-account-signing-key-file={d}/sa.key"),
            arg("--authorization-mode=RBAC"),
            arg("--disable-admission-plugins=ServiceAccount"),
            format!("--requestheader-client-ca-file={d}/front-proxy-ca.crt"),
            arg("--requestheader-allowed-names=front-proxy-client"),
            arg("--requestheader-username-headers=X-Remote-User"),
            arg("--requestheader-group-headers=X-Remote-Group"),
            arg("--requestheader-extra-headers-prefix=X-Remote-Extra-"),
            format!("--proxy-client-cert-file={d}/front-proxy-client.crt"),
            format!("--proxy-client-key-file={d}/front-proxy-client.key"),
        ],
        &dir.join("kube-apiserver.log"),
    )?);
    let kubectl = bin("kubectl")?;
    let kc = |args: &[&str]| {
        Command::new(&kubectl)
            .arg(format!("--kubeconfig={d}/admin.kubeconfig"))
            .arg("--request-timeout=60s")
            .args(args)
            .output()
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if kc(&["get", "--raw", "/readyz"]).is_ok_and(|o| o.status.success())
            && kc(&[
                "-n",
                "kube-system",
                "get",
                "configmap",
                "extension-apiserver-authentication",
            ])
            .is_ok_and(|o| o.status.success())
        {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "kube-apiserver not ready after 180s"
        );
        for p in &mut procs {
            p.check_alive()?;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "[upstream] kube-apiserver ready after {:.1}s",
        t.elapsed().as_secs_f64()
    );

    // Node objects in chunks; create keeps the status.
    let now = "2026-01-01T00:00:00Z";
    for chunk in fleet.nodes.chunks(500) {
        let items: Vec<serde_json::Value> = chunk
            .iter()
            .map(|n| {
                let port: u16 = n.address.rsplit(':').next().unwrap_or("0").parse().unwrap_or(0);
                serde_json::json!({
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": n.name},
                    "status": {
                        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
                        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "simulated", "lastHeartbeatTime": now, "lastTransitionTime": now}],
                    },
                })
            })
            .collect();
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
        let file = dir.join("nodes.json");
        std::fs::write(&file, serde_json::to_vec(&list)?)?;
        let out = kc(&["create", "-f", &file.display().to_string(), "-o", "name"])?;
        anyhow::ensure!(
            out.status.success(),
            "kubectl create nodes: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = kc(&[
        "get",
        "node",
        &fleet.nodes[0].name,
        "-o",
        "jsonpath={.status.daemonEndpoints.kubeletEndpoint.Port}",
    ])?;
    anyhow::ensure!(
        !String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "node status was not kept on create"
    );
    eprintln!(
        "[upstream] {} Node objects created after {:.1}s",
        fleet.nodes.len(),
        t.elapsed().as_secs_f64()
    );

    let mut pids = Vec::new();
    let mut ports = Vec::new();
    for r in 0..replicas {
        let port = free_port()?;
        let certs = dir.join(format!("ms-{r}"));
        std::fs::create_dir_all(&certs)?;
        let p = Proc::spawn(
            "metrics-server",
            &bin("metrics-server")?,
            &[
                arg("--bind-address=127.0.0.1"),
                format!("--secure-port={port}"),
                format!("--cert-dir={}", certs.display()),
                format!("--kubeconfig={d}/admin.kubeconfig"),
                format!("--authentication-kubeconfig={d}/admin.kubeconfig"),
                format!("--authorization-kubeconfig={d}/admin.kubeconfig"),
                arg("--kubelet-insecure-tls"),
                arg("--kubelet-preferred-address-types=InternalIP"),
                arg("--kubelet-use-node-status-port"),
                format!("--metric-resolution={}s", resolution.as_secs()),
                arg("--kubelet-request-timeout=10s"),
            ],
            &dir.join(format!("metrics-server-{r}.log")),
        )?;
        pids.push(p.pid());
        ports.push(port);
        procs.push(p);
    }
    Ok(Upstream {
        procs,
        metrics_server_pids: pids,
        metrics_server_ports: ports,
        fleet,
        dir: dir.to_owned(),
    })
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // metrics-server first, etcd last
        while let Some(mut p) = self.procs.pop() {
            p.stop();
        }
        self.fleet.stop();
    }
}
