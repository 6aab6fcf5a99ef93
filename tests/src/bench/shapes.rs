//! The simulated cluster of the scale benchmark, and what its agents put on the wire.
//!
//! A cluster of `nodes` nodes is built from [`SHAPES`] distinct simulated nodes (the fleet
//! generator's pods and containers, with their own usage): node `i` has the pods of shape
//! `i % SHAPES`, renamed so that every pod name is unique and namespaces hold about
//! [`PODS_PER_NAMESPACE`] pods each, spread over as many nodes (the size of one HPA target).
//!
//! Each shape's wire messages are recorded once through the agent's own code path: the
//! simulated kubelet text ([`sim::render`](crate::sim::render)) → `decode` →
//! [`NodeState::observe`] → [`diff`] → [`StreamEncoder`], one kubelet refresh per interval.
//! A node's snapshot is its shape's snapshot with the node's own pod names in the pod
//! definitions; its deltas name pods and containers by dictionary id only, so they are the
//! shape's deltas byte for byte, with the message base timestamp moved to the send time
//! (kubelet timestamps advance every interval, as on a real node).

use std::collections::HashMap;

use kubepulse_agent_core::{NodeState, NodeStateConfig, decode};
use kubepulse_model::{NodeView, Timestamp, diff};
use kubepulse_proto::{StreamEncoder, v1};

use crate::sim::{Fleet, FleetConfig, render};

/// Distinct simulated nodes a cluster is built from.
pub const SHAPES: usize = 64;

/// Deltas recorded per shape (replayed in a cycle).
pub const RECORDED_DELTAS: usize = 8;

/// Pods per namespace, about.
pub const PODS_PER_NAMESPACE: usize = 30;

/// The cluster's names: which node has which pods in which namespace.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Nodes.
    pub nodes: usize,
    /// Pods on every node.
    pub pods_per_node: usize,
    /// Kubelet refresh period (= the interval deltas are sent at), ms.
    pub interval_ms: i64,
    width: usize,
}

impl Layout {
    /// A layout of `nodes` × `pods_per_node`.
    pub fn new(nodes: usize, pods_per_node: usize, interval_ms: i64) -> Self {
        Self {
            nodes,
            pods_per_node,
            interval_ms,
            width: nodes.saturating_sub(1).to_string().len(),
        }
    }

    /// Number of namespaces.
    pub fn namespaces(&self) -> usize {
        (self.nodes * self.pods_per_node)
            .div_ceil(PODS_PER_NAMESPACE)
            .max(1)
    }

    /// Total pods.
    pub fn pods(&self) -> usize {
        self.nodes * self.pods_per_node
    }

    /// Name of node `i`.
    pub fn node_name(&self, i: usize) -> String {
        format!("sim-node-{i:0w$}", w = self.width)
    }

    /// Name of namespace `k`. Zero-padded, so that names sort as numbers do: a node's pods
    /// then sort in the same order under their new names as under their shape's own (see
    /// [`Layout::base_fleet`]).
    pub fn namespace_name(k: usize) -> String {
        format!("ns-{k:06}")
    }

    /// Namespace of pod `p` of node `i`: consecutive pods go to consecutive namespaces, so a
    /// namespace's pods sit on different nodes.
    pub fn namespace_of(&self, i: usize, p: usize) -> String {
        Self::namespace_name((i * self.pods_per_node + p) % self.namespaces())
    }

    /// Name of pod `p` of node `i`, from its shape's pod name.
    pub fn pod_name(&self, shape_pod: &str, i: usize) -> String {
        format!("{shape_pod}-{i}")
    }

    /// The shape node `i` is built from.
    pub fn shape_of(&self, i: usize) -> usize {
        i % self.shapes()
    }

    /// Number of distinct shapes.
    pub fn shapes(&self) -> usize {
        self.nodes.clamp(1, SHAPES)
    }

    /// The base fleet: one simulated node per shape (seed 1), unrenamed, each node's pods
    /// sorted by namespace and name.
    ///
    /// Sorted because an agent sends a delta's samples in its table's order (pods by
    /// namespace and name): pod `p` of node `i` is renamed into namespace
    /// `i * pods_per_node + p`, so the renamed pods keep the order of their shape's, and the
    /// recorded deltas list their samples in the order of each node's renamed table, as a
    /// real agent of that node would (but where namespace numbers wrap around).
    pub fn base_fleet(&self, now_ms: i64) -> Fleet {
        let mut fleet = Fleet::generate(
            &FleetConfig {
                nodes: self.shapes(),
                pods_per_node: self.pods_per_node,
                node_prefix: "shape-".to_owned(),
                seed: 1,
                refresh_ms: self.interval_ms,
            },
            now_ms,
        );
        for node in &mut fleet.nodes {
            node.pods
                .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        }
        fleet
    }

    /// The whole cluster as a simulated fleet (for kubelets that metrics-server scrapes):
    /// every node renamed as [`Layout`] says. Only for clusters that fit in memory as text
    /// (thousands of nodes).
    pub fn fleet(&self, now_ms: i64) -> Fleet {
        let mut fleet = self.base_fleet(now_ms);
        let base = std::mem::take(&mut fleet.nodes);
        fleet.nodes = (0..self.nodes)
            .map(|i| {
                let mut node = base[self.shape_of(i)].clone();
                node.name = self.node_name(i);
                for (p, pod) in node.pods.iter_mut().enumerate() {
                    pod.name = self.pod_name(&pod.name, i);
                    pod.namespace = self.namespace_of(i, p);
                }
                node
            })
            .collect();
        fleet
    }
}

/// One shape's recorded stream.
#[derive(Clone, Debug)]
pub struct Shape {
    /// The snapshot, as the shape's own pods name it.
    pub snapshot: v1::Snapshot,
    /// Kubelet timestamp of the node's sample in the snapshot, ms.
    pub snapshot_node_ms: i64,
    /// For each pod definition of the snapshot, the index of the pod in the simulated node.
    pub pod_index: Vec<usize>,
    /// The shape's pod names, by index.
    pub pod_names: Vec<String>,
    /// Recorded deltas and the kubelet timestamp of the node's sample in each, ms.
    pub deltas: Vec<(v1::Delta, i64)>,
    /// Bytes of one kubelet body of this node.
    pub kubelet_text_bytes: usize,
    /// Containers on the node.
    pub containers: usize,
}

impl Shape {
    /// The snapshot node `i` sends, its timestamps moved so that the node's sample is stamped
    /// `node_ms`.
    pub fn snapshot_for(&self, layout: &Layout, i: usize, node_ms: i64) -> v1::Snapshot {
        let mut s = self.snapshot.clone();
        s.base_timestamp_ms += node_ms - self.snapshot_node_ms;
        for (def, &p) in s.pods.iter_mut().zip(&self.pod_index) {
            def.namespace = layout.namespace_of(i, p);
            def.name = layout.pod_name(&self.pod_names[p], i);
        }
        s
    }

    /// The `k`-th delta (cycling through the recorded ones), its timestamps moved so that the
    /// node's sample is stamped `node_ms`.
    pub fn delta_for(&self, k: u64, node_ms: i64) -> v1::Delta {
        let (d, at) = &self.deltas[(k as usize) % self.deltas.len()];
        let mut d = d.clone();
        d.base_timestamp_ms += node_ms - at;
        d
    }
}

/// Node timestamp of a wire message (its base plus the node sample's offset).
fn node_ms(base: i64, node: Option<&v1::Usage>) -> i64 {
    base + node.map_or(0, |u| u.timestamp_offset_ms)
}

/// Records every shape of `layout` through the agent's code path, starting at `t0_ms`.
pub fn record(layout: &Layout, t0_ms: i64) -> anyhow::Result<Vec<Shape>> {
    let t0 = t0_ms - t0_ms.rem_euclid(layout.interval_ms);
    let fleet = layout.base_fleet(t0 - 3 * layout.interval_ms);
    fleet
        .nodes
        .iter()
        .map(|node| {
            let mut state = NodeState::new(NodeStateConfig::default());
            let mut encoder = StreamEncoder::new();
            let mut prev: Option<NodeView> = None;
            let mut shape: Option<Shape> = None;
            let mut text_bytes = 0;
            for k in 0..(RECORDED_DELTAS as i64 + 2) {
                let t = t0 + k * layout.interval_ms;
                let body = render::render(&fleet, node, t);
                text_bytes = body.len();
                let (batch, issues) = decode(body.as_bytes(), Timestamp::from_millis(t));
                anyhow::ensure!(issues.is_empty(), "decode issues: {issues:?}");
                state.observe(&batch);
                let view = state.view().clone();
                if view.node.is_none() {
                    continue;
                }
                match (&prev, &mut shape) {
                    (None, _) => {
                        let snapshot = encoder.snapshot(&view);
                        let index: HashMap<(&str, &str), usize> = node
                            .pods
                            .iter()
                            .enumerate()
                            .map(|(p, pod)| ((pod.namespace.as_str(), pod.name.as_str()), p))
                            .collect();
                        let pod_index = snapshot
                            .pods
                            .iter()
                            .map(|d| index[&(d.namespace.as_str(), d.name.as_str())])
                            .collect();
                        shape = Some(Shape {
                            snapshot_node_ms: node_ms(
                                snapshot.base_timestamp_ms,
                                snapshot.node.as_ref(),
                            ),
                            snapshot,
                            pod_index,
                            pod_names: node.pods.iter().map(|p| p.name.clone()).collect(),
                            deltas: Vec::new(),
                            kubelet_text_bytes: 0,
                            containers: view.container_count(),
                        });
                    }
                    (Some(p), Some(shape)) => {
                        let d = diff(p, &view);
                        anyhow::ensure!(
                            d.pod_removals.is_empty() && d.container_removals.is_empty(),
                            "a steady node removed something"
                        );
                        anyhow::ensure!(
                            d.upserts.len() == view.container_count(),
                            "every container's sample advances each refresh"
                        );
                        let wire = encoder.delta(&d);
                        let at = node_ms(wire.base_timestamp_ms, wire.node.as_ref());
                        shape.deltas.push((wire, at));
                    }
                    (Some(_), None) => unreachable!("a snapshot precedes deltas"),
                }
                prev = Some(view);
            }
            let mut shape = shape.ok_or_else(|| anyhow::anyhow!("no usable view recorded"))?;
            shape.kubelet_text_bytes = text_bytes;
            anyhow::ensure!(!shape.deltas.is_empty(), "no delta recorded");
            Ok(shape)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each renamed node's deltas list their samples in the order of that node's table
    /// (pods by namespace and name, containers by name), as its agent would send them.
    #[test]
    fn deltas_follow_each_nodes_table_order() {
        let layout = Layout::new(300, 30, 15_000);
        let shapes = record(&layout, 1_717_243_200_000).unwrap();
        let mut in_order = 0;
        for i in 0..layout.nodes {
            let shape = &shapes[layout.shape_of(i)];
            let snap = shape.snapshot_for(&layout, i, 1_717_243_215_000);
            let pods: HashMap<u32, (&str, &str)> = snap
                .pods
                .iter()
                .map(|p| (p.id, (p.namespace.as_str(), p.name.as_str())))
                .collect();
            let mut table: Vec<((&str, &str), &str, u32)> = snap
                .containers
                .iter()
                .map(|c| (pods[&c.pod_id], c.name.as_str(), c.id))
                .collect();
            table.sort();
            let table: Vec<u32> = table.into_iter().map(|(_, _, id)| id).collect();
            let sent: Vec<u32> = shape
                .delta_for(0, 1_717_243_230_000)
                .usages
                .iter()
                .map(|u| u.container_id)
                .collect();
            let first = layout.namespace_of(i, 0);
            let last = layout.namespace_of(i, layout.pods_per_node - 1);
            if first < last {
                assert_eq!(sent, table, "node {i}");
                in_order += 1;
            }
        }
        // only nodes whose namespace numbers wrap around may differ
        assert!(
            in_order >= layout.nodes - 2,
            "{in_order} of {}",
            layout.nodes
        );
    }
}
