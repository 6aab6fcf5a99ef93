//! NodeState tests: scripted sequences of batches, each followed by the exact expected view,
//! pending reasons and summary; then properties over random sequences.
//!
//! Batches are written one series per line:
//! `node cpu=<seconds> mem=<bytes> @<ms>` and
//! `<namespace>/<pod> <container> cpu=<seconds> mem=<bytes> @<ms> start=<seconds>`, every field
//! optional. Seconds become nanoseconds as the decoder does (`trunc(v × 1e9)`).

use std::fmt::Write as _;

use kubepulse_model::{Timestamp, apply, diff};
use proptest::prelude::*;

use super::*;
use crate::decode::RawContainer;
use crate::snapshot::{assert_text, dump_view};

fn batch(spec: &str) -> ScrapeBatch {
    let mut batch = ScrapeBatch::default();
    for line in spec.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut words = line.split_whitespace();
        let target = words.next().unwrap();
        let mut raw = RawContainer::default();
        let container = if target == "node" {
            None
        } else {
            Some(ContainerName::new(words.next().unwrap()).unwrap())
        };
        let fields: Vec<&str> = words.collect();
        let timestamp = fields
            .iter()
            .find_map(|f| f.strip_prefix('@'))
            .map(|ms| Timestamp::from_millis(ms.parse().unwrap()))
            .expect("every line has @<ms>");
        for field in fields {
            if let Some(seconds) = field.strip_prefix("cpu=") {
                raw.cpu = Some(CpuPoint {
                    cumulative_ns: (seconds.parse::<f64>().unwrap() * 1e9) as u64,
                    timestamp,
                });
            } else if let Some(bytes) = field.strip_prefix("mem=") {
                raw.memory = Some(MemoryPoint {
                    bytes: bytes.parse().unwrap(),
                    timestamp,
                });
            } else if let Some(seconds) = field.strip_prefix("start=") {
                raw.start_time = Some(Timestamp((seconds.parse::<f64>().unwrap() * 1e9) as i64));
            }
        }
        match container {
            None => {
                batch.node.cpu = raw.cpu;
                batch.node.memory = raw.memory;
            }
            Some(container) => {
                let (namespace, pod) = target.split_once('/').unwrap();
                batch
                    .pods
                    .entry(PodKey::new(namespace, pod).unwrap())
                    .or_default()
                    .insert(container, raw);
            }
        }
    }
    batch
}

/// The summary, the view, then the pending reasons.
fn dump(state: &NodeState, summary: &ObserveSummary) -> String {
    let ObserveSummary {
        nodes_served,
        pods_served,
        containers_served,
        pods_held_back,
        containers_pending,
        rate_errors,
        restarts_detected,
    } = *summary;
    let mut out = format!(
        "served: node {nodes_served}, pods {pods_served}, containers {containers_served}; \
         held: pods {pods_held_back}, containers {containers_pending}; \
         rate errors {rate_errors}; restarts {restarts_detected}\n"
    );
    out.push_str(&dump_view(state.view()));
    if let Some(reason) = state.node_pending() {
        let _ = writeln!(out, "pending node: {reason}");
    }
    for (pod, container, reason) in state.pending() {
        let _ = writeln!(out, "pending {pod} {container}: {reason}");
    }
    out
}

/// Observes each batch in turn and compares the result with its expectation.
#[track_caller]
fn check_with(config: NodeStateConfig, steps: &[(&str, &str)]) {
    let mut state = NodeState::new(config);
    for (tick, (spec, expected)) in steps.iter().enumerate() {
        let summary = state.observe(&batch(spec));
        let actual = dump(&state, &summary);
        if std::panic::catch_unwind(|| assert_text(&actual, expected)).is_err() {
            panic!("tick {} differs (see above)", tick + 1);
        }
    }
}

#[track_caller]
fn check(steps: &[(&str, &str)]) {
    check_with(NodeStateConfig::default(), steps);
}

#[test]
fn reference_worked_example() {
    // Reference §1.3 values, then a second scrape 15.204 s later (§2.5).
    check(&[
        (
            "
            node cpu=48211.903177 mem=3219374080 @1717243193004
            prod/shop-7d9f8c6b5-x2kqp proxy cpu=3.091877 mem=495616 @1717243195290 start=1.7172380016620138e+09
            prod/shop-7d9f8c6b5-x2kqp web cpu=812.44712 mem=247070720 @1717243195318 start=1.7172380021193202e+09
            ",
            "
            served: node 0, pods 0, containers 0; held: pods 1, containers 2; rate errors 0; restarts 0
            pending node: waiting for a second sample
            pending prod/shop-7d9f8c6b5-x2kqp proxy: waiting for a second sample
            pending prod/shop-7d9f8c6b5-x2kqp web: waiting for a second sample
            ",
        ),
        (
            "
            node cpu=48298.164511 mem=3219374080 @1717243208109
            prod/shop-7d9f8c6b5-x2kqp proxy cpu=3.191877 mem=495616 @1717243210494 start=1.7172380016620138e+09
            prod/shop-7d9f8c6b5-x2kqp web cpu=815.212398 mem=247603200 @1717243210522 start=1.7172380021193202e+09
            ",
            "
            served: node 1, pods 1, containers 2; held: pods 0, containers 0; rate errors 0; restarts 0
            node: 5710780139n 3219374080B @1717243208109ms window 15.105s
            prod/shop-7d9f8c6b5-x2kqp
              proxy: 6577216n 495616B @1717243210494ms window 15.204s
              web: 181878321n 247603200B @1717243210522ms window 15.204s
            ",
        ),
    ]);
}

#[test]
fn pod_churn_forgets_absent_pods_at_once() {
    check(&[
        (
            "
            node cpu=100 mem=1000 @10000
            a/one c cpu=1 mem=10 @10000
            ",
            "
            served: node 0, pods 0, containers 0; held: pods 1, containers 1; rate errors 0; restarts 0
            pending node: waiting for a second sample
            pending a/one c: waiting for a second sample
            ",
        ),
        (
            "
            node cpu=110 mem=1000 @20000
            a/one c cpu=2 mem=10 @20000
            a/two c cpu=5 mem=20 @20000
            ",
            "
            served: node 1, pods 1, containers 1; held: pods 1, containers 1; rate errors 0; restarts 0
            node: 1000000000n 1000B @20000ms window 10.000s
            a/one
              c: 100000000n 10B @20000ms window 10.000s
            pending a/two c: waiting for a second sample
            ",
        ),
        (
            // `one` is gone: it leaves the view now; `two` gets its second sample.
            "
            node cpu=120 mem=1000 @30000
            a/two c cpu=6 mem=20 @30000
            ",
            "
            served: node 1, pods 1, containers 1; held: pods 0, containers 0; rate errors 0; restarts 0
            node: 1000000000n 1000B @30000ms window 10.000s
            a/two
              c: 100000000n 20B @30000ms window 10.000s
            ",
        ),
        (
            // `one` is back: its history was forgotten, so it waits again.
            "
            node cpu=130 mem=1000 @40000
            a/one c cpu=9 mem=10 @40000
            a/two c cpu=7 mem=20 @40000
            ",
            "
            served: node 1, pods 1, containers 1; held: pods 1, containers 1; rate errors 0; restarts 0
            node: 1000000000n 1000B @40000ms window 10.000s
            a/two
              c: 100000000n 20B @40000ms window 10.000s
            pending a/one c: waiting for a second sample
            ",
        ),
        (
            // A failed kubelet stats pass (empty batch) empties the view.
            "",
            "
            served: node 0, pods 0, containers 0; held: pods 0, containers 0; rate errors 0; restarts 0
            pending node: no cpu sample
            ",
        ),
    ]);
}

#[test]
fn container_restart_holds_the_pod_one_tick() {
    check(&[
        (
            "
            p/web app cpu=50 mem=100 @100000 start=1
            p/web side cpu=1 mem=100 @100000 start=1
            ",
            "
            served: node 0, pods 0, containers 0; held: pods 1, containers 2; rate errors 0; restarts 0
            pending node: no cpu sample
            pending p/web app: waiting for a second sample
            pending p/web side: waiting for a second sample
            ",
        ),
        (
            "
            p/web app cpu=60 mem=100 @110000 start=1
            p/web side cpu=2 mem=100 @110000 start=1
            ",
            "
            served: node 0, pods 1, containers 2; held: pods 0, containers 0; rate errors 0; restarts 0
            p/web
              app: 1000000000n 100B @110000ms window 10.000s
              side: 100000000n 100B @110000ms window 10.000s
            pending node: no cpu sample
            ",
        ),
        (
            // `app` restarted at 105 s (counter back near 0): no negative value, no spike, the
            // pod is held back; `side` keeps its history.
            "
            p/web app cpu=3 mem=50 @120000 start=105
            p/web side cpu=3 mem=100 @120000 start=1
            ",
            "
            served: node 0, pods 0, containers 0; held: pods 1, containers 1; rate errors 0; restarts 1
            pending node: no cpu sample
            pending p/web app: container restarted
            ",
        ),
        (
            "
            p/web app cpu=5 mem=50 @130000 start=105
            p/web side cpu=4 mem=100 @130000 start=1
            ",
            "
            served: node 0, pods 1, containers 2; held: pods 0, containers 0; rate errors 0; restarts 0
            p/web
              app: 200000000n 50B @130000ms window 10.000s
              side: 100000000n 100B @130000ms window 10.000s
            pending node: no cpu sample
            ",
        ),
    ]);
}

#[test]
fn restart_seen_through_a_start_time_after_the_last_sample() {
    // The first sample had no start time; the next one's start lies after it.
    check(&[
        ("p/x c cpu=50 mem=1 @100000", "
            served: node 0, pods 0, containers 0; held: pods 1, containers 1; rate errors 0; restarts 0
            pending node: no cpu sample
            pending p/x c: waiting for a second sample
            "),
        ("p/x c cpu=1 mem=1 @200000 start=150", "
            served: node 0, pods 0, containers 0; held: pods 1, containers 1; rate errors 0; restarts 1
            pending node: no cpu sample
            pending p/x c: container restarted
            "),
    ]);
}

#[test]
fn counter_decrease_without_restart_needs_two_new_samples() {
    check(&[
        ("node cpu=500 mem=1 @10000", "
            served: node 0, pods 0, containers 0; held: pods 0, containers 0; rate errors 0; restarts 0
            pending node: waiting for a second sample
            "),
        ("node cpu=510 mem=1 @20000", "
            served: node 1, pods 0, containers 0; held: pods 0, containers 0; rate errors 0; restarts 0
            node: 1000000000n 1B @20000ms window 10.000s
            "),
        (
            // Node reboot: the counter starts over and there is no start time to tell.
            "node cpu=2 mem=1 @30000",
            "
            served: node 0, pods 0, containers 0; held: pods 0, containers 0; rate errors 1; restarts 0
            pending node: no rate: cumulative cpu decreased from 510000000000 ns to 2000000000 ns
            ",
        ),
        (
            // An unrefreshed cache repeats the post-reset sample: still the same bad pair.
            "node cpu=2 mem=1 @30000",
            "
            served: node 0, pods 0, containers 0; held: pods 0, containers 0; rate errors 1; restarts 0
            pending node: no rate: cumulative cpu decreased from 510000000000 ns to 2000000000 ns
            ",
        ),
        ("node cpu=7 mem=1 @40000", "
            served: node 1, pods 0, containers 0; held: pods 0, containers 0; rate errors 0; restarts 0
            node: 500000000n 1B @40000ms window 10.000s
            "),
    ]);
    // The same for a container.
    check(&[
        ("p/x c cpu=10 mem=1 @10000 start=1", "
            served: node 0, pods 0, containers 0; held: pods 1, containers 1; rate errors 0; restarts 0
            pending node: no cpu sample
            pending p/x c: waiting for a second sample
            "),
        ("p/x c cpu=4 mem=1 @20000 start=1", "
            served: node 0, pods 0, containers 0; held: pods 1, containers 1; rate errors 1; restarts 0
            pending node: no cpu sample
            pending p/x c: no rate: cumulative cpu decreased from 10000000000 ns to 4000000000 ns
            "),
        ("p/x c cpu=5 mem=1 @30000 start=1", "
            served: node 0, pods 1, containers 1; held: pods 0, containers 0; rate errors 0; restarts 0
            p/x
              c: 100000000n 1B @30000ms window 10.000s
            pending node: no cpu sample
            "),
    ]);
}

#[test]
fn fresh_container_shortcut() {
    check(&[
        (
            // 12 s old: served from one sample, averaged since its start (window 12 s).
            // 9 s old: too young for the shortcut. 15 s old: not fresh any more.
            "
            p/a c cpu=6 mem=1 @112000 start=100
            p/b c cpu=6 mem=1 @109000 start=100
            p/c c cpu=6 mem=1 @115000 start=100
            ",
            "
            served: node 0, pods 1, containers 1; held: pods 2, containers 2; rate errors 0; restarts 0
            p/a
              c: 500000000n 1B @112000ms window 12.000s
            pending node: no cpu sample
            pending p/b c: waiting for a second sample
            pending p/c c: waiting for a second sample
            ",
        ),
        (
            // Still fresh at 14.5 s: measured from the start again. The others pair normally.
            "
            p/a c cpu=7.25 mem=1 @114500 start=100
            p/b c cpu=7 mem=1 @119000 start=100
            p/c c cpu=8 mem=1 @125000 start=100
            ",
            "
            served: node 0, pods 3, containers 3; held: pods 0, containers 0; rate errors 0; restarts 0
            p/a
              c: 500000000n 1B @114500ms window 14.500s
            p/b
              c: 100000000n 1B @119000ms window 10.000s
            p/c
              c: 200000000n 1B @125000ms window 10.000s
            pending node: no cpu sample
            ",
        ),
    ]);
    // A longer maximum age (a longer metric resolution) widens the shortcut.
    check_with(
        NodeStateConfig {
            fresh_container_max_age: Duration::from_secs(60),
        },
        &[("p/c c cpu=6 mem=1 @130000 start=100", "
            served: node 0, pods 1, containers 1; held: pods 0, containers 0; rate errors 0; restarts 0
            p/c
              c: 200000000n 1B @130000ms window 30.000s
            pending node: no cpu sample
            ")],
    );
}

#[test]
fn a_waiting_container_holds_its_whole_pod() {
    check(&[
        ("p/x app cpu=1 mem=1 @10000", "
            served: node 0, pods 0, containers 0; held: pods 1, containers 1; rate errors 0; restarts 0
            pending node: no cpu sample
            pending p/x app: waiting for a second sample
            "),
        ("p/x app cpu=2 mem=1 @20000", "
            served: node 0, pods 1, containers 1; held: pods 0, containers 0; rate errors 0; restarts 0
            p/x
              app: 100000000n 1B @20000ms window 10.000s
            pending node: no cpu sample
            "),
        (
            // A sidecar appears (not fresh: no start time): the pod leaves the view.
            "
            p/x app cpu=3 mem=1 @30000
            p/x sidecar cpu=1 mem=1 @30000
            ",
            "
            served: node 0, pods 0, containers 0; held: pods 1, containers 1; rate errors 0; restarts 0
            pending node: no cpu sample
            pending p/x sidecar: waiting for a second sample
            ",
        ),
        (
            "
            p/x app cpu=4 mem=1 @40000
            p/x sidecar cpu=2 mem=1 @40000
            ",
            "
            served: node 0, pods 1, containers 2; held: pods 0, containers 0; rate errors 0; restarts 0
            p/x
              app: 100000000n 1B @40000ms window 10.000s
              sidecar: 100000000n 1B @40000ms window 10.000s
            pending node: no cpu sample
            ",
        ),
    ]);
}

#[test]
fn equal_and_older_timestamps() {
    check(&[
        ("node cpu=100 mem=1 @10000", "
            served: node 0, pods 0, containers 0; held: pods 0, containers 0; rate errors 0; restarts 0
            pending node: waiting for a second sample
            "),
        (
            // Same timestamp again with nothing before it: still waiting.
            "node cpu=100 mem=1 @10000",
            "
            served: node 0, pods 0, containers 0; held: pods 0, containers 0; rate errors 0; restarts 0
            pending node: waiting for a second sample
            ",
        ),
        ("node cpu=110 mem=2 @20000", "
            served: node 1, pods 0, containers 0; held: pods 0, containers 0; rate errors 0; restarts 0
            node: 1000000000n 2B @20000ms window 10.000s
            "),
        (
            // Kubelet cache not refreshed: the same pair, the same rate.
            "node cpu=110 mem=2 @20000",
            "
            served: node 1, pods 0, containers 0; held: pods 0, containers 0; rate errors 0; restarts 0
            node: 1000000000n 2B @20000ms window 10.000s
            ",
        ),
        (
            // Older than the last but newer than the one before: paired with that one.
            "node cpu=105 mem=3 @15000",
            "
            served: node 1, pods 0, containers 0; held: pods 0, containers 0; rate errors 0; restarts 0
            node: 1000000000n 3B @15000ms window 5.000s
            ",
        ),
        (
            // Older than both: everything kept is discarded.
            "node cpu=101 mem=3 @5000",
            "
            served: node 0, pods 0, containers 0; held: pods 0, containers 0; rate errors 0; restarts 0
            pending node: sample older than the previous one
            ",
        ),
        ("node cpu=102 mem=3 @6000", "
            served: node 1, pods 0, containers 0; held: pods 0, containers 0; rate errors 0; restarts 0
            node: 1000000000n 3B @6000ms window 1.000s
            "),
    ]);
}

#[test]
fn missing_and_zero_values() {
    check(&[
        (
            "
            node cpu=0 mem=1 @10000
            p/idle c cpu=0 mem=5 @10000 start=1
            p/nomem c cpu=1 @10000
            p/nocpu c mem=5 @10000
            p/zeromem c cpu=1 mem=0 @10000
            p/exited init start=2 @10000
            p/exited main cpu=1 mem=5 @10000
            ",
            "
            served: node 0, pods 0, containers 0; held: pods 5, containers 6; rate errors 0; restarts 0
            pending node: waiting for a second sample
            pending p/exited init: no cpu sample
            pending p/exited main: waiting for a second sample
            pending p/idle c: waiting for a second sample
            pending p/nocpu c: no cpu sample
            pending p/nomem c: no memory sample
            pending p/zeromem c: memory working set is zero
            ",
        ),
        (
            // Idle containers and an idle node are served with 0. Missing or zero memory and
            // a container without CPU (an exited init container) hold their pods back.
            "
            node cpu=0 mem=1 @20000
            p/idle c cpu=0 mem=5 @20000 start=1
            p/nomem c cpu=2 @20000
            p/nocpu c mem=5 @20000
            p/zeromem c cpu=2 mem=0 @20000
            p/exited init start=2 @20000
            p/exited main cpu=2 mem=5 @20000
            ",
            "
            served: node 1, pods 1, containers 1; held: pods 4, containers 4; rate errors 0; restarts 0
            node: 0n 1B @20000ms window 10.000s
            p/idle
              c: 0n 5B @20000ms window 10.000s
            pending p/exited init: no cpu sample
            pending p/nocpu c: no cpu sample
            pending p/nomem c: no memory sample
            pending p/zeromem c: memory working set is zero
            ",
        ),
        (
            // Memory returns: the CPU history was kept, so the pod is served at once.
            "
            node cpu=1 mem=0 @30000
            p/nomem c cpu=3 mem=7 @30000
            p/zeromem c cpu=3 mem=8 @30000
            ",
            "
            served: node 0, pods 2, containers 2; held: pods 0, containers 0; rate errors 0; restarts 0
            p/nomem
              c: 100000000n 7B @30000ms window 10.000s
            p/zeromem
              c: 100000000n 8B @30000ms window 10.000s
            pending node: memory working set is zero
            ",
        ),
    ]);
}

#[test]
fn previous_view_is_the_view_before_the_last_observe() {
    let mut state = NodeState::new(NodeStateConfig::default());
    state.observe(&batch("node cpu=1 mem=1 @1000"));
    state.observe(&batch("node cpu=2 mem=1 @2000"));
    let served = state.view().clone();
    assert!(served.node.is_some());
    state.observe(&batch(""));
    assert_eq!(state.previous_view(), &served);
    assert_eq!(state.view(), &NodeView::default());
}

// === properties ===

/// One tick of a single container and the node: counter step (may go down), time step (may go
/// back or stand still), and whether the container restarts.
#[derive(Clone, Debug)]
struct Step {
    cpu_step: i64,
    time_step_ms: i64,
    restart: bool,
    memory: u64,
    present: bool,
}

fn arb_steps() -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(
        (
            -5_000_000_000i64..20_000_000_000,
            prop_oneof![Just(0i64), -20_000i64..0, 1i64..30_000],
            proptest::bool::weighted(0.15),
            0u64..3,
            proptest::bool::weighted(0.9),
        )
            .prop_map(|(cpu_step, time_step_ms, restart, memory, present)| Step {
                cpu_step,
                time_step_ms,
                restart,
                memory,
                present,
            }),
        1..30,
    )
}

proptest! {
    #[test]
    fn served_samples_come_from_a_real_pair(steps in arb_steps()) {
        let mut state = NodeState::new(NodeStateConfig::default());
        let mut streamed = NodeView::default();
        let (mut cpu_ns, mut ts_ms, mut start_ms) = (1_000_000_000i64, 1_000_000i64, 990_000i64);
        // Every point observed so far: (cpu_ns, ts_ns, start_ns).
        let mut history: Vec<(u64, i64, i64)> = Vec::new();
        for step in steps {
            cpu_ns = (cpu_ns + step.cpu_step).max(0);
            ts_ms += step.time_step_ms;
            if step.restart {
                start_ms = ts_ms - 1_000;
                cpu_ns = 0;
            }
            let timestamp = Timestamp::from_millis(ts_ms);
            let raw = RawContainer {
                cpu: Some(CpuPoint { cumulative_ns: cpu_ns as u64, timestamp }),
                memory: Some(MemoryPoint { bytes: step.memory, timestamp }),
                start_time: Some(Timestamp::from_millis(start_ms)),
            };
            let mut batch = ScrapeBatch::default();
            batch.node.cpu = raw.cpu;
            batch.node.memory = raw.memory;
            if step.present {
                batch.pods.entry(PodKey::new("ns", "pod").unwrap()).or_default()
                    .insert(ContainerName::new("c").unwrap(), raw);
            }
            let summary = state.observe(&batch);
            history.push((cpu_ns as u64, ts_ms * 1_000_000, start_ms * 1_000_000));

            let view = state.view();
            let samples = view.node.iter().chain(view.pods.values().flat_map(|p| p.containers.values()));
            for sample in samples {
                prop_assert!(sample.window.as_nanos() > 0);
                prop_assert_eq!(sample.timestamp.as_nanos(), ts_ms * 1_000_000);
                prop_assert_eq!(sample.usage.memory_bytes, step.memory);
                prop_assert!(step.memory > 0);
                // Some earlier point (or the synthetic start point) explains it exactly, with a
                // counter that did not go down: no wrap, no spike.
                let last_ts = ts_ms * 1_000_000;
                let explained = history.iter()
                    .map(|&(cpu, ts, _)| (cpu, ts))
                    .chain(std::iter::once((0, start_ms * 1_000_000)))
                    .any(|(prev_cpu, prev_ts)| {
                        prev_ts < last_ts
                            && prev_cpu <= cpu_ns as u64
                            && (last_ts - prev_ts) as u64 == sample.window.as_nanos()
                            && u128::from(sample.usage.cpu_nanocores)
                                == u128::from(cpu_ns as u64 - prev_cpu) * 1_000_000_000
                                    / u128::from(sample.window.as_nanos())
                    });
                prop_assert!(explained, "sample {:?} not explained by {:?}", sample, history);
            }
            prop_assert_eq!(summary.containers_served, view.container_count());

            // The stream of deltas rebuilds the view exactly.
            apply(&mut streamed, &diff(state.previous_view(), state.view())).unwrap();
            prop_assert_eq!(&streamed, state.view());
        }
    }
}
