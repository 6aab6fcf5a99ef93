//! The relay's hot path: pushing agent messages through the hub and flushing batches for three
//! upstreams (aggregator replicas), with 10,000 links open. Payloads are shared byte buffers of
//! a typical delta's size (clone = a reference count), as a shell would pass encoded messages.
//!
//! Run with `cargo bench -p kubepulse-relay-core`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use divan::{Bencher, black_box};
use kubepulse_relay_core::{Hub, HubConfig, LinkKey, MessageKind, UpstreamId};

const LINKS: usize = 10_000;
const UPSTREAMS: u64 = 3;
const DELTA_BYTES: usize = 300;

fn main() {
    divan::main();
}

fn hub_with_links(now: Instant) -> (Hub<Arc<[u8]>>, Vec<LinkKey>) {
    let mut hub = Hub::new(HubConfig {
        max_links: LINKS,
        max_pending_bytes: 1 << 30,
        ..HubConfig::default()
    });
    for u in 0..UPSTREAMS {
        hub.upstream_connected(UpstreamId(u), now);
    }
    hub.effects().for_each(drop);
    let hello: Arc<[u8]> = Arc::from(vec![0u8; 1000]);
    let links = (0..LINKS)
        .map(|i| {
            hub.open(format!("node-{i}"), hello.clone(), hello.len(), now)
                .unwrap()
        })
        .collect();
    (hub, links)
}

/// One delta per link, each upstream's batches flushed as they become due by size.
#[divan::bench(sample_count = 20)]
fn push_and_flush_a_round_of_deltas(bencher: Bencher<'_, '_>) {
    let start = Instant::now();
    let (mut hub, links) = hub_with_links(start);
    let payload: Arc<[u8]> = Arc::from(vec![1u8; DELTA_BYTES]);
    let mut now = start;
    bencher
        .counter(divan::counter::ItemsCount::new(LINKS))
        .bench_local(|| {
            now += Duration::from_millis(60);
            let mut batches = 0usize;
            for link in &links {
                hub.push(*link, payload.clone(), DELTA_BYTES, MessageKind::Delta, now)
                    .unwrap();
                for u in 0..UPSTREAMS {
                    while let Some(batch) = hub.flush(UpstreamId(u), now) {
                        batches += black_box(batch).frames.len();
                    }
                }
            }
            batches
        });
}

/// Heartbeats with an unchanged status: every one coalesced.
#[divan::bench(sample_count = 20)]
fn push_coalesced_heartbeats(bencher: Bencher<'_, '_>) {
    let start = Instant::now();
    let (mut hub, links) = hub_with_links(start);
    let payload: Arc<[u8]> = Arc::from(vec![2u8; 40]);
    let status = MessageKind::Status { fingerprint: 42 };
    for link in &links {
        hub.push(*link, payload.clone(), 40, status, start).unwrap();
    }
    let now = start + Duration::from_secs(1);
    bencher
        .counter(divan::counter::ItemsCount::new(LINKS))
        .bench_local(|| {
            for link in &links {
                black_box(hub.push(*link, payload.clone(), 40, status, now).unwrap());
            }
        });
}
