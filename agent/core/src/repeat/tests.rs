//! RepeatFilter tests: which bodies are decoded, and that skipping the others changes no view.

use kubepulse_model::Timestamp;

use super::*;
use crate::node_state::{NodeState, NodeStateConfig};

/// A kubelet body at `at_ms`, `cpu` seconds per container: CPU and memory samples carry their
/// timestamps; start times and the scrape-error flag do not (as real kubelets send them).
fn body(at_ms: i64, cpu: f64) -> String {
    let mut text = String::new();
    text.push_str("# TYPE node_cpu_usage_seconds_total counter\n");
    text.push_str(&format!(
        "node_cpu_usage_seconds_total {} {at_ms}\n",
        cpu * 4.0
    ));
    text.push_str(&format!("node_memory_working_set_bytes 2.5e+09 {at_ms}\n"));
    for (pod, container) in [("web-1", "app"), ("web-1", "proxy"), ("db-0", "db")] {
        let labels = format!(r#"container="{container}",namespace="shop",pod="{pod}""#);
        text.push_str(&format!(
            "container_cpu_usage_seconds_total{{{labels}}} {cpu} {at_ms}\n"
        ));
        text.push_str(&format!(
            "container_memory_working_set_bytes{{{labels}}} 4.2e+07 {at_ms}\n"
        ));
        text.push_str(&format!(
            "container_start_time_seconds{{{labels}}} 1.7e+09\n"
        ));
    }
    text.push_str("resource_scrape_error 0\n");
    text
}

const T0: i64 = 1_700_000_100_000;

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn is_new(read: &Read) -> bool {
    matches!(read, Read::New(_))
}

#[test]
fn the_same_bytes_again_are_a_repeat_whatever_the_time() {
    let a = body(T0, 10.0);
    let mut filter = RepeatFilter::new();
    let Read::New(first) = filter.read(a.as_bytes(), at(T0 + 300)) else {
        panic!("the first body is decoded");
    };
    assert!(!first.uses_scrape_time);
    assert!(first.issues.is_empty());
    assert_eq!(first.batch.pods.len(), 2);
    for later in [1_300, 2_300, 14_300] {
        assert_eq!(filter.read(a.as_bytes(), at(T0 + later)), Read::Repeat);
    }
}

#[test]
fn one_changed_byte_is_a_new_body() {
    let a = body(T0, 10.0);
    let b = a.replacen("4.2e+07", "4.3e+07", 1);
    assert_eq!(a.len(), b.len());
    let mut filter = RepeatFilter::new();
    assert!(is_new(&filter.read(a.as_bytes(), at(T0))));
    assert!(is_new(&filter.read(b.as_bytes(), at(T0))));
    assert_eq!(filter.read(b.as_bytes(), at(T0)), Read::Repeat);
    // a longer or shorter body is new too
    let c = format!("{a}# a comment\n");
    assert!(is_new(&filter.read(c.as_bytes(), at(T0))));
    assert!(is_new(&filter.read(a.as_bytes(), at(T0))));
}

#[test]
fn only_the_last_body_decoded_is_remembered() {
    let (a, b) = (body(T0, 10.0), body(T0 + 10_000, 11.0));
    let mut filter = RepeatFilter::new();
    assert!(is_new(&filter.read(a.as_bytes(), at(T0))));
    assert!(is_new(&filter.read(b.as_bytes(), at(T0 + 10_000))));
    // the kubelet went back to an older body (a restart, another replica behind a proxy)
    assert!(is_new(&filter.read(a.as_bytes(), at(T0 + 11_000))));
}

#[test]
fn a_body_without_sample_timestamps_is_decoded_every_time() {
    let text = "node_cpu_usage_seconds_total 40\nnode_memory_working_set_bytes 2.5e+09\n";
    let mut filter = RepeatFilter::new();
    let mut times = Vec::new();
    for ms in [T0, T0 + 1_000] {
        let Read::New(decoded) = filter.read(text.as_bytes(), at(ms)) else {
            panic!("a body that takes the scrape time is never a repeat");
        };
        assert!(decoded.uses_scrape_time);
        times.push(decoded.batch.node.cpu.unwrap().timestamp);
    }
    assert_eq!(times, [at(T0), at(T0 + 1_000)]);
    // one CPU or memory line without a timestamp is enough
    let mixed = format!(
        "{}container_memory_working_set_bytes{{container=\"x\",namespace=\"a\",pod=\"b\"}} 1\n",
        body(T0, 1.0)
    );
    assert!(is_new(&filter.read(mixed.as_bytes(), at(T0))));
    assert!(is_new(&filter.read(mixed.as_bytes(), at(T0))));
}

#[test]
fn a_failed_read_forgets_the_last_body() {
    let a = body(T0, 10.0);
    let mut filter = RepeatFilter::new();
    assert!(is_new(&filter.read(a.as_bytes(), at(T0))));
    filter.failed();
    assert!(is_new(&filter.read(a.as_bytes(), at(T0 + 1_000))));
    assert_eq!(filter.read(a.as_bytes(), at(T0 + 2_000)), Read::Repeat);
}

#[test]
fn an_empty_or_undecodable_body_repeats_like_any_other() {
    let mut filter = RepeatFilter::new();
    assert!(is_new(&filter.read(b"", at(T0))));
    assert_eq!(filter.read(b"", at(T0 + 1_000)), Read::Repeat);
    let junk = b"node_cpu_usage_seconds_total not-a-number 1700000000000\n";
    let Read::New(decoded) = filter.read(junk, at(T0)) else {
        panic!("new bytes are decoded");
    };
    assert_eq!(decoded.issues.len(), 1);
    assert_eq!(filter.read(junk, at(T0 + 1_000)), Read::Repeat);
}

/// A 1 s poll of a kubelet refreshing every few reads: observing only the new bodies gives the
/// view that observing every read gives, after every read.
#[test]
fn skipping_repeats_keeps_every_view() {
    let refreshes = [
        body(T0, 10.0),
        body(T0 + 10_000, 10.5),
        body(T0 + 25_000, 12.0),
        body(T0 + 40_000, 12.25),
    ];
    let reads = [0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 3];
    let config = NodeStateConfig::default();
    let (mut every, mut skipping) = (NodeState::new(config), NodeState::new(config));
    let mut filter = RepeatFilter::new();
    let mut observed = 0;
    for (i, &r) in reads.iter().enumerate() {
        let scrape_time = at(T0 + 1_000 * i as i64);
        let text = refreshes[r].as_bytes();
        let (batch, _) = crate::decode::decode(text, scrape_time);
        every.observe(&batch);
        if let Read::New(decoded) = filter.read(text, scrape_time) {
            skipping.observe(&decoded.batch);
            observed += 1;
        }
        assert_eq!(skipping.view(), every.view(), "after read {i}");
        assert_eq!(
            skipping.node_pending(),
            every.node_pending(),
            "after read {i}"
        );
    }
    assert_eq!(observed, refreshes.len());
    assert_eq!(
        every.view().pods.len(),
        2,
        "both pods are served at the end"
    );
}

/// Real kubelets send start times and the scrape-error flag without timestamps, and every CPU
/// and memory sample with one: their bodies repeat.
#[test]
fn real_kubelet_bodies_repeat() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kubelet");
    for name in [
        "01-kind-alpha-2024-complete.txt",
        "02-eks-stable-2025-no-start-ts-complete.txt",
        "03-minikube-docker-whole-second-start-complete.txt",
        "05-kind-1.21-metrics-server-bench-fixture-complete.txt",
        "06-v1.28-pod-swap-only-node-a-complete.txt",
        "07-v1.28-pod-swap-only-node-b-complete.txt",
    ] {
        let text = std::fs::read(dir.join(name)).unwrap();
        let mut filter = RepeatFilter::new();
        let Read::New(decoded) = filter.read(&text, at(T0)) else {
            panic!("{name}: the first read is decoded");
        };
        assert!(!decoded.uses_scrape_time, "{name}");
        assert_eq!(filter.read(&text, at(T0 + 1_000)), Read::Repeat, "{name}");
    }
}
