//! The gRPC codec of `kubepulse.v1`: prost, with small per-stream buffers.
//!
//! tonic allocates an encode buffer and a decode buffer per RPC up front (8 KiB each by
//! default) and grows them when a message needs more. Every agent keeps one long-lived stream
//! open, and its messages are small deltas and heartbeats (a snapshot of a large node is a
//! few KiB), so an aggregator holding 10,000 streams spent ~160 MiB on buffers that are
//! mostly empty. 1 KiB buffers grow to the largest message a stream actually carries.
//!
//! Messages are decoded from one contiguous slice ([`SliceDecoder`]) rather than through
//! tonic's `DecodeBuf`, whose every `advance` (one per varint) goes through `BytesMut`: at
//! 5,000 relayed nodes that indirection alone was ~8% of the aggregator's CPU. Steady deltas
//! and heartbeats are read by [`crate::quick`] first, everything else by prost.

use std::marker::PhantomData;

use bytes::Buf;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstEncoder};

use crate::quick::QuickDecode;

/// Initial size of each per-stream buffer (tonic's default is 8 KiB).
pub const BUFFER_BYTES: usize = 1024;

/// Messages encoded before the encoder yields (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// [`ProstCodec`] with [`BUFFER_BYTES`] buffers.
#[derive(Debug, Clone)]
pub struct SmallBufferCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallBufferCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_BYTES, YIELD_THRESHOLD)
}

impl<T, U> Codec for SmallBufferCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: QuickDecode + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = SliceDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        SliceDecoder(PhantomData)
    }
}

/// Decodes a message from the contiguous bytes tonic has gathered for it.
#[derive(Debug)]
pub struct SliceDecoder<U>(PhantomData<U>);

impl<U: QuickDecode> Decoder for SliceDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let len = buf.remaining();
        let chunk = buf.chunk();
        let item = if chunk.len() == len {
            let item = U::quick_decode(chunk).map_or_else(|| U::decode(chunk), Ok);
            buf.advance(len);
            item
        } else {
            // not contiguous (tonic gathers a message into one buffer, so not expected)
            U::decode(buf.copy_to_bytes(len))
        };
        // tonic's own mapping (ProstDecoder): a message that does not decode is INTERNAL
        item.map(Some).map_err(|e| Status::internal(e.to_string()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        settings()
    }
}
