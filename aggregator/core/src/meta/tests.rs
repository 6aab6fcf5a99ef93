use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Arc::new(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
    )
}

fn pod(labels_: &[(&str, &str)], node: &str) -> PodMeta {
    PodMeta {
        labels: labels(labels_),
        node: Some(NodeName::new(node).unwrap()),
        running: true,
        uid: 0,
    }
}

fn key(ns: &str, name: &str) -> PodKey {
    PodKey::new(ns, name).unwrap()
}

fn synced_store() -> MetaStore {
    let mut store = MetaStore::new();
    for kind in [Kind::Pods, Kind::Nodes] {
        store.begin_relist(kind);
        store.end_relist(kind);
    }
    store
}

#[test]
fn synced_only_after_both_initial_lists() {
    let mut store = MetaStore::new();
    assert!(!store.publish().synced);
    store.begin_relist(Kind::Pods);
    store.apply_pod(key("ns", "a"), pod(&[("app", "web")], "n1"));
    store.end_relist(Kind::Pods);
    let view = store.publish();
    assert!(!view.synced);
    assert_eq!(view.pods.len(), 1);
    store.begin_relist(Kind::Nodes);
    store.end_relist(Kind::Nodes);
    assert!(store.publish().synced);
    assert!(store.is_synced(Kind::Pods) && store.is_synced(Kind::Nodes));
}

#[test]
fn applies_updates_and_deletions() {
    let mut store = synced_store();
    store.apply_pod(key("ns", "a"), pod(&[("app", "web")], "n1"));
    store.apply_node(
        NodeName::new("n1").unwrap(),
        NodeMeta {
            labels: labels(&[("zone", "a")]),
        },
    );
    assert!(store.is_dirty());
    let before = store.publish();
    assert!(!store.is_dirty());
    store.apply_pod(key("ns", "a"), pod(&[("app", "shop")], "n1"));
    store.delete_node(&NodeName::new("n1").unwrap());
    let after = store.publish();
    // the published view is immutable: the earlier one still shows the old state
    assert_eq!(before.pods[&key("ns", "a")].labels["app"], "web");
    assert_eq!(before.nodes.len(), 1);
    assert_eq!(after.pods[&key("ns", "a")].labels["app"], "shop");
    assert!(after.nodes.is_empty());
    store.delete_pod(&key("ns", "a"));
    assert!(store.publish().pods.is_empty());
}

#[test]
fn unchanged_objects_do_not_dirty_the_view() {
    let mut store = synced_store();
    store.apply_pod(key("ns", "a"), pod(&[("app", "web")], "n1"));
    store.publish();
    store.apply_pod(key("ns", "a"), pod(&[("app", "web")], "n1"));
    assert!(!store.is_dirty());
    store.delete_pod(&key("ns", "missing"));
    assert!(!store.is_dirty());
}

#[test]
fn relist_replaces_and_drops_objects_deleted_meanwhile() {
    let mut store = synced_store();
    store.apply_pod(key("ns", "gone"), pod(&[], "n1"));
    store.apply_pod(key("ns", "kept"), pod(&[("v", "1")], "n1"));
    store.begin_relist(Kind::Pods);
    store.apply_pod(key("ns", "kept"), pod(&[("v", "2")], "n1"));
    // readers keep the old map until the relist completes
    let during = store.publish();
    assert_eq!(during.pods.len(), 2);
    assert_eq!(during.pods[&key("ns", "kept")].labels["v"], "1");
    store.end_relist(Kind::Pods);
    let after = store.publish();
    assert_eq!(after.pods.len(), 1);
    assert_eq!(after.pods[&key("ns", "kept")].labels["v"], "2");
    assert!(after.synced);
}

#[test]
fn deletions_during_a_relist_apply_to_both_maps() {
    let mut store = synced_store();
    store.apply_pod(key("ns", "a"), pod(&[], "n1"));
    store.begin_relist(Kind::Pods);
    store.apply_pod(key("ns", "a"), pod(&[], "n1"));
    store.delete_pod(&key("ns", "a"));
    assert!(store.publish().pods.is_empty());
    store.end_relist(Kind::Pods);
    assert!(store.publish().pods.is_empty());
}

#[test]
fn equal_label_sets_and_names_are_shared() {
    let mut store = synced_store();
    for i in 0..10 {
        store.apply_pod(
            key("ns", &format!("web-{i}")),
            pod(&[("app", "web"), ("pod-template-hash", "abc")], "n1"),
        );
    }
    let view = store.publish();
    let first = &view.pods[&key("ns", "web-0")];
    let last = &view.pods[&key("ns", "web-9")];
    assert!(Arc::ptr_eq(&first.labels, &last.labels));
    assert_eq!(store.interned(), (1, 1, 1));
}

#[test]
fn compaction_forgets_unused_interned_values() {
    let mut store = synced_store();
    store.apply_pod(key("a", "p"), pod(&[("x", "1")], "n1"));
    store.apply_pod(key("b", "q"), pod(&[("x", "2")], "n2"));
    store.delete_pod(&key("b", "q"));
    // a relist compacts
    store.begin_relist(Kind::Pods);
    store.apply_pod(key("a", "p"), pod(&[("x", "1")], "n1"));
    store.end_relist(Kind::Pods);
    drop(store.publish());
    assert_eq!(store.interned(), (1, 1, 1));
}
