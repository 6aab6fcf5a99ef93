//! The shared vocabulary of kubepulse, used by the agent and the aggregator alike.
//!
//! Everything here is pure: no I/O, no clock, no serialisation format. Time is always an
//! argument ([`Timestamp`] is a kubelet sample time, never a receive time).
//!
//! Invariants:
//! - keys ([`NodeName`], [`PodKey`], [`ContainerName`]) are validated when built;
//! - a [`NodeView`] only holds containers with a computed [`Sample`];
//! - `apply(prev, &diff(prev, next)) == next` for any two views (see [`delta`]).
#![warn(missing_docs)]

pub mod delta;
pub mod duration;
pub mod key;
pub mod session;
pub mod table;
pub mod usage;
pub mod view;

pub use delta::{ApplyError, Delta, NodeChange, apply, diff};
pub use key::{ContainerName, KeyError, Names, Namespace, NodeName, PodKey, PodName};
pub use session::{Epoch, Seq};
pub use table::{NodeUsage, PodNames, PodTable, PodUsage, Reshape, SlotSamples};
pub use usage::{Sample, Timestamp, Usage, Window};
pub use view::{NodeView, PodView};
