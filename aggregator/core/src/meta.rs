//! Kubernetes metadata joined into answers: pod and node labels, which pods are Running, and
//! which node a pod is bound to.
//!
//! Without metadata (standalone mode, no Kubernetes API) every reported pod and node is
//! served with no labels. With it, only Running pods known to the watch are served, as
//! metrics-server does.
//!
//! [`MetaStore`] is owned by the one task that consumes the Pod and Node watches (the
//! metadata writer); it applies their events and publishes a [`MetaView`] for readers.
//! The maps are persistent (`imbl`), so publishing shares structure with the previous view
//! instead of copying every pod, and an update copies only the path to the changed entry.
//! Label sets, namespaces and node names are interned: the pods of one ReplicaSet share one
//! label map, and a namespace or node name is stored once however many pods name it.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use kubepulse_model::{Namespace, NodeName, PodKey};

use crate::api::Labels;

/// What the watch knows of a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodMeta {
    /// The pod's labels.
    pub labels: Labels,
    /// `spec.nodeName`, once bound.
    pub node: Option<NodeName>,
    /// `status.phase == Running`.
    pub running: bool,
    /// [`uid_fingerprint`] of `metadata.uid` (0: unknown), to tell a pod from a later one of
    /// the same name (agent tokens are bound to a pod's UID); a digest keeps it at 8 bytes.
    pub uid: u64,
}

/// A pod UID's fingerprint for [`PodMeta::uid`]; never 0 for a non-empty UID.
pub fn uid_fingerprint(uid: &str) -> u64 {
    if uid.is_empty() {
        return 0;
    }
    let mut hasher = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(uid, &mut hasher);
    std::hash::Hasher::finish(&hasher).max(1)
}

/// What the watch knows of a node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeMeta {
    /// The node's labels.
    pub labels: Labels,
}

/// A consistent picture of the metadata, as of the watches' last events. Cloning is cheap
/// (the maps are persistent and share structure).
#[derive(Clone, Debug, Default)]
pub struct MetaView {
    /// Pods by namespace and name.
    pub pods: imbl::OrdMap<PodKey, PodMeta>,
    /// Nodes by name.
    pub nodes: imbl::OrdMap<NodeName, NodeMeta>,
    /// Both watches have listed everything at least once.
    pub synced: bool,
}

/// Which watch an event came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The Pod watch.
    Pods,
    /// The Node watch.
    Nodes,
}

/// The metadata writer's state: the current maps, a relist in progress per kind, and the
/// interners.
#[derive(Debug, Default)]
pub struct MetaStore {
    view: MetaView,
    relist_pods: Option<imbl::OrdMap<PodKey, PodMeta>>,
    relist_nodes: Option<imbl::OrdMap<NodeName, NodeMeta>>,
    pods_synced: bool,
    nodes_synced: bool,
    labels: HashSet<Labels>,
    namespaces: HashSet<Namespace>,
    node_names: HashSet<NodeName>,
    changes_since_compact: usize,
    dirty: bool,
}

impl MetaStore {
    /// An empty, unsynced store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A relist of `kind` began: events until [`MetaStore::end_relist`] build a fresh map
    /// that then replaces the current one (objects deleted while the watch was down vanish).
    /// Readers keep seeing the current map meanwhile.
    pub fn begin_relist(&mut self, kind: Kind) {
        match kind {
            Kind::Pods => self.relist_pods = Some(imbl::OrdMap::new()),
            Kind::Nodes => self.relist_nodes = Some(imbl::OrdMap::new()),
        }
    }

    /// The relist of `kind` is complete: its map replaces the current one; once both kinds
    /// have completed one, the view is synced.
    pub fn end_relist(&mut self, kind: Kind) {
        match kind {
            Kind::Pods => {
                if let Some(pods) = self.relist_pods.take() {
                    self.view.pods = pods;
                }
                self.pods_synced = true;
            }
            Kind::Nodes => {
                if let Some(nodes) = self.relist_nodes.take() {
                    self.view.nodes = nodes;
                }
                self.nodes_synced = true;
            }
        }
        self.view.synced = self.pods_synced && self.nodes_synced;
        self.compact();
        self.dirty = true;
    }

    /// A pod was added or changed (or listed during a relist).
    pub fn apply_pod(&mut self, key: PodKey, meta: PodMeta) {
        let key = PodKey {
            namespace: intern(&mut self.namespaces, key.namespace),
            name: key.name,
        };
        let meta = PodMeta {
            labels: self.intern_labels(meta.labels),
            node: meta.node.map(|n| intern(&mut self.node_names, n)),
            running: meta.running,
            uid: meta.uid,
        };
        let map = match self.relist_pods.as_mut() {
            Some(relist) => relist,
            None => &mut self.view.pods,
        };
        if map.get(&key) != Some(&meta) {
            map.insert(key, meta);
            self.changed();
        }
    }

    /// A pod was deleted (or stopped matching the watch's field selector).
    pub fn delete_pod(&mut self, key: &PodKey) {
        if let Some(relist) = self.relist_pods.as_mut() {
            relist.remove(key);
        }
        if self.view.pods.remove(key).is_some() {
            self.changed();
        }
    }

    /// A node was added or changed (or listed during a relist).
    pub fn apply_node(&mut self, name: NodeName, meta: NodeMeta) {
        let name = intern(&mut self.node_names, name);
        let meta = NodeMeta {
            labels: self.intern_labels(meta.labels),
        };
        let map = match self.relist_nodes.as_mut() {
            Some(relist) => relist,
            None => &mut self.view.nodes,
        };
        if map.get(&name) != Some(&meta) {
            map.insert(name, meta);
            self.changed();
        }
    }

    /// A node was deleted.
    pub fn delete_node(&mut self, name: &NodeName) {
        if let Some(relist) = self.relist_nodes.as_mut() {
            relist.remove(name);
        }
        if self.view.nodes.remove(name).is_some() {
            self.changed();
        }
    }

    /// True when something changed since the last [`MetaStore::publish`].
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// The current view for readers (shares structure with the store; O(1)).
    pub fn publish(&mut self) -> MetaView {
        self.dirty = false;
        self.view.clone()
    }

    /// Whether the watch of `kind` has completed its first list.
    pub fn is_synced(&self, kind: Kind) -> bool {
        match kind {
            Kind::Pods => self.pods_synced,
            Kind::Nodes => self.nodes_synced,
        }
    }

    /// Number of label sets, namespaces and node names interned (for tests and telemetry).
    pub fn interned(&self) -> (usize, usize, usize) {
        (
            self.labels.len(),
            self.namespaces.len(),
            self.node_names.len(),
        )
    }

    fn intern_labels(&mut self, labels: Labels) -> Labels {
        if labels.is_empty() {
            // one shared empty map
            return intern(&mut self.labels, Arc::new(BTreeMap::new()));
        }
        intern(&mut self.labels, labels)
    }

    fn changed(&mut self) {
        self.dirty = true;
        self.changes_since_compact += 1;
        // Drop interned values no longer referenced, amortised over the changes that can
        // orphan them.
        if self.changes_since_compact > 4096 + self.view.pods.len() / 2 {
            self.compact();
        }
    }

    /// Forgets interned values nothing refers to any more: label sets only the interner
    /// holds, and namespaces and node names no pod or node names (rebuilt from the maps; the
    /// pass is O(pods) and runs after a relist or after more than half as many changes as
    /// there are pods).
    fn compact(&mut self) {
        self.changes_since_compact = 0;
        self.labels.retain(|l| Arc::strong_count(l) > 1);
        let mut namespaces = HashSet::with_capacity(self.namespaces.len());
        let mut node_names = HashSet::with_capacity(self.node_names.len());
        let pods = self
            .view
            .pods
            .iter()
            .chain(self.relist_pods.iter().flatten());
        for (key, meta) in pods {
            namespaces.insert(key.namespace.clone());
            if let Some(node) = &meta.node {
                node_names.insert(node.clone());
            }
        }
        let nodes = self
            .view
            .nodes
            .keys()
            .chain(self.relist_nodes.iter().flat_map(|m| m.keys()));
        for name in nodes {
            node_names.insert(name.clone());
        }
        self.namespaces = namespaces;
        self.node_names = node_names;
    }
}

// === private helpers ===

/// The stored equal value, or `value` after storing it.
fn intern<T: Clone + Eq + std::hash::Hash>(set: &mut HashSet<T>, value: T) -> T {
    if let Some(existing) = set.get(&value) {
        return existing.clone();
    }
    set.insert(value.clone());
    value
}

#[cfg(test)]
mod tests;
