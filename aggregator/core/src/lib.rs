//! Pure cluster-side logic of the aggregator. No I/O, no clock reads: every instant is an
//! argument.
//!
//! Layout, in data-flow order:
//! - [`store`]: the cluster store, mutated only through `apply_*`/`evict_stale` by the single
//!   writer, publishing an immutable [`store::ClusterView`] to readers;
//! - [`authz`]: delegated authentication and authorization rules (front-proxy headers, the
//!   authenticator chain, request attributes, local decisions, 403 wording);
//! - [`identity`]: which node an agent stream may report for (its reviewed token, its pod,
//!   that pod's node);
//! - [`limits`]: the ingest bounds (stream counts per node and in total, a token bucket per
//!   stream);
//! - [`meta`]: Kubernetes metadata (labels, Running pods, pod→node) joined into answers;
//! - [`query`]: list/get over a view and metadata, with selectors; returns [`api`] values;
//! - [`explain`]: why a pod or node has metrics or not (the operators' question), from the
//!   same views;
//! - [`selector`]: label and field selectors;
//! - [`quantity`] and [`timefmt`]: Kubernetes quantity, time and duration strings;
//! - [`encode`]: the only place the Metrics API wire formats (JSON, protobuf, Table, Status,
//!   discovery) exist.
#![warn(missing_docs)]

pub mod api;
pub mod authz;
pub mod encode;
pub mod explain;
pub mod identity;
pub mod limits;
pub mod meta;
pub mod quantity;
pub mod query;
pub mod selector;
pub mod store;
pub mod timefmt;
