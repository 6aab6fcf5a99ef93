//! Memory of the metadata the aggregator keeps per pod: 100,000 Running pods in a
//! `MetaStore`, measured with a counting allocator, and what one publish plus one update
//! costs once the store is full (a publish must not copy every pod).
//!
//! `cargo bench -p kubepulse-aggregator-core --bench meta_memory`

use std::alloc::System;
use std::collections::BTreeMap;
use std::sync::Arc;

use kubepulse_aggregator_core::meta::{Kind, MetaStore, NodeMeta, PodMeta, uid_fingerprint};
use kubepulse_model::{NodeName, PodKey};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const PODS: usize = 100_000;
const PODS_PER_NODE: usize = 30;
const PODS_PER_REPLICASET: usize = 10;
const NAMESPACES: usize = 100;

fn pod_labels(i: usize, unique: bool) -> BTreeMap<String, String> {
    let rs = i / PODS_PER_REPLICASET;
    let mut labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), format!("service-{rs}")),
        (
            "pod-template-hash".to_owned(),
            format!("{:010x}", rs * 7919),
        ),
        ("tier".to_owned(), "backend".to_owned()),
    ]);
    if unique {
        // e.g. StatefulSet pods carry their own name as a label
        labels.insert(
            "statefulset.kubernetes.io/pod-name".to_owned(),
            format!("service-{rs}-{i}"),
        );
    }
    labels
}

fn fill(store: &mut MetaStore, unique: bool) {
    store.begin_relist(Kind::Nodes);
    for n in 0..PODS / PODS_PER_NODE + 1 {
        store.apply_node(
            NodeName::new(&format!("node-{n:06}.cluster.example")).unwrap(),
            NodeMeta {
                labels: Arc::new(BTreeMap::from([
                    ("kubernetes.io/hostname".to_owned(), format!("node-{n:06}")),
                    ("kubernetes.io/os".to_owned(), "linux".to_owned()),
                ])),
            },
        );
    }
    store.end_relist(Kind::Nodes);
    store.begin_relist(Kind::Pods);
    for i in 0..PODS {
        let rs = i / PODS_PER_REPLICASET;
        let key = PodKey::new(
            &format!("team-{:03}", i % NAMESPACES),
            &format!("service-{rs}-{:010x}-{:05x}", rs * 7919, i),
        )
        .unwrap();
        let meta = PodMeta {
            labels: Arc::new(pod_labels(i, unique)),
            node: Some(
                NodeName::new(&format!("node-{:06}.cluster.example", i / PODS_PER_NODE)).unwrap(),
            ),
            running: true,
            uid: uid_fingerprint(&format!("{i:08x}-0000-4000-8000-000000000000")),
        };
        store.apply_pod(key, meta);
    }
    store.end_relist(Kind::Pods);
}

fn measure(unique: bool) {
    let region = Region::new(GLOBAL);
    let mut store = MetaStore::new();
    fill(&mut store, unique);
    let view = store.publish();
    let stats = region.change();
    let live = stats.bytes_allocated as i64 - stats.bytes_deallocated as i64
        + stats.bytes_reallocated as i64;
    println!(
        "{} pods ({} labels per pod, {}): {} bytes live, {:.0} bytes per pod (nodes, interners and relist included)",
        view.pods.len(),
        if unique { 4 } else { 3 },
        if unique {
            "one label value unique per pod"
        } else {
            "label sets shared by the 10 pods of a ReplicaSet"
        },
        live,
        live as f64 / PODS as f64
    );

    // steady state: one publish and one pod update on a full store
    let region = Region::new(GLOBAL);
    let before = store.publish();
    let key = PodKey::new("team-000", "service-0-0000000000-00000").unwrap();
    store.apply_pod(
        key,
        PodMeta {
            labels: Arc::new(pod_labels(0, unique)),
            node: Some(NodeName::new("node-000001.cluster.example").unwrap()),
            running: true,
            uid: 1,
        },
    );
    let after = store.publish();
    let stats = region.change();
    println!(
        "  one update + publish on the full store allocates {} bytes in {} allocations",
        stats.bytes_allocated, stats.allocations
    );
    drop((view, before, after));
}

fn main() {
    measure(false);
    measure(true);
}
