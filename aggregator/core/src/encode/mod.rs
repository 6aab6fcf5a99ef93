//! The last stage of a Metrics API request: [`api`](crate::api) values to response bytes.
//! This is the only place the Kubernetes wire formats exist:
//!
//! - [`negotiate`] reads the `Accept` header into a [`Format`] (or a 406);
//! - JSON (`json.rs`): metrics objects and lists exactly as metrics-server's Go encoder writes
//!   them, plus [`NodeListStream`]/[`PodListStream`] for chunked lists;
//! - protobuf (`protobuf.rs`): the `k8s\0` + `runtime.Unknown` envelope;
//! - Table (`table.rs`): `meta.k8s.io` server-side tables;
//! - [`status()`] encodes `Status` errors, worded by the helpers in [`mod@status`];
//! - discovery (`discovery.rs`): legacy and aggregated discovery documents;
//! - [`openapi`]: the OpenAPI v2 and v3 documents kube-apiserver merges;
//! - [`explain`]: kubepulse's own explanation documents (`kubepulse.io/v1alpha1`).
//!
//! Every function is pure: `now` (the `creationTimestamp` metrics-server stamps on answers) is
//! an argument.

mod discovery;
pub mod explain;
mod json;
mod negotiate;
pub mod openapi;
mod protobuf;
pub mod status;
mod table;

#[cfg(test)]
mod tests;

use kubepulse_model::Timestamp;

pub use json::{NodeListStream, PodListStream, indent};
pub use negotiate::{MAX_ACCEPT_LEN, NotAcceptable, negotiate, wants_aggregated_discovery};

use crate::api::{ApiStatus, ApiVersion, NodeMetrics, PodMetrics};

/// `Content-Type` of JSON bodies (objects, Status, Table, legacy discovery).
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// `Content-Type` of Kubernetes protobuf bodies.
pub const CONTENT_TYPE_PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// `Content-Type` of the aggregated discovery document.
pub const CONTENT_TYPE_AGGREGATED_DISCOVERY: &str = discovery::AGGREGATED_CONTENT_TYPE;

/// The representation a response is encoded in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `application/json` (the default).
    Json,
    /// `application/vnd.kubernetes.protobuf`.
    Protobuf,
    /// A `meta.k8s.io` Table, as JSON.
    Table(TableOptions),
}

/// How a Table is built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableOptions {
    /// What each row's `object` holds (the `includeObject` query parameter).
    pub include_object: IncludeObject,
    /// The Table's group version (from the `Accept` clause).
    pub version: TableVersion,
}

/// The `includeObject` query parameter of Table requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IncludeObject {
    /// `None`: `object` is `null`.
    None,
    /// `Metadata` (the default): a `PartialObjectMetadata`.
    #[default]
    Metadata,
    /// `Object`: the whole NodeMetrics / PodMetrics.
    Object,
}

/// The `meta.k8s.io` version a Table was asked in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TableVersion {
    /// `meta.k8s.io/v1` (what current kubectl asks first).
    #[default]
    V1,
    /// `meta.k8s.io/v1beta1` (kubectl's fallback clause).
    V1beta1,
}

/// A response body and its `Content-Type`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// The `Content-Type` header value.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

impl IncludeObject {
    /// Parses the query parameter value (`None`, `Metadata`, `Object`; empty is the default),
    /// or `None` for anything else (the apiserver answers 400 then).
    pub fn parse(s: &str) -> Option<IncludeObject> {
        match s {
            "None" => Some(IncludeObject::None),
            "" | "Metadata" => Some(IncludeObject::Metadata),
            "Object" => Some(IncludeObject::Object),
            _ => None,
        }
    }
}

impl TableVersion {
    /// `meta.k8s.io/v1` or `meta.k8s.io/v1beta1`.
    pub fn api_version(self) -> &'static str {
        match self {
            TableVersion::V1 => "meta.k8s.io/v1",
            TableVersion::V1beta1 => "meta.k8s.io/v1beta1",
        }
    }
}

/// One `NodeMetrics` (get), in API version `v`, built at `now`.
pub fn node(m: &NodeMetrics, v: ApiVersion, f: &Format, now: Timestamp) -> Encoded {
    match f {
        Format::Json => {
            let mut body = Vec::with_capacity(512 + m.labels.len() * 64);
            json::write_node(&mut body, m, v, now);
            body.push(b'\n');
            json_body(body)
        }
        Format::Protobuf => protobuf_body(protobuf::node(m, v, now)),
        Format::Table(opts) => json_body(table::nodes(std::slice::from_ref(m), v, opts, now)),
    }
}

/// A `NodeMetricsList` (list), in API version `v`, built at `now`.
pub fn node_list(items: &[NodeMetrics], v: ApiVersion, f: &Format, now: Timestamp) -> Encoded {
    match f {
        Format::Json => {
            let mut list = NodeListStream::sized(v, now, items.len());
            for m in items {
                list.push(m);
            }
            json_body(list.finish())
        }
        Format::Protobuf => protobuf_body(protobuf::node_list(items, v, now)),
        Format::Table(opts) => json_body(table::nodes(items, v, opts, now)),
    }
}

/// One `PodMetrics` (get), in API version `v`, built at `now`.
pub fn pod(m: &PodMetrics, v: ApiVersion, f: &Format, now: Timestamp) -> Encoded {
    match f {
        Format::Json => {
            let mut body = Vec::with_capacity(512 + m.containers.len() * 96);
            json::write_pod(&mut body, m, v, now);
            body.push(b'\n');
            json_body(body)
        }
        Format::Protobuf => protobuf_body(protobuf::pod(m, v, now)),
        Format::Table(opts) => json_body(table::pods(std::slice::from_ref(m), v, opts, now)),
    }
}

/// A `PodMetricsList` (list), in API version `v`, built at `now`.
pub fn pod_list(items: &[PodMetrics], v: ApiVersion, f: &Format, now: Timestamp) -> Encoded {
    match f {
        Format::Json => {
            let mut list = PodListStream::sized(v, now, items.len());
            for m in items {
                list.push(m);
            }
            json_body(list.finish())
        }
        Format::Protobuf => protobuf_body(protobuf::pod_list(items, v, now)),
        Format::Table(opts) => json_body(table::pods(items, v, opts, now)),
    }
}

/// A `Status` error: JSON (also when a Table was asked for, as the apiserver does) or the
/// protobuf envelope.
pub fn status(s: &ApiStatus, f: &Format) -> Encoded {
    match f {
        Format::Protobuf => protobuf_body(protobuf::status(s)),
        Format::Json | Format::Table(_) => {
            let mut body = Vec::with_capacity(256);
            json::write_status(&mut body, s);
            json_body(body)
        }
    }
}

/// `GET /apis`: the legacy `APIGroupList` with the `metrics.k8s.io` group.
pub fn api_group_list() -> Encoded {
    json_body(discovery::api_group_list())
}

/// `GET /apis/metrics.k8s.io`: the `APIGroup`.
pub fn api_group() -> Encoded {
    json_body(discovery::api_group())
}

/// `GET /apis/metrics.k8s.io/<v>`: the `APIResourceList` (`nodes`, `pods`; verbs get, list;
/// `singularName` empty, exactly as metrics-server).
pub fn api_resource_list(v: ApiVersion) -> Encoded {
    json_body(discovery::api_resource_list(v))
}

/// `GET /apis` with the aggregated discovery `Accept` (see [`wants_aggregated_discovery`]):
/// the `apidiscovery.k8s.io/v2` `APIGroupDiscoveryList`.
pub fn aggregated_discovery() -> Encoded {
    Encoded {
        content_type: CONTENT_TYPE_AGGREGATED_DISCOVERY,
        body: discovery::aggregated_discovery(),
    }
}

// === private helpers ===

fn json_body(body: Vec<u8>) -> Encoded {
    Encoded {
        content_type: CONTENT_TYPE_JSON,
        body,
    }
}

fn protobuf_body(body: Vec<u8>) -> Encoded {
    Encoded {
        content_type: CONTENT_TYPE_PROTOBUF,
        body,
    }
}
