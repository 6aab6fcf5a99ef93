use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kubepulse_model::{ContainerName, Epoch, NodeView, Sample, Timestamp, Usage, Window};

use super::*;
use crate::meta::{NodeMeta, PodMeta};
use crate::store::{ClusterStore, StoreConfig, StreamId, StreamInfo, Update};

fn sample(cpu: u64, ts_ms: i64) -> Sample {
    Sample {
        usage: Usage {
            cpu_nanocores: cpu,
            memory_bytes: 4096,
        },
        timestamp: Timestamp::from_millis(ts_ms),
        window: Window(15_000_000_000),
    }
}

/// Two nodes: n1 with pods ns/a and ns/b, n2 with other/c; n2 has no node sample yet.
fn cluster() -> ClusterView {
    let t0 = Instant::now();
    let mut store = ClusterStore::new(StoreConfig::default());
    let mut stream = 0;
    for (node, node_sample, pods) in [
        ("n1", Some(sample(1, 10)), vec![("ns", "a"), ("ns", "b")]),
        ("n2", None, vec![("other", "c")]),
    ] {
        stream += 1;
        let name = NodeName::new(node).unwrap();
        store.open_stream(
            name.clone(),
            StreamId(stream),
            StreamInfo {
                epoch: Epoch(1),
                poll_interval: Duration::from_secs(1),
                agent_version: "".into(),
            },
            t0,
        );
        let mut v = NodeView {
            node: node_sample,
            ..NodeView::default()
        };
        for (ns, pod) in pods {
            let p = v.pods.entry(PodKey::new(ns, pod).unwrap()).or_default();
            p.containers
                .insert(ContainerName::new("web").unwrap(), sample(100, 2000));
            p.containers
                .insert(ContainerName::new("proxy").unwrap(), sample(5, 1000));
        }
        store
            .apply(&name, StreamId(stream), Update::Snapshot(v.into()), t0)
            .unwrap();
    }
    store.publish()
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Arc::new(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    )
}

fn all() -> (LabelSelector, FieldSelector) {
    (
        LabelSelector::parse("").unwrap(),
        FieldSelector::parse("").unwrap(),
    )
}

#[test]
fn standalone_lists_every_reported_object() {
    let view = cluster();
    let (l, f) = all();
    let opts = ListOptions {
        labels: &l,
        fields: &f,
    };
    let nodes = list_nodes(&view, None, opts, None);
    assert_eq!(nodes.len(), 1, "n2 has no node sample");
    let pods = list_pods(&view, None, None, opts);
    let names: Vec<String> = pods.iter().map(|p| p.key.to_string()).collect();
    assert_eq!(names, ["ns/a", "ns/b", "other/c"]);
    // the pod takes the earliest container's timestamp; containers sorted by name
    assert_eq!(pods[0].timestamp, Timestamp::from_millis(1000));
    assert_eq!(pods[0].containers[0].name.as_str(), "proxy");
    assert_eq!(list_pods(&view, None, Some("other"), opts).len(), 1);
    assert_eq!(list_pods(&view, None, Some("none"), opts).len(), 0);
}

#[test]
fn not_found_wordings() {
    let view = cluster();
    assert_eq!(
        get_node(&view, None, "n2").unwrap_err().message,
        "nodemetrics.metrics.k8s.io \"n2\" not found"
    );
    assert_eq!(
        get_pod(&view, None, "ns", "zz").unwrap_err().message,
        "podmetrics.metrics.k8s.io \"ns/zz\" not found"
    );
    let mut meta = MetaView::default();
    assert_eq!(
        get_node(&view, Some(&meta), "n1").unwrap_err().message,
        "node \"n1\" not found"
    );
    meta.pods.insert(
        PodKey::new("ns", "a").unwrap(),
        PodMeta {
            running: false,
            ..PodMeta::default()
        },
    );
    assert_eq!(
        get_pod(&view, Some(&meta), "ns", "a").unwrap_err().message,
        "pods \"a\" not found"
    );
}

#[test]
fn metadata_filters_and_labels() {
    let view = cluster();
    let mut meta = MetaView::default();
    meta.nodes.insert(
        NodeName::new("n1").unwrap(),
        NodeMeta {
            labels: labels(&[("zone", "a")]),
        },
    );
    meta.pods.insert(
        PodKey::new("ns", "a").unwrap(),
        PodMeta {
            labels: labels(&[("app", "web")]),
            node: Some(NodeName::new("n1").unwrap()),
            running: true,
            uid: 0,
        },
    );
    // ns/b is not Running; other/c is bound to another node than the one reporting it
    meta.pods.insert(
        PodKey::new("ns", "b").unwrap(),
        PodMeta {
            running: false,
            ..PodMeta::default()
        },
    );
    meta.pods.insert(
        PodKey::new("other", "c").unwrap(),
        PodMeta {
            node: Some(NodeName::new("n9").unwrap()),
            running: true,
            ..PodMeta::default()
        },
    );
    let (l, f) = all();
    let opts = ListOptions {
        labels: &l,
        fields: &f,
    };
    let pods = list_pods(&view, Some(&meta), None, opts);
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].labels.get("app").map(String::as_str), Some("web"));

    let web = LabelSelector::parse("app=web").unwrap();
    let other = LabelSelector::parse("app!=web").unwrap();
    let with = |labels| ListOptions { labels, fields: &f };
    assert_eq!(list_pods(&view, Some(&meta), None, with(&web)).len(), 1);
    assert_eq!(list_pods(&view, Some(&meta), None, with(&other)).len(), 0);

    let zone_b = LabelSelector::parse("zone=b").unwrap();
    assert_eq!(list_nodes(&view, Some(&meta), opts, None).len(), 1);
    assert_eq!(list_nodes(&view, Some(&meta), opts, Some(&zone_b)).len(), 0);
    assert_eq!(
        get_node(&view, Some(&meta), "n1").unwrap().labels["zone"],
        "a"
    );
}

#[test]
fn field_selectors() {
    let view = cluster();
    let l = LabelSelector::parse("").unwrap();
    let f = FieldSelector::parse("metadata.name=b").unwrap();
    let opts = ListOptions {
        labels: &l,
        fields: &f,
    };
    let pods = list_pods(&view, None, None, opts);
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].key.to_string(), "ns/b");
    let f = FieldSelector::parse("metadata.namespace=ns").unwrap();
    let opts = ListOptions {
        labels: &l,
        fields: &f,
    };
    assert_eq!(list_nodes(&view, None, opts, None).len(), 0);
}
