//! Pure node-side logic of the agent: the stages between the kubelet's bytes and the
//! [`NodeView`](kubepulse_model::NodeView) the agent streams. No I/O, no clock reads: the
//! shell passes the body and the scrape time in, and every other time comes from the kubelet's
//! own sample timestamps.
//!
//! ```text
//! kubelet body ─► decode::decode ─► ScrapeBatch ─► NodeState::observe ─► NodeView ─► model::diff
//!                 (+ DecodeIssues)                 (rate::cpu_rate)      (+ pending reasons)
//! ```
//!
//! - [`decode`](mod@decode): Prometheus text from `/metrics/resource` into raw cumulative points; one bad
//!   line never drops the batch.
//! - [`rate`]: CPU nanocores from two cumulative samples, exact integer arithmetic.
//! - [`node_state`]: two points per series, restart and reset handling, the fresh-container
//!   shortcut, and which pods can be served.
//! - [`repeat`]: recognises a body already decoded (the kubelet refreshes every 10–15 s, the
//!   agent polls every second), so decode and observe run once per refresh.
//! - [`render`](mod@render): the decoder backwards (kubelet-format text), for tests, benches and simulated
//!   kubelets.
#![warn(missing_docs)]

pub mod decode;
pub mod node_state;
pub mod rate;
pub mod render;
pub mod repeat;

#[cfg(test)]
mod snapshot;

pub use decode::{
    CpuPoint, DecodeIssue, DecodeIssueKind, Decoded, MemoryPoint, RawContainer, RawNode,
    ScrapeBatch, decode, decode_body,
};
pub use node_state::{NodeState, NodeStateConfig, ObserveSummary, PendingReason};
pub use rate::{Cumulative, RateError, cpu_rate};
pub use render::render;
pub use repeat::{Read, RepeatFilter};
