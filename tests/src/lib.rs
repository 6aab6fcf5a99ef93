//! kubepulse's end-to-end test support: the simulated kubelet fleet ([`sim`]), throwaway
//! certificates ([`certs`]) and the harness that runs real agents and aggregator replicas
//! against the fleet ([`harness`]). The scenarios live in `tests/tests/`. The scale benchmark
//! (`bench`, `kubepulse-bench-scale`) builds on the fleet.

pub mod bench;
pub mod certs;
pub mod control_plane;
pub mod fault_proxy;
pub mod harness;
pub mod raw_agent;
pub mod sim;
