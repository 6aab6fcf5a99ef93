//! What the aggregator pays to take one agent message into a node's table, by the way it
//! decodes: `StreamDecoder` (names per sample; the store finds each sample's slot by name,
//! as before samples by slot) against `NodeDecoder` (samples by slot; the store writes them
//! in place), for a steady delta and for a delta that swaps a pod (a reshape); and the bytes
//! of a relay batch of ten steady deltas to messages, by prost and by `kubepulse_proto::quick`.
//!
//! `cargo bench -p kubepulse-proto --bench decode`
//!
//! The node has 30 pods, 54 containers. Each iteration starts from a decoder and a table that
//! just took the node's snapshot (built outside the timing).

use std::sync::Arc;

use divan::{Bencher, black_box};
use kubepulse_model::{
    ContainerName, NodeUsage, NodeView, PodKey, PodView, Sample, Timestamp, Usage, Window, diff,
};
use kubepulse_proto::quick::QuickDecode;
use kubepulse_proto::{Limits, NodeDecoder, NodeDelta, StreamDecoder, StreamEncoder, v1};

fn main() {
    divan::main();
}

const PODS: usize = 30;

fn sample(cpu: u64) -> Sample {
    Sample {
        usage: Usage {
            cpu_nanocores: cpu,
            memory_bytes: 1 << 20,
        },
        timestamp: Timestamp::from_millis(1_717_243_214_000 + cpu as i64),
        window: Window(15_000_000_000),
    }
}

/// The node's pods named `pod-{first}`…, 24 of them with a sidecar; samples from `cpu`.
fn view(first: usize, cpu: u64) -> NodeView {
    let mut v = NodeView {
        node: Some(sample(cpu)),
        ..NodeView::default()
    };
    for i in first..first + PODS {
        let mut pod = PodView::default();
        pod.containers
            .insert(ContainerName::new("app").unwrap(), sample(cpu + i as u64));
        if i % 5 != 0 {
            pod.containers
                .insert(ContainerName::new("sidecar").unwrap(), sample(cpu + 7));
        }
        let namespace = if i % 3 == 0 { "kube-system" } else { "default" };
        v.pods
            .insert(PodKey::new(namespace, &format!("pod-{i}")).unwrap(), pod);
    }
    v
}

/// A snapshot of the node and the next delta: new samples for every container (`steady`), or
/// the first pod swapped for a new one.
fn messages(steady: bool) -> (v1::Snapshot, v1::Delta) {
    let mut enc = StreamEncoder::new();
    let from = view(0, 1000);
    let snapshot = enc.snapshot(&from);
    let to = if steady { view(0, 2000) } else { view(1, 1000) };
    (snapshot, enc.delta(&diff(&from, &to)))
}

fn by_name(bencher: Bencher<'_, '_>, steady: bool) {
    let (snapshot, delta) = messages(steady);
    bencher
        .with_inputs(|| {
            let mut dec = StreamDecoder::with_names(Limits::default(), Arc::default());
            let table = NodeUsage::from(dec.snapshot(&snapshot).unwrap());
            (dec, table)
        })
        .bench_local_values(|(mut dec, mut table)| {
            let d = dec.delta(black_box(&delta)).unwrap();
            table.apply(&d).unwrap();
            (dec, table)
        });
}

fn by_slot(bencher: Bencher<'_, '_>, steady: bool) {
    let (snapshot, delta) = messages(steady);
    bencher
        .with_inputs(|| {
            let mut dec = NodeDecoder::with_names(Limits::default(), Arc::default());
            let table = dec.snapshot(&snapshot).unwrap();
            (dec, table)
        })
        .bench_local_values(|(mut dec, mut table)| {
            match dec.delta(black_box(&delta)).unwrap() {
                NodeDelta::Samples(s) => assert!(table.write(&s)),
                NodeDelta::Reshape(r) => assert!(table.reshape(&r)),
            }
            (dec, table)
        });
}

/// A steady delta, names per sample (the baseline).
#[divan::bench]
fn steady_by_name(bencher: Bencher<'_, '_>) {
    by_name(bencher, true);
}

/// A steady delta, samples by slot.
#[divan::bench]
fn steady_by_slot(bencher: Bencher<'_, '_>) {
    by_slot(bencher, true);
}

/// A pod swapped, names per sample (the baseline).
#[divan::bench]
fn reshape_by_name(bencher: Bencher<'_, '_>) {
    by_name(bencher, false);
}

/// A pod swapped, through the full dictionary and back.
#[divan::bench]
fn reshape_by_slot(bencher: Bencher<'_, '_>) {
    by_slot(bencher, false);
}

/// A relay batch of ten nodes' steady deltas, as the codec gets it.
fn batch_bytes() -> Vec<u8> {
    let (_, delta) = messages(true);
    let frames = (0..10)
        .map(|link| v1::RelayFrame {
            link,
            message: Some(v1::AgentMessage {
                kind: Some(v1::agent_message::Kind::Delta(delta.clone())),
                seq: 5,
            }),
            closed: false,
        })
        .collect();
    prost::Message::encode_to_vec(&v1::RelayBatch { frames })
}

/// A batch's bytes to messages, by prost (the baseline).
#[divan::bench]
fn batch_of_ten_prost(bencher: Bencher<'_, '_>) {
    let bytes = batch_bytes();
    bencher
        .bench_local(|| <v1::RelayBatch as prost::Message>::decode(black_box(&bytes[..])).unwrap());
}

/// A batch's bytes to messages, by the quick decoder.
#[divan::bench]
fn batch_of_ten_quick(bencher: Bencher<'_, '_>) {
    let bytes = batch_bytes();
    bencher.bench_local(|| v1::RelayBatch::quick_decode(black_box(&bytes)).unwrap());
}
