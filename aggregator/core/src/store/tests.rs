use kubepulse_model::{ContainerName, PodKey, Sample, Timestamp, Usage, Window};

use super::*;

fn node(n: &str) -> NodeName {
    NodeName::new(n).unwrap()
}

fn info(epoch: u64) -> StreamInfo {
    StreamInfo {
        epoch: Epoch(epoch),
        poll_interval: Duration::from_secs(1),
        agent_version: "test".into(),
    }
}

fn view_with(pod: &str, cpu: u64) -> NodeView {
    let mut v = NodeView::default();
    v.pods
        .entry(PodKey::new("ns", pod).unwrap())
        .or_default()
        .containers
        .insert(
            ContainerName::new("c").unwrap(),
            Sample {
                usage: Usage {
                    cpu_nanocores: cpu,
                    memory_bytes: 1,
                },
                timestamp: Timestamp::from_millis(1),
                window: Window(1),
            },
        );
    v
}

#[test]
fn snapshot_then_delta_then_publish() {
    let t0 = Instant::now();
    let mut store = ClusterStore::new(StoreConfig::default());
    store.open_stream(node("a"), StreamId(1), info(1), t0);
    store
        .apply(
            &node("a"),
            StreamId(1),
            Update::Snapshot(view_with("p", 5)),
            t0,
        )
        .unwrap();
    let next = view_with("q", 7);
    let d = kubepulse_model::diff(&view_with("p", 5), &next);
    store
        .apply(&node("a"), StreamId(1), Update::Delta(d), t0)
        .unwrap();
    let v = store.publish();
    assert_eq!(*v.nodes[&node("a")].view, next);
    assert!(v.has_data());
}

#[test]
fn only_the_newest_stream_of_a_node_reports() {
    let t0 = Instant::now();
    let mut store = ClusterStore::new(StoreConfig::default());
    store.open_stream(node("a"), StreamId(1), info(1), t0);
    store.open_stream(node("a"), StreamId(2), info(2), t0);
    let err = store
        .apply(
            &node("a"),
            StreamId(1),
            Update::Snapshot(view_with("p", 1)),
            t0,
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::NotOwner { .. }));
    // closing the old stream does not disconnect the new one
    store.close_stream(&node("a"), StreamId(1));
    assert!(store.publish().nodes[&node("a")].connected);
}

#[test]
fn a_delta_before_any_snapshot_is_refused() {
    let t0 = Instant::now();
    let mut store = ClusterStore::new(StoreConfig::default());
    store.open_stream(node("a"), StreamId(1), info(1), t0);
    assert_eq!(
        store.apply(&node("a"), StreamId(1), Update::Delta(Delta::default()), t0),
        Err(StoreError::NoSnapshot(node("a")))
    );
}

#[test]
fn data_is_kept_until_the_ttl_then_dropped() {
    let t0 = Instant::now();
    let mut store = ClusterStore::new(StoreConfig::default());
    store.open_stream(node("a"), StreamId(1), info(1), t0);
    store
        .apply(
            &node("a"),
            StreamId(1),
            Update::Snapshot(view_with("p", 1)),
            t0,
        )
        .unwrap();
    // the kubelet fails: status updates do not refresh the data
    let failed = ScrapeStatus {
        ok: false,
        error: "500".into(),
        ..ScrapeStatus::default()
    };
    store
        .apply(
            &node("a"),
            StreamId(1),
            Update::Status(failed),
            t0 + Duration::from_secs(10),
        )
        .unwrap();
    assert!(store.evict_stale(t0 + Duration::from_secs(30)).is_empty());
    assert!(store.publish().nodes[&node("a")].has_data);
    assert_eq!(
        store.evict_stale(t0 + Duration::from_secs(31)),
        vec![node("a")]
    );
    let v = store.publish();
    assert!(!v.nodes[&node("a")].has_data);
    assert!(v.nodes[&node("a")].view.pods.is_empty());
}

#[test]
fn heartbeats_keep_data_fresh_and_closed_nodes_are_forgotten() {
    let t0 = Instant::now();
    let mut store = ClusterStore::new(StoreConfig::default());
    store.open_stream(node("a"), StreamId(1), info(1), t0);
    store
        .apply(
            &node("a"),
            StreamId(1),
            Update::Snapshot(view_with("p", 1)),
            t0,
        )
        .unwrap();
    let ok = ScrapeStatus {
        ok: true,
        ..ScrapeStatus::default()
    };
    store
        .apply(
            &node("a"),
            StreamId(1),
            Update::Status(ok),
            t0 + Duration::from_secs(25),
        )
        .unwrap();
    assert!(store.evict_stale(t0 + Duration::from_secs(50)).is_empty());
    store.close_stream(&node("a"), StreamId(1));
    assert_eq!(
        store.evict_stale(t0 + Duration::from_secs(56)),
        vec![node("a")]
    );
    assert_eq!(store.len(), 1, "the expiry is remembered for one TTL");
    store.evict_stale(t0 + Duration::from_secs(87));
    assert!(store.is_empty());
}

#[test]
fn ttl_follows_the_poll_interval() {
    let store = ClusterStore::new(StoreConfig::default());
    assert_eq!(
        store.ttl_for(Duration::from_secs(1)),
        Duration::from_secs(30)
    );
    assert_eq!(
        store.ttl_for(Duration::from_secs(15)),
        Duration::from_secs(45)
    );
}
