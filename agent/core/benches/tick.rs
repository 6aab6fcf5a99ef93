//! One agent tick on a full node: 110 pods × 3 containers in kubelet ≥ 1.29 layout
//! (reference §1.2–1.3), about 140 KB of text with the pod-level families the kubelet also
//! prints. Measures `decode`, `observe` and the whole tick (`decode` + `observe` +
//! `kubepulse_model::diff`) in steady state: the state has seen three earlier ticks (so the view
//! it replaces and the one it drops are full) and the measured body has newer timestamps and
//! counters. Budget: 200 µs per tick.
//!
//! Run with `cargo bench -p kubepulse-agent-core`. The allocation profiler counts every
//! allocation of the measured code (shown under each timing).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use divan::{AllocProfiler, Bencher, black_box};
use kubepulse_agent_core::render::go_float;
use kubepulse_agent_core::{
    CpuPoint, MemoryPoint, NodeState, NodeStateConfig, RawContainer, RawNode, ScrapeBatch, decode,
    render,
};
use kubepulse_model::{ContainerName, PodKey, Timestamp, diff};

#[global_allocator]
static ALLOC: AllocProfiler = AllocProfiler::system();

const N_PODS: usize = 110;
const CONTAINERS: [&str; 3] = ["app", "istio-proxy", "log-shipper"];
const NAMESPACES: [&str; 6] = [
    "prod",
    "payments",
    "default",
    "kube-system",
    "monitoring",
    "staging",
];
const APPS: [&str; 8] = [
    "shop", "cart", "checkout", "auth", "search", "api", "web", "worker",
];
/// The first tick's kubelet time; each tick is 15 s later.
const T0_MS: i64 = 1_717_243_195_318;
const TICK_MS: i64 = 15_000;

fn main() {
    let body = kubelet_body(MEASURED_TICK);
    eprintln!(
        "kubelet body: {} bytes, {} lines",
        body.len(),
        body.iter().filter(|&&b| b == b'\n').count()
    );
    divan::main();
}

/// A deterministic pseudo-random number for (pod, container, salt).
fn mix(pod_idx: usize, container_idx: usize, salt: u64) -> u64 {
    let mut x = (pod_idx as u64) << 32 ^ (container_idx as u64) << 8 ^ salt;
    x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    x.wrapping_mul(0xBF58_476D_1CE4_E5B9) ^ (x >> 32)
}

/// The batch a kubelet would report at tick `tick` (0, 1, 2, ...).
fn kubelet_batch(tick: i64) -> ScrapeBatch {
    let mut pods = BTreeMap::new();
    for pod_idx in 0..N_PODS {
        let namespace = NAMESPACES[pod_idx % NAMESPACES.len()];
        // Deployment pods: <app>-<replicaset hash>-<5 chars>, as in `shop-7d9f8c6b5-x2kqp`.
        let pod_name = format!(
            "{}-{:09x}-{:05x}",
            APPS[pod_idx % APPS.len()],
            mix(pod_idx, 0, 1) % 0xf_ffff_ffff,
            mix(pod_idx, 0, 2) % 0xf_ffff
        );
        let mut containers = BTreeMap::new();
        for (container_idx, container) in CONTAINERS.iter().enumerate() {
            let jitter_ms = (mix(pod_idx, container_idx, 3) % 14_000) as i64;
            let timestamp = Timestamp::from_millis(T0_MS + tick * TICK_MS - jitter_ms);
            // Between 0.001 and 2 cores, cumulative since a start ~ a day ago, µs precision.
            let rate_ns_per_ms = mix(pod_idx, container_idx, 4) % 2_000_000 + 1_000;
            let base_ns = (mix(pod_idx, container_idx, 5) % 80_000_000_000_000) / 1_000 * 1_000;
            let cumulative_ns = base_ns + rate_ns_per_ms * (tick * TICK_MS) as u64 / 1_000 * 1_000;
            let bytes = (mix(pod_idx, container_idx, 6) % 250_000 + 100) * 4096;
            let start =
                1_717_150_000.0 + (mix(pod_idx, container_idx, 7) % 80_000_000) as f64 / 1e3;
            containers.insert(
                ContainerName::new(container).unwrap(),
                RawContainer {
                    cpu: Some(CpuPoint {
                        cumulative_ns,
                        timestamp,
                    }),
                    memory: Some(MemoryPoint { bytes, timestamp }),
                    start_time: Some(Timestamp((start * 1e9) as i64)),
                },
            );
        }
        pods.insert(PodKey::new(namespace, &pod_name).unwrap(), containers);
    }
    let node_time = Timestamp::from_millis(T0_MS + tick * TICK_MS - 2_314);
    ScrapeBatch {
        node: RawNode {
            cpu: Some(CpuPoint {
                cumulative_ns: 48_211_903_177_000 + 5_710_780 * (tick * TICK_MS) as u64,
                timestamp: node_time,
            }),
            memory: Some(MemoryPoint {
                bytes: 3_219_374_080,
                timestamp: node_time,
            }),
        },
        pods,
        resource_scrape_error: false,
    }
}

/// The kubelet's text for tick `tick`, including the `pod_*` families the decoder skips.
fn kubelet_body(tick: i64) -> Vec<u8> {
    let batch = kubelet_batch(tick);
    let text = render(&batch);
    let split = text
        .find("# HELP resource_scrape_error")
        .expect("render ends with resource_scrape_error");
    let mut pod_families = String::new();
    for (family, help, kind) in [
        (
            "pod_cpu_usage_seconds_total",
            "Cumulative cpu time consumed by the pod in core-seconds",
            "counter",
        ),
        (
            "pod_memory_working_set_bytes",
            "Current working set of the pod in bytes",
            "gauge",
        ),
    ] {
        let _ = writeln!(pod_families, "# HELP {family} [STABLE] {help}");
        let _ = writeln!(pod_families, "# TYPE {family} {kind}");
        for (pod, containers) in &batch.pods {
            let cpu: u64 = containers
                .values()
                .filter_map(|c| c.cpu)
                .map(|c| c.cumulative_ns)
                .sum();
            let memory: u64 = containers
                .values()
                .filter_map(|c| c.memory)
                .map(|m| m.bytes)
                .sum();
            let ts = containers
                .values()
                .filter_map(|c| c.cpu)
                .map(|c| c.timestamp)
                .max()
                .unwrap();
            let mut value = String::new();
            if family.starts_with("pod_cpu") {
                go_float(&mut value, cpu as f64 / 1e9);
            } else {
                go_float(&mut value, memory as f64);
            }
            let _ = writeln!(
                pod_families,
                "{family}{{namespace=\"{}\",pod=\"{}\"}} {value} {}",
                pod.namespace,
                pod.name,
                ts.as_millis()
            );
        }
    }
    format!("{}{}{}", &text[..split], pod_families, &text[split..]).into_bytes()
}

fn scrape_time(tick: i64) -> Timestamp {
    Timestamp::from_millis(T0_MS + tick * TICK_MS + 40)
}

/// The tick every bench measures.
const MEASURED_TICK: i64 = 3;

/// A state that has observed the ticks before [`MEASURED_TICK`]: both its view and its previous
/// view are full, as in steady state.
fn warmed_state() -> NodeState {
    let mut state = NodeState::new(NodeStateConfig::default());
    for tick in 0..MEASURED_TICK {
        let (batch, issues) = decode(&kubelet_body(tick), scrape_time(tick));
        assert!(issues.is_empty(), "{issues:?}");
        state.observe(&batch);
    }
    state
}

#[divan::bench]
fn decode_body(bencher: Bencher<'_, '_>) {
    let body = kubelet_body(MEASURED_TICK);
    bencher
        .counter(divan::counter::BytesCount::of_slice(&body))
        .bench(|| decode(black_box(&body), scrape_time(MEASURED_TICK)));
}

/// The real kind 1.21 capture from metrics-server's own client benchmark (70 pods).
#[divan::bench]
fn decode_real_capture(bencher: Bencher<'_, '_>) {
    let body: &[u8] = include_bytes!(
        "../tests/fixtures/kubelet/05-kind-1.21-metrics-server-bench-fixture-complete.txt"
    );
    bencher
        .counter(divan::counter::BytesCount::of_slice(body))
        .bench(|| decode(black_box(body), scrape_time(0)));
}

#[divan::bench]
fn observe(bencher: Bencher<'_, '_>) {
    let (batch, _) = decode(&kubelet_body(MEASURED_TICK), scrape_time(MEASURED_TICK));
    let state = warmed_state();
    bencher
        .with_inputs(|| state.clone())
        .bench_local_refs(|state| state.observe(black_box(&batch)));
}

#[divan::bench]
fn tick_decode_observe_diff(bencher: Bencher<'_, '_>) {
    let body = kubelet_body(MEASURED_TICK);
    let state = warmed_state();
    {
        // Sanity: the measured tick serves every pod.
        let mut check = state.clone();
        let (batch, _) = decode(&body, scrape_time(MEASURED_TICK));
        let summary = check.observe(&batch);
        assert_eq!(summary.pods_served, N_PODS, "{summary:?}");
        assert_eq!(
            diff(check.previous_view(), check.view()).upserts.len(),
            N_PODS * 3
        );
    }
    bencher
        .with_inputs(|| state.clone())
        .bench_local_refs(|state| {
            let (batch, issues) = decode(black_box(&body), scrape_time(MEASURED_TICK));
            state.observe(&batch);
            (diff(state.previous_view(), state.view()), issues)
        });
}
