//! What the writer pays per publish once the store is full: a batch of a few changes, then
//! [`ClusterStore::publish`], while readers still hold the previous view (the writer publishes
//! every 50 ms; a reader may hold a view for a whole request).
//!
//! `cargo bench -p kubepulse-aggregator-core --bench publish`
//!
//! The store holds `nodes` nodes with 3 pods each, over as many namespaces as nodes (the
//! scale benchmark's layout: every namespace's pods sit on different nodes). Each iteration
//! applies [`CHANGES`] updates — half heartbeats, half deltas that move a pod to another
//! namespace, so the namespace index changes too — and publishes. Publishing must cost what
//! changed, not what the store holds.

use std::time::{Duration, Instant};

use divan::{Bencher, black_box};
use kubepulse_aggregator_core::store::{
    ClusterStore, ScrapeStatus, StoreConfig, StreamId, StreamInfo, Update,
};
use kubepulse_model::{
    ContainerName, Delta, Epoch, NodeName, NodeView, PodKey, Sample, Timestamp, Usage, Window,
};

fn main() {
    divan::main();
}

/// Updates applied between two publishes.
const CHANGES: usize = 100;

const PODS: usize = 3;

fn sample(cpu: u64) -> Sample {
    Sample {
        usage: Usage {
            cpu_nanocores: cpu,
            memory_bytes: 1 << 20,
        },
        timestamp: Timestamp::from_millis(1_717_243_214_000),
        window: Window(15_000_000_000),
    }
}

struct Fleet {
    store: ClusterStore,
    names: Vec<NodeName>,
    /// Where each node's moving pod is: namespace `a` (false) or `b` (true).
    moved: Vec<bool>,
    container: ContainerName,
    nodes: usize,
}

impl Fleet {
    fn new(nodes: usize, now: Instant) -> Self {
        let mut store = ClusterStore::new(StoreConfig::default());
        let container = ContainerName::new("app").unwrap();
        let width = nodes.to_string().len();
        let names: Vec<NodeName> = (0..nodes)
            .map(|i| NodeName::new(&format!("sim-node-{i:0width$}")).unwrap())
            .collect();
        for (i, name) in names.iter().enumerate() {
            let stream = StreamId(i as u64);
            store.open_stream(
                name.clone(),
                stream,
                StreamInfo {
                    epoch: Epoch(1),
                    poll_interval: Duration::from_secs(15),
                    agent_version: "".into(),
                },
                now,
            );
            let mut view = NodeView {
                node: Some(sample(1_000)),
                ..NodeView::default()
            };
            for p in 0..PODS {
                let key = PodKey::new(&ns(i * PODS + p, nodes), &format!("pod-{p}-{i}")).unwrap();
                let pod = view.pods.entry(key).or_default();
                pod.containers.insert(container.clone(), sample(10));
            }
            let key = moving(i, false, nodes);
            let pod = view.pods.entry(key).or_default();
            pod.containers.insert(container.clone(), sample(10));
            store
                .apply(name, stream, Update::Snapshot(view.into()), now)
                .unwrap();
        }
        Self {
            store,
            names,
            moved: vec![false; nodes],
            container,
            nodes,
        }
    }

    /// One update for node `i`: a heartbeat, or a delta moving its moving pod.
    fn change(&mut self, i: usize, heartbeat: bool, now: Instant) {
        let update = if heartbeat {
            Update::Status(ScrapeStatus {
                ok: true,
                ..ScrapeStatus::default()
            })
        } else {
            let from = self.moved[i];
            self.moved[i] = !from;
            Update::Delta(Delta {
                pod_removals: vec![moving(i, from, self.nodes)],
                upserts: vec![(
                    moving(i, !from, self.nodes),
                    self.container.clone(),
                    sample(20),
                )],
                ..Delta::default()
            })
        };
        self.store
            .apply(&self.names[i], StreamId(i as u64), update, now)
            .unwrap();
    }
}

fn ns(k: usize, nodes: usize) -> String {
    format!("ns-{}", k % nodes)
}

fn moving(i: usize, moved: bool, nodes: usize) -> PodKey {
    PodKey::new(
        &ns(i * PODS + PODS + usize::from(moved), nodes),
        &format!("mover-{i}"),
    )
    .unwrap()
}

#[divan::bench(args = [10_000, 100_000], sample_count = 30, sample_size = 10)]
fn publish_few_changes(bencher: Bencher<'_, '_>, nodes: usize) {
    let now = Instant::now();
    let mut fleet = Fleet::new(nodes, now);
    let mut held = fleet.store.publish();
    let mut next = 0usize;
    bencher.bench_local(|| {
        for k in 0..CHANGES {
            // spread over the fleet, as nodes report at different times
            let i = next.wrapping_mul(7_919) % nodes;
            next += 1;
            fleet.change(i, k % 2 == 0, now);
        }
        // the reader's previous view is released as the new one is published
        held = black_box(fleet.store.publish());
    });
    black_box(&held);
}
