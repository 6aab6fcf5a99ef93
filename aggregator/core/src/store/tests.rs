use kubepulse_model::{
    ContainerName, NodeChange, NodeView, PodKey, Reshape, Sample, Timestamp, Usage, Window,
};
use proptest::prelude::*;

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
            Update::Snapshot(view_with("p", 5).into()),
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

/// Nodes whose kubelet reads go well share one status; a node with something to say has its
/// own, and every node reads back what it was sent.
#[test]
fn plain_statuses_are_shared_and_read_back_as_sent() {
    let t0 = Instant::now();
    let mut store = ClusterStore::new(StoreConfig::default());
    let ok = ScrapeStatus {
        ok: true,
        ..ScrapeStatus::default()
    };
    let failing = ScrapeStatus {
        error: "connection refused".to_owned(),
        ..ScrapeStatus::default()
    };
    for (i, status) in [&ok, &ok, &failing].into_iter().enumerate() {
        let n = node(&format!("n{i}"));
        store.open_stream(n.clone(), StreamId(i as u64), info(1), t0);
        store
            .apply(&n, StreamId(i as u64), Update::Status(status.clone()), t0)
            .unwrap();
    }
    let v = store.publish();
    let scrape = |i: usize| Arc::clone(&v.nodes[&node(&format!("n{i}"))].scrape);
    assert_eq!(
        [&*scrape(0), &*scrape(1), &*scrape(2)],
        [&ok, &ok, &failing]
    );
    assert!(Arc::ptr_eq(&scrape(0), &scrape(1)));
    assert!(!Arc::ptr_eq(&scrape(0), &scrape(2)));
}

/// Samples by slot land only on the very names they were decoded against; a reshape makes
/// the table take the names it brings, and refuses names that differ from its result.
#[test]
fn samples_by_slot_need_the_names_they_refer_to() {
    let t0 = Instant::now();
    let mut store = ClusterStore::new(StoreConfig::default());
    store.open_stream(node("a"), StreamId(1), info(1), t0);
    let first: NodeUsage = view_with("p", 5).into();
    let names = first.pods.names();
    let apply = |store: &mut ClusterStore, update| store.apply(&node("a"), StreamId(1), update, t0);
    let samples = |names: &PodNames, cpu| {
        let s = view_with("p", cpu)
            .pods
            .values()
            .next()
            .unwrap()
            .containers
            .values()
            .next()
            .copied();
        Update::Samples(SlotSamples {
            names: names.clone(),
            node: NodeChange::Unchanged,
            samples: vec![(0, s.unwrap())],
        })
    };
    assert_eq!(
        apply(&mut store, samples(&names, 6)),
        Err(StoreError::NoSnapshot(node("a")))
    );
    apply(&mut store, Update::Snapshot(first)).unwrap();
    let published = store.publish();
    apply(&mut store, samples(&names, 6)).unwrap();
    assert_eq!(*store.publish().nodes[&node("a")].view, view_with("p", 6));
    // the view published before keeps its samples
    assert_eq!(*published.nodes[&node("a")].view, view_with("p", 5));
    // equal names are not the same names
    let equal = NodeUsage::from(view_with("p", 1)).pods.names();
    assert_eq!(
        apply(&mut store, samples(&equal, 7)),
        Err(StoreError::Names(node("a")))
    );
    // a slot out of range is refused as a whole
    let Update::Samples(mut bad) = samples(&names, 8) else {
        unreachable!()
    };
    bad.samples.push((1, bad.samples[0].1));
    assert_eq!(
        apply(&mut store, Update::Samples(bad)),
        Err(StoreError::Names(node("a")))
    );
    assert_eq!(*store.publish().nodes[&node("a")].view, view_with("p", 6));
    // a reshape to "q", decoded against the names held: the table takes the names given,
    // and samples for them land
    let delta = kubepulse_model::diff(&view_with("p", 6), &view_with("q", 9));
    let after = NodeUsage::from(view_with("q", 0)).pods.names();
    let reshape = |before: &PodNames, delta: &Delta, after: &PodNames| {
        Update::Reshape(Reshape {
            before: before.clone(),
            delta: delta.clone(),
            after: after.clone(),
        })
    };
    // decoded against equal names that are not the table's: refused, nothing changed
    assert_eq!(
        apply(&mut store, reshape(&equal, &delta, &after)),
        Err(StoreError::Names(node("a")))
    );
    apply(&mut store, reshape(&names, &delta, &after)).unwrap();
    assert_eq!(*store.publish().nodes[&node("a")].view, view_with("q", 9));
    apply(&mut store, samples(&after, 10)).unwrap();
    assert_eq!(*store.publish().nodes[&node("a")].view, view_with("q", 10));
    // after names that leave a container without a sample are refused
    let back = kubepulse_model::diff(&view_with("q", 10), &view_with("p", 1));
    let wrong = NodeUsage::from(view_with("r", 0)).pods.names();
    assert_eq!(
        apply(&mut store, reshape(&after, &back, &wrong)),
        Err(StoreError::Names(node("a")))
    );
    assert_eq!(*store.publish().nodes[&node("a")].view, view_with("q", 10));
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
            Update::Snapshot(view_with("p", 1).into()),
            t0,
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::NotOwner { .. }));
    // closing the old stream does not disconnect the new one
    store.close_stream(&node("a"), StreamId(1), t0);
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
            Update::Snapshot(view_with("p", 1).into()),
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
            Update::Snapshot(view_with("p", 1).into()),
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
    store.close_stream(&node("a"), StreamId(1), t0 + Duration::from_secs(50));
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
        .apply(
            &node("a"),
            StreamId(1),
            Update::Snapshot(first.clone().into()),
            t0,
        )
        .unwrap();
    store
        .apply(
            &node("b"),
            StreamId(2),
            Update::Snapshot(view_of(&[("ns1", "r", &["c"])]).into()),
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

/// One step of a random history for the property test below.
#[derive(Clone, Debug)]
enum Op {
    /// A new stream opens for the node.
    Open(u8),
    /// A snapshot with these pods (namespace, pod).
    Snapshot(u8, Vec<(u8, u8)>),
    /// A delta from what the store holds to these pods.
    Delta(u8, Vec<(u8, u8)>),
    /// A delta that does not fit (removes a pod the node does not report).
    BadDelta(u8),
    /// A status; `true` is a successful read (a heartbeat).
    Status(u8, bool),
    /// The node's newest stream closes.
    Close(u8),
    /// Time passes.
    Advance(u16),
    /// The writer's expiry tick.
    Evict,
}

fn op() -> impl Strategy<Value = Op> {
    let node = 0u8..5;
    let pods = proptest::collection::vec((0u8..4, 0u8..4), 0..5);
    prop_oneof![
        node.clone().prop_map(Op::Open),
        (node.clone(), pods.clone()).prop_map(|(n, p)| Op::Snapshot(n, p)),
        (node.clone(), pods).prop_map(|(n, p)| Op::Delta(n, p)),
        node.clone().prop_map(Op::BadDelta),
        (node.clone(), any::<bool>()).prop_map(|(n, ok)| Op::Status(n, ok)),
        node.prop_map(Op::Close),
        (0u16..40).prop_map(Op::Advance),
        Just(Op::Evict),
    ]
}

fn pods_view(pods: &[(u8, u8)], cpu: u64) -> NodeView {
    let mut v = NodeView::default();
    for (ns, pod) in pods {
        v.pods
            .entry(PodKey::new(&format!("ns{ns}"), &format!("p{pod}")).unwrap())
            .or_default()
            .containers
            .insert(ContainerName::new("c").unwrap(), sample(cpu));
    }
    v
}

/// A deep copy of a view's content, independent of any sharing.
type Plain = (Vec<(NodeName, NodeEntry)>, Vec<(Namespace, Vec<NodeName>)>);

fn plain(v: &ClusterView) -> Plain {
    (
        v.nodes
            .iter()
            .map(|(k, e)| (k.clone(), NodeEntry::clone(e)))
            .collect(),
        v.namespaces
            .iter()
            .map(|(ns, nodes)| (ns.clone(), nodes.iter().cloned().collect()))
            .collect(),
    )
}

/// The namespace index computed from the nodes' pods alone.
fn index_from_scratch(v: &ClusterView) -> Vec<(Namespace, Vec<NodeName>)> {
    let mut index: std::collections::BTreeMap<Namespace, Vec<NodeName>> = Default::default();
    for (name, e) in &v.nodes {
        for (key, _) in e.view.pods.iter() {
            let nodes = index.entry(key.namespace.clone()).or_default();
            if nodes.last() != Some(name) {
                nodes.push(name.clone());
            }
        }
    }
    index.into_iter().collect()
}

proptest! {
    /// Whatever the history: a store publishing after every step ends with the same view as
    /// one publishing only at the end; views handed out earlier never change afterwards; the
    /// namespace index is what the nodes' pods say; and a store fed only the final data (one
    /// snapshot per node) serves the same usage and index.
    #[test]
    fn published_views_match_a_rebuild(ops in proptest::collection::vec(op(), 1..60)) {
        let t0 = Instant::now();
        let mut now = t0;
        let config = StoreConfig { ttl_intervals: 3, min_ttl: Duration::from_secs(30) };
        let (mut a, mut b) = (ClusterStore::new(config), ClusterStore::new(config));
        let mut streams: HashMap<u8, u64> = HashMap::new();
        let mut next_stream = 1;
        let mut held: Vec<(ClusterView, Plain)> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let name = |n: &u8| node(&format!("n{n}"));
            let stream = |n: &u8| StreamId(streams.get(n).copied().unwrap_or(0));
            match op {
                Op::Open(n) => {
                    streams.insert(*n, next_stream);
                    for s in [&mut a, &mut b] {
                        s.open_stream(name(n), StreamId(next_stream), info(1), now);
                    }
                    next_stream += 1;
                }
                Op::Close(n) => {
                    for s in [&mut a, &mut b] {
                        s.close_stream(&name(n), stream(n), now);
                    }
                }
                Op::Advance(secs) => now += Duration::from_secs(u64::from(*secs)),
                Op::Evict => {
                    // the queue looks at exactly the nodes a scan of every node would change
                    let (expired, forget) = a.due_by_scan(now);
                    let got = a.evict_stale(now);
                    prop_assert_eq!(&got, &expired);
                    prop_assert_eq!(got, b.evict_stale(now));
                    prop_assert!(forget.iter().all(|n| !a.publish().nodes.contains_key(n)));
                    prop_assert_eq!(a.due_by_scan(now), (vec![], vec![]));
                }
                Op::Snapshot(n, _) | Op::Delta(n, _) | Op::BadDelta(n) | Op::Status(n, _) => {
                    let update = match op {
                        Op::Snapshot(_, pods) => Update::Snapshot(pods_view(pods, i as u64).into()),
                        Op::Delta(_, pods) => {
                            let held = a
                                .publish()
                                .nodes
                                .get(&name(n))
                                .map(|e| e.view.to_view())
                                .unwrap_or_default();
                            Update::Delta(kubepulse_model::diff(&held, &pods_view(pods, i as u64)))
                        }
                        Op::BadDelta(_) => Update::Delta(Delta {
                            pod_removals: vec![PodKey::new("nowhere", "p").unwrap()],
                            ..Delta::default()
                        }),
                        Op::Status(_, ok) => Update::Status(ScrapeStatus {
                            ok: *ok,
                            error: if *ok { String::new() } else { "kubelet down".into() },
                            ..ScrapeStatus::default()
                        }),
                        _ => unreachable!(),
                    };
                    let ra = a.apply(&name(n), stream(n), update.clone(), now);
                    let rb = b.apply(&name(n), stream(n), update, now);
                    prop_assert_eq!(ra, rb);
                }
            }
            let v = a.publish();
            let p = plain(&v);
            held.push((v, p));
        }
        let (va, vb) = (a.publish(), b.publish());
        prop_assert_eq!(plain(&va), plain(&vb));
        prop_assert!(va == vb);
        prop_assert_eq!(a.len(), va.nodes.len());
        for (v, p) in &held {
            prop_assert_eq!(&plain(v), p, "an earlier view changed");
        }
        prop_assert_eq!(plain(&va).1, index_from_scratch(&va));
        prop_assert!(va.namespaces.values().all(|nodes| !nodes.is_empty()));

        let mut c = ClusterStore::new(config);
        for (k, (n, e)) in va.nodes.iter().filter(|(_, e)| e.has_data).enumerate() {
            c.open_stream(n.clone(), StreamId(k as u64), info(1), now);
            c.apply(n, StreamId(k as u64), Update::Snapshot(e.view.to_view().into()), now).unwrap();
        }
        let vc = c.publish();
        let usage = |v: &ClusterView| -> Vec<(NodeName, NodeUsage)> {
            v.nodes
                .iter()
                .filter(|(_, e)| e.has_data)
                .map(|(n, e)| (n.clone(), NodeUsage::clone(&e.view)))
                .collect()
        };
        prop_assert_eq!(usage(&va), usage(&vc));
        prop_assert_eq!(plain(&va).1, plain(&vc).1);
    }
}

/// A node view over a small universe of pods and containers: (namespace, pod, container, cpu).
fn node_view() -> impl Strategy<Value = NodeView> {
    let container = (0u8..3, 0u8..4, 0u8..3, 1u64..4);
    (
        proptest::option::of(1u64..4),
        proptest::collection::vec(container, 0..12),
    )
        .prop_map(|(node, containers)| {
            let mut v = NodeView {
                node: node.map(sample),
                ..NodeView::default()
            };
            for (ns, pod, c, cpu) in containers {
                v.pods
                    .entry(PodKey::new(&format!("ns{ns}"), &format!("p{pod}")).unwrap())
                    .or_default()
                    .containers
                    .insert(ContainerName::new(&format!("c{c}")).unwrap(), sample(cpu));
            }
            v
        })
}

proptest! {
    /// Samples written in place, layouts rebuilt, and a version a reader still holds left
    /// as it was: every chain of deltas gives what the model gives.
    #[test]
    fn node_usage_follows_the_model(views in proptest::collection::vec(node_view(), 1..8)) {
        let mut usage = NodeUsage::from(views[0].clone());
        for pair in views.windows(2) {
            let held = usage.clone();
            let delta = kubepulse_model::diff(&pair[0], &pair[1]);
            usage.apply(&delta).unwrap();
            prop_assert_eq!(&usage, &pair[1]);
            prop_assert_eq!(usage.to_view(), pair[1].clone());
            prop_assert_eq!(&held, &pair[0]);
            prop_assert_eq!(usage.container_count(), pair[1].container_count());
            for (key, pod) in &pair[1].pods {
                let got = usage.pods.get(key).map(|p| p.timestamp_window());
                prop_assert_eq!(got, Some(pod.timestamp_window()));
            }
        }
    }

    /// New samples for some of the held containers, named with the texts the store holds
    /// (as a stream's dictionary names them): written where they belong.
    #[test]
    fn samples_for_held_containers_land_in_place(
        view in node_view(),
        every in 1usize..4,
        skip in 0usize..3,
    ) {
        let mut usage = NodeUsage::from(view);
        let before = usage.to_view();
        let mut next = before.clone();
        let containers = next.pods.values_mut().flat_map(|p| p.containers.values_mut());
        for (i, s) in containers.enumerate() {
            if i >= skip && (i - skip) % every == 0 {
                s.usage.cpu_nanocores += 10;
            }
        }
        let delta = kubepulse_model::diff(&before, &next);
        usage.apply(&delta).unwrap();
        prop_assert_eq!(usage, next);
    }
}

#[test]
fn node_sets_stay_sorted_across_both_forms() {
    let name = |i: usize| node(&format!("n{i:03}"));
    let mut set = NodeSet::default();
    let mut expected = std::collections::BTreeSet::new();
    // joins in a scattered order, past the point where the set changes form, and back
    let order: Vec<usize> = (0..3 * FEW_NODES)
        .map(|i| (i * 37) % (3 * FEW_NODES))
        .collect();
    for &i in &order {
        set.insert(&name(i));
        set.insert(&name(i));
        expected.insert(name(i));
        assert!(set.iter().eq(expected.iter()));
        assert_eq!(set.len(), expected.len());
    }
    assert!(matches!(set.0, Nodes::Many(_)));
    for &i in order.iter().rev() {
        set.remove(&name(i));
        set.remove(&name(i));
        expected.remove(&name(i));
        assert!(set.iter().eq(expected.iter()));
        assert!(!set.contains(&name(i)));
        assert!(expected.iter().all(|n| set.contains(n)));
    }
    assert!(set.is_empty());
    assert!(matches!(set.0, Nodes::Few(_)));
}
