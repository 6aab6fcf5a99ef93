//! Encoding throughput of Metrics API lists, in pods per second.
//!
//! `cargo bench -p kubepulse-aggregator-core --bench encode`
//!
//! - JSON, 30,000 pods × 2 containers: the VPA's all-namespaces list (goal ≥ 1M pods/s);
//! - protobuf, 1,000 pods: an HPA-sized answer;
//! - Table, 1,000 pods: `kubectl top`/`kubectl get podmetrics`.

use std::collections::BTreeMap;
use std::sync::Arc;

use divan::counter::ItemsCount;
use divan::{Bencher, black_box};
use kubepulse_aggregator_core::api::{ApiVersion, ContainerMetrics, PodMetrics};
use kubepulse_aggregator_core::encode::{self, Format, PodListStream, TableOptions};
use kubepulse_model::{ContainerName, PodKey, Timestamp, Usage, Window};

fn main() {
    divan::main();
}

const NOW: Timestamp = Timestamp(1_717_243_214_000_000_000);

/// `n` pods over 50 namespaces, 2 containers each, labels like a Deployment's, kubelet
/// timestamps spread over 15 s as a real cluster's are.
fn pods(n: usize) -> Vec<PodMetrics> {
    let web = ContainerName::new("web").unwrap();
    let proxy = ContainerName::new("istio-proxy").unwrap();
    (0..n)
        .map(|i| {
            let app = format!("app-{}", i % 700);
            let labels: BTreeMap<String, String> = [
                ("app.kubernetes.io/name", app.as_str()),
                ("pod-template-hash", "7d9f8c6b5"),
                ("tier", if i % 3 == 0 { "frontend" } else { "backend" }),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
            let i = i as u64;
            PodMetrics {
                key: PodKey::new(
                    &format!("ns-{}", i % 50),
                    &format!("{app}-7d9f8c6b5-{i:05x}"),
                )
                .unwrap(),
                labels: Arc::new(labels),
                timestamp: Timestamp(NOW.0 - ((i * 7_919) % 15_000) as i64 * 1_000_000),
                window: Window(15_000_000_000 + (i % 40) * 1_000_000),
                containers: vec![
                    ContainerMetrics {
                        name: web.clone(),
                        usage: Usage {
                            cpu_nanocores: 100_000_000 + i * 7_919,
                            memory_bytes: (60_000 + i % 5_000) * 4_096,
                        },
                    },
                    ContainerMetrics {
                        name: proxy.clone(),
                        usage: Usage {
                            cpu_nanocores: 3_000_000 + i * 31,
                            memory_bytes: (12_000 + i % 700) * 4_096,
                        },
                    },
                ],
            }
        })
        .collect()
}

#[divan::bench(args = [30_000])]
fn json_pod_list(bencher: Bencher<'_, '_>, n: usize) {
    let items = pods(n);
    bencher
        .counter(ItemsCount::new(n))
        .bench(|| encode::pod_list(black_box(&items), ApiVersion::V1beta1, &Format::Json, NOW));
}

/// The same list sent in ~64 KiB chunks, as the HTTP shell streams it.
#[divan::bench(args = [30_000])]
fn json_pod_list_streamed(bencher: Bencher<'_, '_>, n: usize) {
    let items = pods(n);
    bencher.counter(ItemsCount::new(n)).bench(|| {
        let mut stream = PodListStream::new(ApiVersion::V1beta1, NOW);
        let mut sent = 0;
        for pod in black_box(&items) {
            stream.push(pod);
            if stream.buffered() >= 64 * 1024 {
                sent += black_box(stream.take()).len();
            }
        }
        sent + stream.finish().len()
    });
}

#[divan::bench(args = [1_000])]
fn protobuf_pod_list(bencher: Bencher<'_, '_>, n: usize) {
    let items = pods(n);
    bencher.counter(ItemsCount::new(n)).bench(|| {
        encode::pod_list(
            black_box(&items),
            ApiVersion::V1beta1,
            &Format::Protobuf,
            NOW,
        )
    });
}

#[divan::bench(args = [1_000])]
fn table_pod_list(bencher: Bencher<'_, '_>, n: usize) {
    let items = pods(n);
    let format = Format::Table(TableOptions::default());
    bencher
        .counter(ItemsCount::new(n))
        .bench(|| encode::pod_list(black_box(&items), ApiVersion::V1beta1, &format, NOW));
}
