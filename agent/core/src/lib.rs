//! Pure node-side logic of the agent: the stages between the kubelet's bytes and the
//! [`NodeView`](kubepulse_model::NodeView) the agent streams. No I/O, no clock reads: the
//! shell passes the body and the scrape time in, and every other time comes from the kubelet's
//! own sample timestamps.
//!
//! - [`decode`](mod@decode): Prometheus text from `/metrics/resource` into raw cumulative
//!   points; one bad line never drops the batch.
//! - [`render`](mod@render): the decoder backwards (kubelet-format text), for tests, benches and
//!   simulated kubelets.
#![warn(missing_docs)]

pub mod decode;
pub mod render;

#[cfg(test)]
mod snapshot;

pub use decode::{
    CpuPoint, DecodeIssue, DecodeIssueKind, MemoryPoint, RawContainer, RawNode, ScrapeBatch,
    decode,
};
pub use render::render;
