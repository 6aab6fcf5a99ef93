//! The Kubernetes protobuf wire format (`application/vnd.kubernetes.protobuf`): the magic
//! `k8s\0`, then a `runtime.Unknown` whose `raw` holds the object. The messages below are the
//! subset of `k8s.io/metrics` and apimachinery that the Metrics API uses, with the upstream
//! field numbers. Every field Go's generated marshallers always write (non-pointer strings and
//! integers, embedded messages, map entry keys and values) is `Some` here, so the bytes equal
//! what metrics-server sends; tests decode them with `k8s-pb` as an independent oracle.

use std::collections::BTreeMap;

use kubepulse_model::{Timestamp, Usage};

use crate::api::{ApiStatus, ApiVersion, NodeMetrics, PodMetrics};
use prost::Message;

use crate::quantity::{write_cpu, write_memory};

/// The four bytes before every Kubernetes protobuf message.
pub(crate) const MAGIC: [u8; 4] = *b"k8s\0";

/// `NodeMetrics`, wrapped.
pub(crate) fn node(m: &NodeMetrics, v: ApiVersion, now: Timestamp) -> Vec<u8> {
    let mut writer = NodeWriter::new(now);
    writer.fill(m);
    envelope(v.group_version(), "NodeMetrics", writer.msg.encode_to_vec())
}

/// `NodeMetricsList`, wrapped. Items are encoded one by one from a reused message, so the
/// list costs no allocation per item (the bytes equal those of a `NodeMetricsList` struct).
pub(crate) fn node_list(items: &[NodeMetrics], v: ApiVersion, now: Timestamp) -> Vec<u8> {
    let mut raw = list_start(items.len());
    let mut writer = NodeWriter::new(now);
    for m in items {
        writer.fill(m);
        prost::encoding::message::encode(2, &writer.msg, &mut raw);
    }
    envelope(v.group_version(), "NodeMetricsList", raw)
}

/// `PodMetrics`, wrapped.
pub(crate) fn pod(m: &PodMetrics, v: ApiVersion, now: Timestamp) -> Vec<u8> {
    let mut writer = PodWriter::new(now);
    writer.fill(m);
    envelope(v.group_version(), "PodMetrics", writer.msg.encode_to_vec())
}

/// `PodMetricsList`, wrapped; see [`node_list`].
pub(crate) fn pod_list(items: &[PodMetrics], v: ApiVersion, now: Timestamp) -> Vec<u8> {
    let mut raw = list_start(items.len());
    let mut writer = PodWriter::new(now);
    for m in items {
        writer.fill(m);
        prost::encoding::message::encode(2, &writer.msg, &mut raw);
    }
    envelope(v.group_version(), "PodMetricsList", raw)
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
    envelope("v1", "Status", status.encode_to_vec())
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

/// `k8s.io.metrics.pkg.apis.metrics.v1beta1.NodeMetricsList` (written item by item by
/// [`node_list`]; the struct is the schema, and the tests' reference encoding).
#[cfg_attr(not(test), allow(dead_code))]
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

/// `k8s.io.metrics.pkg.apis.metrics.v1beta1.PodMetricsList` (see [`NodeMetricsList`]).
#[cfg_attr(not(test), allow(dead_code))]
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

fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.to_owned()),
            kind: Some(kind.to_owned()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = Vec::with_capacity(MAGIC.len() + unknown.encoded_len());
    out.extend_from_slice(&MAGIC);
    unknown.encode_raw(&mut out);
    out
}

/// A list's bytes up to its items: field 1, the empty `ListMeta`.
fn list_start(n_items: usize) -> Vec<u8> {
    let mut raw = Vec::with_capacity(16 + n_items * 320);
    prost::encoding::message::encode(1, &ListMeta::go_default(), &mut raw);
    raw
}

/// One `NodeMetrics` message, refilled for each item so its strings and maps keep their
/// allocations.
struct NodeWriter {
    msg: PbNodeMetrics,
    text: Vec<u8>,
}

/// One `PodMetrics` message, refilled for each item; see [`NodeWriter`].
struct PodWriter {
    msg: PbPodMetrics,
    text: Vec<u8>,
}

impl NodeWriter {
    fn new(now: Timestamp) -> Self {
        Self {
            msg: PbNodeMetrics {
                metadata: Some(object_meta(now)),
                timestamp: Some(time(Timestamp(0))),
                window: Some(Duration { duration: Some(0) }),
                usage: BTreeMap::new(),
            },
            text: Vec::with_capacity(32),
        }
    }

    fn fill(&mut self, m: &NodeMetrics) {
        let meta = self
            .msg
            .metadata
            .get_or_insert_with(|| object_meta(Timestamp(0)));
        fill_meta(meta, m.name.as_str(), None, &m.labels);
        self.msg.timestamp = Some(time(m.sample.timestamp));
        self.msg.window = Some(window(m.sample.window.as_nanos()));
        fill_usage(&mut self.msg.usage, m.sample.usage, &mut self.text);
    }
}

impl PodWriter {
    fn new(now: Timestamp) -> Self {
        Self {
            msg: PbPodMetrics {
                metadata: Some(object_meta(now)),
                timestamp: Some(time(Timestamp(0))),
                window: Some(Duration { duration: Some(0) }),
                containers: Vec::new(),
            },
            text: Vec::with_capacity(32),
        }
    }

    fn fill(&mut self, m: &PodMetrics) {
        let meta = self
            .msg
            .metadata
            .get_or_insert_with(|| object_meta(Timestamp(0)));
        fill_meta(
            meta,
            m.key.name.as_str(),
            Some(m.key.namespace.as_str()),
            &m.labels,
        );
        self.msg.timestamp = Some(time(m.timestamp));
        self.msg.window = Some(window(m.window.as_nanos()));
        let containers = &mut self.msg.containers;
        containers.truncate(m.containers.len());
        containers.resize_with(m.containers.len(), || PbContainerMetrics {
            name: Some(String::new()),
            usage: BTreeMap::new(),
        });
        for (slot, c) in containers.iter_mut().zip(&m.containers) {
            set(&mut slot.name, c.name.as_str());
            fill_usage(&mut slot.usage, c.usage, &mut self.text);
        }
    }
}

/// An `ObjectMeta` with every field Go always writes present and empty, created at `now`.
fn object_meta(now: Timestamp) -> ObjectMeta {
    ObjectMeta {
        name: Some(String::new()),
        generate_name: Some(String::new()),
        namespace: Some(String::new()),
        self_link: Some(String::new()),
        uid: Some(String::new()),
        resource_version: Some(String::new()),
        generation: Some(0),
        creation_timestamp: Some(time(now)),
        labels: Vec::new(),
    }
}

fn fill_meta(
    meta: &mut ObjectMeta,
    name: &str,
    namespace: Option<&str>,
    labels: &BTreeMap<String, String>,
) {
    set(&mut meta.name, name);
    set(&mut meta.namespace, namespace.unwrap_or_default());
    meta.labels.truncate(labels.len());
    meta.labels.resize_with(labels.len(), || StringEntry {
        key: Some(String::new()),
        value: Some(String::new()),
    });
    for (entry, (key, value)) in meta.labels.iter_mut().zip(labels) {
        set(&mut entry.key, key);
        set(&mut entry.value, value);
    }
}

/// Sets the `cpu` and `memory` entries (keys sorted, as Go writes maps).
fn fill_usage(map: &mut BTreeMap<String, Quantity>, u: Usage, text: &mut Vec<u8>) {
    text.clear();
    write_cpu(text, u.cpu_nanocores);
    set_quantity(map, "cpu", text);
    text.clear();
    write_memory(text, u.memory_bytes);
    set_quantity(map, "memory", text);
}

fn set_quantity(map: &mut BTreeMap<String, Quantity>, key: &str, text: &[u8]) {
    // Quantity text is ASCII by construction.
    let text = std::str::from_utf8(text).unwrap_or_default();
    match map.get_mut(key) {
        Some(q) => set(&mut q.string, text),
        None => {
            map.insert(
                key.to_owned(),
                Quantity {
                    string: Some(text.to_owned()),
                },
            );
        }
    }
}

/// Overwrites an optional string in place, keeping its allocation.
fn set(slot: &mut Option<String>, value: &str) {
    let s = slot.get_or_insert_with(String::new);
    s.clear();
    s.push_str(value);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ContainerMetrics;
    use kubepulse_model::{ContainerName, NodeName, PodKey, Sample, Window};
    use std::sync::Arc;

    fn labels(n: usize) -> crate::api::Labels {
        Arc::new((0..n).map(|i| (format!("k{i}"), format!("v{i}"))).collect())
    }

    /// Items of varying shape, so a reused message must shrink and grow correctly.
    fn pods() -> Vec<PodMetrics> {
        (0..6)
            .map(|i| PodMetrics {
                key: PodKey::new(&format!("ns{}", i % 2), &format!("pod-{i}")).unwrap(),
                labels: labels([3, 0, 5, 1, 0, 2][i]),
                timestamp: Timestamp(1_700_000_000_000_000_000 + i as i64),
                window: Window(15_000_000_000),
                containers: (0..[2, 0, 3, 1, 0, 4][i])
                    .map(|c| ContainerMetrics {
                        name: ContainerName::new(&format!("c{c}")).unwrap(),
                        usage: Usage {
                            cpu_nanocores: (i * 1000 + c) as u64,
                            memory_bytes: ((i + 1) * 4096 * (c + 1)) as u64,
                        },
                    })
                    .collect(),
            })
            .collect()
    }

    fn unwrap(body: &[u8]) -> Vec<u8> {
        Unknown::decode(&body[MAGIC.len()..]).unwrap().raw.unwrap()
    }

    #[test]
    fn lists_equal_their_struct_encoding() {
        let now = Timestamp(1_717_243_214_000_000_000);
        let items = pods();
        let expected = PodMetricsList {
            metadata: Some(ListMeta::go_default()),
            items: items
                .iter()
                .map(|m| {
                    let mut w = PodWriter::new(now);
                    w.fill(m);
                    w.msg
                })
                .collect(),
        };
        assert_eq!(
            unwrap(&pod_list(&items, ApiVersion::V1beta1, now)),
            expected.encode_to_vec()
        );
        let decoded = PodMetricsList::decode(expected.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.items[2].metadata.as_ref().unwrap().labels.len(), 5);
        assert_eq!(decoded.items[4].containers.len(), 0);
        assert_eq!(decoded.items[5].containers.len(), 4);

        let nodes: Vec<NodeMetrics> = (0..4)
            .map(|i| NodeMetrics {
                name: NodeName::new(&format!("n{i}")).unwrap(),
                labels: labels([2, 0, 4, 1][i]),
                sample: Sample {
                    usage: Usage::default(),
                    timestamp: Timestamp(i as i64),
                    window: Window(1),
                },
            })
            .collect();
        let expected = NodeMetricsList {
            metadata: Some(ListMeta::go_default()),
            items: nodes
                .iter()
                .map(|m| {
                    let mut w = NodeWriter::new(now);
                    w.fill(m);
                    w.msg
                })
                .collect(),
        };
        assert_eq!(
            unwrap(&node_list(&nodes, ApiVersion::V1, now)),
            expected.encode_to_vec()
        );
    }
}
