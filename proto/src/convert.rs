//! Model ⇄ wire translation for one stream, with its name dictionary.
//!
//! The agent side ([`StreamEncoder`]) names each pod and container once per stream and then
//! refers to it by a small id; a snapshot starts a fresh dictionary. The aggregator side
//! ([`StreamDecoder`]) mirrors the dictionary and validates everything it receives: ids,
//! names, timestamps, windows and the size limits of [`Limits`]. Any error means the two sides
//! disagree and the stream must resync. The decoder keeps only the dictionary, not a copy of
//! the node's view: whether a delta fits the view (no removal of what is absent, no pod left
//! empty) is checked where the view lives, when the store applies it.

use std::collections::HashMap;
use std::sync::Arc;

use kubepulse_model::{
    ContainerName, Delta, KeyError, Names, NodeChange, NodeView, PodKey, Sample, Timestamp, Usage,
    Window,
};

use crate::v1;

/// Bounds on what one stream may make the aggregator hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Pods one node may report.
    pub max_pods: usize,
    /// Containers one node may report, across its pods.
    pub max_containers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_pods: 1_000,
            max_containers: 10_000,
        }
    }
}

/// A wire message the aggregator refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A name failed validation.
    #[error("invalid name: {0}")]
    Name(#[from] KeyError),
    /// An id was defined twice.
    #[error("{kind} id {id} defined twice")]
    DuplicateId {
        /// pod or container
        kind: &'static str,
        /// the id
        id: u32,
    },
    /// An id was used without a definition.
    #[error("unknown {kind} id {id}")]
    UnknownId {
        /// pod or container
        kind: &'static str,
        /// the id
        id: u32,
    },
    /// The same pod or container was defined twice under different ids.
    #[error("{0} defined twice")]
    DuplicateName(String),
    /// A usage without a window, or a timestamp out of range.
    #[error("invalid usage: {0}")]
    Usage(&'static str),
    /// The stream exceeds [`Limits`].
    #[error("node reports more than {limit} {what}")]
    TooMany {
        /// pods or containers
        what: &'static str,
        /// the limit crossed
        limit: usize,
    },
    /// A delta left a pod without containers, or removed what is not there.
    #[error("delta does not match the stream's view: {0}")]
    Apply(String),
}

// === impl StreamEncoder ===

/// The agent side of one stream.
#[derive(Debug, Default)]
pub struct StreamEncoder {
    pods: HashMap<PodKey, u32>,
    containers: HashMap<(PodKey, ContainerName), u32>,
    next_id: u32,
}

impl StreamEncoder {
    /// A fresh encoder (empty dictionary).
    pub fn new() -> Self {
        Self::default()
    }

    /// True when ids are about to run out and the next message must be a snapshot.
    pub fn needs_snapshot(&self) -> bool {
        self.next_id > u32::MAX - 1_000_000
    }

    /// Encodes a full view and restarts the dictionary.
    pub fn snapshot(&mut self, view: &NodeView) -> v1::Snapshot {
        *self = Self::default();
        let base = base_ms(
            view.node
                .iter()
                .chain(view.pods.values().flat_map(|p| p.containers.values())),
        );
        let mut msg = v1::Snapshot {
            base_timestamp_ms: base,
            node: view.node.as_ref().map(|s| usage_to_wire(s, base)),
            ..Default::default()
        };
        // every pod first, then every container, each in the view's order: the ids of the
        // pods, and those of the containers, are then consecutive in the order of the
        // aggregator's table, which holds them as two runs (see `convert/node.rs`)
        let pod_ids: Vec<u32> = (view.pods.keys())
            .map(|key| self.define_pod(key, &mut msg.pods))
            .collect();
        for ((key, pod), pod_id) in view.pods.iter().zip(pod_ids) {
            for (c, s) in &pod.containers {
                let id = self.define_container(key, c, pod_id, &mut msg.containers);
                msg.usages.push(v1::ContainerUsage {
                    container_id: id,
                    usage: Some(usage_to_wire(s, base)),
                });
            }
        }
        msg
    }

    /// Encodes a delta, defining new names as needed.
    pub fn delta(&mut self, delta: &Delta) -> v1::Delta {
        let node_sample = delta.node.sample();
        let base = base_ms(
            node_sample
                .into_iter()
                .chain(delta.upserts.iter().map(|(_, _, s)| s)),
        );
        let mut msg = v1::Delta {
            base_timestamp_ms: base,
            node: node_sample.map(|s| usage_to_wire(s, base)),
            node_cleared: delta.node == NodeChange::Clear,
            ..Default::default()
        };
        for key in &delta.pod_removals {
            if let Some(id) = self.pods.remove(key) {
                msg.removed_pods.push(id);
                self.containers.retain(|(p, _), _| p != key);
            }
        }
        for (key, c) in &delta.container_removals {
            if let Some(id) = self.containers.remove(&(key.clone(), c.clone())) {
                msg.removed_containers.push(id);
            }
        }
        for (key, c, s) in &delta.upserts {
            let pod_id = self.define_pod(key, &mut msg.new_pods);
            let id = self.define_container(key, c, pod_id, &mut msg.new_containers);
            msg.usages.push(v1::ContainerUsage {
                container_id: id,
                usage: Some(usage_to_wire(s, base)),
            });
        }
        msg
    }

    fn fresh_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        id
    }

    fn define_pod(&mut self, key: &PodKey, defs: &mut Vec<v1::PodDef>) -> u32 {
        if let Some(id) = self.pods.get(key) {
            return *id;
        }
        let id = self.fresh_id();
        self.pods.insert(key.clone(), id);
        defs.push(v1::PodDef {
            id,
            namespace: key.namespace.to_string(),
            name: key.name.to_string(),
        });
        id
    }

    fn define_container(
        &mut self,
        key: &PodKey,
        name: &ContainerName,
        pod_id: u32,
        defs: &mut Vec<v1::ContainerDef>,
    ) -> u32 {
        let k = (key.clone(), name.clone());
        if let Some(id) = self.containers.get(&k) {
            return *id;
        }
        let id = self.fresh_id();
        self.containers.insert(k, id);
        defs.push(v1::ContainerDef {
            id,
            pod_id,
            name: name.to_string(),
        });
        id
    }
}

fn base_ms<'a>(samples: impl Iterator<Item = &'a Sample>) -> i64 {
    samples.map(|s| s.timestamp.as_millis()).min().unwrap_or(0)
}

fn usage_to_wire(s: &Sample, base_ms: i64) -> v1::Usage {
    let ms = s.timestamp.as_millis();
    v1::Usage {
        cpu_nanocores: s.usage.cpu_nanocores,
        memory_bytes: s.usage.memory_bytes,
        timestamp_offset_ms: ms - base_ms,
        window_ns: s.window.as_nanos(),
        timestamp_sub_ms_ns: (s.timestamp.as_nanos() - ms * 1_000_000) as u32,
    }
}

// === impl StreamDecoder ===

/// The aggregator side of one stream.
#[derive(Debug)]
pub struct StreamDecoder {
    limits: Limits,
    /// Where namespace and container names get their (shared) text.
    names: Arc<Names>,
    pods: IdMap<PodKey>,
    /// Each container's pod id and name (the pod's key is in `pods`: not repeated here).
    containers: IdMap<(u32, ContainerName)>,
}

/// A dictionary from wire ids to names: a vector sorted by id. An agent hands out ids in
/// increasing order, so definitions append; a lookup is a binary search. It holds exactly
/// its entries (a `HashMap` keeps up to twice the room, and the aggregator holds one
/// dictionary per node: ~6 KB per 30-pod node, against ~2 KB here).
#[derive(Debug)]
struct IdMap<V>(Vec<(u32, V)>);

impl<V> Default for IdMap<V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<V> IdMap<V> {
    fn find(&self, id: u32) -> Result<usize, usize> {
        self.0.binary_search_by_key(&id, |(k, _)| *k)
    }

    /// The position of `id`, trying `hint` first: a message lists its ids mostly in the
    /// order they were defined, so the entry after the last one looked up is usually it.
    fn position_near(&self, id: u32, hint: usize) -> Option<usize> {
        match self.0.get(hint) {
            Some((k, _)) if *k == id => Some(hint),
            _ => self.find(id).ok(),
        }
    }

    fn contains_key(&self, id: &u32) -> bool {
        self.find(*id).is_ok()
    }

    fn insert(&mut self, id: u32, v: V) {
        match self.find(id) {
            Ok(i) => self.0[i].1 = v,
            Err(i) => self.0.insert(i, (id, v)),
        }
    }

    fn remove(&mut self, id: &u32) -> Option<V> {
        self.find(*id).ok().map(|i| self.0.remove(i).1)
    }

    fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        self.0.retain(|(_, v)| keep(v));
    }

    fn values(&self) -> impl Iterator<Item = &V> {
        self.0.iter().map(|(_, v)| v)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }

    /// Gives back the room a larger dictionary needed.
    fn fit(&mut self) {
        if self.0.capacity() > self.0.len() + self.0.len() / 4 + 4 {
            self.0.shrink_to_fit();
        }
    }
}

impl StreamDecoder {
    /// A decoder with an empty dictionary.
    pub fn new(limits: Limits) -> Self {
        Self::with_names(limits, Arc::default())
    }

    /// A decoder whose namespace and container names share their text with every other
    /// decoder given the same `names` (a process holding many streams holds each name once).
    pub fn with_names(limits: Limits, names: Arc<Names>) -> Self {
        Self {
            limits,
            names,
            pods: IdMap::default(),
            containers: IdMap::default(),
        }
    }

    /// Decodes a snapshot: a fresh dictionary and a full view.
    pub fn snapshot(&mut self, msg: &v1::Snapshot) -> Result<NodeView, WireError> {
        self.pods.clear();
        self.containers.clear();
        if msg.pods.len() > self.limits.max_pods {
            return Err(WireError::TooMany {
                what: "pods",
                limit: self.limits.max_pods,
            });
        }
        self.define(&msg.pods, &msg.containers)?;
        self.pods.fit();
        self.containers.fit();
        let mut view = NodeView {
            node: msg
                .node
                .as_ref()
                .map(|u| usage_from_wire(u, msg.base_timestamp_ms))
                .transpose()?,
            ..NodeView::default()
        };
        for cu in &msg.usages {
            let (key, name) = self.container(cu.container_id)?;
            let sample = usage_of(cu, msg.base_timestamp_ms)?;
            view.pods
                .entry(key)
                .or_default()
                .containers
                .insert(name, sample);
        }
        Ok(view)
    }

    /// Decodes a delta: every id must be defined and every definition valid and within
    /// [`Limits`]. Whether it fits the node's view is for the store to check when it applies it
    /// ([`kubepulse_model::apply`] refuses what does not fit).
    pub fn delta(&mut self, msg: &v1::Delta) -> Result<Delta, WireError> {
        let mut delta = Delta {
            node: node_change(msg)?,
            ..Delta::default()
        };
        for id in &msg.removed_pods {
            let key = self.pods.remove(id).ok_or(WireError::UnknownId {
                kind: "pod",
                id: *id,
            })?;
            self.containers.retain(|(p, _)| p != id);
            delta.pod_removals.push(key);
        }
        for id in &msg.removed_containers {
            let entry = self.container(*id)?;
            self.containers.remove(id);
            delta.container_removals.push(entry);
        }
        self.define(&msg.new_pods, &msg.new_containers)?;
        delta.upserts.reserve_exact(msg.usages.len());
        let mut hint = Hint::default();
        for cu in &msg.usages {
            let (key, name) = self.container_near(cu.container_id, &mut hint)?;
            let sample = usage_of(cu, msg.base_timestamp_ms)?;
            delta.upserts.push((key, name, sample));
        }
        Ok(delta)
    }

    fn container(&self, id: u32) -> Result<(PodKey, ContainerName), WireError> {
        self.container_near(id, &mut Hint::default())
    }

    /// [`StreamDecoder::container`], looking next to the previous lookup first.
    fn container_near(
        &self,
        id: u32,
        hint: &mut Hint,
    ) -> Result<(PodKey, ContainerName), WireError> {
        let unknown = || WireError::UnknownId {
            kind: "container",
            id,
        };
        let c = self
            .containers
            .position_near(id, hint.container)
            .ok_or_else(unknown)?;
        let (pod, name) = &self.containers.0[c].1;
        // a container's pod is defined as long as the container is (removing a pod removes
        // its containers); consecutive containers mostly share their pod
        let p = self
            .pods
            .position_near(*pod, hint.pod)
            .ok_or_else(unknown)?;
        *hint = Hint {
            container: c + 1,
            pod: p,
        };
        Ok((self.pods.0[p].1.clone(), name.clone()))
    }

    fn define(
        &mut self,
        pods: &[v1::PodDef],
        containers: &[v1::ContainerDef],
    ) -> Result<(), WireError> {
        if self.pods.len() + pods.len() > self.limits.max_pods {
            return Err(WireError::TooMany {
                what: "pods",
                limit: self.limits.max_pods,
            });
        }
        if self.containers.len() + containers.len() > self.limits.max_containers {
            return Err(WireError::TooMany {
                what: "containers",
                limit: self.limits.max_containers,
            });
        }
        // ids come in increasing order: room for exactly these, no doubling
        self.pods.0.reserve_exact(pods.len());
        self.containers.0.reserve_exact(containers.len());
        // one text for the names of all these pods
        let keys = self.names.pods(
            pods.iter()
                .map(|def| (def.namespace.as_str(), def.name.as_str())),
        )?;
        for (def, key) in pods.iter().zip(keys) {
            if self.pods.contains_key(&def.id) {
                return Err(WireError::DuplicateId {
                    kind: "pod",
                    id: def.id,
                });
            }
            if self.pods.values().any(|k| *k == key) {
                return Err(WireError::DuplicateName(format!("pod {key}")));
            }
            self.pods.insert(def.id, key);
        }
        for def in containers {
            if !self.pods.contains_key(&def.pod_id) {
                return Err(WireError::UnknownId {
                    kind: "pod",
                    id: def.pod_id,
                });
            }
            let name = self.names.container(&def.name)?;
            if self.containers.contains_key(&def.id) || self.pods.contains_key(&def.id) {
                return Err(WireError::DuplicateId {
                    kind: "container",
                    id: def.id,
                });
            }
            self.containers.insert(def.id, (def.pod_id, name));
        }
        Ok(())
    }
}

/// What a delta does to the node's own usage.
fn node_change(msg: &v1::Delta) -> Result<NodeChange, WireError> {
    Ok(match (&msg.node, msg.node_cleared) {
        (Some(u), false) => NodeChange::Set(usage_from_wire(u, msg.base_timestamp_ms)?),
        (None, true) => NodeChange::Clear,
        (None, false) => NodeChange::Unchanged,
        (Some(_), true) => return Err(WireError::Usage("node both set and cleared")),
    })
}

/// Where a message's next lookups are likely to be found in the dictionary.
#[derive(Default)]
struct Hint {
    container: usize,
    pod: usize,
}

/// Kubelet timestamps outside ±100 years of the epoch are refused.
const MAX_ABS_MS: i64 = 100 * 365 * 24 * 3600 * 1000;

/// A container's usage, which must be there.
fn usage_of(cu: &v1::ContainerUsage, base_ms: i64) -> Result<Sample, WireError> {
    usage_from_wire(
        cu.usage.as_ref().ok_or(WireError::Usage("missing usage"))?,
        base_ms,
    )
}

fn usage_from_wire(u: &v1::Usage, base_ms: i64) -> Result<Sample, WireError> {
    if u.window_ns == 0 {
        return Err(WireError::Usage("zero window"));
    }
    if u.timestamp_sub_ms_ns >= 1_000_000 {
        return Err(WireError::Usage("sub-millisecond part out of range"));
    }
    let ms = base_ms
        .checked_add(u.timestamp_offset_ms)
        // a range, not `abs()`: i64::MIN has no absolute value (it wrapped past this check)
        .filter(|ms| (-MAX_ABS_MS..=MAX_ABS_MS).contains(ms))
        .ok_or(WireError::Usage("timestamp out of range"))?;
    Ok(Sample {
        usage: Usage {
            cpu_nanocores: u.cpu_nanocores,
            memory_bytes: u.memory_bytes,
        },
        timestamp: Timestamp(ms * 1_000_000 + i64::from(u.timestamp_sub_ms_ns)),
        window: Window(u.window_ns),
    })
}

mod node;

pub use node::{NodeDecoder, NodeDelta};

#[cfg(test)]
mod tests;
