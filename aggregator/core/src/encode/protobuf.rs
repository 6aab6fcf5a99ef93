//! The Kubernetes protobuf wire format (`application/vnd.kubernetes.protobuf`): the magic
//! `k8s\0`, then a `runtime.Unknown` whose `raw` holds the object. The messages below are the
//! subset of `k8s.io/metrics` and apimachinery that the Metrics API uses, with the upstream
//! field numbers. Every field Go's generated marshallers always write (non-pointer strings and
//! integers, embedded messages, map entry keys and values) is `Some` here, so the bytes equal
//! what metrics-server sends; tests decode them with `k8s-pb` as an independent oracle.

use std::collections::BTreeMap;

use kubepulse_model::{Timestamp, Usage};

use crate::api::{ApiStatus, ApiVersion, NodeMetrics, PodMetrics};
use crate::quantity::{format_cpu, format_memory};

/// The four bytes before every Kubernetes protobuf message.
pub(crate) const MAGIC: [u8; 4] = *b"k8s\0";

/// `NodeMetrics`, wrapped.
pub(crate) fn node(m: &NodeMetrics, v: ApiVersion, now: Timestamp) -> Vec<u8> {
    envelope(v.group_version(), "NodeMetrics", &pb_node(m, now))
}

/// `NodeMetricsList`, wrapped.
pub(crate) fn node_list(items: &[NodeMetrics], v: ApiVersion, now: Timestamp) -> Vec<u8> {
    let list = NodeMetricsList {
        metadata: Some(ListMeta::go_default()),
        items: items.iter().map(|m| pb_node(m, now)).collect(),
    };
    envelope(v.group_version(), "NodeMetricsList", &list)
}

/// `PodMetrics`, wrapped.
pub(crate) fn pod(m: &PodMetrics, v: ApiVersion, now: Timestamp) -> Vec<u8> {
    envelope(v.group_version(), "PodMetrics", &pb_pod(m, now))
}

/// `PodMetricsList`, wrapped.
pub(crate) fn pod_list(items: &[PodMetrics], v: ApiVersion, now: Timestamp) -> Vec<u8> {
    let list = PodMetricsList {
        metadata: Some(ListMeta::go_default()),
        items: items.iter().map(|m| pb_pod(m, now)).collect(),
    };
    envelope(v.group_version(), "PodMetricsList", &list)
}

/// `Status` (apiVersion `v1`), wrapped.
pub(crate) fn status(s: &ApiStatus) -> Vec<u8> {
    let status = Status {
        metadata: Some(ListMeta::go_default()),
        status: Some("Failure".to_owned()),
        message: Some(s.message.clone()),
        reason: Some(s.reason.to_owned()),
        details: s.details.as_ref().map(|d| StatusDetails {
            name: Some(d.name.clone()),
            group: Some(d.group.clone()),
            kind: Some(d.kind.clone()),
            causes: Vec::new(),
            retry_after_seconds: Some(0),
            uid: Some(String::new()),
        }),
        code: Some(i32::from(s.code)),
    };
    envelope("v1", "Status", &status)
}

// === messages (field numbers from the upstream generated.proto files) ===

/// `k8s.io.apimachinery.pkg.runtime.Unknown`
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Unknown {
    #[prost(message, optional, tag = "1")]
    pub type_meta: Option<TypeMeta>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub raw: Option<Vec<u8>>,
    #[prost(string, optional, tag = "3")]
    pub content_encoding: Option<String>,
    #[prost(string, optional, tag = "4")]
    pub content_type: Option<String>,
}

/// `k8s.io.apimachinery.pkg.runtime.TypeMeta` (apiVersion = 1, kind = 2: the reverse of
/// `metav1.TypeMeta`).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TypeMeta {
    #[prost(string, optional, tag = "1")]
    pub api_version: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub kind: Option<String>,
}

/// `k8s.io.apimachinery.pkg.apis.meta.v1.ListMeta`
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ListMeta {
    #[prost(string, optional, tag = "1")]
    pub self_link: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub resource_version: Option<String>,
    #[prost(string, optional, tag = "3")]
    pub r#continue: Option<String>,
    #[prost(int64, optional, tag = "4")]
    pub remaining_item_count: Option<i64>,
}

/// `k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta`, the fields Go writes for our objects
/// (deletion fields are pointers, omitted when nil; annotations, owners, finalizers and
/// managed fields are empty repeated fields).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ObjectMeta {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub generate_name: Option<String>,
    #[prost(string, optional, tag = "3")]
    pub namespace: Option<String>,
    #[prost(string, optional, tag = "4")]
    pub self_link: Option<String>,
    #[prost(string, optional, tag = "5")]
    pub uid: Option<String>,
    #[prost(string, optional, tag = "6")]
    pub resource_version: Option<String>,
    #[prost(int64, optional, tag = "7")]
    pub generation: Option<i64>,
    #[prost(message, optional, tag = "8")]
    pub creation_timestamp: Option<Time>,
    /// The `labels` map, as its wire form (repeated key/value entries): prost's map encoding
    /// drops an empty value, Go's writes it, and node role labels are often empty.
    #[prost(message, repeated, tag = "11")]
    pub labels: Vec<StringEntry>,
}

/// One entry of a `map<string, string>`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct StringEntry {
    #[prost(string, optional, tag = "1")]
    pub key: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

/// `k8s.io.apimachinery.pkg.apis.meta.v1.Time` (Go writes nanos = 0: second precision).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Time {
    #[prost(int64, optional, tag = "1")]
    pub seconds: Option<i64>,
    #[prost(int32, optional, tag = "2")]
    pub nanos: Option<i32>,
}

/// `k8s.io.apimachinery.pkg.apis.meta.v1.Duration`
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Duration {
    #[prost(int64, optional, tag = "1")]
    pub duration: Option<i64>,
}

/// `k8s.io.apimachinery.pkg.api.resource.Quantity`
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Quantity {
    #[prost(string, optional, tag = "1")]
    pub string: Option<String>,
}

/// `k8s.io.metrics.pkg.apis.metrics.v1beta1.NodeMetrics`
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PbNodeMetrics {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    pub timestamp: Option<Time>,
    #[prost(message, optional, tag = "3")]
    pub window: Option<Duration>,
    #[prost(btree_map = "string, message", tag = "4")]
    pub usage: BTreeMap<String, Quantity>,
}

/// `k8s.io.metrics.pkg.apis.metrics.v1beta1.NodeMetricsList`
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct NodeMetricsList {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ListMeta>,
    #[prost(message, repeated, tag = "2")]
    pub items: Vec<PbNodeMetrics>,
}

/// `k8s.io.metrics.pkg.apis.metrics.v1beta1.PodMetrics`
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PbPodMetrics {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    pub timestamp: Option<Time>,
    #[prost(message, optional, tag = "3")]
    pub window: Option<Duration>,
    #[prost(message, repeated, tag = "4")]
    pub containers: Vec<PbContainerMetrics>,
}

/// `k8s.io.metrics.pkg.apis.metrics.v1beta1.PodMetricsList`
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PodMetricsList {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ListMeta>,
    #[prost(message, repeated, tag = "2")]
    pub items: Vec<PbPodMetrics>,
}

/// `k8s.io.metrics.pkg.apis.metrics.v1beta1.ContainerMetrics`
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PbContainerMetrics {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(btree_map = "string, message", tag = "2")]
    pub usage: BTreeMap<String, Quantity>,
}

/// `k8s.io.apimachinery.pkg.apis.meta.v1.Status`
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Status {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ListMeta>,
    #[prost(string, optional, tag = "2")]
    pub status: Option<String>,
    #[prost(string, optional, tag = "3")]
    pub message: Option<String>,
    #[prost(string, optional, tag = "4")]
    pub reason: Option<String>,
    #[prost(message, optional, tag = "5")]
    pub details: Option<StatusDetails>,
    #[prost(int32, optional, tag = "6")]
    pub code: Option<i32>,
}

/// `k8s.io.apimachinery.pkg.apis.meta.v1.StatusDetails` (uid is field 6, after
/// retryAfterSeconds).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct StatusDetails {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub group: Option<String>,
    #[prost(string, optional, tag = "3")]
    pub kind: Option<String>,
    #[prost(message, repeated, tag = "4")]
    pub causes: Vec<StatusCause>,
    #[prost(int32, optional, tag = "5")]
    pub retry_after_seconds: Option<i32>,
    #[prost(string, optional, tag = "6")]
    pub uid: Option<String>,
}

/// `k8s.io.apimachinery.pkg.apis.meta.v1.StatusCause` (never sent; declared for the
/// `causes` field's type).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct StatusCause {
    #[prost(string, optional, tag = "1")]
    pub reason: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub message: Option<String>,
    #[prost(string, optional, tag = "3")]
    pub field: Option<String>,
}

impl ListMeta {
    /// An empty `ListMeta` as Go writes it: three empty strings, no remaining count.
    fn go_default() -> Self {
        Self {
            self_link: Some(String::new()),
            resource_version: Some(String::new()),
            r#continue: Some(String::new()),
            remaining_item_count: None,
        }
    }
}

// === private helpers ===

fn envelope(api_version: &str, kind: &str, object: &impl prost::Message) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.to_owned()),
            kind: Some(kind.to_owned()),
        }),
        raw: Some(object.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = Vec::with_capacity(MAGIC.len() + prost::Message::encoded_len(&unknown));
    out.extend_from_slice(&MAGIC);
    prost::Message::encode_raw(&unknown, &mut out);
    out
}

fn object_meta(
    name: &str,
    namespace: Option<&str>,
    now: Timestamp,
    labels: &BTreeMap<String, String>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        generate_name: Some(String::new()),
        namespace: Some(namespace.unwrap_or_default().to_owned()),
        self_link: Some(String::new()),
        uid: Some(String::new()),
        resource_version: Some(String::new()),
        generation: Some(0),
        creation_timestamp: Some(time(now)),
        labels: labels
            .iter()
            .map(|(k, v)| StringEntry {
                key: Some(k.clone()),
                value: Some(v.clone()),
            })
            .collect(),
    }
}

fn time(ts: Timestamp) -> Time {
    Time {
        seconds: Some(ts.as_secs()),
        nanos: Some(0),
    }
}

fn window(nanos: u64) -> Duration {
    Duration {
        duration: Some(i64::try_from(nanos).unwrap_or(i64::MAX)),
    }
}

fn usage(u: Usage) -> BTreeMap<String, Quantity> {
    BTreeMap::from([
        (
            "cpu".to_owned(),
            Quantity {
                string: Some(format_cpu(u.cpu_nanocores)),
            },
        ),
        (
            "memory".to_owned(),
            Quantity {
                string: Some(format_memory(u.memory_bytes)),
            },
        ),
    ])
}

fn pb_node(m: &NodeMetrics, now: Timestamp) -> PbNodeMetrics {
    PbNodeMetrics {
        metadata: Some(object_meta(m.name.as_str(), None, now, &m.labels)),
        timestamp: Some(time(m.sample.timestamp)),
        window: Some(window(m.sample.window.as_nanos())),
        usage: usage(m.sample.usage),
    }
}

fn pb_pod(m: &PodMetrics, now: Timestamp) -> PbPodMetrics {
    PbPodMetrics {
        metadata: Some(object_meta(
            m.key.name.as_str(),
            Some(m.key.namespace.as_str()),
            now,
            &m.labels,
        )),
        timestamp: Some(time(m.timestamp)),
        window: Some(window(m.window.as_nanos())),
        containers: m
            .containers
            .iter()
            .map(|c| PbContainerMetrics {
                name: Some(c.name.as_str().to_owned()),
                usage: usage(c.usage),
            })
            .collect(),
    }
}
