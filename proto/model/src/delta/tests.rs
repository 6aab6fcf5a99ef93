use proptest::prelude::*;

use super::*;
use crate::usage::{Timestamp, Usage, Window};

fn sample(cpu: u64, mem: u64, ts: i64) -> Sample {
    Sample {
        usage: Usage {
            cpu_nanocores: cpu,
            memory_bytes: mem,
        },
        timestamp: Timestamp::from_millis(ts),
        window: Window(15_000_000_000),
    }
}

/// (namespace, pod, [(container, sample)])
type PodSpec<'a> = (&'a str, &'a str, &'a [(&'a str, Sample)]);

fn view(node: Option<Sample>, pods: &[PodSpec<'_>]) -> NodeView {
    let mut v = NodeView {
        node,
        ..NodeView::default()
    };
    for (ns, name, containers) in pods {
        let pod = v.pods.entry(PodKey::new(ns, name).unwrap()).or_default();
        for (c, s) in *containers {
            pod.containers.insert(ContainerName::new(c).unwrap(), *s);
        }
    }
    v
}

#[test]
fn unchanged_views_give_an_empty_delta() {
    let a = view(
        Some(sample(1, 2, 3)),
        &[("ns", "p", &[("c", sample(4, 5, 6))])],
    );
    assert!(diff(&a, &a).is_empty());
}

#[test]
fn diff_names_only_what_changed() {
    let prev = view(
        Some(sample(1, 2, 3)),
        &[
            (
                "ns",
                "keep",
                &[("a", sample(1, 1, 1)), ("b", sample(2, 2, 2))],
            ),
            ("ns", "gone", &[("a", sample(1, 1, 1))]),
        ],
    );
    let next = view(
        None,
        &[
            ("ns", "keep", &[("a", sample(9, 1, 2))]),
            ("ns", "new", &[("x", sample(3, 3, 3))]),
        ],
    );
    let d = diff(&prev, &next);
    assert_eq!(d.node, NodeChange::Clear);
    assert_eq!(d.upserts.len(), 2);
    assert_eq!(
        d.container_removals,
        vec![(
            PodKey::new("ns", "keep").unwrap(),
            ContainerName::new("b").unwrap()
        )]
    );
    assert_eq!(d.pod_removals, vec![PodKey::new("ns", "gone").unwrap()]);
    let mut applied = prev.clone();
    apply(&mut applied, &d).unwrap();
    assert_eq!(applied, next);
}

#[test]
fn apply_refuses_a_delta_for_another_view() {
    let mut v = NodeView::default();
    let d = Delta {
        pod_removals: vec![PodKey::new("ns", "p").unwrap()],
        ..Delta::default()
    };
    assert_eq!(
        apply(&mut v, &d),
        Err(ApplyError::UnknownPod(PodKey::new("ns", "p").unwrap()))
    );
}

fn arb_sample() -> impl Strategy<Value = Sample> {
    (0u64..4, 0u64..4, 0i64..4).prop_map(|(c, m, t)| sample(c, m, t))
}

fn arb_view() -> impl Strategy<Value = NodeView> {
    let pod = prop::collection::btree_map(
        prop::sample::select(vec!["a", "b", "c"]),
        arb_sample(),
        1..3,
    );
    (
        prop::option::of(arb_sample()),
        prop::collection::btree_map(
            (
                prop::sample::select(vec!["n1", "n2"]),
                prop::sample::select(vec!["p1", "p2", "p3", "p4"]),
            ),
            pod,
            0..6,
        ),
    )
        .prop_map(|(node, pods)| {
            let mut v = NodeView {
                node,
                ..NodeView::default()
            };
            for ((ns, name), containers) in pods {
                let p = v.pods.entry(PodKey::new(ns, name).unwrap()).or_default();
                for (c, s) in containers {
                    p.containers.insert(ContainerName::new(c).unwrap(), s);
                }
            }
            v
        })
}

proptest! {
    #[test]
    fn applying_the_diff_reproduces_the_next_view(prev in arb_view(), next in arb_view()) {
        let d = diff(&prev, &next);
        let mut applied = prev.clone();
        apply(&mut applied, &d).unwrap();
        prop_assert_eq!(applied, next);
    }

    #[test]
    fn a_chain_of_deltas_folds_to_the_last_view(views in prop::collection::vec(arb_view(), 1..6)) {
        let mut folded = NodeView::default();
        let mut prev = NodeView::default();
        for v in &views {
            apply(&mut folded, &diff(&prev, v)).unwrap();
            prev = v.clone();
        }
        prop_assert_eq!(&folded, views.last().unwrap());
    }
}
