//! Snapshot/delta semantics: the agent sends a full [`NodeView`] once per stream, then only
//! what changed, as a [`Delta`]. `apply(prev, &diff(prev, next))` yields exactly `next`.

use crate::key::{ContainerName, PodKey};
use crate::usage::Sample;
use crate::view::NodeView;

/// What happened to the node's own sample.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NodeChange {
    /// Nothing changed.
    #[default]
    Unchanged,
    /// A new sample.
    Set(Sample),
    /// The node no longer has a usable sample.
    Clear,
}

impl NodeChange {
    /// The new sample, when there is one.
    pub fn sample(&self) -> Option<&Sample> {
        match self {
            NodeChange::Set(s) => Some(s),
            _ => None,
        }
    }
}

/// The change from one [`NodeView`] to the next, at container granularity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    /// The node's own sample.
    pub node: NodeChange,
    /// Containers whose sample is new or changed (their pod is created if absent).
    pub upserts: Vec<(PodKey, ContainerName, Sample)>,
    /// Containers that disappeared from a pod that still exists.
    pub container_removals: Vec<(PodKey, ContainerName)>,
    /// Pods that disappeared.
    pub pod_removals: Vec<PodKey>,
}

impl Delta {
    /// True when applying the delta changes nothing.
    pub fn is_empty(&self) -> bool {
        self.node == NodeChange::Unchanged
            && self.upserts.is_empty()
            && self.container_removals.is_empty()
            && self.pod_removals.is_empty()
    }
}

/// Why a delta could not be applied: the two sides disagree about the previous view, which
/// calls for a resync.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// A removal named a pod the view does not hold.
    #[error("delta removes pod {0} which is not in the view")]
    UnknownPod(PodKey),
    /// A removal named a container the pod does not hold.
    #[error("delta removes container {1} of pod {0} which is not in the view")]
    UnknownContainer(PodKey, ContainerName),
    /// Applying the delta would leave a pod without containers.
    #[error("delta leaves pod {0} without containers")]
    EmptyPod(PodKey),
}

/// The delta that turns `prev` into `next`.
pub fn diff(prev: &NodeView, next: &NodeView) -> Delta {
    let node = match (&prev.node, &next.node) {
        (a, b) if a == b => NodeChange::Unchanged,
        (_, Some(s)) => NodeChange::Set(*s),
        (Some(_), None) => NodeChange::Clear,
        (None, None) => NodeChange::Unchanged,
    };
    let mut delta = Delta {
        node,
        ..Delta::default()
    };
    for (key, next_pod) in &next.pods {
        match prev.pods.get(key) {
            None => {
                for (c, s) in &next_pod.containers {
                    delta.upserts.push((key.clone(), c.clone(), *s));
                }
            }
            Some(prev_pod) => {
                for (c, s) in &next_pod.containers {
                    if prev_pod.containers.get(c) != Some(s) {
                        delta.upserts.push((key.clone(), c.clone(), *s));
                    }
                }
                for c in prev_pod.containers.keys() {
                    if !next_pod.containers.contains_key(c) {
                        delta.container_removals.push((key.clone(), c.clone()));
                    }
                }
            }
        }
    }
    for key in prev.pods.keys() {
        if !next.pods.contains_key(key) {
            delta.pod_removals.push(key.clone());
        }
    }
    delta
}

/// Applies `delta` to `view`. On error the view may be partly changed; the caller discards it
/// and asks for a resync.
pub fn apply(view: &mut NodeView, delta: &Delta) -> Result<(), ApplyError> {
    match &delta.node {
        NodeChange::Unchanged => {}
        NodeChange::Set(s) => view.node = Some(*s),
        NodeChange::Clear => view.node = None,
    }
    for key in &delta.pod_removals {
        if view.pods.remove(key).is_none() {
            return Err(ApplyError::UnknownPod(key.clone()));
        }
    }
    for (key, c) in &delta.container_removals {
        let pod = view
            .pods
            .get_mut(key)
            .ok_or_else(|| ApplyError::UnknownPod(key.clone()))?;
        if pod.containers.remove(c).is_none() {
            return Err(ApplyError::UnknownContainer(key.clone(), c.clone()));
        }
    }
    for (key, c, s) in &delta.upserts {
        view.pods
            .entry(key.clone())
            .or_default()
            .containers
            .insert(c.clone(), *s);
    }
    for (key, _) in &delta.container_removals {
        if view.pods.get(key).is_some_and(|p| p.containers.is_empty()) {
            return Err(ApplyError::EmptyPod(key.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
