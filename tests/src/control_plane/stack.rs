//! kubepulse on the control plane, as a cluster runs it: the simulated fleet (starting empty),
//! one agent per node and the aggregator replicas ([`crate::harness`]), Node objects for the
//! fleet's nodes, a forwarder standing in for the replicas' Service, and the APIServices
//! `v1beta1.metrics.k8s.io` and `v1.metrics.k8s.io` routed through an ExternalName Service to
//! that forwarder, TLS verified against the cluster CA.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::agent_identity;
use super::forwarder::Forwarder;
use super::objects::{self, ContainerPlan, PodPlan};
use super::{ControlPlane, SERVICE_NAME, SERVICE_NAMESPACE};
use crate::certs::Leaf;
use crate::harness::{Cluster, ClusterOptions};
use crate::sim::model::Rng;

/// The Metrics API versions registered.
pub const VERSIONS: [&str; 2] = ["v1beta1", "v1"];

/// Whether this build of the aggregator has its Kubernetes mode (watches of Pods and Nodes,
/// delegated authentication and authorization), the default unless `--standalone`.
pub fn aggregator_has_kubernetes_mode() -> bool {
    use clap::Parser as _;
    kubepulse_aggregator::Config::try_parse_from(["kubepulse-aggregator", "--standalone"]).is_ok()
}

/// Shape of the stack.
#[derive(Clone, Debug)]
pub struct StackOptions {
    /// Node names: this prefix plus an index (unique per test on a shared control plane).
    pub node_prefix: String,
    /// Simulated nodes.
    pub nodes: usize,
    /// Aggregator replicas behind the forwarder.
    pub replicas: usize,
    /// Extra aggregator arguments.
    pub aggregator_args: Vec<String>,
    /// The replicas' kubeconfig instead of the control plane's own (e.g. through a proxy).
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The replicas' `--node-ttl-min`.
    pub node_ttl_min: Duration,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            node_prefix: "sim-node-".into(),
            nodes: 3,
            replicas: 2,
            aggregator_args: Vec::new(),
            kubeconfig: None,
            node_ttl_min: ClusterOptions::default().node_ttl_min,
        }
    }
}

/// A running stack.
pub struct MetricsStack {
    /// Fleet, agents, replicas.
    pub cluster: Cluster,
    /// The "Service" in front of the replicas.
    pub forwarder: Forwarder,
    /// Admin client (of the runtime that started the stack).
    pub client: kube::Client,
    /// Node names, in fleet order.
    pub nodes: Vec<String>,
    /// Whether the replicas run in Kubernetes mode.
    pub kubernetes_mode: bool,
    leftovers: NodeCleanup,
}

/// Deletes the stack's Node objects with kubectl if the stack is dropped without
/// [`MetricsStack::shutdown`] (a failed test), so later tests on a shared control plane do not
/// see them.
struct NodeCleanup {
    kubectl: std::path::PathBuf,
    kubeconfig: std::path::PathBuf,
    nodes: Vec<String>,
}

impl Drop for NodeCleanup {
    fn drop(&mut self) {
        if self.nodes.is_empty() {
            return;
        }
        let _ = std::process::Command::new(&self.kubectl)
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args([
                "delete",
                "node",
                "--wait=false",
                "--ignore-not-found",
                "--request-timeout=10s",
            ])
            .args(&self.nodes)
            .output();
    }
}

impl MetricsStack {
    /// Starts everything and registers the APIServices (without waiting for them to turn
    /// Available: see [`MetricsStack::wait_available`]).
    pub async fn start(cp: &ControlPlane, options: StackOptions) -> anyhow::Result<Self> {
        let client = cp.client().await?;
        let kubernetes_mode = aggregator_has_kubernetes_mode();
        // Kubernetes mode checks agent identity: each agent presents its pod's token
        let token_dir = cp.dir.join(format!("agent-tokens-{}", options.node_prefix));
        let serving = Leaf {
            cert_pem: std::fs::read_to_string(cp.pki.path("kubepulse.crt"))?,
            key_pem: std::fs::read_to_string(cp.pki.path("kubepulse.key"))?,
        };
        let cluster = Cluster::start(ClusterOptions {
            nodes: options.nodes,
            pods_per_node: 0,
            replicas: options.replicas,
            node_prefix: options.node_prefix.clone(),
            kubeconfig: kubernetes_mode
                .then(|| options.kubeconfig.clone().unwrap_or(cp.kubeconfig.clone())),
            aggregator_args: options.aggregator_args.clone(),
            node_ttl_min: options.node_ttl_min,
            serving_cert: Some(serving),
            agent_token_dir: kubernetes_mode.then(|| token_dir.clone()),
            ..ClusterOptions::default()
        })
        .await?;
        let nodes: Vec<String> = cluster.fleet.nodes.iter().map(|n| n.name.clone()).collect();
        for node in &cluster.fleet.nodes {
            let port: u16 = node
                .address
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(10250);
            objects::create_node(&client, &node.name, port).await?;
        }
        if kubernetes_mode {
            // the agents retry (reading their token file again) until it is there
            agent_identity::provision(&client, &nodes, &token_dir).await?;
        }
        let backends: Vec<_> = cluster.replicas.iter().map(|r| r.https).collect();
        let forwarder = Forwarder::start(&backends).await?;
        register(&client, forwarder.addr.port(), &cp.pki.ca_pem()?).await?;
        Ok(Self {
            cluster,
            forwarder,
            client,
            leftovers: NodeCleanup {
                kubectl: cp.binaries.kubectl.clone(),
                kubeconfig: cp.kubeconfig.clone(),
                nodes: nodes.clone(),
            },
            nodes,
            kubernetes_mode,
        })
    }

    /// A client straight to replica `i` (not through kube-apiserver), as admin: the cluster CA
    /// verifies the replica, the admin certificate (`system:masters`) authenticates.
    pub async fn replica_client(
        &self,
        cp: &ControlPlane,
        i: usize,
    ) -> anyhow::Result<kube::Client> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&cp.kubeconfig)?;
        let mut config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        config.cluster_url = format!("https://{}", self.cluster.replicas[i].https).parse()?;
        config.tls_server_name = Some("localhost".to_owned());
        Ok(kube::Client::try_from(config)?)
    }

    /// GET `path` from replica `i` directly (see [`MetricsStack::replica_client`]), as JSON.
    pub async fn replica_get_json(
        &self,
        cp: &ControlPlane,
        i: usize,
        path: &str,
    ) -> anyhow::Result<serde_json::Value> {
        let client = self.replica_client(cp, i).await?;
        let body = client
            .request_text(http::Request::get(path).body(Vec::new())?)
            .await
            .with_context(|| format!("GET {path} from replica {i}"))?;
        Ok(serde_json::from_str(&body)?)
    }

    /// Waits until both APIServices report `Available=True`; the error shows their conditions.
    pub async fn wait_available(&self, timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let api = Api::<APIService>::all(self.client.clone());
        let mut last = String::new();
        loop {
            let mut all = true;
            last.clear();
            for v in VERSIONS {
                let name = format!("{v}.metrics.k8s.io");
                let svc = api
                    .get(&name)
                    .await
                    .with_context(|| format!("get APIService {name}"))?;
                let cond = svc
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .into_iter()
                    .find(|c| c.type_ == "Available");
                match cond {
                    Some(c) if c.status == "True" => {}
                    Some(c) => {
                        all = false;
                        last.push_str(&format!(
                            "{name}: Available={} {}: {}; ",
                            c.status,
                            c.reason.unwrap_or_default(),
                            c.message.unwrap_or_default()
                        ));
                    }
                    None => {
                        all = false;
                        last.push_str(&format!("{name}: no Available condition yet; "));
                    }
                }
            }
            if all {
                return Ok(start.elapsed());
            }
            anyhow::ensure!(
                start.elapsed() < timeout,
                "APIServices not Available after {timeout:?}: {last}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Creates `pods_per_node` pods on every node, spread over `namespaces` (created), each
    /// with 1–3 containers of known usage, Running in the API and in the fleet. Deterministic
    /// for a given `seed`.
    pub async fn populate(
        &self,
        namespaces: &[&str],
        pods_per_node: usize,
        seed: u64,
    ) -> anyhow::Result<Vec<PodPlan>> {
        for ns in namespaces {
            objects::ensure_namespace(&self.client, ns).await?;
        }
        let mut rng = Rng::new(seed);
        let mut plans = Vec::new();
        for node in &self.nodes {
            for i in 0..pods_per_node {
                let ns = namespaces[rng.range(0, namespaces.len() as u64) as usize];
                let app = ["web", "api", "worker", "cache"][rng.range(0, 4) as usize];
                let containers = (0..rng.range(1, 4))
                    .map(|c| ContainerPlan {
                        name: ["main", "sidecar", "exporter"][c as usize].to_owned(),
                        cpu_request_milli: 100,
                        cpu_nanocores: rng.range(5_000_000, 900_000_000),
                        memory_bytes: rng.range(1_000, 200_000) * 4096,
                    })
                    .collect();
                let plan = PodPlan {
                    namespace: (*ns).to_owned(),
                    name: format!("{app}-{node}-{i}"),
                    node: node.clone(),
                    labels: BTreeMap::from([("app".to_owned(), app.to_owned())]),
                    containers,
                };
                objects::start_pod(&self.client, &self.cluster.fleet.fleet, &plan).await?;
                plans.push(plan);
            }
        }
        Ok(plans)
    }

    /// Stops agents and replicas, deletes the Node objects and the agent pods.
    pub async fn shutdown(mut self) {
        objects::delete_nodes(&self.client, &self.nodes).await;
        self.leftovers.nodes.clear();
        let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(
            self.client.clone(),
            agent_identity::NAMESPACE,
        );
        for node in &self.nodes {
            let _ = pods
                .delete(
                    &agent_identity::agent_pod_name(node),
                    &DeleteParams::default(),
                )
                .await;
        }
        self.cluster.shutdown().await;
        drop(self.forwarder);
    }
}

/// Creates or updates the ExternalName Service and both APIServices, pointing at
/// `127.0.0.1:port` with `caBundle` = the cluster CA (kube-apiserver verifies the aggregator's
/// certificate for `<service>.<namespace>.svc`).
pub async fn register(client: &kube::Client, port: u16, ca_pem: &str) -> anyhow::Result<()> {
    let apply = PatchParams::apply("kubepulse-tests").force();
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": SERVICE_NAME, "namespace": SERVICE_NAMESPACE},
        "spec": {"type": "ExternalName", "externalName": "127.0.0.1"},
    });
    Api::<Service>::namespaced(client.clone(), SERVICE_NAMESPACE)
        .patch(SERVICE_NAME, &apply, &Patch::Apply(&service))
        .await
        .context("apply the kubepulse Service")?;
    let api = Api::<APIService>::all(client.clone());
    for (v, priority) in [("v1beta1", 100), ("v1", 110)] {
        let name = format!("{v}.metrics.k8s.io");
        let object = json!({
            "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": name},
            "spec": {
                "group": "metrics.k8s.io", "version": v,
                "groupPriorityMinimum": 100, "versionPriority": priority,
                "service": {"name": SERVICE_NAME, "namespace": SERVICE_NAMESPACE, "port": port},
            },
        });
        let mut object: APIService = serde_json::from_value(object)?;
        if let Some(spec) = object.spec.as_mut() {
            spec.ca_bundle = Some(k8s_openapi::ByteString(ca_pem.as_bytes().to_vec()));
        }
        // Replace rather than update, so no condition of an earlier registration survives.
        let _ = api.delete(&name, &DeleteParams::default()).await;
        let mut created = false;
        for _ in 0..50 {
            match api.create(&PostParams::default(), &object).await {
                Ok(_) => {
                    created = true;
                    break;
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e).with_context(|| format!("create APIService {name}")),
            }
        }
        anyhow::ensure!(created, "APIService {name} still exists after deleting it");
    }
    Ok(())
}
