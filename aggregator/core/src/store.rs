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

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use kubepulse_model::{ApplyError, Delta, Epoch, Namespace, NodeName, Reshape, SlotSamples};

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
    pub agent_version: Arc<str>,
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
    /// A full table: replaces what the node had.
    Snapshot(NodeUsage),
    /// Changes since the last snapshot-or-delta of the same stream.
    Delta(Delta),
    /// A delta that only brings new samples, by slot of the node's table.
    Samples(SlotSamples),
    /// A delta that adds or removes pods or containers, decoded against the table's names,
    /// with the names the table has after it (later [`Update::Samples`] refer to these).
    Reshape(Reshape),
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
    /// Samples by slot or a reshape decoded against names the node's table does not have:
    /// the two sides disagree, the stream must resync.
    #[error("update for node {0} does not match the pods and containers held for it")]
    Names(NodeName),
}

/// What the store holds for one node, as readers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEntry {
    /// The node's usage; empty once expired.
    pub view: Arc<NodeUsage>,
    /// True once a snapshot arrived and until the data expires.
    pub has_data: bool,
    /// The agent's last kubelet read; one shared by every node whose reads go well and leave
    /// nothing to say (nearly all of them), its own otherwise.
    pub scrape: Arc<ScrapeStatus>,
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
    pub namespaces: imbl::OrdMap<Namespace, NodeSet>,
}

/// The nodes that report pods in one namespace, sorted by name.
///
/// Most namespaces span few nodes: those are one shared sorted slice (a node's name per
/// entry, nothing more), copied when a node joins or leaves. A namespace on many nodes
/// (`kube-system`: every node) is a persistent set, so a change costs O(log nodes) there too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSet(Nodes);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Nodes {
    Few(Arc<[NodeName]>),
    Many(imbl::OrdSet<NodeName>),
}

/// A namespace on more nodes than this is held as a persistent set.
const FEW_NODES: usize = 64;

impl Default for NodeSet {
    fn default() -> Self {
        Self(Nodes::Few(Arc::new([])))
    }
}

impl NodeSet {
    /// Every node, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &NodeName> {
        let (few, many) = match &self.0 {
            Nodes::Few(nodes) => (Some(nodes.iter()), None),
            Nodes::Many(nodes) => (None, Some(nodes.iter())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        match &self.0 {
            Nodes::Few(nodes) => nodes.len(),
            Nodes::Many(nodes) => nodes.len(),
        }
    }

    /// True without nodes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when `node` is in.
    pub fn contains(&self, node: &NodeName) -> bool {
        match &self.0 {
            Nodes::Few(nodes) => nodes.binary_search(node).is_ok(),
            Nodes::Many(nodes) => nodes.contains(node),
        }
    }

    fn insert(&mut self, node: &NodeName) {
        match &mut self.0 {
            Nodes::Few(nodes) => {
                let Err(at) = nodes.binary_search(node) else {
                    return;
                };
                if nodes.len() < FEW_NODES {
                    let (before, after) = nodes.split_at(at);
                    *nodes = before.iter().chain([node]).chain(after).cloned().collect();
                } else {
                    let mut set: imbl::OrdSet<NodeName> = nodes.iter().cloned().collect();
                    set.insert(node.clone());
                    self.0 = Nodes::Many(set);
                }
            }
            Nodes::Many(nodes) => {
                nodes.insert(node.clone());
            }
        }
    }

    fn remove(&mut self, node: &NodeName) {
        match &mut self.0 {
            Nodes::Few(nodes) => {
                if nodes.binary_search(node).is_ok() {
                    *nodes = nodes.iter().filter(|n| *n != node).cloned().collect();
                }
            }
            Nodes::Many(nodes) => {
                nodes.remove(node);
                // back to a slice well below the threshold (not at it: no flapping)
                if nodes.len() <= FEW_NODES / 2 {
                    self.0 = Nodes::Few(nodes.iter().cloned().collect());
                }
            }
        }
    }
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
    /// When [`ClusterStore::evict_stale`] next looks at the node (its key in `checks`).
    check_at: Instant,
}

/// The writer-owned store.
pub struct ClusterStore {
    config: StoreConfig,
    /// One slot per node of `view.nodes`, same keys.
    slots: HashMap<NodeName, Slot>,
    /// The live maps, updated in place; [`ClusterStore::publish`] hands out clones.
    view: ClusterView,
    /// Every node once, by when its expiry must next be looked at: no later than the first
    /// instant at which it could expire or be forgotten if nothing more arrived. Updates only
    /// push that instant later, so they leave the queue alone; a node looked at too early is
    /// queued again for its real deadline.
    checks: BTreeSet<(Instant, NodeName)>,
}

impl ClusterStore {
    /// An empty store.
    pub fn new(config: StoreConfig) -> Self {
        Self {
            config,
            slots: HashMap::new(),
            view: ClusterView::default(),
            checks: BTreeSet::new(),
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
                    scrape: shared_scrape(ScrapeStatus::default()),
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
        let slot = self.slots.entry(node.clone()).or_insert_with(|| Slot {
            owner: None,
            check_at: now,
        });
        slot.owner = Some(stream);
        // the TTL may have shrunk: look again soon
        reschedule(&mut self.checks, slot, node, now);
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
        if self
            .slots
            .get(node)
            .is_none_or(|slot| slot.owner != Some(stream))
        {
            return Err(not_owner());
        }
        // every slot has an entry
        let entry = self.view.nodes.get_mut(node).ok_or_else(not_owner)?;
        let e = Arc::make_mut(entry);
        e.last_message_at = now;
        match update {
            Update::Snapshot(usage) => {
                let before = e.view.pods.names();
                e.view = Arc::new(usage);
                e.has_data = true;
                e.fresh_at = now;
                e.expired_at = None;
                reindex(
                    &mut self.view.namespaces,
                    node,
                    &before,
                    &e.view.pods.names(),
                );
            }
            Update::Delta(_) | Update::Reshape(..) | Update::Samples(_) if !e.has_data => {
                return Err(StoreError::NoSnapshot(node.clone()));
            }
            Update::Delta(delta) => {
                let usage = Arc::make_mut(&mut e.view);
                let before = usage.pods.names();
                let applied = usage.apply(&delta);
                // even a delta that fails may have changed the pods: the index follows them
                reindex(
                    &mut self.view.namespaces,
                    node,
                    &before,
                    &usage.pods.names(),
                );
                applied.map_err(|source| StoreError::Apply {
                    node: node.clone(),
                    source,
                })?;
                e.fresh_at = now;
            }
            Update::Reshape(reshape) => {
                let usage = Arc::make_mut(&mut e.view);
                let before = usage.pods.names();
                if !usage.reshape(&reshape) {
                    return Err(StoreError::Names(node.clone()));
                }
                reindex(
                    &mut self.view.namespaces,
                    node,
                    &before,
                    &usage.pods.names(),
                );
                e.fresh_at = now;
            }
            Update::Samples(samples) => {
                // the names stay: the namespace index has nothing to follow
                if !Arc::make_mut(&mut e.view).write(&samples) {
                    return Err(StoreError::Names(node.clone()));
                }
                e.fresh_at = now;
            }
            Update::Status(status) => {
                if status.ok && e.has_data {
                    e.fresh_at = now;
                }
                if *e.scrape != status {
                    e.scrape = shared_scrape(status);
                }
            }
        }
        Ok(())
    }

    /// The stream ended. Its data is kept (and served) until the TTL.
    pub fn close_stream(&mut self, node: &NodeName, stream: StreamId, now: Instant) {
        if let Some(slot) = self
            .slots
            .get_mut(node)
            .filter(|slot| slot.owner == Some(stream))
        {
            slot.owner = None;
            if let Some(entry) = self.view.nodes.get_mut(node) {
                Arc::make_mut(entry).connected = false;
            }
            // a node without data is forgotten once no stream reports for it
            reschedule(&mut self.checks, slot, node.clone(), now);
        }
    }

    /// Drops data older than each node's TTL; forgets nodes that have neither data nor a
    /// stream. Returns the nodes whose data expired now, sorted.
    ///
    /// Looks only at the nodes whose deadline has passed (a queue, not a scan of every node)
    /// and changes only those that expire or are forgotten.
    pub fn evict_stale(&mut self, now: Instant) -> Vec<NodeName> {
        let mut expired = Vec::new();
        while self.checks.first().is_some_and(|(at, _)| *at <= now) {
            let Some((_, name)) = self.checks.pop_first() else {
                break;
            };
            let (Some(node), Some(slot)) =
                (self.view.nodes.get_mut(&name), self.slots.get_mut(&name))
            else {
                continue;
            };
            let e: &NodeEntry = node;
            let due = due(e, now);
            if due.expires {
                let e = Arc::make_mut(node);
                let before = e.view.pods.names();
                e.view = Arc::default();
                e.has_data = false;
                e.expired_at = Some(now);
                reindex(
                    &mut self.view.namespaces,
                    &name,
                    &before,
                    &e.view.pods.names(),
                );
                expired.push(name.clone());
            }
            if !due.keep {
                self.view.nodes.remove(&name);
                self.slots.remove(&name);
                continue;
            }
            let e: &NodeEntry = node;
            slot.check_at = next_check(e, now);
            self.checks.insert((slot.check_at, name));
        }
        expired.sort_unstable();
        expired
    }

    /// What a scan of every node would expire and forget at `now` (the reference
    /// [`ClusterStore::evict_stale`] is tested against).
    #[cfg(test)]
    fn due_by_scan(&self, now: Instant) -> (Vec<NodeName>, Vec<NodeName>) {
        let mut expired = Vec::new();
        let mut forget = Vec::new();
        for (name, e) in &self.view.nodes {
            let due = due(e, now);
            if due.expires {
                expired.push(name.clone());
            }
            if !due.keep {
                forget.push(name.clone());
            }
        }
        (expired, forget)
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

/// `status` behind a pointer: one shared by every node when it is a plain success or says
/// nothing (the two statuses nearly every node has), its own otherwise. A node entry then
/// holds a pointer instead of the status's 88 bytes, and copies of an entry are that much
/// smaller.
fn shared_scrape(status: ScrapeStatus) -> Arc<ScrapeStatus> {
    static NOTHING: LazyLock<Arc<ScrapeStatus>> = LazyLock::new(Arc::default);
    static OK: LazyLock<Arc<ScrapeStatus>> = LazyLock::new(|| {
        Arc::new(ScrapeStatus {
            ok: true,
            ..ScrapeStatus::default()
        })
    });
    for shared in [&*OK, &*NOTHING] {
        if **shared == status {
            return Arc::clone(shared);
        }
    }
    Arc::new(status)
}

/// What happens to a node at `now` if nothing more arrives.
struct Due {
    /// Its data expires now.
    expires: bool,
    /// It is kept (not forgotten).
    keep: bool,
}

fn due(e: &NodeEntry, now: Instant) -> Due {
    let expires = e.has_data && now.saturating_duration_since(e.fresh_at) > e.ttl;
    // what the node looks like once expired (`connected` is true while a stream owns it)
    let expired_at = if expires { Some(now) } else { e.expired_at };
    let keep = e.connected
        || (e.has_data && !expires)
        || expired_at.is_some_and(|at| now.saturating_duration_since(at) < e.ttl);
    Due { expires, keep }
}

/// The first instant after `now` at which [`due`] could change for a kept node if nothing
/// more arrived (a connected node without data is looked at again one TTL later).
fn next_check(e: &NodeEntry, now: Instant) -> Instant {
    if e.has_data {
        // expiry is strictly after fresh_at + ttl
        e.fresh_at + e.ttl + Duration::from_nanos(1)
    } else {
        match e.expired_at {
            Some(at) if !e.connected => at + e.ttl,
            _ => now + e.ttl,
        }
    }
}

/// Moves `node`'s check in the queue to `at`.
fn reschedule(
    checks: &mut BTreeSet<(Instant, NodeName)>,
    slot: &mut Slot,
    node: NodeName,
    at: Instant,
) {
    let old = (slot.check_at, node);
    checks.remove(&old);
    slot.check_at = at;
    checks.insert((at, old.1));
}

/// Brings the namespace index up to date with `node`'s pods, which were `before` and are
/// now `after`.
fn reindex(
    index: &mut imbl::OrdMap<Namespace, NodeSet>,
    node: &NodeName,
    before: &PodNames,
    after: &PodNames,
) {
    if before.same(after) {
        return;
    }
    let held: Vec<&Namespace> = before.namespaces().collect();
    let now: Vec<&Namespace> = after.namespaces().collect();
    if now == held {
        return;
    }
    for ns in held.iter().filter(|ns| now.binary_search(ns).is_err()) {
        let emptied = index.get_mut(*ns).is_some_and(|nodes| {
            nodes.remove(node);
            nodes.is_empty()
        });
        if emptied {
            index.remove(*ns);
        }
    }
    for ns in now.iter().filter(|ns| held.binary_search(ns).is_err()) {
        index.entry((*ns).clone()).or_default().insert(node);
    }
}

pub use kubepulse_model::{NodeUsage, PodNames, PodTable, PodUsage};

#[cfg(test)]
mod tests;
