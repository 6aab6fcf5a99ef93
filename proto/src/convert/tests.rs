use kubepulse_model::{PodView, diff};
use proptest::prelude::*;
use prost::Message;

use super::*;

pub(crate) fn sample(cpu: u64, mem: u64, ts_ns: i64) -> Sample {
    Sample {
        usage: Usage {
            cpu_nanocores: cpu,
            memory_bytes: mem,
        },
        timestamp: Timestamp(ts_ns),
        window: Window(15_204_000_000),
    }
}

pub(crate) fn arb_view() -> impl Strategy<Value = NodeView> {
    let arb_sample = (
        0u64..5_000_000_000,
        0u64..1 << 40,
        1_700_000_000_000_000_000i64..1_700_000_100_000_000_000,
    )
        .prop_map(|(c, m, t)| sample(c, m, t));
    let pod = prop::collection::btree_map(
        prop::sample::select(vec!["web", "proxy", "init"]),
        arb_sample.clone(),
        1..3,
    );
    (
        prop::option::of(arb_sample),
        prop::collection::btree_map(
            (
                prop::sample::select(vec!["default", "kube-system"]),
                prop::sample::select(vec!["a", "b", "c", "d", "e"]),
            ),
            pod,
            0..8,
        ),
    )
        .prop_map(|(node, pods)| {
            let mut v = NodeView {
                node,
                ..NodeView::default()
            };
            for ((ns, name), containers) in pods {
                let mut p = PodView::default();
                for (c, s) in containers {
                    p.containers.insert(ContainerName::new(c).unwrap(), s);
                }
                v.pods.insert(PodKey::new(ns, name).unwrap(), p);
            }
            v
        })
}

proptest! {
    #[test]
    fn snapshot_round_trips(view in arb_view()) {
        let mut enc = StreamEncoder::new();
        let mut dec = StreamDecoder::new(Limits::default());
        let wire = enc.snapshot(&view).encode_to_vec();
        let decoded = dec.snapshot(&v1::Snapshot::decode(&*wire).unwrap()).unwrap();
        prop_assert_eq!(decoded, view);
    }

    #[test]
    fn a_stream_of_deltas_reproduces_every_view(views in prop::collection::vec(arb_view(), 1..6)) {
        let mut enc = StreamEncoder::new();
        let mut dec = StreamDecoder::new(Limits::default());
        let mut prev = NodeView::default();
        let mut held = dec.snapshot(&enc.snapshot(&prev)).unwrap();
        for v in &views {
            let wire = enc.delta(&diff(&prev, v)).encode_to_vec();
            let delta = dec.delta(&v1::Delta::decode(&*wire).unwrap()).unwrap();
            kubepulse_model::apply(&mut held, &delta).unwrap();
            prop_assert_eq!(&held, v);
            prev = v.clone();
        }
    }
}

#[test]
fn refuses_unknown_ids_and_bad_usage() {
    let mut dec = StreamDecoder::new(Limits::default());
    let bad = v1::Delta {
        usages: vec![v1::ContainerUsage {
            container_id: 7,
            usage: Some(v1::Usage {
                window_ns: 1,
                ..Default::default()
            }),
        }],
        ..Default::default()
    };
    assert_eq!(
        dec.delta(&bad),
        Err(WireError::UnknownId {
            kind: "container",
            id: 7
        })
    );
    let zero_window = v1::Snapshot {
        node: Some(v1::Usage::default()),
        ..Default::default()
    };
    assert_eq!(
        dec.snapshot(&zero_window),
        Err(WireError::Usage("zero window"))
    );
}

#[test]
fn enforces_limits() {
    let limits = Limits {
        max_pods: 2,
        max_containers: 10,
    };
    let mut dec = StreamDecoder::new(limits);
    let msg = v1::Snapshot {
        pods: (0..3)
            .map(|i| v1::PodDef {
                id: i,
                namespace: "ns".into(),
                name: format!("p{i}"),
            })
            .collect(),
        ..Default::default()
    };
    assert_eq!(
        dec.snapshot(&msg),
        Err(WireError::TooMany {
            what: "pods",
            limit: 2
        })
    );
}

#[test]
fn refuses_invalid_names() {
    let mut dec = StreamDecoder::new(Limits::default());
    let msg = v1::Snapshot {
        pods: vec![v1::PodDef {
            id: 0,
            namespace: "ns".into(),
            name: "../etc".into(),
        }],
        ..Default::default()
    };
    assert!(matches!(dec.snapshot(&msg), Err(WireError::Name(_))));
}

proptest! {
    /// Decoders given the same `Names` decode what they decode alone, and hold one text per
    /// distinct namespace and container name between them.
    #[test]
    fn decoders_share_names(a in arb_view(), b in arb_view()) {
        let names = Arc::new(Names::default());
        let mut shared = Vec::new();
        for view in [&a, &b] {
            let wire = StreamEncoder::new().snapshot(view);
            let mut dec = StreamDecoder::with_names(Limits::default(), Arc::clone(&names));
            let decoded = dec.snapshot(&wire).unwrap();
            prop_assert_eq!(&decoded, view);
            shared.push((dec, decoded));
        }
        let distinct: std::collections::BTreeSet<&str> = [&a, &b]
            .into_iter()
            .flat_map(|v| &v.pods)
            .flat_map(|(k, p)| {
                std::iter::once(k.namespace.as_str())
                    .chain(p.containers.keys().map(|c| c.as_str()))
            })
            .collect();
        prop_assert_eq!(names.len(), distinct.len());
    }
}
