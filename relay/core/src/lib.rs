//! Pure logic of the relay tier: many agents' streams carried to every aggregator replica over
//! one stream per replica, in batches. No I/O and no clock reads: the shell passes every instant
//! in, and the payload type `M` (an agent message, on the wire) is generic, so this crate knows
//! nothing of protobuf.
//!
//! ```text
//! agent stream ─► Hub::open (hello) ─► link ─► Hub::push ─► per-upstream pending ─► Hub::flush ─► Batch
//!                 Hub::close ◄──────── agent gone            (bounded: DropUpstream)
//! upstream ─► Hub::upstream_connected (hellos replayed, every agent asked to resync)
//!          ─► Hub::on_reply (Resync → agent; Closed → agent stream ended, link closed elsewhere)
//! ```
//!
//! - [`hub`]: the state machine ([`Hub`]) and its vocabulary ([`Frame`], [`Batch`],
//!   [`Effect`], [`MessageKind`]).
#![warn(missing_docs)]

pub mod hub;

pub use hub::{
    Batch, Effect, FRAME_OVERHEAD, Frame, Hub, HubConfig, HubError, LinkKey, MessageKind, Pushed,
    Reply, UpstreamId,
};
