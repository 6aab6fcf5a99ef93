//! The gRPC codec's decoder fed the way tonic feeds it: length-prefixed messages in a request
//! body that arrives in pieces of any size.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use kubepulse_proto::codec::SmallBufferCodec;
use kubepulse_proto::v1::{self, agent_message};
use prost::Message;
use tonic::codec::{Codec, Streaming};

fn delta(seq: u64, containers: u32) -> v1::AgentMessage {
    v1::AgentMessage {
        seq,
        kind: Some(agent_message::Kind::Delta(v1::Delta {
            base_timestamp_ms: 1_717_243_195_318,
            usages: (0..containers)
                .map(|id| v1::ContainerUsage {
                    container_id: id,
                    usage: Some(v1::Usage {
                        cpu_nanocores: 1_000_000 + u64::from(id),
                        memory_bytes: 300 << 20,
                        timestamp_offset_ms: -i64::from(id),
                        window_ns: 15_204_000_000,
                        timestamp_sub_ms_ns: 0,
                    }),
                })
                .collect(),
            ..Default::default()
        })),
    }
}

/// gRPC's framing: an uncompressed flag, the length (big-endian u32), the bytes.
fn framed(messages: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        out.push(0);
        out.extend_from_slice(&(m.len() as u32).to_be_bytes());
        out.extend_from_slice(m);
    }
    out
}

/// The body in pieces of `piece` bytes, decoded by the codec's decoder.
fn stream(body: &[u8], piece: usize) -> Streaming<v1::AgentMessage> {
    let pieces: Vec<Result<Frame<Bytes>, Infallible>> = body
        .chunks(piece)
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let body = StreamBody::new(futures::stream::iter(pieces));
    let decoder = SmallBufferCodec::<v1::AggregatorMessage, v1::AgentMessage>::default().decoder();
    Streaming::new_request(decoder, body, None, Some(4 << 20))
}

async fn collect(
    mut s: Streaming<v1::AgentMessage>,
) -> Result<Vec<v1::AgentMessage>, tonic::Status> {
    let mut out = Vec::new();
    while let Some(m) = s.message().await? {
        out.push(m);
    }
    Ok(out)
}

#[tokio::test]
async fn messages_split_across_body_pieces_decode_whole() {
    // larger than the codec's 1 KiB buffer, so the buffer grows while a message is gathered
    let sent = vec![delta(1, 54), delta(2, 0), delta(3, 200)];
    let body = framed(&sent.iter().map(Message::encode_to_vec).collect::<Vec<_>>());
    for piece in [1, 7, 1000, body.len()] {
        let got = collect(stream(&body, piece)).await.unwrap();
        assert_eq!(got, sent, "pieces of {piece} bytes");
    }
}

#[tokio::test]
async fn a_message_that_does_not_decode_is_internal_and_ends_the_stream() {
    let good = delta(1, 3).encode_to_vec();
    // field 3 (the delta) claims 100 bytes that are not there
    let bad = vec![0x1a, 100, 1, 2, 3];
    let body = framed(&[good.clone(), bad, good]);
    let mut s = stream(&body, 5);
    assert_eq!(s.message().await.unwrap(), Some(delta(1, 3)));
    let err = s.message().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal, "{err:?}");
}
