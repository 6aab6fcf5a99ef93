//! Kubernetes metadata joined into answers: pod and node labels, which pods are Running, and
//! which node a pod is bound to.
//!
//! Without metadata (standalone mode, no Kubernetes API) every reported pod and node is
//! served with no labels. With it, only Running pods known to the watch are served, as
//! metrics-server does.

use std::collections::HashMap;

use kubepulse_model::{NodeName, PodKey};

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
}

/// What the watch knows of a node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeMeta {
    /// The node's labels.
    pub labels: Labels,
}

/// A consistent picture of the metadata, as of the watches' last events.
#[derive(Clone, Debug, Default)]
pub struct MetaView {
    /// Pods by namespace and name.
    pub pods: HashMap<PodKey, PodMeta>,
    /// Nodes by name.
    pub nodes: HashMap<NodeName, NodeMeta>,
    /// Both watches have listed everything at least once.
    pub synced: bool,
}
