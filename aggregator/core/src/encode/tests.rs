//! Encoder tests. Each response shape has a golden file in `tests/fixtures/api/` (rewritten
//! with `UPDATE_GOLDEN=1`); where the Go oracle (`tests/fixtures/api/oracle/main.go`, the real
//! apimachinery/apiserver/k8s.io/metrics code) produced the same shape from the same inputs,
//! our bytes must equal Go's too (`tests/fixtures/api/go/`). On top: the reference's §3.4
//! examples, the real metrics-server outputs, a `k8s-pb` decode of every protobuf body, and
//! Go-generated vectors for quantities, durations, times, string escaping, selectors and
//! `Accept` negotiation.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kubepulse_model::{ContainerName, NodeName, PodKey, Sample, Timestamp, Usage, Window};

use super::*;
use crate::api::{ContainerMetrics, Labels};
use crate::quantity::{format_cpu, format_memory, parse_cpu, parse_memory};
use crate::selector::{FieldSelector, LabelSelector};
use crate::timefmt::{format_duration, format_time};

// === inputs (the same objects as fixtures() in oracle/main.go) ===

fn now() -> Timestamp {
    ts("2024-06-01T12:00:14Z")
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Arc::new(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn usage(cpu_nanocores: u64, memory_bytes: u64) -> Usage {
    Usage {
        cpu_nanocores,
        memory_bytes,
    }
}

fn node_metrics(name: &str, l: &[(&str, &str)], at: &str, window: u64, u: Usage) -> NodeMetrics {
    NodeMetrics {
        name: NodeName::new(name).unwrap(),
        labels: labels(l),
        sample: Sample {
            usage: u,
            timestamp: ts(at),
            window: Window(window),
        },
    }
}

fn pod_metrics(
    ns: &str,
    name: &str,
    l: &[(&str, &str)],
    at: &str,
    window: u64,
    containers: &[(&str, Usage)],
) -> PodMetrics {
    PodMetrics {
        key: PodKey::new(ns, name).unwrap(),
        labels: labels(l),
        timestamp: ts(at),
        window: Window(window),
        containers: containers
            .iter()
            .map(|(n, u)| ContainerMetrics {
                name: ContainerName::new(n).unwrap(),
                usage: *u,
            })
            .collect(),
    }
}

fn fixtures() -> (Vec<NodeMetrics>, Vec<PodMetrics>) {
    let nodes = vec![
        node_metrics(
            "node-a",
            &[
                ("kubernetes.io/hostname", "node-a"),
                ("kubernetes.io/os", "linux"),
            ],
            "2024-06-01T12:00:08.318Z",
            15_105_000_000,
            usage(5_710_780_139, 3_219_374_080),
        ),
        node_metrics(
            "node-b",
            &[
                ("node-role.kubernetes.io/control-plane", ""),
                ("x.example/odd", "a<b>&c"),
            ],
            "2024-06-01T12:00:09.999Z",
            60_500_000_000,
            usage(0, 1000),
        ),
    ];
    let pods = vec![
        pod_metrics(
            "prod",
            "shop-7d9f8c6b5-x2kqp",
            &[("app", "shop"), ("pod-template-hash", "7d9f8c6b5")],
            "2024-06-01T12:00:10.522Z",
            15_204_000_000,
            &[
                ("web", usage(181_878_321, 247_603_200)),
                ("proxy", usage(1_843_412, 495_616)),
            ],
        ),
        pod_metrics(
            "kube-system",
            "coredns-5dd5756b68-abcde",
            &[],
            "2024-06-01T12:00:03.000Z",
            12_318_462_912,
            &[("coredns", usage(2_500_000_000, 1_073_741_825))],
        ),
        pod_metrics(
            "prod",
            "empty-0",
            &[("app", "empty")],
            "2024-06-01T12:00:01.000Z",
            30_000_000_000,
            &[],
        ),
    ];
    (nodes, pods)
}

fn table(include_object: IncludeObject, version: TableVersion) -> Format {
    Format::Table(TableOptions {
        include_object,
        version,
    })
}

// === golden files and the Go oracle ===

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/api")
}

/// Hex dump, 32 bytes per line (the format oracle/main.go writes).
fn hex_dump(bytes: &[u8]) -> String {
    let mut text = String::new();
    for line in bytes.chunks(32) {
        for b in line {
            text.push_str(&format!("{b:02x}"));
        }
        text.push('\n');
    }
    text
}

/// Compares `encoded` with the golden file `name` (rewriting it under `UPDATE_GOLDEN=1`) and
/// with Go's output for the same input when the oracle produced one.
fn check(name: &str, encoded: &Encoded, content_type: &str) {
    assert_eq!(encoded.content_type, content_type, "content type of {name}");
    let ours = if name.ends_with(".hex") {
        hex_dump(&encoded.body).into_bytes()
    } else {
        encoded.body.clone()
    };
    let go = fixtures_dir().join("go").join(name);
    if let Ok(expected) = fs::read(&go) {
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&expected),
            "{name} differs from what the Go libraries write"
        );
    }
    let golden = fixtures_dir().join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        fs::write(&golden, &ours).unwrap();
    } else {
        let expected = fs::read(&golden)
            .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", golden.display()));
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&expected),
            "{name} differs from its golden file"
        );
    }
}

const JSON: &str = CONTENT_TYPE_JSON;
const PB: &str = CONTENT_TYPE_PROTOBUF;

#[test]
fn json_objects() {
    let (nodes, pods) = fixtures();
    let v = ApiVersion::V1beta1;
    let f = Format::Json;
    check("node-get.json", &node(&nodes[0], v, &f, now()), JSON);
    check("node-list.json", &node_list(&nodes, v, &f, now()), JSON);
    check("pod-get.json", &pod(&pods[0], v, &f, now()), JSON);
    check("pod-list.json", &pod_list(&pods, v, &f, now()), JSON);
    check("node-list-empty.json", &node_list(&[], v, &f, now()), JSON);
    check("pod-list-empty.json", &pod_list(&[], v, &f, now()), JSON);
    check(
        "pod-get-v1.json",
        &pod(&pods[0], ApiVersion::V1, &f, now()),
        JSON,
    );
    check(
        "node-list-v1.json",
        &node_list(&nodes, ApiVersion::V1, &f, now()),
        JSON,
    );
}

#[test]
fn protobuf_objects() {
    let (nodes, pods) = fixtures();
    let v = ApiVersion::V1beta1;
    let f = Format::Protobuf;
    check("node-get.pb.hex", &node(&nodes[0], v, &f, now()), PB);
    check("node-list.pb.hex", &node_list(&nodes, v, &f, now()), PB);
    check("pod-get.pb.hex", &pod(&pods[0], v, &f, now()), PB);
    check("pod-list.pb.hex", &pod_list(&pods, v, &f, now()), PB);
    check("pod-list-empty.pb.hex", &pod_list(&[], v, &f, now()), PB);
    check(
        "pod-list-v1.pb.hex",
        &pod_list(&pods, ApiVersion::V1, &f, now()),
        PB,
    );
}

#[test]
fn tables() {
    let (nodes, pods) = fixtures();
    let v = ApiVersion::V1beta1;
    let metadata = table(IncludeObject::Metadata, TableVersion::V1);
    check(
        "table-nodes.json",
        &node_list(&nodes, v, &metadata, now()),
        JSON,
    );
    check(
        "table-pods.json",
        &pod_list(&pods, v, &metadata, now()),
        JSON,
    );
    check(
        "table-empty.json",
        &pod_list(&[], v, &metadata, now()),
        JSON,
    );
    assert_eq!(
        node_list(&[], v, &metadata, now()),
        pod_list(&[], v, &metadata, now())
    );
    check(
        "table-node-get.json",
        &node(&nodes[0], v, &metadata, now()),
        JSON,
    );
    check(
        "table-pod-get.json",
        &pod(&pods[0], v, &metadata, now()),
        JSON,
    );
    let object = table(IncludeObject::Object, TableVersion::V1);
    check(
        "table-nodes-object.json",
        &node_list(&nodes, v, &object, now()),
        JSON,
    );
    check(
        "table-pods-object.json",
        &pod_list(&pods, v, &object, now()),
        JSON,
    );
    let none = table(IncludeObject::None, TableVersion::V1);
    check(
        "table-pods-none.json",
        &pod_list(&pods, v, &none, now()),
        JSON,
    );
    let beta = table(IncludeObject::Metadata, TableVersion::V1beta1);
    check(
        "table-nodes-v1beta1.json",
        &node_list(&nodes, v, &beta, now()),
        JSON,
    );
    // metrics-server derives the usage columns from the first pod that has containers.
    let reordered = [pods[2].clone(), pods[0].clone(), pods[2].clone()];
    check(
        "table-pods-first-empty.json",
        &pod_list(&reordered, v, &metadata, now()),
        JSON,
    );
    let only_empty = [pods[2].clone()];
    check(
        "table-pods-only-empty.json",
        &pod_list(&only_empty, v, &metadata, now()),
        JSON,
    );
}

#[test]
fn statuses() {
    use super::status::*;
    let cases: Vec<(&str, ApiStatus)> = vec![
        ("status-not-found-node", not_found_node("node-x")),
        (
            "status-not-found-nodemetrics",
            not_found_node_metrics("node-x"),
        ),
        ("status-not-found-pod", not_found_pod("prod", "web-0")),
        (
            "status-not-found-podmetrics",
            not_found_pod_metrics("prod", "web-0"),
        ),
        ("status-watch-pods", watch_not_supported("pods")),
        ("status-watch-nodes", watch_not_supported("nodes")),
        ("status-method-not-allowed", method_not_allowed()),
        ("status-not-found-path", not_found_path()),
        (
            "status-bad-request",
            bad_request(
                FieldSelector::parse("spec.nodeName=x")
                    .unwrap_err()
                    .to_string(),
            ),
        ),
        (
            "status-internal",
            internal("failed listing pods: informer not synced"),
        ),
        ("status-unauthorized", unauthorized()),
        (
            "status-forbidden-list",
            forbidden("system:anonymous", "list", "pods", Some("default")),
        ),
        (
            "status-forbidden-get",
            forbidden_name("jane", "get", "nodes", None, "node-a"),
        ),
        ("status-not-acceptable", not_acceptable()),
    ];
    for (name, s) in &cases {
        check(&format!("{name}.json"), &status(s, &Format::Json), JSON);
        // The apiserver answers errors of Table requests in plain JSON.
        assert_eq!(
            status(s, &table(IncludeObject::Metadata, TableVersion::V1)),
            status(s, &Format::Json)
        );
        check(&format!("{name}.pb.hex"), &status(s, &Format::Protobuf), PB);
    }
    let codes: Vec<u16> = cases.iter().map(|(_, s)| s.code).collect();
    assert_eq!(
        codes,
        [
            404, 404, 404, 404, 405, 405, 405, 404, 400, 500, 401, 403, 403, 406
        ]
    );
}

#[test]
fn not_acceptable_is_written_raw_like_the_apiserver() {
    let err = negotiate(Some("application/yaml")).unwrap_err();
    assert_eq!(err.status().code, 406);
    assert_eq!(
        err.to_string(),
        "only the following media types are accepted: application/json, application/vnd.kubernetes.protobuf"
    );
    check("not-acceptable-raw.json", &err.encode(), JSON);
}

#[test]
fn discovery_documents() {
    check("api-group-list.json", &api_group_list(), JSON);
    check("api-group.json", &api_group(), JSON);
    check(
        "api-resource-list-v1beta1.json",
        &api_resource_list(ApiVersion::V1beta1),
        JSON,
    );
    check(
        "api-resource-list-v1.json",
        &api_resource_list(ApiVersion::V1),
        JSON,
    );
    check(
        "aggregated-discovery.json",
        &aggregated_discovery(),
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
    );
    // Reference §3.11 quotes the real v1beta1 APIResourceList byte for byte.
    assert_eq!(
        String::from_utf8(api_resource_list(ApiVersion::V1beta1).body).unwrap(),
        concat!(
            r#"{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"metrics.k8s.io/v1beta1","resources":[{"name":"nodes","singularName":"","namespaced":false,"kind":"NodeMetrics","verbs":["get","list"]},{"name":"pods","singularName":"","namespaced":true,"kind":"PodMetrics","verbs":["get","list"]}]}"#,
            "\n"
        )
    );
}

#[test]
fn every_go_output_is_compared() {
    for entry in fs::read_dir(fixtures_dir().join("go")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            let name = entry.file_name();
            assert!(
                fixtures_dir().join(&name).exists(),
                "go/{} has no golden counterpart, so no test compares it",
                name.to_string_lossy()
            );
        }
    }
}

#[test]
fn pretty_json_matches_go_marshal_indent() {
    let (_, pods) = fixtures();
    let compact = pod_list(&pods, ApiVersion::V1beta1, &Format::Json, now()).body;
    let pretty = Encoded {
        content_type: JSON,
        body: indent(&compact),
    };
    check("pod-list-pretty.json", &pretty, JSON);
    assert_eq!(
        indent(b"{\"a\":[],\"b\":{},\"c\":\"x,{:}\\\"\"}\n"),
        b"{\n  \"a\": [],\n  \"b\": {},\n  \"c\": \"x,{:}\\\"\"\n}"
    );
}

#[test]
fn list_streams_concatenate_to_the_list() {
    let (nodes, pods) = fixtures();
    let mut stream = PodListStream::new(ApiVersion::V1beta1, now());
    let mut chunks = Vec::new();
    for pod in &pods {
        stream.push(pod);
        assert!(stream.buffered() > 0);
        chunks.extend(stream.take());
        assert_eq!(stream.buffered(), 0);
    }
    chunks.extend(stream.finish());
    assert_eq!(
        chunks,
        pod_list(&pods, ApiVersion::V1beta1, &Format::Json, now()).body
    );

    let mut stream = NodeListStream::new(ApiVersion::V1, now());
    let mut chunks = stream.take();
    for node in &nodes {
        stream.push(node);
    }
    chunks.extend(stream.finish());
    assert_eq!(
        chunks,
        node_list(&nodes, ApiVersion::V1, &Format::Json, now()).body
    );
}

// === the reference's §3.4 examples ===

/// Removes the whitespace between JSON tokens, keeping key order (serde_json would sort).
fn compact(pretty: &str) -> String {
    let mut out = String::new();
    let mut in_string = false;
    let mut escaped = false;
    for c in pretty.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_whitespace() {
            out.push(c);
        }
    }
    out
}

#[test]
fn reference_examples() {
    let node_a = node_metrics(
        "node-a",
        &[
            ("kubernetes.io/hostname", "node-a"),
            ("kubernetes.io/os", "linux"),
        ],
        "2024-06-01T12:00:08Z",
        15_105_000_000,
        usage(5_710_780_139, 3_219_374_080),
    );
    let expected_node = r#"{
      "kind": "NodeMetrics",
      "apiVersion": "metrics.k8s.io/v1beta1",
      "metadata": {
        "name": "node-a",
        "creationTimestamp": "2024-06-01T12:00:14Z",
        "labels": {"kubernetes.io/hostname": "node-a", "kubernetes.io/os": "linux"}
      },
      "timestamp": "2024-06-01T12:00:08Z",
      "window": "15.105s",
      "usage": {"cpu": "5710780139n", "memory": "3143920Ki"}
    }"#;
    let ours = node(&node_a, ApiVersion::V1beta1, &Format::Json, now());
    assert_eq!(
        String::from_utf8(ours.body).unwrap(),
        compact(expected_node) + "\n"
    );

    let (_, pods) = fixtures();
    let expected_list = r#"{
      "kind": "PodMetricsList",
      "apiVersion": "metrics.k8s.io/v1beta1",
      "metadata": {},
      "items": [
        {
          "metadata": {
            "name": "shop-7d9f8c6b5-x2kqp",
            "namespace": "prod",
            "creationTimestamp": "2024-06-01T12:00:14Z",
            "labels": {"app": "shop", "pod-template-hash": "7d9f8c6b5"}
          },
          "timestamp": "2024-06-01T12:00:10Z",
          "window": "15.204s",
          "containers": [
            {"name": "web", "usage": {"cpu": "181878321n", "memory": "241800Ki"}},
            {"name": "proxy", "usage": {"cpu": "1843412n", "memory": "484Ki"}}
          ]
        }
      ]
    }"#;
    let ours = pod_list(&pods[..1], ApiVersion::V1beta1, &Format::Json, now());
    assert_eq!(
        String::from_utf8(ours.body).unwrap(),
        compact(expected_list) + "\n"
    );

    // §3.10: pod cells are container sums, canonicalised again.
    let table_body = pod_list(
        &pods[..1],
        ApiVersion::V1beta1,
        &table(IncludeObject::Metadata, TableVersion::V1),
        now(),
    );
    let text = String::from_utf8(table_body.body).unwrap();
    assert!(text.contains(r#""cells":["shop-7d9f8c6b5-x2kqp","183721733n","242284Ki","15.204s"]"#));
}

// === the real metrics-server outputs in fixtures/real-api ===

/// A JSON value that keeps object keys in document order.
#[derive(Debug, Clone, PartialEq)]
enum Ordered {
    Null,
    Bool(bool),
    Number(String),
    Text(String),
    Array(Vec<Ordered>),
    Object(Vec<(String, Ordered)>),
}

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OrderedVisitor;
        impl<'de> serde::de::Visitor<'de> for OrderedVisitor {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<Ordered, E> {
                Ok(Ordered::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Ordered, E> {
                Ok(Ordered::Bool(b))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Ordered, E> {
                Ok(Ordered::Number(n.to_string()))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Ordered, E> {
                Ok(Ordered::Number(n.to_string()))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Ordered, E> {
                Ok(Ordered::Number(n.to_string()))
            }
            fn visit_str<E>(self, s: &str) -> Result<Ordered, E> {
                Ok(Ordered::Text(s.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Ordered, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = a.next_element()? {
                    items.push(item);
                }
                Ok(Ordered::Array(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Ordered, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = a.next_entry()? {
                    entries.push(entry);
                }
                Ok(Ordered::Object(entries))
            }
        }
        d.deserialize_any(OrderedVisitor)
    }
}

impl Ordered {
    fn get(&self, key: &str) -> Option<&Ordered> {
        match self {
            Ordered::Object(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn text(&self, key: &str) -> &str {
        match self.get(key) {
            Some(Ordered::Text(s)) => s,
            other => panic!("{key} is {other:?}, not a string"),
        }
    }

    fn items(&self, key: &str) -> &[Ordered] {
        match self.get(key) {
            Some(Ordered::Array(items)) => items,
            other => panic!("{key} is {other:?}, not an array"),
        }
    }

    /// Drops every `selfLink` (current servers no longer send it).
    fn without_self_links(&self) -> Ordered {
        match self {
            Ordered::Object(entries) => Ordered::Object(
                entries
                    .iter()
                    .filter(|(k, _)| k != "selfLink")
                    .map(|(k, v)| (k.clone(), v.without_self_links()))
                    .collect(),
            ),
            Ordered::Array(items) => {
                Ordered::Array(items.iter().map(Ordered::without_self_links).collect())
            }
            other => other.clone(),
        }
    }
}

fn fixture_labels(meta: &Ordered) -> Labels {
    let mut map = BTreeMap::new();
    if let Some(Ordered::Object(entries)) = meta.get("labels") {
        for (k, v) in entries {
            let Ordered::Text(v) = v else {
                panic!("label {k} is not a string")
            };
            map.insert(k.clone(), v.clone());
        }
    }
    Arc::new(map)
}

fn fixture_usage(u: &Ordered) -> Usage {
    usage(
        parse_cpu(u.text("cpu")).unwrap(),
        parse_memory(u.text("memory")).unwrap(),
    )
}

fn fixture_node(item: &Ordered) -> NodeMetrics {
    let meta = item.get("metadata").unwrap();
    NodeMetrics {
        name: NodeName::new(meta.text("name")).unwrap(),
        labels: fixture_labels(meta),
        sample: Sample {
            usage: fixture_usage(item.get("usage").unwrap()),
            timestamp: ts(item.text("timestamp")),
            window: Window(parse_duration(item.text("window"))),
        },
    }
}

fn fixture_pod(item: &Ordered) -> PodMetrics {
    let meta = item.get("metadata").unwrap();
    PodMetrics {
        key: PodKey::new(meta.text("namespace"), meta.text("name")).unwrap(),
        labels: fixture_labels(meta),
        timestamp: ts(item.text("timestamp")),
        window: Window(parse_duration(item.text("window"))),
        containers: item
            .items("containers")
            .iter()
            .map(|c| ContainerMetrics {
                name: ContainerName::new(c.text("name")).unwrap(),
                usage: fixture_usage(c.get("usage").unwrap()),
            })
            .collect(),
    }
}

#[test]
fn real_metrics_server_outputs_are_reproduced() {
    let dir = fixtures_dir().join("real-api");
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/real-api");
    let mut names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names.len(), 7);
    for name in names {
        let text = fs::read_to_string(dir.join(&name)).unwrap();
        // The copies must not drift from the shared originals when those are present.
        if let Ok(original) = fs::read_to_string(shared.join(&name)) {
            assert_eq!(
                text, original,
                "{name:?} differs from shared/fixtures/real-api"
            );
        }
        let fixture: Ordered = serde_json::from_str(&text).unwrap();
        let v = ApiVersion::parse(
            fixture
                .text("apiVersion")
                .trim_start_matches("metrics.k8s.io/"),
        )
        .unwrap();
        let kind = fixture.text("kind");
        let items: Vec<&Ordered> = if kind.ends_with("List") {
            fixture.items("items").iter().collect()
        } else {
            vec![&fixture]
        };
        // creationTimestamp is "now" at the server: the same for every item of a response.
        let created = items[0].get("metadata").unwrap().text("creationTimestamp");
        let now = ts(created);
        let f = Format::Json;
        let ours = match kind {
            "NodeMetrics" => node(&fixture_node(&fixture), v, &f, now),
            "PodMetrics" => pod(&fixture_pod(&fixture), v, &f, now),
            "NodeMetricsList" => {
                let nodes: Vec<_> = items.iter().map(|i| fixture_node(i)).collect();
                node_list(&nodes, v, &f, now)
            }
            "PodMetricsList" => {
                let pods: Vec<_> = items.iter().map(|i| fixture_pod(i)).collect();
                pod_list(&pods, v, &f, now)
            }
            other => panic!("{name:?}: unexpected kind {other}"),
        };
        assert_eq!(ours.body.last(), Some(&b'\n'));
        let ours: Ordered = serde_json::from_slice(&ours.body).unwrap();
        assert_eq!(ours, fixture.without_self_links(), "{name:?}");
    }
}

// === protobuf, decoded by an independent implementation ===

mod pb {
    pub use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
    pub use k8s_pb::apimachinery::pkg::runtime::Unknown;
    pub use k8s_pb::metrics::pkg::apis::metrics::v1beta1 as metrics;
}

fn unwrap_envelope(body: &[u8], api_version: &str, kind: &str) -> Vec<u8> {
    use prost::Message;
    assert_eq!(&body[..4], b"k8s\0");
    let unknown = pb::Unknown::decode(&body[4..]).unwrap();
    let type_meta = unknown.type_meta.unwrap();
    assert_eq!(type_meta.api_version.as_deref(), Some(api_version));
    assert_eq!(type_meta.kind.as_deref(), Some(kind));
    assert_eq!(unknown.content_encoding.as_deref(), Some(""));
    assert_eq!(unknown.content_type.as_deref(), Some(""));
    unknown.raw.unwrap()
}

fn assert_object_meta(
    meta: &pb::meta::ObjectMeta,
    name: &str,
    namespace: Option<&str>,
    l: &BTreeMap<String, String>,
) {
    assert_eq!(meta.name.as_deref(), Some(name));
    assert_eq!(
        meta.namespace.as_deref().filter(|ns| !ns.is_empty()),
        namespace
    );
    let created = meta.creation_timestamp.as_ref().unwrap();
    assert_eq!(created.seconds, Some(now().as_secs()));
    assert_eq!(created.nanos, Some(0));
    assert_eq!(&meta.labels, l);
    assert!(meta.annotations.is_empty() && meta.owner_references.is_empty());
    assert_eq!(meta.deletion_timestamp, None);
}

fn assert_usage(
    pb_usage: &BTreeMap<String, k8s_pb::apimachinery::pkg::api::resource::Quantity>,
    u: Usage,
) {
    let strings: Vec<(&str, &str)> = pb_usage
        .iter()
        .map(|(k, q)| (k.as_str(), q.string.as_deref().unwrap()))
        .collect();
    assert_eq!(
        strings,
        [
            ("cpu", format_cpu(u.cpu_nanocores).as_str()),
            ("memory", format_memory(u.memory_bytes).as_str())
        ]
    );
}

#[test]
fn protobuf_decodes_with_k8s_pb() {
    use prost::Message;
    let (nodes, pods) = fixtures();
    let v = ApiVersion::V1beta1;

    let body = node_list(&nodes, v, &Format::Protobuf, now()).body;
    let raw = unwrap_envelope(&body, "metrics.k8s.io/v1beta1", "NodeMetricsList");
    let list = pb::metrics::NodeMetricsList::decode(raw.as_slice()).unwrap();
    let list_meta = list.metadata.unwrap();
    assert_eq!(list_meta.resource_version.as_deref(), Some(""));
    assert_eq!(list_meta.remaining_item_count, None);
    assert_eq!(list.items.len(), nodes.len());
    for (got, want) in list.items.iter().zip(&nodes) {
        assert_object_meta(
            got.metadata.as_ref().unwrap(),
            want.name.as_str(),
            None,
            &want.labels,
        );
        let t = got.timestamp.as_ref().unwrap();
        assert_eq!(
            (t.seconds, t.nanos),
            (Some(want.sample.timestamp.as_secs()), Some(0))
        );
        let w = got.window.as_ref().unwrap();
        assert_eq!(w.duration, Some(want.sample.window.as_nanos() as i64));
        assert_usage(&got.usage, want.sample.usage);
    }

    let body = pod_list(&pods, v, &Format::Protobuf, now()).body;
    let raw = unwrap_envelope(&body, "metrics.k8s.io/v1beta1", "PodMetricsList");
    let list = pb::metrics::PodMetricsList::decode(raw.as_slice()).unwrap();
    assert_eq!(list.items.len(), pods.len());
    for (got, want) in list.items.iter().zip(&pods) {
        assert_object_meta(
            got.metadata.as_ref().unwrap(),
            want.key.name.as_str(),
            Some(want.key.namespace.as_str()),
            &want.labels,
        );
        let t = got.timestamp.as_ref().unwrap();
        assert_eq!(t.seconds, Some(want.timestamp.as_secs()));
        assert_eq!(
            got.window.as_ref().unwrap().duration,
            Some(want.window.as_nanos() as i64)
        );
        assert_eq!(got.containers.len(), want.containers.len());
        for (gc, wc) in got.containers.iter().zip(&want.containers) {
            assert_eq!(gc.name.as_deref(), Some(wc.name.as_str()));
            assert_usage(&gc.usage, wc.usage);
        }
    }

    let body = pod(&pods[0], ApiVersion::V1, &Format::Protobuf, now()).body;
    let raw = unwrap_envelope(&body, "metrics.k8s.io/v1", "PodMetrics");
    let one = pb::metrics::PodMetrics::decode(raw.as_slice()).unwrap();
    assert_eq!(one.containers.len(), 2);

    let s = status::not_found_pod_metrics("prod", "web-0");
    let body = super::status(&s, &Format::Protobuf).body;
    let raw = unwrap_envelope(&body, "v1", "Status");
    let decoded = pb::meta::Status::decode(raw.as_slice()).unwrap();
    assert_eq!(decoded.status.as_deref(), Some("Failure"));
    assert_eq!(decoded.message.as_deref(), Some(s.message.as_str()));
    assert_eq!(decoded.reason.as_deref(), Some("NotFound"));
    assert_eq!(decoded.code, Some(404));
    let details = decoded.details.unwrap();
    assert_eq!(details.name.as_deref(), Some("prod/web-0"));
    assert_eq!(details.group.as_deref(), Some("metrics.k8s.io"));
    assert_eq!(details.kind.as_deref(), Some("podmetrics"));

    let body = super::status(&status::internal("boom"), &Format::Protobuf).body;
    let decoded =
        pb::meta::Status::decode(unwrap_envelope(&body, "v1", "Status").as_slice()).unwrap();
    assert_eq!(decoded.details, None);
    assert_eq!(decoded.reason.as_deref(), Some(""));
}

// === vectors generated by the Go oracle ===

fn vectors(name: &str) -> Vec<Vec<String>> {
    let text = fs::read_to_string(fixtures_dir().join("go/vectors").join(name)).unwrap();
    text.lines()
        .map(|line| line.split('\t').map(str::to_owned).collect())
        .collect()
}

fn unhex(s: &str) -> String {
    let bytes: Vec<u8> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn quantities_match_go() {
    let rows = vectors("quantity.tsv");
    assert!(rows.len() > 200);
    for row in rows {
        let value: u64 = row[0].parse().unwrap();
        assert_eq!(format_cpu(value), row[1], "cpu {value}");
        assert_eq!(format_memory(value), row[2], "memory {value}");
    }
}

#[test]
fn durations_and_times_match_go() {
    for row in vectors("duration.tsv") {
        let nanos: u64 = row[0].parse().unwrap();
        assert_eq!(format_duration(nanos), row[1], "duration {nanos}");
    }
    for row in vectors("time.tsv") {
        let nanos: i64 = row[0].parse().unwrap();
        assert_eq!(format_time(Timestamp(nanos)), row[1], "time {nanos}");
    }
}

#[test]
fn string_escaping_matches_go() {
    for row in vectors("json-string.tsv") {
        let input = String::from_utf8_lossy(
            &(0..row[0].len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&row[0][i..i + 2], 16).unwrap())
                .collect::<Vec<u8>>(),
        )
        .into_owned();
        if input.contains('\u{fffd}') {
            // Invalid UTF-8 cannot reach us: a Rust `str` is always valid.
            continue;
        }
        let mut ours = Vec::new();
        super::json::push_str(&mut ours, &input);
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            row[1],
            "escaping {input:?}"
        );
    }
}

#[test]
fn label_selectors_match_go() {
    let sets: Vec<BTreeMap<String, String>> = [
        &[][..],
        &[("app", "web")],
        &[("app", "db"), ("tier", "a")],
        &[("app", ""), ("tier", "b"), ("x", "5")],
        &[("env", "prod"), ("app", "web"), ("a", "1"), ("x", "-3")],
        &[
            ("in", "notin"),
            ("notin", "in"),
            ("example.com/key", "v"),
            ("x", "20"),
        ],
        &[
            ("a", "x"),
            ("b", ""),
            ("c", "1"),
            ("e", "1"),
            ("f", "f"),
            ("tier", ""),
        ],
    ]
    .iter()
    .map(|pairs| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
    .collect();
    for row in vectors("label-selector.tsv") {
        let input = unhex(&row[0]);
        let ours = LabelSelector::parse(&input);
        match row[1].as_str() {
            "err" => assert!(
                ours.is_err(),
                "{input:?} should be refused, parsed as {ours:?}"
            ),
            _ => {
                let ours = ours.unwrap_or_else(|e| panic!("{input:?} should parse: {e}"));
                assert_eq!(ours.to_string(), row[2], "canonical form of {input:?}");
                let matches: Vec<String> =
                    sets.iter().map(|s| ours.matches(s).to_string()).collect();
                assert_eq!(matches.join(","), row[3], "matches of {input:?}");
            }
        }
    }
}

#[test]
fn field_selectors_match_go() {
    for row in vectors("field-selector.tsv") {
        let input = unhex(&row[0]);
        let ours = FieldSelector::parse(&input);
        match row[1].as_str() {
            "err" => assert!(ours.is_err(), "{input:?} should be refused"),
            _ => assert_eq!(
                ours.unwrap().to_string(),
                row[2],
                "canonical form of {input:?}"
            ),
        }
    }
}

#[test]
fn negotiation_matches_the_apiserver() {
    let describe = |f: Result<Format, NotAcceptable>| match f {
        Ok(Format::Json) => "application/json".to_owned(),
        Ok(Format::Protobuf) => "application/vnd.kubernetes.protobuf".to_owned(),
        Ok(Format::Table(opts)) => format!("application/json Table {}", opts.version.api_version()),
        Err(_) => "406".to_owned(),
    };
    let rows = vectors("accept.tsv");
    assert!(rows.len() > 40);
    for row in rows {
        let header = unhex(&row[0]);
        assert_eq!(
            describe(negotiate(Some(&header))),
            row[1],
            "Accept: {header:?}"
        );
        assert_eq!(
            wants_aggregated_discovery(Some(&header)).to_string(),
            row[3],
            "aggregated discovery for Accept: {header:?}"
        );
    }
    assert_eq!(negotiate(None), Ok(Format::Json));
    assert_eq!(negotiate(Some("")), Ok(Format::Json));
    let long = format!("application/json,{}", "x/y,".repeat(MAX_ACCEPT_LEN / 4));
    assert!(negotiate(Some(&long)).is_err());
    assert!(!wants_aggregated_discovery(None));
    let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    assert_eq!(
        negotiate(Some(kubectl)),
        Ok(Format::Table(TableOptions::default()))
    );
}

#[test]
fn include_object_parses_the_query_parameter() {
    assert_eq!(IncludeObject::parse(""), Some(IncludeObject::Metadata));
    assert_eq!(IncludeObject::parse("None"), Some(IncludeObject::None));
    assert_eq!(IncludeObject::parse("Object"), Some(IncludeObject::Object));
    assert_eq!(IncludeObject::parse("object"), None);
}

// === helpers: RFC 3339 and Go durations, for reading fixtures ===

/// `YYYY-MM-DDTHH:MM:SS[.fff…]Z` as a timestamp.
fn ts(text: &str) -> Timestamp {
    let num = |range: std::ops::Range<usize>| -> i64 { text[range].parse().unwrap() };
    let (year, month, day) = (num(0..4), num(5..7), num(8..10));
    let secs_of_day = num(11..13) * 3600 + num(14..16) * 60 + num(17..19);
    let frac = text[19..].trim_end_matches('Z').trim_start_matches('.');
    let nanos: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}")[..9].parse().unwrap()
    };
    // Hinnant's days_from_civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Timestamp((days * 86_400 + secs_of_day) * 1_000_000_000 + nanos)
}

/// A Go duration as the fixtures spell them (`20.064s`, `5m0s`).
fn parse_duration(text: &str) -> u64 {
    let mut total = 0u64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let scale: u64 = match unit {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            other => panic!("unit {other:?} in {text:?}"),
        };
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        total += int.parse::<u64>().unwrap() * scale;
        if !frac.is_empty() {
            total += frac.parse::<u64>().unwrap() * scale / 10u64.pow(frac.len() as u32);
        }
        rest = next;
    }
    assert_eq!(
        format_duration(total),
        text,
        "fixture window {text:?} is not in Go form"
    );
    total
}

// === properties: any input encodes to well-formed documents that decode to it ===

mod properties {
    use super::*;
    use proptest::prelude::*;
    use prost::Message;

    fn any_labels() -> impl Strategy<Value = BTreeMap<String, String>> {
        proptest::collection::btree_map(any::<String>(), any::<String>(), 0..5)
    }

    fn any_pod() -> impl Strategy<Value = PodMetrics> {
        let name = "[a-z0-9][a-z0-9.-]{0,20}|[^\\x00-\\x20\"\\\\/\\x7f]{1,8}";
        (
            name,
            name,
            any_labels(),
            any::<i64>(),
            any::<u64>(),
            proptest::collection::vec((name, any::<u64>(), any::<u64>()), 0..4),
        )
            .prop_map(|(ns, pod, labels, at, window, containers)| PodMetrics {
                key: PodKey::new(&ns, &pod).unwrap(),
                labels: Arc::new(labels),
                timestamp: Timestamp(at),
                window: Window(window),
                containers: containers
                    .into_iter()
                    .map(|(name, cpu, memory)| ContainerMetrics {
                        name: ContainerName::new(&name).unwrap(),
                        usage: usage(cpu, memory),
                    })
                    .collect(),
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn json_parses_back(pods in proptest::collection::vec(any_pod(), 0..4), now in any::<i64>()) {
            let body = pod_list(&pods, ApiVersion::V1beta1, &Format::Json, Timestamp(now)).body;
            let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let items = value["items"].as_array().unwrap();
            prop_assert_eq!(items.len(), pods.len());
            for (item, pod) in items.iter().zip(&pods) {
                let meta = &item["metadata"];
                prop_assert_eq!(meta["name"].as_str(), Some(pod.key.name.as_str()));
                prop_assert_eq!(meta["namespace"].as_str(), Some(pod.key.namespace.as_str()));
                let labels: BTreeMap<String, String> = match meta.get("labels") {
                    Some(l) => serde_json::from_value(l.clone()).unwrap(),
                    None => BTreeMap::new(),
                };
                prop_assert_eq!(&labels, &*pod.labels);
                prop_assert_eq!(item["timestamp"].as_str().map(str::to_owned), Some(format_time(pod.timestamp)));
                prop_assert_eq!(item["window"].as_str().map(str::to_owned), Some(format_duration(pod.window.as_nanos())));
                let containers = item["containers"].as_array().unwrap();
                prop_assert_eq!(containers.len(), pod.containers.len());
                for (c, want) in containers.iter().zip(&pod.containers) {
                    prop_assert_eq!(c["name"].as_str(), Some(want.name.as_str()));
                    prop_assert_eq!(c["usage"]["cpu"].as_str().map(str::to_owned), Some(format_cpu(want.usage.cpu_nanocores)));
                    prop_assert_eq!(c["usage"]["memory"].as_str().map(str::to_owned), Some(format_memory(want.usage.memory_bytes)));
                }
            }
            // Pretty printing only adds whitespace.
            let pretty: serde_json::Value = serde_json::from_slice(&indent(&body)).unwrap();
            prop_assert_eq!(pretty, value);
        }

        #[test]
        fn tables_parse(pods in proptest::collection::vec(any_pod(), 0..4), object in any::<bool>()) {
            let include_object = if object { IncludeObject::Object } else { IncludeObject::Metadata };
            let body = pod_list(&pods, ApiVersion::V1, &table(include_object, TableVersion::V1), now()).body;
            let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
            prop_assert_eq!(value["rows"].as_array().map_or(0, Vec::len), pods.len());
        }

        #[test]
        fn protobuf_decodes_back(pods in proptest::collection::vec(any_pod(), 0..4)) {
            let body = pod_list(&pods, ApiVersion::V1beta1, &Format::Protobuf, now()).body;
            let raw = unwrap_envelope(&body, "metrics.k8s.io/v1beta1", "PodMetricsList");
            let list = pb::metrics::PodMetricsList::decode(raw.as_slice()).unwrap();
            prop_assert_eq!(list.items.len(), pods.len());
            for (got, want) in list.items.iter().zip(&pods) {
                let meta = got.metadata.as_ref().unwrap();
                prop_assert_eq!(meta.name.as_deref(), Some(want.key.name.as_str()));
                prop_assert_eq!(&meta.labels, &*want.labels);
                prop_assert_eq!(got.timestamp.as_ref().unwrap().seconds, Some(want.timestamp.as_secs()));
                prop_assert_eq!(got.containers.len(), want.containers.len());
            }
        }
    }
}
