//! The simulated kubelet fleet: many kubelets in one process, serving exposition text with
//! known ground truth. Used by `make demo`, the end-to-end tests and the scale benchmark. It
//! produces text; the agent parses it — nothing here shares code with the agent's decoder.

pub mod model;
pub mod render;
pub mod server;

pub use model::{Fault, Fleet, FleetConfig, Target};
pub use server::{NodeEndpoint, SimFleet, SimOptions, start, start_with};
