//! The simulated fleet as real API objects: Nodes named after the simulated kubelets, Pods
//! bound to them with the status a kubelet would report, and a "kubelet player" that does for
//! pods created by controllers what kubelet (and the scheduler) would: bind, mark Running and
//! Ready, start them in the simulated fleet with the pod's UID, and finish their deletion.
//!
//! The order is always API object first, then the fleet, so names, namespaces and UIDs agree.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::sim::server::now_ms;
use crate::sim::{Fleet, Target};

/// Allocatable CPU of every Node object, cores.
pub const NODE_CPU_CORES: u64 = 32;
/// Allocatable memory of every Node object, bytes (64 GiB).
pub const NODE_MEMORY_BYTES: u64 = 64 << 30;

/// RFC 3339 time `secs_ago` seconds before now, second precision (as Kubernetes writes it).
pub fn rfc3339_ago(secs_ago: i64) -> String {
    let secs = now_ms() / 1000 - secs_ago;
    k8s_openapi::jiff::Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

fn is_status(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == code)
}

/// Creates namespace `name` unless it exists.
pub async fn ensure_namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 409) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("create namespace {name}")),
    }
}

/// A Node object for simulated kubelet `name`: Ready, allocatable CPU and memory (so
/// `kubectl top node` can compute percentages), its kubelet address. Replaces a leftover one.
pub async fn create_node(
    client: &kube::Client,
    name: &str,
    kubelet_port: u16,
) -> anyhow::Result<()> {
    let api = Api::<Node>::all(client.clone());
    let _ = api.delete(name, &DeleteParams::default()).await;
    let resources = json!({
        "cpu": NODE_CPU_CORES.to_string(),
        "memory": NODE_MEMORY_BYTES.to_string(),
        "pods": "110",
    });
    let status = json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "simulated kubelet is posting ready status",
            "lastHeartbeatTime": rfc3339_ago(0), "lastTransitionTime": rfc3339_ago(600),
        }],
        "addresses": [
            {"type": "InternalIP", "address": "127.0.0.1"},
            {"type": "Hostname", "address": name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
    });
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubepulse.test/simulated": "true",
        }},
        "status": status,
    }))?;
    let mut created = None;
    for _ in 0..50 {
        match api.create(&PostParams::default(), &node).await {
            Ok(n) => {
                created = Some(n);
                break;
            }
            // the old object may still be going away
            Err(e) if is_status(&e, 409) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => return Err(e).with_context(|| format!("create node {name}")),
        }
    }
    let created = created.with_context(|| format!("node {name} still exists after deleting it"))?;
    if created
        .status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .is_none()
    {
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .with_context(|| format!("patch status of node {name}"))?;
    }
    Ok(())
}

/// Deletes Node objects (best effort).
pub async fn delete_nodes(client: &kube::Client, names: &[String]) {
    let api = Api::<Node>::all(client.clone());
    for name in names {
        let _ = api.delete(name, &DeleteParams::default()).await;
    }
}

/// One container of a planned pod.
#[derive(Clone, Debug)]
pub struct ContainerPlan {
    /// Container name.
    pub name: String,
    /// `resources.requests.cpu`, millicores.
    pub cpu_request_milli: u64,
    /// True CPU usage in the fleet, nanocores.
    pub cpu_nanocores: u64,
    /// True working set in the fleet, bytes.
    pub memory_bytes: u64,
}

/// A pod to create in the API and start in the fleet.
#[derive(Clone, Debug)]
pub struct PodPlan {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Node it is bound to.
    pub node: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Containers.
    pub containers: Vec<ContainerPlan>,
}

/// The Pod object of a plan (bound through `spec.nodeName`).
pub fn pod_object(plan: &PodPlan) -> anyhow::Result<Pod> {
    let containers: Vec<Value> = plan
        .containers
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "image": "registry.invalid/kubepulse-sim:0",
                "resources": {"requests": {"cpu": format!("{}m", c.cpu_request_milli), "memory": "16Mi"}},
            })
        })
        .collect();
    Ok(serde_json::from_value(json!({
        "metadata": {"name": plan.name, "namespace": plan.namespace, "labels": plan.labels},
        "spec": {"nodeName": plan.node, "containers": containers, "terminationGracePeriodSeconds": 0},
    }))?)
}

/// What kubelet reports for a started pod: Running, every condition True, started (and Ready
/// since) 10 minutes ago so the HPA counts it at once.
pub fn running_status(pod: &Pod) -> Value {
    let since = rfc3339_ago(600);
    let containers: Vec<Value> = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| {
            json!({
                "name": c.name,
                "image": c.image.clone().unwrap_or_default(),
                "imageID": "",
                "ready": true, "started": true, "restartCount": 0,
                "state": {"running": {"startedAt": since}},
            })
        })
        .collect();
    let conditions: Vec<Value> = ["PodScheduled", "Initialized", "ContainersReady", "Ready"]
        .iter()
        .map(|t| json!({"type": t, "status": "True", "lastTransitionTime": since}))
        .collect();
    json!({"status": {
        "phase": "Running",
        "startTime": since,
        "hostIP": "127.0.0.1",
        "conditions": conditions,
        "containerStatuses": containers,
    }})
}

/// Creates the pod, marks it Running, then starts it in the fleet with the API's UID.
pub async fn start_pod(
    client: &kube::Client,
    fleet: &Mutex<Fleet>,
    plan: &PodPlan,
) -> anyhow::Result<String> {
    let api = Api::<Pod>::namespaced(client.clone(), &plan.namespace);
    let created = api
        .create(&PostParams::default(), &pod_object(plan)?)
        .await
        .with_context(|| format!("create pod {}/{}", plan.namespace, plan.name))?;
    api.patch_status(
        &plan.name,
        &PatchParams::default(),
        &Patch::Merge(running_status(&created)),
    )
    .await
    .with_context(|| format!("patch status of pod {}/{}", plan.namespace, plan.name))?;
    let uid = created.metadata.uid.unwrap_or_default();
    let containers: Vec<(String, u64, u64)> = plan
        .containers
        .iter()
        .map(|c| (c.name.clone(), c.cpu_nanocores, c.memory_bytes))
        .collect();
    let added = fleet.lock().expect("fleet lock").add_pod(
        &plan.node,
        &plan.namespace,
        &plan.name,
        &uid,
        &containers,
        now_ms(),
    );
    anyhow::ensure!(
        added,
        "the fleet refused pod {}/{} (unknown node {} or duplicate)",
        plan.namespace,
        plan.name,
        plan.node
    );
    Ok(uid)
}

/// Per-container usage the kubelet player gives the pods it starts.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    /// CPU, nanocores.
    pub cpu_nanocores: u64,
    /// Working set, bytes.
    pub memory_bytes: u64,
}

/// Plays scheduler and kubelet for one namespace: binds unbound pods to the nodes round-robin
/// (the `binding` subresource), marks bound pods Running/Ready, starts them in the fleet with
/// the current [`Usage`], and completes deletions (removing the pod from the fleet).
pub struct KubeletPlayer {
    namespace: String,
    fleet: Arc<Mutex<Fleet>>,
    usage: watch::Sender<Usage>,
    task: JoinHandle<()>,
}

impl KubeletPlayer {
    /// Starts playing for `namespace` on `nodes`.
    pub fn start(
        client: kube::Client,
        fleet: Arc<Mutex<Fleet>>,
        namespace: &str,
        nodes: Vec<String>,
        usage: Usage,
    ) -> Self {
        let (usage_tx, usage_rx) = watch::channel(usage);
        let task = tokio::spawn(play(
            client,
            fleet.clone(),
            namespace.to_owned(),
            nodes,
            usage_rx,
        ));
        Self {
            namespace: namespace.to_owned(),
            fleet,
            usage: usage_tx,
            task,
        }
    }

    /// Sets the CPU usage of every container in the namespace (now and for pods started later).
    pub fn set_cpu(&self, cpu_nanocores: u64) -> usize {
        self.usage.send_modify(|u| u.cpu_nanocores = cpu_nanocores);
        self.fleet.lock().expect("fleet lock").set_usage(
            &Target {
                namespace: Some(self.namespace.clone()),
                ..Target::default()
            },
            Some(cpu_nanocores),
            None,
            now_ms(),
        )
    }

    /// Pods of the namespace running in the fleet.
    pub fn running(&self) -> usize {
        let fleet = self.fleet.lock().expect("fleet lock");
        fleet
            .nodes
            .iter()
            .flat_map(|n| &n.pods)
            .filter(|p| p.namespace == self.namespace)
            .count()
    }
}

impl Drop for KubeletPlayer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn play(
    client: kube::Client,
    fleet: Arc<Mutex<Fleet>>,
    namespace: String,
    nodes: Vec<String>,
    usage: watch::Receiver<Usage>,
) {
    let api = Api::<Pod>::namespaced(client, &namespace);
    let mut started: HashSet<String> = HashSet::new();
    let mut next_node = 0usize;
    loop {
        if let Err(err) = play_once(
            &api,
            &fleet,
            &namespace,
            &nodes,
            &usage,
            &mut started,
            &mut next_node,
        )
        .await
        {
            tracing::warn!(namespace, error = %format!("{err:#}"), "kubelet player");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn play_once(
    api: &Api<Pod>,
    fleet: &Mutex<Fleet>,
    namespace: &str,
    nodes: &[String],
    usage: &watch::Receiver<Usage>,
    started: &mut HashSet<String>,
    next_node: &mut usize,
) -> anyhow::Result<()> {
    let pods = api
        .list(&ListParams::default())
        .await
        .context("list pods")?;
    // Pods deleted at once (grace period 0) are simply gone: stop them in the fleet too.
    let live: HashSet<String> = pods
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let gone: Vec<String> = {
        let fleet = fleet.lock().expect("fleet lock");
        fleet
            .nodes
            .iter()
            .flat_map(|n| &n.pods)
            .filter(|p| p.namespace == namespace && !live.contains(&p.name))
            .map(|p| p.name.clone())
            .collect()
    };
    for name in gone {
        fleet.lock().expect("fleet lock").remove_pods(
            &Target {
                namespace: Some(namespace.to_owned()),
                pod: Some(name),
                ..Target::default()
            },
            now_ms(),
        );
    }
    started.retain(|uid| {
        pods.items
            .iter()
            .any(|p| p.metadata.uid.as_ref() == Some(uid))
    });
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        if pod.metadata.deletion_timestamp.is_some() {
            // kubelet stops the containers, then confirms the deletion
            fleet.lock().expect("fleet lock").remove_pods(
                &Target {
                    namespace: Some(namespace.to_owned()),
                    pod: Some(name.clone()),
                    ..Target::default()
                },
                now_ms(),
            );
            started.remove(&uid);
            let _ = api
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await;
            continue;
        }
        let Some(node) = node else {
            let target = &nodes[*next_node % nodes.len()];
            *next_node += 1;
            let binding = json!({
                "apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name, "namespace": namespace},
                "target": {"apiVersion": "v1", "kind": "Node", "name": target},
            });
            api.create_subresource::<Value, Value>(
                "binding",
                &name,
                &PostParams::default(),
                &binding,
            )
            .await
            .with_context(|| format!("bind {namespace}/{name} to {target}"))?;
            continue;
        };
        if started.contains(&uid) {
            continue;
        }
        let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        if !running {
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(running_status(&pod)),
            )
            .await
            .with_context(|| format!("patch status of {namespace}/{name}"))?;
        }
        let u = *usage.borrow();
        let containers: Vec<(String, u64, u64)> = pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .map(|c| (c.name.clone(), u.cpu_nanocores, u.memory_bytes))
            .collect();
        fleet.lock().expect("fleet lock").add_pod(
            &node,
            namespace,
            &name,
            &uid,
            &containers,
            now_ms(),
        );
        started.insert(uid);
    }
    Ok(())
}
