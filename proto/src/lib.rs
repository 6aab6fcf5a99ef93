//! The agent ⇄ aggregator wire contract, `kubepulse.v1`, and its translation to
//! [`kubepulse_model`] types.
//!
//! Only this crate knows the protobuf types of the ingest stream: [`convert`] turns model
//! views and deltas into messages (assigning per-stream dictionary ids) and back (validating
//! every wire value). Compatibility rules for `kubepulse/v1/ingest.proto`: add fields, never
//! change or reuse a field number, and give every new field a zero value that keeps the old
//! behaviour.
#![warn(missing_docs)]

pub mod codec;
pub mod convert;
pub mod quick;

/// Generated protobuf and tonic types for `kubepulse.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("kubepulse.v1");
}

pub use convert::{Limits, NodeDecoder, NodeDelta, StreamDecoder, StreamEncoder, WireError};
