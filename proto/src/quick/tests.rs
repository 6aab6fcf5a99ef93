use proptest::prelude::*;
use prost::Message;

use super::QuickDecode;
use crate::v1::{self, agent_message};

/// What prost makes of `bytes`, and what the quick decoder does: equal whenever the quick one
/// decodes at all.
fn agrees<M: QuickDecode + PartialEq + std::fmt::Debug>(bytes: &[u8]) -> Option<M> {
    let quick = M::quick_decode(bytes)?;
    let prost = M::decode(bytes);
    assert_eq!(prost.as_ref(), Ok(&quick), "bytes {bytes:02x?}");
    Some(quick)
}

fn usage() -> impl Strategy<Value = v1::Usage> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<i64>(),
        any::<u64>(),
        prop_oneof![Just(0u32), any::<u32>()],
    )
        .prop_map(|(cpu, mem, ts, window, sub)| v1::Usage {
            cpu_nanocores: cpu,
            memory_bytes: mem,
            timestamp_offset_ms: ts,
            window_ns: window,
            timestamp_sub_ms_ns: sub,
        })
}

fn steady_delta() -> impl Strategy<Value = v1::Delta> {
    (
        any::<i64>(),
        proptest::option::of(usage()),
        any::<bool>(),
        proptest::collection::vec(
            (any::<u32>(), proptest::option::of(usage())).prop_map(|(id, usage)| {
                v1::ContainerUsage {
                    container_id: id,
                    usage,
                }
            }),
            0..60,
        ),
    )
        .prop_map(|(base, node, cleared, usages)| v1::Delta {
            base_timestamp_ms: base,
            node,
            node_cleared: cleared,
            usages,
            ..Default::default()
        })
}

/// Messages the quick decoder reads, and some it leaves to prost.
fn agent_message() -> impl Strategy<Value = v1::AgentMessage> {
    let kind = prop_oneof![
        4 => steady_delta().prop_map(agent_message::Kind::Delta),
        2 => (any::<bool>(), any::<u32>(), any::<u32>()).prop_map(|(ok, issues, dropped)| {
            agent_message::Kind::Status(v1::ScrapeStatus {
                ok,
                decode_issues: issues,
                pending_dropped: dropped,
                ..Default::default()
            })
        }),
        1 => "[a-z ]{1,12}".prop_map(|error| agent_message::Kind::Status(v1::ScrapeStatus {
            error,
            ..Default::default()
        })),
        1 => (steady_delta(), any::<u32>()).prop_map(|(mut d, id)| {
            d.removed_pods = vec![id];
            agent_message::Kind::Delta(d)
        }),
        1 => Just(agent_message::Kind::Snapshot(v1::Snapshot {
            base_timestamp_ms: 1,
            ..Default::default()
        })),
    ];
    (proptest::option::of(kind), any::<u64>())
        .prop_map(|(kind, seq)| v1::AgentMessage { kind, seq })
}

fn relay_batch() -> impl Strategy<Value = v1::RelayBatch> {
    proptest::collection::vec(
        (
            any::<u32>(),
            proptest::option::of(agent_message()),
            any::<bool>(),
        )
            .prop_map(|(link, message, closed)| v1::RelayFrame {
                link,
                message,
                closed,
            }),
        0..8,
    )
    .prop_map(|frames| v1::RelayBatch { frames })
}

/// Steady deltas and statuses without text are what the quick decoder is for: it must read
/// them, or it saves nothing.
fn quick_form(m: &v1::AgentMessage) -> bool {
    match &m.kind {
        Some(agent_message::Kind::Delta(d)) => {
            d.new_pods.is_empty()
                && d.new_containers.is_empty()
                && d.removed_pods.is_empty()
                && d.removed_containers.is_empty()
        }
        Some(agent_message::Kind::Status(s)) => {
            s.error.is_empty() && s.node_pending.is_empty() && s.pending.is_empty()
        }
        Some(_) => false,
        None => true,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn agent_messages_decode_as_prost_does(m in agent_message()) {
        let bytes = m.encode_to_vec();
        let quick = agrees::<v1::AgentMessage>(&bytes);
        prop_assert_eq!(quick.is_some(), quick_form(&m));
    }

    #[test]
    fn relay_batches_decode_as_prost_does(b in relay_batch()) {
        let bytes = b.encode_to_vec();
        let quick = agrees::<v1::RelayBatch>(&bytes);
        // a frame's message in another form is decoded by prost, inside the quick batch
        prop_assert!(quick.is_some());
    }

    #[test]
    fn damaged_bytes_never_decode_otherwise_than_prost(
        b in relay_batch(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = b.encode_to_vec();
        if bytes.is_empty() {
            return Ok(());
        }
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        agrees::<v1::RelayBatch>(&bytes);
        agrees::<v1::AgentMessage>(&bytes);
        bytes.truncate(cut.index(bytes.len()));
        agrees::<v1::RelayBatch>(&bytes);
        agrees::<v1::AgentMessage>(&bytes);
    }

    #[test]
    fn arbitrary_bytes_never_decode_otherwise_than_prost(
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        agrees::<v1::RelayBatch>(&bytes);
        agrees::<v1::AgentMessage>(&bytes);
    }
}

#[test]
fn forms_left_to_prost() {
    let status = |f: fn(&mut v1::ScrapeStatus)| {
        let mut s = v1::ScrapeStatus::default();
        f(&mut s);
        v1::AgentMessage {
            kind: Some(agent_message::Kind::Status(s)),
            seq: 3,
        }
        .encode_to_vec()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "status with an error",
            status(|s| s.error = "refused".into()),
        ),
        (
            "status with pending",
            status(|s| s.pending.push(v1::Pending::default())),
        ),
        // seq (15) twice: prost keeps the last
        ("a field twice", vec![0x78, 1, 0x78, 2]),
        // field 16, a varint: prost skips it
        ("an unknown field", vec![0x80, 0x01, 5]),
        // seq as a fixed64: prost refuses it
        (
            "a field of another wire type",
            vec![0x79, 0, 0, 0, 0, 0, 0, 0, 0],
        ),
        // a delta, then a status: prost keeps the status
        ("two kinds", vec![0x1a, 0, 0x22, 0]),
        // an 11-byte varint
        (
            "a varint too long",
            vec![
                0x78, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
        ),
    ];
    for (what, bytes) in cases {
        assert_eq!(
            v1::AgentMessage::quick_decode(&bytes),
            None,
            "{what}: {bytes:02x?}"
        );
    }
    // and the same inside a relay frame: the frame's message goes to prost, the batch stays quick
    let batch = v1::RelayBatch {
        frames: vec![v1::RelayFrame {
            link: 7,
            message: Some(
                v1::AgentMessage::decode(&status(|s| s.error = "refused".into())[..]).unwrap(),
            ),
            closed: false,
        }],
    };
    let bytes = batch.encode_to_vec();
    assert_eq!(agrees::<v1::RelayBatch>(&bytes), Some(batch));
}

#[test]
fn varints_at_their_limits() {
    // seq = u64::MAX (10 bytes, the last 1) is read; a 10th byte of 2 is refused by both
    let max = [
        0x78, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
    ];
    assert_eq!(
        agrees::<v1::AgentMessage>(&max).map(|m| m.seq),
        Some(u64::MAX)
    );
    let over = [
        0x78, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
    ];
    assert_eq!(v1::AgentMessage::quick_decode(&over), None);
    assert!(v1::AgentMessage::decode(&over[..]).is_err());
    // a link beyond u32 is truncated by prost: left to it
    let frame = [0x0a, 6, 0x08, 0x80, 0x80, 0x80, 0x80, 0x10];
    assert_eq!(v1::RelayBatch::quick_decode(&frame), None);
}

#[test]
fn fields_out_of_order_or_twice_in_a_usage() {
    // a delta (field 3 of the message) of one container usage (field 6) whose usage (field 2
    // of it) holds `usage`
    let delta_of = |usage: &[u8]| {
        let mut cu = vec![0x08, 9, 0x12, usage.len() as u8];
        cu.extend_from_slice(usage);
        let mut delta = vec![0x32, cu.len() as u8];
        delta.extend(cu);
        let mut msg = vec![0x1a, delta.len() as u8];
        msg.extend(delta);
        msg
    };
    let cpu = |m: &v1::AgentMessage| match &m.kind {
        Some(agent_message::Kind::Delta(d)) => d.usages[0].usage.map(|u| u.cpu_nanocores),
        _ => None,
    };
    // memory before cpu: read, in any order, as prost reads it
    let m = agrees::<v1::AgentMessage>(&delta_of(&[0x10, 5, 0x08, 7])).unwrap();
    assert_eq!(cpu(&m), Some(7));
    // the container's id after its usage: the same
    let cu = [0x12, 2, 0x08, 7, 0x08, 9];
    let mut msg = vec![0x1a, cu.len() as u8 + 2, 0x32, cu.len() as u8];
    msg.extend(cu);
    let m = agrees::<v1::AgentMessage>(&msg).unwrap();
    assert_eq!(cpu(&m), Some(7));
    // cpu twice: prost keeps the last; left to it
    assert_eq!(
        v1::AgentMessage::quick_decode(&delta_of(&[0x08, 7, 0x08, 8])),
        None
    );
    assert_eq!(
        v1::AgentMessage::decode(&delta_of(&[0x08, 7, 0x08, 8])[..])
            .ok()
            .as_ref()
            .and_then(cpu),
        Some(8)
    );
}
