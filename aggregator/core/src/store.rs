//! The cluster store: what every node last reported, owned by the single writer.
//!
//! Mutated only through [`ClusterStore::open_stream`], [`ClusterStore::apply`],
//! [`ClusterStore::close_stream`] and [`ClusterStore::evict_stale`]; readers get an immutable
//! [`ClusterView`] from [`ClusterStore::publish`]. Every instant is an argument (`now`), a
//! monotonic reading taken by the caller.
//!
//! The view's maps are persistent (`imbl`): the store updates them in place and publishing
//! clones their roots, so a publish costs O(1) and the next update copies only the path to the
//! entry it changes (O(log nodes)), however many nodes the store holds. The namespace index is
//! two-level the same way: a persistent map of namespaces to persistent sets of node names,
//! so a node joining a namespace every node reports in (`kube-system`) costs O(log nodes) too.
//!
//! Staleness: a node's data is fresh while its agent keeps reporting successful kubelet reads
//! (a snapshot, a delta or a heartbeat). When none arrives for the node's TTL (by default three
//! poll intervals, at least 30 s) — agent gone, stream cut, kubelet failing — the node's data
//! is dropped; until then the last good values are served with their real kubelet timestamps.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kubepulse_model::{
    ApplyError, ContainerName, Delta, Epoch, Namespace, NodeChange, NodeName, NodeView, PodKey,
    Sample, Timestamp, Window,
};

/// Identifies one ingest stream (unique within the process).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

/// TTL rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// The TTL is this many poll intervals of the node's agent…
    pub ttl_intervals: u32,
    /// …but never less than this.
    pub min_ttl: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            ttl_intervals: 3,
            min_ttl: Duration::from_secs(30),
        }
    }
}

/// What an agent announced when its stream opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    /// The agent run.
    pub epoch: Epoch,
    /// How often the agent reads its kubelet.
    pub poll_interval: Duration,
    /// The agent's version string.
    pub agent_version: String,
}

/// The agent's last kubelet read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScrapeStatus {
    /// The read and decode succeeded.
    pub ok: bool,
    /// Why it failed (empty when ok).
    pub error: String,
    /// Lines of the body that could not be decoded.
    pub decode_issues: u32,
    /// Containers the agent holds back (their pods are not served), with a reason name.
    pub pending: Vec<PendingContainer>,
    /// Held-back containers the agent did not list (beyond its bound).
    pub pending_dropped: u32,
    /// Why the node's own usage is not served (empty when it is).
    pub node_pending: String,
}

/// A container the agent reports but holds back, so its pod is not served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingContainer {
    /// The pod.
    pub pod: kubepulse_model::PodKey,
    /// The container.
    pub container: kubepulse_model::ContainerName,
    /// A stable reason name (`waiting_for_second_sample`, `restarted`, …).
    pub reason: String,
}

/// One update from a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update {
    /// A full view: replaces what the node had.
    Snapshot(NodeView),
    /// Changes since the last snapshot-or-delta of the same stream.
    Delta(Delta),
    /// The agent's kubelet read status changed or is repeated as a heartbeat. An `ok` status
    /// keeps the node's data fresh.
    Status(ScrapeStatus),
}

/// Why the store refused an update.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The stream is not the one currently reporting for the node (an older agent run whose
    /// stream has not closed yet, or a node that was evicted).
    #[error("stream {stream:?} does not report for node {node}")]
    NotOwner {
        /// the node
        node: NodeName,
        /// the refused stream
        stream: StreamId,
    },
    /// A delta arrived before any snapshot.
    #[error("delta for node {0} before its snapshot")]
    NoSnapshot(NodeName),
    /// The delta does not fit the held view: the stream must resync.
    #[error("apply delta for node {node}: {source}")]
    Apply {
        /// the node
        node: NodeName,
        /// what did not fit
        source: ApplyError,
    },
}

/// What the store holds for one node, as readers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEntry {
    /// The node's usage; empty once expired.
    pub view: Arc<NodeUsage>,
    /// True once a snapshot arrived and until the data expires.
    pub has_data: bool,
    /// The agent's last kubelet read.
    pub scrape: ScrapeStatus,
    /// What the reporting stream announced.
    pub info: StreamInfo,
    /// Whether a stream is currently open for the node.
    pub connected: bool,
    /// When a stream for the node last opened or sent anything (agents send a status at
    /// least every poll interval, so while no stream is open this is about when the last
    /// one went quiet).
    pub last_message_at: Instant,
    /// When the data was last confirmed fresh (caller's monotonic clock).
    pub fresh_at: Instant,
    /// When the data expired, if it did.
    pub expired_at: Option<Instant>,
    /// The TTL for this node.
    pub ttl: Duration,
}

/// An immutable snapshot of the store for readers. Cloning is cheap: the maps are persistent
/// and share structure with the store's and with older views.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// Every known node, sorted by name.
    pub nodes: imbl::OrdMap<NodeName, Arc<NodeEntry>>,
    /// For each namespace, the nodes that report pods in it, sorted by name: a namespace's
    /// pods are found without scanning every node. A namespace is absent when no node reports
    /// pods in it (never mapped to an empty set).
    pub namespaces: imbl::OrdMap<Namespace, imbl::OrdSet<NodeName>>,
}

impl ClusterView {
    /// True when at least one node has data to serve.
    pub fn has_data(&self) -> bool {
        self.nodes.values().any(|n| n.has_data)
    }
}

/// What only the writer needs about a node (its [`NodeEntry`] is in the view).
struct Slot {
    owner: Option<StreamId>,
    /// Namespaces the node reports pods in, sorted (what the namespace index holds for it).
    namespaces: Vec<Namespace>,
}

/// The writer-owned store.
pub struct ClusterStore {
    config: StoreConfig,
    /// One slot per node of `view.nodes`, same keys.
    slots: HashMap<NodeName, Slot>,
    /// The live maps, updated in place; [`ClusterStore::publish`] hands out clones.
    view: ClusterView,
}

impl ClusterStore {
    /// An empty store.
    pub fn new(config: StoreConfig) -> Self {
        Self {
            config,
            slots: HashMap::new(),
            view: ClusterView::default(),
        }
    }

    /// The TTL for a node whose agent polls every `interval`.
    pub fn ttl_for(&self, interval: Duration) -> Duration {
        (interval * self.config.ttl_intervals).max(self.config.min_ttl)
    }

    /// A stream opened for `node`: it becomes the node's reporting stream. Held data stays
    /// (and is served) until the stream's snapshot replaces it or it expires.
    pub fn open_stream(
        &mut self,
        node: NodeName,
        stream: StreamId,
        info: StreamInfo,
        now: Instant,
    ) {
        let ttl = self.ttl_for(info.poll_interval);
        match self.view.nodes.get_mut(&node) {
            Some(entry) => {
                let e = Arc::make_mut(entry);
                e.info = info;
                e.ttl = ttl;
                e.connected = true;
                e.last_message_at = now;
            }
            None => {
                let entry = NodeEntry {
                    view: Arc::default(),
                    has_data: false,
                    scrape: ScrapeStatus::default(),
                    info,
                    connected: true,
                    last_message_at: now,
                    fresh_at: now,
                    expired_at: None,
                    ttl,
                };
                self.view.nodes.insert(node.clone(), Arc::new(entry));
            }
        }
        self.slots
            .entry(node)
            .or_insert_with(|| Slot {
                owner: None,
                namespaces: Vec::new(),
            })
            .owner = Some(stream);
    }

    /// Applies one update from `stream` for `node`.
    pub fn apply(
        &mut self,
        node: &NodeName,
        stream: StreamId,
        update: Update,
        now: Instant,
    ) -> Result<(), StoreError> {
        let not_owner = || StoreError::NotOwner {
            node: node.clone(),
            stream,
        };
        let slot = match self.slots.get_mut(node) {
            Some(slot) if slot.owner == Some(stream) => slot,
            _ => return Err(not_owner()),
        };
        // every slot has an entry
        let entry = self.view.nodes.get_mut(node).ok_or_else(not_owner)?;
        let e = Arc::make_mut(entry);
        e.last_message_at = now;
        let mut pods_changed = false;
        match update {
            Update::Snapshot(view) => {
                e.view = Arc::new(NodeUsage::from(view));
                e.has_data = true;
                e.fresh_at = now;
                e.expired_at = None;
                pods_changed = true;
            }
            Update::Delta(delta) => {
                if !e.has_data {
                    return Err(StoreError::NoSnapshot(node.clone()));
                }
                let usage = Arc::make_mut(&mut e.view);
                let before = usage.pods.len();
                let applied = usage.apply(&delta);
                pods_changed = usage.pods.len() != before || !delta.pod_removals.is_empty();
                if pods_changed {
                    reindex(
                        &mut self.view.namespaces,
                        node,
                        &mut slot.namespaces,
                        &e.view,
                    );
                    pods_changed = false;
                }
                applied.map_err(|source| StoreError::Apply {
                    node: node.clone(),
                    source,
                })?;
                e.fresh_at = now;
            }
            Update::Status(status) => {
                if status.ok && e.has_data {
                    e.fresh_at = now;
                }
                e.scrape = status;
            }
        }
        if pods_changed {
            reindex(
                &mut self.view.namespaces,
                node,
                &mut slot.namespaces,
                &e.view,
            );
        }
        Ok(())
    }

    /// The stream ended. Its data is kept (and served) until the TTL.
    pub fn close_stream(&mut self, node: &NodeName, stream: StreamId) {
        if let Some(slot) = self
            .slots
            .get_mut(node)
            .filter(|slot| slot.owner == Some(stream))
        {
            slot.owner = None;
            if let Some(entry) = self.view.nodes.get_mut(node) {
                Arc::make_mut(entry).connected = false;
            }
        }
    }

    /// Drops data older than each node's TTL; forgets nodes that have neither data nor a
    /// stream. Returns the nodes whose data expired now.
    ///
    /// Reads every node (without copying anything) and changes only those that expire or are
    /// forgotten.
    pub fn evict_stale(&mut self, now: Instant) -> Vec<NodeName> {
        let mut expired = Vec::new();
        let mut forget = Vec::new();
        for (name, e) in &self.view.nodes {
            let expires = e.has_data && now.saturating_duration_since(e.fresh_at) > e.ttl;
            // what the node looks like once expired (`connected` is true while a stream owns it)
            let expired_at = if expires { Some(now) } else { e.expired_at };
            let keep = e.connected
                || (e.has_data && !expires)
                || expired_at.is_some_and(|at| now.saturating_duration_since(at) < e.ttl);
            if expires {
                expired.push(name.clone());
            }
            if !keep {
                forget.push(name.clone());
            }
        }
        for name in &expired {
            let (Some(entry), Some(slot)) =
                (self.view.nodes.get_mut(name), self.slots.get_mut(name))
            else {
                continue;
            };
            let e = Arc::make_mut(entry);
            e.view = Arc::default();
            e.has_data = false;
            e.expired_at = Some(now);
            reindex(
                &mut self.view.namespaces,
                name,
                &mut slot.namespaces,
                &e.view,
            );
        }
        for name in &forget {
            self.view.nodes.remove(name);
            self.slots.remove(name);
        }
        expired
    }

    /// The current view for readers: a clone of the live maps' roots, O(1).
    pub fn publish(&mut self) -> ClusterView {
        self.view.clone()
    }

    /// Number of nodes known.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when no node is known.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// Brings the namespace index up to date with `node`'s pods.
fn reindex(
    index: &mut imbl::OrdMap<Namespace, imbl::OrdSet<NodeName>>,
    node: &NodeName,
    held: &mut Vec<Namespace>,
    usage: &NodeUsage,
) {
    let mut now: Vec<Namespace> = Vec::new();
    for (key, _) in usage.pods.iter() {
        // pods are sorted by namespace: equal namespaces are adjacent
        if now.last() != Some(&key.namespace) {
            now.push(key.namespace.clone());
        }
    }
    if now == *held {
        return;
    }
    for ns in held.iter().filter(|ns| now.binary_search(ns).is_err()) {
        let emptied = index.get_mut(ns).is_some_and(|nodes| {
            nodes.remove(node);
            nodes.is_empty()
        });
        if emptied {
            index.remove(ns);
        }
    }
    for ns in now.iter().filter(|ns| held.binary_search(ns).is_err()) {
        match index.get_mut(ns) {
            Some(nodes) => {
                nodes.insert(node.clone());
            }
            None => {
                index.insert(ns.clone(), imbl::OrdSet::unit(node.clone()));
            }
        }
    }
    *held = now;
}

// === impl NodeUsage ===

/// One node's usage as the store holds it. The same content as a [`NodeView`], laid out for
/// a store of many nodes: pods in one vector sorted by namespace and name, each pod's
/// containers in a small vector sorted by name. (A `BTreeMap` per pod allocates a node with
/// room for eleven entries for the one to three containers a pod has: ~4× the memory.)
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeUsage {
    /// The node's own usage, once two usable kubelet samples exist.
    pub node: Option<Sample>,
    /// Pods with complete usage.
    pub pods: PodTable,
}

/// A node's pods, sorted by namespace and name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodTable(Vec<(PodKey, PodUsage)>);

/// One pod's containers, sorted by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodUsage(Vec<(ContainerName, Sample)>);

impl PodTable {
    /// Number of pods.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True without pods.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn position(&self, key: &PodKey) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.cmp(key))
    }

    /// The pod `key`.
    pub fn get(&self, key: &PodKey) -> Option<&PodUsage> {
        self.position(key).ok().map(|i| &self.0[i].1)
    }

    /// True when the node reports pod `key`.
    pub fn contains_key(&self, key: &PodKey) -> bool {
        self.position(key).is_ok()
    }

    /// Every pod, sorted.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&PodKey, &PodUsage)> + Clone {
        self.0.iter().map(|(k, p)| (k, p))
    }

    /// The pods of `namespace` (every pod when `None`), sorted: a binary search, not a scan.
    pub fn in_namespace<'a>(
        &'a self,
        namespace: Option<&str>,
    ) -> impl ExactSizeIterator<Item = (&'a PodKey, &'a PodUsage)> + Clone {
        let range = match namespace {
            None => &self.0[..],
            Some(ns) => {
                let from = self.0.partition_point(|(k, _)| k.namespace.as_str() < ns);
                let to = from + self.0[from..].partition_point(|(k, _)| k.namespace.as_str() == ns);
                &self.0[from..to]
            }
        };
        range.iter().map(|(k, p)| (k, p))
    }
}

impl PodUsage {
    /// Every container and its sample, sorted by name.
    pub fn containers(&self) -> impl ExactSizeIterator<Item = (&ContainerName, &Sample)> {
        self.0.iter().map(|(c, s)| (c, s))
    }

    /// The pod's timestamp and window: those of the container whose timestamp is earliest
    /// (as [`kubepulse_model::PodView::timestamp_window`]).
    pub fn timestamp_window(&self) -> Option<(Timestamp, Window)> {
        self.0
            .iter()
            .map(|(_, s)| s)
            .min_by_key(|s| s.timestamp)
            .map(|s| (s.timestamp, s.window))
    }

    fn upsert(&mut self, name: &ContainerName, sample: Sample) {
        match self.0.binary_search_by(|(c, _)| c.cmp(name)) {
            Ok(i) => self.0[i].1 = sample,
            Err(i) => self.0.insert(i, (name.clone(), sample)),
        }
    }
}

impl NodeUsage {
    /// Number of containers across all pods.
    pub fn container_count(&self) -> usize {
        self.pods.0.iter().map(|(_, p)| p.0.len()).sum()
    }

    /// The same content as a [`NodeView`].
    pub fn to_view(&self) -> NodeView {
        let mut view = NodeView {
            node: self.node,
            ..NodeView::default()
        };
        for (key, pod) in &self.pods.0 {
            view.pods.entry(key.clone()).or_default().containers = pod.0.iter().cloned().collect();
        }
        view
    }

    /// Applies `delta` exactly as [`kubepulse_model::apply`] applies it to a [`NodeView`],
    /// with the same errors. On error the usage may be partly changed; the caller discards it.
    pub fn apply(&mut self, delta: &Delta) -> Result<(), ApplyError> {
        match &delta.node {
            NodeChange::Unchanged => {}
            NodeChange::Set(s) => self.node = Some(*s),
            NodeChange::Clear => self.node = None,
        }
        let pods = &mut self.pods.0;
        for key in &delta.pod_removals {
            match pods.binary_search_by(|(k, _)| k.cmp(key)) {
                Ok(i) => {
                    pods.remove(i);
                }
                Err(_) => return Err(ApplyError::UnknownPod(key.clone())),
            }
        }
        for (key, c) in &delta.container_removals {
            let i = pods
                .binary_search_by(|(k, _)| k.cmp(key))
                .map_err(|_| ApplyError::UnknownPod(key.clone()))?;
            let containers = &mut pods[i].1.0;
            match containers.binary_search_by(|(n, _)| n.cmp(c)) {
                Ok(j) => {
                    containers.remove(j);
                }
                Err(_) => return Err(ApplyError::UnknownContainer(key.clone(), c.clone())),
            }
        }
        for (key, c, s) in &delta.upserts {
            let i = match pods.binary_search_by(|(k, _)| k.cmp(key)) {
                Ok(i) => i,
                Err(i) => {
                    pods.insert(i, (key.clone(), PodUsage::default()));
                    i
                }
            };
            pods[i].1.upsert(c, *s);
        }
        for (key, _) in &delta.container_removals {
            if self.pods.get(key).is_some_and(|p| p.0.is_empty()) {
                return Err(ApplyError::EmptyPod(key.clone()));
            }
        }
        Ok(())
    }
}

impl From<NodeView> for NodeUsage {
    fn from(view: NodeView) -> Self {
        Self {
            node: view.node,
            pods: PodTable(
                view.pods
                    .into_iter()
                    .map(|(k, p)| (k, PodUsage(p.containers.into_iter().collect())))
                    .collect(),
            ),
        }
    }
}

impl PartialEq<NodeView> for NodeUsage {
    fn eq(&self, other: &NodeView) -> bool {
        self.node == other.node
            && self.pods.len() == other.pods.len()
            && self
                .pods
                .0
                .iter()
                .zip(&other.pods)
                .all(|((k, p), (ok, op))| {
                    k == ok
                        && p.0.len() == op.containers.len()
                        && p.0
                            .iter()
                            .zip(&op.containers)
                            .all(|((c, s), (oc, os))| c == oc && s == os)
                })
    }
}

#[cfg(test)]
mod tests;
