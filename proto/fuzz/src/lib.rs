//! What the proto fuzz targets check, as plain functions: the fuzz targets
//! (`fuzz_targets/*.rs`, nightly, libFuzzer) and the stable corpus replay
//! (`proto/tests/fuzz_corpus.rs`, which includes this file with `#[path]`) call the same code,
//! so a crash found by fuzzing becomes a failing `cargo test` as soon as its input is saved
//! under `corpus/`.
//!
//! Only the workspace crates and `prost` are used here, never `libfuzzer-sys`.

use std::sync::Arc;

use kubepulse_model::{NodeUsage, NodeView, apply, diff};
use kubepulse_proto::quick::QuickDecode;
use kubepulse_proto::v1::{self, agent_message};
use kubepulse_proto::{Limits, NodeDecoder, NodeDelta, StreamDecoder, StreamEncoder};
use prost::Message as _;

/// Small limits, so inputs can cross them.
pub const LIMITS: Limits = Limits {
    max_pods: 16,
    max_containers: 48,
};

/// Most messages read from one input.
pub const MAX_MESSAGES: usize = 256;

/// One ingest stream: `data` is a sequence of length-delimited `AgentMessage`s (what a
/// gRPC stream carries, minus the framing), decoded with one `StreamDecoder` and applied to
/// one view as the ingest and the store do: a delta only after an accepted snapshot, and any
/// error drops the view until the next snapshot (the resync). Panics when an invariant breaks:
/// - no input panics the decoder or `apply`;
/// - an accepted view stays within [`LIMITS`], holds no empty pod and no zero window;
/// - an accepted snapshot re-encodes (`StreamEncoder`) to a message that decodes to the same
///   view, and `apply(prev, diff(prev, next)) == next` between consecutive views;
/// - the aggregator's path — a `NodeDecoder` and the node's table (`NodeUsage`) taking its
///   samples by slot and its reshapes — accepts exactly what the model's path accepts and
///   holds the same view;
/// - whatever the quick decoder (`kubepulse_proto::quick`) reads, as one message or as the
///   whole input taken for a relay batch, prost decodes to the same.
pub fn stream(data: &[u8]) {
    if let Some(quick) = v1::RelayBatch::quick_decode(data) {
        let decoded = v1::RelayBatch::decode(data);
        assert_eq!(decoded.as_ref(), Ok(&quick), "the quick decoder differs");
    }
    let mut buf = data;
    let mut decoder = StreamDecoder::new(LIMITS);
    let mut view: Option<NodeView> = None;
    let mut node = NodeDecoder::with_names(LIMITS, Arc::default());
    let mut table: Option<NodeUsage> = None;
    for _ in 0..MAX_MESSAGES {
        if buf.is_empty() {
            break;
        }
        let Ok(len) = prost::encoding::decode_varint(&mut buf) else {
            break;
        };
        let Some(len) = usize::try_from(len).ok().filter(|len| *len <= buf.len()) else {
            break;
        };
        let (bytes, rest) = buf.split_at(len);
        buf = rest;
        let decoded = v1::AgentMessage::decode(bytes);
        if let Some(quick) = v1::AgentMessage::quick_decode(bytes) {
            assert_eq!(decoded.as_ref(), Ok(&quick), "the quick decoder differs");
        }
        let Ok(msg) = decoded else {
            break;
        };
        match msg.kind {
            Some(agent_message::Kind::Snapshot(snapshot)) => match decoder.snapshot(&snapshot) {
                Ok(next) => {
                    let held = node.snapshot(&snapshot).expect("the node decoder agrees");
                    assert_eq!(held, next, "the node decoder's table differs");
                    table = Some(held);
                    check_view(&next);
                    check_snapshot_round_trip(&next);
                    if let Some(prev) = &view {
                        let mut patched = prev.clone();
                        apply(&mut patched, &diff(prev, &next)).expect("diff applies to its base");
                        assert_eq!(patched, next, "apply(prev, diff(prev, next)) != next");
                    }
                    view = Some(next);
                }
                Err(_) => {
                    assert!(
                        node.snapshot(&snapshot).is_err(),
                        "the node decoder accepts"
                    );
                    view = None;
                    table = None;
                }
            },
            Some(agent_message::Kind::Delta(delta)) => {
                let Some(current) = view.as_mut() else {
                    continue;
                };
                let applied = decoder
                    .delta(&delta)
                    .map_err(|e| e.to_string())
                    .and_then(|d| apply(current, &d).map_err(|e| e.to_string()));
                let held = table.as_mut().expect("a table beside every view");
                let taken = match node.delta(&delta) {
                    Ok(NodeDelta::Samples(samples)) => held.write(&samples),
                    Ok(NodeDelta::Reshape(reshape)) => held.reshape(&reshape),
                    Err(_) => false,
                };
                assert_eq!(
                    taken,
                    applied.is_ok(),
                    "the node path disagrees: {applied:?}"
                );
                match applied {
                    Ok(()) => {
                        check_view(current);
                        assert_eq!(held, current, "the node path's table differs");
                    }
                    Err(_) => {
                        view = None;
                        table = None;
                    }
                }
            }
            _ => {}
        }
    }
}

fn check_view(view: &NodeView) {
    assert!(
        view.pods.len() <= LIMITS.max_pods,
        "{} pods accepted",
        view.pods.len()
    );
    assert!(
        view.container_count() <= LIMITS.max_containers,
        "{} containers accepted",
        view.container_count()
    );
    for (key, pod) in &view.pods {
        assert!(!pod.containers.is_empty(), "empty pod {key} accepted");
        assert!(pod.containers.values().all(|s| s.window.as_nanos() > 0));
    }
    assert!(view.node.is_none_or(|s| s.window.as_nanos() > 0));
}

fn check_snapshot_round_trip(view: &NodeView) {
    let wire = StreamEncoder::new().snapshot(view);
    let bytes = wire.encode_to_vec();
    let decoded = v1::Snapshot::decode(bytes.as_slice()).expect("our own encoding decodes");
    let back = StreamDecoder::new(LIMITS)
        .snapshot(&decoded)
        .expect("a re-encoded accepted view is accepted");
    assert_eq!(&back, view, "snapshot round trip changed the view");
}

/// Seed inputs: streams as a real agent writes them (`StreamEncoder`), and a few that break
/// the rules on purpose. `proto/tests/fuzz_corpus.rs` keeps `corpus/stream/seed-*` equal to
/// these (`UPDATE_SEEDS=1` rewrites them).
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use kubepulse_model::{
        ContainerName, Delta, PodKey, PodView, Sample, Timestamp, Usage, Window,
    };

    let sample = |cpu: u64, ms: i64| Sample {
        usage: Usage {
            cpu_nanocores: cpu,
            memory_bytes: cpu * 1024,
        },
        timestamp: Timestamp::from_millis(ms),
        window: Window(10_000_000_000),
    };
    let pod = |ns: &str, name: &str| PodKey::new(ns, name).expect("valid pod key");
    let container = |name: &str| ContainerName::new(name).expect("valid container name");
    let view = |n_pods: usize, ms: i64| {
        let mut v = NodeView {
            node: Some(sample(1_000_000, ms)),
            ..NodeView::default()
        };
        for i in 0..n_pods {
            let mut p = PodView::default();
            p.containers
                .insert(container("app"), sample(1000 + i as u64, ms + i as i64));
            if i % 2 == 0 {
                p.containers
                    .insert(container("sidecar"), sample(7, ms - 250));
            }
            v.pods.insert(pod("default", &format!("pod-{i}")), p);
        }
        v
    };
    let frame = |seq: u64, kind: agent_message::Kind| {
        v1::AgentMessage {
            kind: Some(kind),
            seq,
        }
        .encode_length_delimited_to_vec()
    };
    let hello = frame(
        0,
        agent_message::Kind::Hello(v1::Hello {
            node_name: "node-1".to_owned(),
            epoch: 7,
            poll_interval_ms: 1000,
            agent_version: "0.1.0".to_owned(),
            token: String::new(),
        }),
    );

    let mut seeds = Vec::new();

    // snapshot, then deltas that change, add, remove a container, remove a pod, clear the
    // node, then only change samples
    let mut enc = StreamEncoder::new();
    let v0 = view(3, 1_700_000_000_000);
    let mut view1 = v0.clone();
    view1
        .pods
        .get_mut(&pod("default", "pod-1"))
        .expect("pod-1")
        .containers
        .insert(container("app"), sample(5000, 1_700_000_001_000));
    view1
        .pods
        .entry(pod("kube-system", "dns"))
        .or_default()
        .containers
        .insert(container("coredns"), sample(3, 1_700_000_001_000));
    let mut view2 = view1.clone();
    view2
        .pods
        .get_mut(&pod("default", "pod-0"))
        .expect("pod-0")
        .containers
        .remove(&container("sidecar"));
    view2.pods.remove(&pod("default", "pod-2"));
    view2.node = None;
    // the same pods and containers with new samples: samples by slot on the aggregator's path
    let mut view3 = view2.clone();
    for (i, s) in view3
        .pods
        .values_mut()
        .flat_map(|p| p.containers.values_mut())
        .enumerate()
    {
        *s = sample(2000 + i as u64, 1_700_000_002_000);
    }
    let mut steady = hello.clone();
    steady.extend(frame(0, agent_message::Kind::Snapshot(enc.snapshot(&v0))));
    steady.extend(frame(
        1,
        agent_message::Kind::Delta(enc.delta(&diff(&v0, &view1))),
    ));
    steady.extend(frame(
        2,
        agent_message::Kind::Delta(enc.delta(&diff(&view1, &view2))),
    ));
    steady.extend(frame(
        3,
        agent_message::Kind::Delta(enc.delta(&diff(&view2, &view3))),
    ));
    steady.extend(frame(
        2,
        agent_message::Kind::Status(v1::ScrapeStatus {
            ok: true,
            ..Default::default()
        }),
    ));
    // a resync: a second snapshot restarts the dictionary
    steady.extend(frame(
        4,
        agent_message::Kind::Snapshot(enc.snapshot(&view1)),
    ));
    seeds.push(("seed-steady", steady));

    // a snapshot at the limits, and one over them
    let mut at_limit = Vec::new();
    at_limit.extend(frame(
        0,
        agent_message::Kind::Snapshot(
            StreamEncoder::new().snapshot(&view(LIMITS.max_pods, 1_700_000_000_000)),
        ),
    ));
    seeds.push(("seed-at-pod-limit", at_limit));
    let mut over = Vec::new();
    over.extend(frame(
        0,
        agent_message::Kind::Snapshot(
            StreamEncoder::new().snapshot(&view(LIMITS.max_pods + 1, 1_700_000_000_000)),
        ),
    ));
    seeds.push(("seed-over-pod-limit", over));

    // deltas that do not fit: an unknown id, a removal of what is absent, an emptied pod
    let mut enc = StreamEncoder::new();
    let small = view(2, 1_700_000_000_000);
    let mut bad = frame(0, agent_message::Kind::Snapshot(enc.snapshot(&small)));
    bad.extend(frame(
        1,
        agent_message::Kind::Delta(v1::Delta {
            removed_containers: vec![999],
            ..Default::default()
        }),
    ));
    bad.extend(frame(
        2,
        agent_message::Kind::Snapshot(enc.snapshot(&small)),
    ));
    let emptied = Delta {
        container_removals: vec![(pod("default", "pod-1"), container("app"))],
        ..Delta::default()
    };
    bad.extend(frame(3, agent_message::Kind::Delta(enc.delta(&emptied))));
    bad.extend(frame(
        4,
        agent_message::Kind::Delta(v1::Delta {
            node: Some(v1::Usage {
                window_ns: 0,
                ..Default::default()
            }),
            node_cleared: true,
            ..Default::default()
        }),
    ));
    seeds.push(("seed-misfits", bad));

    // dictionary abuse: a duplicate pod id, a duplicate pod name, a container of an unknown pod
    let def = |id: u32, name: &str| v1::PodDef {
        id,
        namespace: "default".to_owned(),
        name: name.to_owned(),
    };
    let mut dict = Vec::new();
    for pods in [
        vec![def(1, "a"), def(1, "b")],
        vec![def(1, "a"), def(2, "a")],
        vec![def(1, "a")],
    ] {
        dict.extend(frame(
            0,
            agent_message::Kind::Snapshot(v1::Snapshot {
                base_timestamp_ms: 1_700_000_000_000,
                pods,
                containers: vec![v1::ContainerDef {
                    id: 5,
                    pod_id: 9,
                    name: "app".to_owned(),
                }],
                ..Default::default()
            }),
        ));
    }
    seeds.push(("seed-dictionary", dict));

    // timestamps at the edges of the accepted range
    let mut edges = Vec::new();
    for (base, offset, sub) in [
        (i64::MAX, 1, 0),
        (i64::MIN, -1, 0),
        (3_153_600_000_000, 0, 999_999),
        (0, -3_153_600_000_000, 1_000_000),
    ] {
        edges.extend(frame(
            0,
            agent_message::Kind::Snapshot(v1::Snapshot {
                base_timestamp_ms: base,
                node: Some(v1::Usage {
                    cpu_nanocores: u64::MAX,
                    memory_bytes: u64::MAX,
                    timestamp_offset_ms: offset,
                    window_ns: u64::MAX,
                    timestamp_sub_ms_ns: sub,
                }),
                ..Default::default()
            }),
        ));
    }
    seeds.push(("seed-timestamp-edges", edges));
    seeds
}
