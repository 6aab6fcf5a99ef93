//! The cluster store: what every node last reported, owned by the single writer.
//!
//! Mutated only through [`ClusterStore::open_stream`], [`ClusterStore::apply`],
//! [`ClusterStore::close_stream`] and [`ClusterStore::evict_stale`]; readers get an immutable
//! [`ClusterView`] from [`ClusterStore::publish`]. Every instant is an argument (`now`), a
//! monotonic reading taken by the caller.
//!
//! Staleness: a node's data is fresh while its agent keeps reporting successful kubelet reads
//! (a snapshot, a delta or a heartbeat). When none arrives for the node's TTL (by default three
//! poll intervals, at least 30 s) — agent gone, stream cut, kubelet failing — the node's data
//! is dropped; until then the last good values are served with their real kubelet timestamps.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kubepulse_model::{ApplyError, Delta, Epoch, NodeName, NodeView, apply};

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
#[derive(Clone, Debug)]
pub struct NodeEntry {
    /// The node's usage; empty once expired.
    pub view: Arc<NodeView>,
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

/// An immutable snapshot of the store for readers.
#[derive(Clone, Debug, Default)]
pub struct ClusterView {
    /// Every known node, sorted by name.
    pub nodes: Arc<BTreeMap<NodeName, Arc<NodeEntry>>>,
}

impl ClusterView {
    /// True when at least one node has data to serve.
    pub fn has_data(&self) -> bool {
        self.nodes.values().any(|n| n.has_data)
    }
}

struct Slot {
    entry: Arc<NodeEntry>,
    owner: Option<StreamId>,
}

/// The writer-owned store.
pub struct ClusterStore {
    config: StoreConfig,
    nodes: HashMap<NodeName, Slot>,
    view: ClusterView,
    dirty: bool,
}

impl ClusterStore {
    /// An empty store.
    pub fn new(config: StoreConfig) -> Self {
        Self {
            config,
            nodes: HashMap::new(),
            view: ClusterView::default(),
            dirty: false,
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
        let slot = self.nodes.entry(node).or_insert_with(|| Slot {
            entry: Arc::new(NodeEntry {
                view: Arc::default(),
                has_data: false,
                scrape: ScrapeStatus::default(),
                info: info.clone(),
                connected: true,
                last_message_at: now,
                fresh_at: now,
                expired_at: None,
                ttl,
            }),
            owner: None,
        });
        slot.owner = Some(stream);
        let e = Arc::make_mut(&mut slot.entry);
        e.info = info;
        e.ttl = ttl;
        e.connected = true;
        e.last_message_at = now;
        self.dirty = true;
    }

    /// Applies one update from `stream` for `node`.
    pub fn apply(
        &mut self,
        node: &NodeName,
        stream: StreamId,
        update: Update,
        now: Instant,
    ) -> Result<(), StoreError> {
        let slot = match self.nodes.get_mut(node) {
            Some(slot) if slot.owner == Some(stream) => slot,
            _ => {
                return Err(StoreError::NotOwner {
                    node: node.clone(),
                    stream,
                });
            }
        };
        let e = Arc::make_mut(&mut slot.entry);
        e.last_message_at = now;
        match update {
            Update::Snapshot(view) => {
                e.view = Arc::new(view);
                e.has_data = true;
                e.fresh_at = now;
                e.expired_at = None;
            }
            Update::Delta(delta) => {
                if !e.has_data {
                    return Err(StoreError::NoSnapshot(node.clone()));
                }
                apply(Arc::make_mut(&mut e.view), &delta).map_err(|source| StoreError::Apply {
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
        self.dirty = true;
        Ok(())
    }

    /// The stream ended. Its data is kept (and served) until the TTL.
    pub fn close_stream(&mut self, node: &NodeName, stream: StreamId) {
        if let Some(slot) = self
            .nodes
            .get_mut(node)
            .filter(|slot| slot.owner == Some(stream))
        {
            slot.owner = None;
            Arc::make_mut(&mut slot.entry).connected = false;
            self.dirty = true;
        }
    }

    /// Drops data older than each node's TTL; forgets nodes that have neither data nor a
    /// stream. Returns the nodes whose data expired now.
    pub fn evict_stale(&mut self, now: Instant) -> Vec<NodeName> {
        let mut expired = Vec::new();
        self.nodes.retain(|name, slot| {
            let e = &slot.entry;
            if e.has_data && now.saturating_duration_since(e.fresh_at) > e.ttl {
                let e = Arc::make_mut(&mut slot.entry);
                e.view = Arc::default();
                e.has_data = false;
                e.expired_at = Some(now);
                expired.push(name.clone());
            }
            slot.owner.is_some()
                || slot.entry.has_data
                || slot
                    .entry
                    .expired_at
                    .is_some_and(|at| now.saturating_duration_since(at) < slot.entry.ttl)
        });
        if !expired.is_empty() {
            self.dirty = true;
        }
        expired
    }

    /// The current view for readers; rebuilt only when something changed since the last call.
    pub fn publish(&mut self) -> ClusterView {
        if self.dirty {
            self.view = ClusterView {
                nodes: Arc::new(
                    self.nodes
                        .iter()
                        .map(|(k, v)| (k.clone(), v.entry.clone()))
                        .collect(),
                ),
            };
            self.dirty = false;
        }
        self.view.clone()
    }

    /// Number of nodes known.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when no node is known.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests;
