//! The Kubernetes watches (Kubernetes mode only): Running Pods and Node metadata, translated
//! at once into `kubepulse_aggregator_core::meta` values and applied by this module's single
//! metadata writer, which publishes an immutable [`MetaView`] that handlers read without
//! locks.
//!
//! - Pods: full objects (the node binding is in `spec.nodeName`) with the server-side field
//!   selector `status.phase=Running`, as metrics-server's informer; a pod that stops running
//!   arrives as a deletion. Each object is dropped right after translation.
//! - Nodes: metadata only (`PartialObjectMeta<Node>`), for labels.
//!
//! Errors (list, watch, expired resource versions) are logged and retried with kube's default
//! backoff; a relist replaces the map at its end, so objects deleted meanwhile disappear.
//! Publishes happen at most every [`PUBLISH_INTERVAL`], and right away when the watches become
//! synced.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::{Stream, StreamExt as _};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use kubepulse_aggregator_core::meta::{Kind, MetaStore, MetaView, NodeMeta, PodMeta};
use kubepulse_model::{NodeName, PodKey};

/// Most often a new view is published.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(100);

/// The field selector of the Pod watch.
pub const RUNNING_PODS: &str = "status.phase=Running";

/// What the metadata writer publishes.
pub struct MetaPublished {
    view: ArcSwap<MetaView>,
    synced: AtomicBool,
}

impl MetaPublished {
    /// Nothing listed yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            view: ArcSwap::from_pointee(MetaView::default()),
            synced: AtomicBool::new(false),
        })
    }

    /// The latest view.
    pub fn view(&self) -> Arc<MetaView> {
        self.view.load_full()
    }

    /// Both watches have completed their first list.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    /// Replaces the view (the writer, and tests).
    pub fn publish(&self, view: MetaView) {
        let synced = view.synced;
        self.view.store(Arc::new(view));
        self.synced.store(synced, Ordering::Relaxed);
    }
}

/// One translated watch event.
enum Change {
    Begin(Kind),
    Done(Kind),
    Pod(PodKey, Option<PodMeta>),
    Node(NodeName, Option<NodeMeta>),
    Skip,
}

/// Runs both watches and the metadata writer until `stop` resolves.
pub async fn run(
    client: Client,
    published: Arc<MetaPublished>,
    stop: impl std::future::Future<Output = ()>,
) {
    let pods = pod_changes(Api::<Pod>::all(client.clone()));
    let nodes = node_changes(Api::<PartialObjectMeta<Node>>::all(client));
    let mut changes = std::pin::pin!(futures::stream::select(pods, nodes));
    let mut store = MetaStore::new();
    let mut tick = tokio::time::interval(PUBLISH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            change = changes.next() => {
                let Some(change) = change else { break };
                let was_synced = store.is_synced(Kind::Pods) && store.is_synced(Kind::Nodes);
                apply(&mut store, change);
                let synced = store.is_synced(Kind::Pods) && store.is_synced(Kind::Nodes);
                if synced && !was_synced {
                    let view = store.publish();
                    tracing::info!(pods = view.pods.len(), nodes = view.nodes.len(), "Pod and Node watches synced");
                    published.publish(view);
                }
            }
            _ = tick.tick() => {
                if store.is_dirty() {
                    published.publish(store.publish());
                }
            }
            () = &mut stop => break,
        }
    }
}

fn apply(store: &mut MetaStore, change: Change) {
    match change {
        Change::Begin(kind) => store.begin_relist(kind),
        Change::Done(kind) => store.end_relist(kind),
        Change::Pod(key, Some(meta)) => store.apply_pod(key, meta),
        Change::Pod(key, None) => store.delete_pod(&key),
        Change::Node(name, Some(meta)) => store.apply_node(name, meta),
        Change::Node(name, None) => store.delete_node(&name),
        Change::Skip => {}
    }
}

fn pod_changes(api: Api<Pod>) -> impl Stream<Item = Change> + Send {
    let config = watcher::Config::default().fields(RUNNING_PODS);
    watcher::watcher(api, config)
        .default_backoff()
        .map(|event| match event {
            Ok(event) => translate(event, Kind::Pods, pod_change),
            Err(err) => {
                tracing::warn!(error = %err, "Pod watch failed; retrying with backoff");
                Change::Skip
            }
        })
}

fn node_changes(api: Api<PartialObjectMeta<Node>>) -> impl Stream<Item = Change> + Send {
    watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .map(|event| match event {
            Ok(event) => translate(event, Kind::Nodes, node_change),
            Err(err) => {
                tracing::warn!(error = %err, "Node watch failed; retrying with backoff");
                Change::Skip
            }
        })
}

fn translate<K>(event: Event<K>, kind: Kind, change: fn(K, bool) -> Change) -> Change {
    match event {
        Event::Init => Change::Begin(kind),
        Event::InitDone => Change::Done(kind),
        Event::InitApply(obj) | Event::Apply(obj) => change(obj, false),
        Event::Delete(obj) => change(obj, true),
    }
}

/// The one place a Pod object becomes metadata.
fn pod_change(pod: Pod, deleted: bool) -> Change {
    let (Some(namespace), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else {
        return Change::Skip;
    };
    let Ok(key) = PodKey::new(namespace, name) else {
        return Change::Skip;
    };
    if deleted {
        return Change::Pod(key, None);
    }
    let running = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Running");
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .and_then(|n| NodeName::new(n).ok());
    Change::Pod(
        key,
        Some(PodMeta {
            uid: kubepulse_aggregator_core::meta::uid_fingerprint(
                pod.metadata.uid.as_deref().unwrap_or_default(),
            ),
            labels: Arc::new(pod.metadata.labels.unwrap_or_default()),
            node,
            running,
        }),
    )
}

/// The one place a Node object becomes metadata.
fn node_change(node: PartialObjectMeta<Node>, deleted: bool) -> Change {
    let Some(name) = node
        .metadata
        .name
        .as_deref()
        .and_then(|n| NodeName::new(n).ok())
    else {
        return Change::Skip;
    };
    if deleted {
        return Change::Node(name, None);
    }
    let labels: BTreeMap<String, String> = node.metadata.labels.unwrap_or_default();
    Change::Node(
        name,
        Some(NodeMeta {
            labels: Arc::new(labels),
        }),
    )
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};
    use kube::api::ObjectMeta;

    use super::*;

    fn pod(phase: &str, node: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some("prod".into()),
                name: Some("web-0".into()),
                labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                annotations: Some(BTreeMap::from([("big".into(), "x".repeat(1000))])),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_owned),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..PodStatus::default()
            }),
        }
    }

    #[test]
    fn pods_become_small_metadata() {
        let mut store = MetaStore::new();
        for change in [
            Change::Begin(Kind::Pods),
            pod_change(pod("Running", Some("node-a")), false),
            Change::Done(Kind::Pods),
            Change::Begin(Kind::Nodes),
            node_change(
                PartialObjectMeta {
                    metadata: ObjectMeta {
                        name: Some("node-a".into()),
                        labels: Some(BTreeMap::from([("zone".into(), "z1".into())])),
                        ..ObjectMeta::default()
                    },
                    ..PartialObjectMeta::default()
                },
                false,
            ),
            Change::Done(Kind::Nodes),
        ] {
            apply(&mut store, change);
        }
        let view = store.publish();
        assert!(view.synced);
        let meta = &view.pods[&PodKey::new("prod", "web-0").unwrap()];
        assert!(meta.running);
        assert_eq!(meta.node.as_ref().map(NodeName::as_str), Some("node-a"));
        assert_eq!(meta.labels["app"], "web");
        assert_eq!(
            view.nodes[&NodeName::new("node-a").unwrap()].labels["zone"],
            "z1"
        );
        apply(&mut store, pod_change(pod("Running", None), true));
        assert!(store.publish().pods.is_empty());
    }

    #[test]
    fn pending_and_unnamed_pods() {
        let Change::Pod(_, Some(meta)) = pod_change(pod("Pending", None), false) else {
            panic!("expected a pod");
        };
        assert!(!meta.running);
        assert_eq!(meta.node, None);
        let mut unnamed = pod("Running", None);
        unnamed.metadata.name = None;
        assert!(matches!(pod_change(unnamed, false), Change::Skip));
    }
}
