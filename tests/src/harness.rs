//! Runs real agents and aggregator replicas (their library `run` functions, the same code the
//! binaries run) against a simulated fleet, on loopback ports, with TLS everywhere the product
//! uses it: kubelets verified against their node names, the Metrics API over HTTPS.
//! Components can be stopped and started again on the same ports to script failures.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::sim::{self, FleetConfig, SimFleet, SimOptions};

/// Shape of a test cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Simulated nodes (one agent each).
    pub nodes: usize,
    /// Pods per node.
    pub pods_per_node: usize,
    /// Aggregator replicas.
    pub replicas: usize,
    /// Agent poll interval.
    pub poll_interval: Duration,
    /// Kubelet stats refresh period.
    pub refresh: Duration,
    /// Aggregator `--node-ttl-min`.
    pub node_ttl_min: Duration,
    /// Agent `--max-backoff`.
    pub max_backoff: Duration,
    /// Simulated node names are this prefix plus an index.
    pub node_prefix: String,
    /// Runs the replicas in Kubernetes mode against this kubeconfig (watches of Pods and
    /// Nodes, delegated authentication and authorization); `None`: standalone.
    pub kubeconfig: Option<PathBuf>,
    /// Extra aggregator arguments.
    pub aggregator_args: Vec<String>,
    /// Serving certificate (chain) and key for every replica instead of a self-signed one;
    /// written as `kubepulse.crt`/`.key` into each replica's cert dir.
    pub serving_cert: Option<crate::certs::Leaf>,
    /// Agent identity tokens: node `n`'s agent presents `<dir>/<n>.token`
    /// (`--aggregator-token-file`, read on every connect); `None`: no token.
    pub agent_token_dir: Option<PathBuf>,
    /// gRPC over TLS (agents verify the replicas' `serving_cert` against this CA); `None`:
    /// plaintext.
    pub grpc_tls: Option<GrpcTls>,
}

/// How agents verify the replicas' gRPC certificate.
#[derive(Clone, Debug)]
pub struct GrpcTls {
    /// The CA that signed `serving_cert`, PEM.
    pub ca_pem: String,
    /// The name the certificate must carry.
    pub server_name: String,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            nodes: 3,
            pods_per_node: 5,
            replicas: 2,
            poll_interval: Duration::from_secs(1),
            refresh: Duration::from_secs(1),
            node_ttl_min: Duration::from_secs(30),
            max_backoff: Duration::from_secs(1),
            node_prefix: FleetConfig::default().node_prefix,
            kubeconfig: None,
            aggregator_args: Vec::new(),
            serving_cert: None,
            agent_token_dir: None,
            grpc_tls: None,
        }
    }
}

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        let abort = self.task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .is_err()
        {
            // a stopped component must free its ports, as a killed process would
            abort.abort();
        }
    }
}

/// One aggregator replica's fixed addresses.
pub struct Replica {
    /// HTTPS Metrics API.
    pub https: SocketAddr,
    /// gRPC ingest.
    pub grpc: SocketAddr,
    /// Where its self-signed serving certificate lives.
    pub cert_dir: PathBuf,
    running: Option<Running>,
}

/// A running fleet, agents and replicas.
pub struct Cluster {
    /// The simulated kubelets.
    pub fleet: SimFleet,
    /// Aggregator replicas.
    pub replicas: Vec<Replica>,
    agents: Vec<Option<Running>>,
    options: ClusterOptions,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// The fleet's ground truth in the shape of [`pod_usages`]: (namespace, pod) → container
    /// → (CPU nanocores, memory bytes), for every node or only `node`.
    pub fn truth(&self, node: Option<&str>) -> PodUsages {
        let fleet = self.fleet.fleet.lock().unwrap_or_else(|e| e.into_inner());
        fleet
            .nodes
            .iter()
            .filter(|n| node.is_none_or(|f| f == n.name))
            .flat_map(|n| &n.pods)
            .map(|p| {
                let containers = p
                    .containers
                    .iter()
                    .map(|c| (c.name.clone(), (c.cpu_nanocores, c.memory_bytes)))
                    .collect();
                ((p.namespace.clone(), p.name.clone()), containers)
            })
            .collect()
    }

    /// Starts the fleet, every replica, then one agent per node. Logs of every component go
    /// to the test's output (shown when a test fails); `RUST_LOG` overrides the level.
    pub async fn start(options: ClusterOptions) -> anyhow::Result<Self> {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir()?;
        let fleet = sim::start(SimOptions {
            fleet: FleetConfig {
                nodes: options.nodes,
                pods_per_node: options.pods_per_node,
                refresh_ms: options.refresh.as_millis() as i64,
                node_prefix: options.node_prefix.clone(),
                ..FleetConfig::default()
            },
            token: Some("kubelet-token".to_owned()),
            slow_delay: Duration::from_secs(60),
            ..SimOptions::default()
        })
        .await?;
        std::fs::write(dir.path().join("kubelet-ca.crt"), &fleet.ca_pem)?;
        std::fs::write(dir.path().join("token"), "kubelet-token")?;
        if let Some(tls) = &options.grpc_tls {
            std::fs::write(dir.path().join("grpc-ca.crt"), &tls.ca_pem)?;
        }
        let mut cluster = Self {
            fleet,
            replicas: Vec::new(),
            agents: Vec::new(),
            options,
            dir,
        };
        for i in 0..cluster.options.replicas {
            let cert_dir = cluster.dir.path().join(format!("aggregator-{i}"));
            let (replica, running) = start_aggregator(&cluster.options, None, &cert_dir).await?;
            cluster.replicas.push(Replica {
                https: replica.0,
                grpc: replica.1,
                cert_dir,
                running: Some(running),
            });
        }
        for i in 0..cluster.options.nodes {
            let running = cluster.spawn_agent(i)?;
            cluster.agents.push(Some(running));
        }
        Ok(cluster)
    }

    /// The agent arguments for node `i` (what a DaemonSet pod would pass).
    pub fn agent_args(&self, i: usize) -> Vec<String> {
        let node = &self.fleet.nodes[i];
        let endpoints: Vec<String> = self.replicas.iter().map(|r| r.grpc.to_string()).collect();
        let mut args: Vec<String> = vec![
            "kubepulse-agent".into(),
            format!("--node-name={}", node.name),
            format!("--kubelet-address={}", node.address),
            format!(
                "--kubelet-certificate-authority={}",
                self.dir.path().join("kubelet-ca.crt").display()
            ),
            format!(
                "--kubelet-token-file={}",
                self.dir.path().join("token").display()
            ),
            format!(
                "--poll-interval={}ms",
                self.options.poll_interval.as_millis()
            ),
            format!("--max-backoff={}ms", self.options.max_backoff.as_millis()),
            format!("--aggregator-endpoints={}", endpoints.join(",")),
            "--heartbeat-interval=1s".into(),
            "--health-address=127.0.0.1:0".into(),
        ];
        args.push(match &self.options.agent_token_dir {
            Some(dir) => format!(
                "--aggregator-token-file={}",
                dir.join(format!("{}.token", node.name)).display()
            ),
            None => "--aggregator-token-file=".into(),
        });
        match &self.options.grpc_tls {
            Some(tls) => args.extend([
                format!(
                    "--aggregator-ca-file={}",
                    self.dir.path().join("grpc-ca.crt").display()
                ),
                format!("--aggregator-tls-server-name={}", tls.server_name),
            ]),
            None => args.push("--aggregator-plaintext".into()),
        }
        args
    }

    fn spawn_agent(&self, i: usize) -> anyhow::Result<Running> {
        use clap::Parser as _;
        let config = kubepulse_agent::Config::try_parse_from(self.agent_args(i))?;
        config
            .validate()
            .map_err(|p| anyhow::anyhow!("agent config: {}", p.join("; ")))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(kubepulse_agent::run(config, async {
            let _ = stopped.await;
        }));
        Ok(Running { stop, task })
    }

    /// Stops the agent of node `i` (its streams close).
    pub async fn stop_agent(&mut self, i: usize) {
        if let Some(running) = self.agents[i].take() {
            running.stop().await;
        }
    }

    /// Starts the agent of node `i` again (a new epoch).
    pub async fn start_agent(&mut self, i: usize) -> anyhow::Result<()> {
        self.stop_agent(i).await;
        self.agents[i] = Some(self.spawn_agent(i)?);
        Ok(())
    }

    /// Stops replica `i`.
    pub async fn stop_replica(&mut self, i: usize) {
        if let Some(running) = self.replicas[i].running.take() {
            running.stop().await;
        }
    }

    /// Starts replica `i` again on the same ports (a restarted pod behind the same Service).
    pub async fn start_replica(&mut self, i: usize) -> anyhow::Result<()> {
        self.stop_replica(i).await;
        let addrs = (self.replicas[i].https, self.replicas[i].grpc);
        let cert_dir = self.replicas[i].cert_dir.clone();
        let mut last_err = None;
        for _ in 0..50 {
            match start_aggregator(&self.options, Some(addrs), &cert_dir).await {
                Ok((_, running)) => {
                    self.replicas[i].running = Some(running);
                    return Ok(());
                }
                Err(err) => {
                    last_err = Some(err);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("restart replica {i}")))
    }

    /// GET `path` from replica `i`'s Metrics API.
    pub async fn get(
        &self,
        i: usize,
        path: &str,
        accept: Option<&str>,
    ) -> anyhow::Result<(u16, Bytes)> {
        let replica = &self.replicas[i];
        https_get(
            replica.https,
            &replica.cert_dir.join("kubepulse.crt"),
            path,
            accept,
        )
        .await
    }

    /// GET `path` as JSON.
    pub async fn get_json(&self, i: usize, path: &str) -> anyhow::Result<(u16, serde_json::Value)> {
        let (code, body) = self.get(i, path, None).await?;
        let json = serde_json::from_slice(&body)
            .with_context(|| format!("GET {path}: not JSON: {}", String::from_utf8_lossy(&body)))?;
        Ok((code, json))
    }

    /// The scratch directory of this cluster.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops everything.
    pub async fn shutdown(mut self) {
        for i in 0..self.agents.len() {
            self.stop_agent(i).await;
        }
        for i in 0..self.replicas.len() {
            self.stop_replica(i).await;
        }
        self.fleet.stop();
    }
}

async fn start_aggregator(
    options: &ClusterOptions,
    addrs: Option<(SocketAddr, SocketAddr)>,
    cert_dir: &Path,
) -> anyhow::Result<((SocketAddr, SocketAddr), Running)> {
    use clap::Parser as _;
    let (https, grpc) = addrs.unwrap_or((
        SocketAddr::from(([127, 0, 0, 1], 0)),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    ));
    let https_listener = tokio::net::TcpListener::bind(https).await?;
    let grpc_listener = tokio::net::TcpListener::bind(grpc).await?;
    let bound = (https_listener.local_addr()?, grpc_listener.local_addr()?);
    let mut args = vec![
        "kubepulse-aggregator".to_owned(),
        format!("--cert-dir={}", cert_dir.display()),
        format!("--node-ttl-min={}ms", options.node_ttl_min.as_millis()),
    ];
    if options.grpc_tls.is_none() {
        args.push("--grpc-plaintext".to_owned());
    }
    if let Some(leaf) = &options.serving_cert {
        leaf.write(cert_dir, "kubepulse")?;
        args.push(format!(
            "--tls-cert-file={}",
            cert_dir.join("kubepulse.crt").display()
        ));
        args.push(format!(
            "--tls-private-key-file={}",
            cert_dir.join("kubepulse.key").display()
        ));
    }
    match &options.kubeconfig {
        Some(kubeconfig) => args.push(format!("--kubeconfig={}", kubeconfig.display())),
        // no Kubernetes API: no watches, no authentication or authorization
        None => args.push("--standalone".to_owned()),
    }
    args.extend(options.aggregator_args.iter().cloned());
    let config = kubepulse_aggregator::Config::try_parse_from(args)?;
    config
        .validate()
        .map_err(|p| anyhow::anyhow!("aggregator config: {}", p.join("; ")))?;
    let (stop, stopped) = oneshot::channel::<()>();
    let listeners = kubepulse_aggregator::Listeners {
        https: https_listener,
        grpc: grpc_listener,
    };
    let task = tokio::spawn(kubepulse_aggregator::run(config, listeners, async {
        let _ = stopped.await;
    }));
    // the serving certificate is written during start-up
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cert_dir.join("kubepulse.crt").exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((bound, Running { stop, task }))
}

/// A one-off HTTPS GET trusting `ca_file`, for the server name `localhost`.
pub async fn https_get(
    addr: SocketAddr,
    ca_file: &Path,
    path: &str,
    accept: Option<&str>,
) -> anyhow::Result<(u16, Bytes)> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file)? {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let mut req = http::Request::get(path).header(http::header::HOST, "localhost");
    if let Some(accept) = accept {
        req = req.header(http::header::ACCEPT, accept);
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new())?)
        .await?;
    let code = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((code, body))
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(err) => last = format!("{err:#}"),
        }
        if Instant::now() > deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what} (last error: {last})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A pod's namespace and name.
pub type PodId = (String, String);

/// Served usage per pod, per container: (CPU nanocores, memory bytes).
pub type PodUsages =
    std::collections::BTreeMap<PodId, std::collections::BTreeMap<String, (u64, u64)>>;

/// The usage a `PodMetricsList` (JSON) serves; a pod listed twice is an error.
pub fn pod_usages(list: &serde_json::Value) -> anyhow::Result<PodUsages> {
    use kubepulse_aggregator_core::quantity::{parse_cpu, parse_memory};
    let mut out = PodUsages::new();
    for item in list["items"].as_array().unwrap_or(&Vec::new()) {
        let id = (
            item["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            item["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
        let mut containers = std::collections::BTreeMap::new();
        for c in item["containers"].as_array().unwrap_or(&Vec::new()) {
            let cpu = parse_cpu(c["usage"]["cpu"].as_str().unwrap_or_default())?;
            let mem = parse_memory(c["usage"]["memory"].as_str().unwrap_or_default())?;
            containers.insert(
                c["name"].as_str().unwrap_or_default().to_owned(),
                (cpu, mem),
            );
        }
        anyhow::ensure!(
            out.insert(id.clone(), containers).is_none(),
            "pod {id:?} served twice"
        );
    }
    Ok(out)
}
