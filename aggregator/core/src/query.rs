//! List and get over a [`ClusterView`], joined with [`MetaView`] when the aggregator watches
//! Kubernetes, filtered by selectors. Answers are [`api`](crate::api) values, sorted as
//! metrics-server sorts them (nodes by name; pods by namespace, then name).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use kubepulse_model::{NodeName, PodKey};

use crate::api::{ApiStatus, ContainerMetrics, Labels, NodeMetrics, PodMetrics};
use crate::encode::status;
use crate::meta::MetaView;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{ClusterView, NodeEntry, PodUsage};

/// Selectors of a list request.
#[derive(Clone, Copy, Debug)]
pub struct ListOptions<'a> {
    /// `labelSelector`.
    pub labels: &'a LabelSelector,
    /// `fieldSelector`.
    pub fields: &'a FieldSelector,
}

/// Every node with metrics that matches the selectors. `node_filter` (the server-side
/// `--node-selector`) applies to lists only, as in metrics-server.
pub fn list_nodes(
    view: &ClusterView,
    meta: Option<&MetaView>,
    opts: ListOptions<'_>,
    node_filter: Option<&LabelSelector>,
) -> Vec<NodeMetrics> {
    let empty = Labels::default();
    view.nodes
        .iter()
        .filter_map(|(name, entry)| {
            let sample = entry.view.node?;
            let labels = match meta {
                Some(m) => &m.nodes.get(name)?.labels,
                None => &empty,
            };
            let keep = opts.fields.matches(name.as_str(), None)
                && opts.labels.matches(labels)
                && node_filter.is_none_or(|f| f.matches(labels));
            keep.then(|| NodeMetrics {
                name: name.clone(),
                labels: labels.clone(),
                sample,
            })
        })
        .collect()
}

/// One node's metrics, or the Status metrics-server answers.
pub fn get_node(
    view: &ClusterView,
    meta: Option<&MetaView>,
    name: &str,
) -> Result<NodeMetrics, ApiStatus> {
    let node = NodeName::new(name).map_err(|_| status::not_found_node(name))?;
    let labels = match meta {
        Some(m) => m
            .nodes
            .get(&node)
            .ok_or_else(|| status::not_found_node(name))?
            .labels
            .clone(),
        None => Labels::default(),
    };
    let sample = view
        .nodes
        .get(&node)
        .and_then(|e| e.view.node)
        .ok_or_else(|| status::not_found_node_metrics(name))?;
    Ok(NodeMetrics {
        name: node,
        labels,
        sample,
    })
}

/// Every pod with metrics in `namespace` (all namespaces when `None`) that matches the
/// selectors. A pod reported by two nodes (moved while both agents still report it) is served
/// once, from the node its metadata names, or else the first by node name.
pub fn list_pods(
    view: &ClusterView,
    meta: Option<&MetaView>,
    namespace: Option<&str>,
    opts: ListOptions<'_>,
) -> Vec<PodMetrics> {
    let mut out = Vec::new();
    for_each_pod(view, meta, namespace, opts, |m| {
        out.push(m);
        true
    });
    out
}

/// What [`list_pods`] returns, one pod at a time and in the same order, without holding the
/// list: a k-way merge of the nodes' sorted pod tables, so memory is O(nodes) whatever the
/// number of pods. `f` returns false to stop early. With a namespace, only the nodes the
/// namespace index names are visited.
pub fn for_each_pod(
    view: &ClusterView,
    meta: Option<&MetaView>,
    namespace: Option<&str>,
    opts: ListOptions<'_>,
    mut f: impl FnMut(PodMetrics) -> bool,
) {
    let empty = Labels::default();
    let in_namespace = namespace.map(|ns| view.namespaces.get(ns).cloned().unwrap_or_default());
    let nodes: Vec<(&NodeName, &Arc<NodeEntry>)> = match &in_namespace {
        Some(names) => names
            .iter()
            .filter_map(|n| view.nodes.get_key_value(n))
            .collect(),
        None => view.nodes.iter().collect(),
    };
    let mut cursors: Vec<_> = nodes
        .iter()
        .map(|(_, e)| e.view.pods.in_namespace(namespace))
        .collect();
    // min-heap on (pod, node index): equal pods come out in node-name order
    let mut heap: BinaryHeap<Reverse<(&PodKey, usize, Ptr<'_>)>> =
        BinaryHeap::with_capacity(cursors.len());
    for (i, c) in cursors.iter_mut().enumerate() {
        if let Some((k, p)) = c.next() {
            heap.push(Reverse((k, i, Ptr(p))));
        }
    }
    let mut last: Option<&PodKey> = None;
    while let Some(Reverse((key, i, Ptr(pod)))) = heap.pop() {
        if let Some((k, p)) = cursors[i].next() {
            heap.push(Reverse((k, i, Ptr(p))));
        }
        if last == Some(key) {
            continue;
        }
        let node = nodes[i].0;
        let labels = match meta {
            Some(m) => match servable(m, key, node) {
                Some(pm) => &pm.labels,
                None => continue,
            },
            None => &empty,
        };
        if !opts
            .fields
            .matches(key.name.as_str(), Some(key.namespace.as_str()))
            || !opts.labels.matches(labels)
        {
            continue;
        }
        if let Some(m) = pod_metrics(key, labels, pod) {
            last = Some(key);
            if !f(m) {
                return;
            }
        }
    }
}

/// A pod in the merge heap; ordering is by pod key and node only.
#[derive(Clone, Copy)]
struct Ptr<'a>(PodUsage<'a>);

impl PartialEq for Ptr<'_> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Ptr<'_> {}

impl PartialOrd for Ptr<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ptr<'_> {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

/// One pod's metrics, or the Status metrics-server answers.
pub fn get_pod(
    view: &ClusterView,
    meta: Option<&MetaView>,
    namespace: &str,
    name: &str,
) -> Result<PodMetrics, ApiStatus> {
    let key = PodKey::new(namespace, name).map_err(|_| status::not_found_pod(namespace, name))?;
    let labels = match meta {
        Some(m) => match m.pods.get(&key) {
            Some(pm) if pm.running => pm.labels.clone(),
            _ => return Err(status::not_found_pod(namespace, name)),
        },
        None => Labels::default(),
    };
    let bound = meta
        .and_then(|m| m.pods.get(&key))
        .and_then(|pm| pm.node.as_ref());
    let found = match bound.and_then(|n| view.nodes.get(n)) {
        Some(entry) => entry.view.pods.get(&key),
        None => view.nodes.values().find_map(|e| e.view.pods.get(&key)),
    };
    found
        .and_then(|pod| pod_metrics(&key, &labels, pod))
        .ok_or_else(|| status::not_found_pod_metrics(namespace, name))
}

/// The metadata of a reported pod if it may be served: known, Running, and bound to the
/// reporting node (or not bound yet as far as the watch knows).
fn servable<'m>(
    meta: &'m MetaView,
    key: &PodKey,
    node: &NodeName,
) -> Option<&'m crate::meta::PodMeta> {
    let pm = meta.pods.get(key)?;
    (pm.running && pm.node.as_ref().is_none_or(|n| n == node)).then_some(pm)
}

fn pod_metrics(key: &PodKey, labels: &Labels, pod: PodUsage<'_>) -> Option<PodMetrics> {
    let (timestamp, window) = pod.timestamp_window()?;
    Some(PodMetrics {
        key: key.clone(),
        labels: Arc::clone(labels),
        timestamp,
        window,
        containers: pod
            .containers()
            .map(|(name, s)| ContainerMetrics {
                name: name.clone(),
                usage: s.usage,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests;
