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

fn sample(cpu: u64) -> Sample {
    Sample {
        usage: Usage {
            cpu_nanocores: cpu,
            memory_bytes: 1,
        },
        timestamp: Timestamp::from_millis(cpu as i64),
        window: Window(1),
    }
}

fn view_of(pods: &[(&str, &str, &[&str])]) -> NodeView {
    let mut v = NodeView::default();
    for (i, (ns, pod, containers)) in pods.iter().enumerate() {
        let p = v.pods.entry(PodKey::new(ns, pod).unwrap()).or_default();
        for c in *containers {
            p.containers
                .insert(ContainerName::new(c).unwrap(), sample(i as u64 + 1));
        }
    }
    v
}

#[test]
fn node_usage_applies_deltas_as_the_model_does() {
    let views = [
        view_of(&[("a", "p", &["x", "y"]), ("b", "q", &["z"])]),
        view_of(&[
            ("a", "p", &["y"]),
            ("c", "r", &["z", "w"]),
            ("b", "q", &["z"]),
        ]),
        view_of(&[("c", "r", &["w"])]),
        view_of(&[]),
        view_of(&[("a", "p", &["x", "y", "z"]), ("a", "o", &["k"])]),
    ];
    for from in &views {
        for to in &views {
            let delta = kubepulse_model::diff(from, to);
            let mut usage = NodeUsage::from(from.clone());
            usage.apply(&delta).unwrap();
            assert_eq!(usage, *to);
            assert_eq!(usage.to_view(), *to);
        }
    }
    // the same errors as the model
    let mut model = views[0].clone();
    let mut usage = NodeUsage::from(model.clone());
    let bad = Delta {
        container_removals: vec![(
            PodKey::new("b", "q").unwrap(),
            ContainerName::new("z").unwrap(),
        )],
        ..Delta::default()
    };
    assert_eq!(usage.apply(&bad), kubepulse_model::apply(&mut model, &bad));
    assert!(usage.apply(&bad).is_err());
}

#[test]
fn namespace_index_follows_pods() {
    let t0 = Instant::now();
    let mut store = ClusterStore::new(StoreConfig::default());
    let nodes_of = |v: &ClusterView, ns: &str| -> Vec<String> {
        v.namespaces
            .get(ns)
            .map(|n| n.iter().map(|n| n.to_string()).collect())
            .unwrap_or_default()
    };
    for (i, n) in ["a", "b"].iter().enumerate() {
        store.open_stream(node(n), StreamId(i as u64 + 1), info(1), t0);
    }
    let first = view_of(&[("ns1", "p", &["c"]), ("ns2", "q", &["c"])]);
    store
        .apply(&node("a"), StreamId(1), Update::Snapshot(first.clone()), t0)
        .unwrap();
    store
        .apply(
            &node("b"),
            StreamId(2),
            Update::Snapshot(view_of(&[("ns1", "r", &["c"])])),
            t0,
        )
        .unwrap();
    let v = store.publish();
    assert_eq!(nodes_of(&v, "ns1"), ["a", "b"]);
    assert_eq!(nodes_of(&v, "ns2"), ["a"]);
    // a delta moves node a's pods from ns2 to ns3
    let next = view_of(&[("ns1", "p", &["c"]), ("ns3", "s", &["c"])]);
    store
        .apply(
            &node("a"),
            StreamId(1),
            Update::Delta(kubepulse_model::diff(&first, &next)),
            t0,
        )
        .unwrap();
    let v = store.publish();
    assert_eq!(nodes_of(&v, "ns2"), Vec::<String>::new());
    assert_eq!(nodes_of(&v, "ns3"), ["a"]);
    assert!(!v.namespaces.contains_key("ns2"));
    // expiry takes node b out
    let later = t0 + Duration::from_secs(3600);
    store
        .apply(
            &node("a"),
            StreamId(1),
            Update::Status(ScrapeStatus {
                ok: true,
                ..Default::default()
            }),
            later,
        )
        .unwrap();
    store.evict_stale(later);
    let v = store.publish();
    assert_eq!(nodes_of(&v, "ns1"), ["a"]);
}
