//! OpenAPI documents: `/openapi/v2` (Swagger 2.0) and `/openapi/v3` (the index) with one
//! document per path (`apis`, `apis/metrics.k8s.io`, `apis/metrics.k8s.io/v1beta1`,
//! `apis/metrics.k8s.io/v1`, `version`). kube-apiserver downloads and merges them, which is
//! what `kubectl explain podmetrics` reads.
//!
//! The `v1beta1` documents under `openapi/` are what metrics-server v0.9.0 serves (its
//! generated definitions of the metrics types, the meta/v1 and `resource.Quantity` types they
//! reference, with `x-kubernetes-group-version-kind`), re-serialised with sorted keys. The
//! `v1` entries are derived from them (same shapes, `v1` names). Built once at start;
//! nothing here reads a clock.

use std::collections::BTreeMap;

use serde_json::Value;

const V2: &str = include_str!("openapi/v2.json");
const V3_APIS: &str = include_str!("openapi/v3-apis.json");
const V3_GROUP: &str = include_str!("openapi/v3-group.json");
const V3_V1BETA1: &str = include_str!("openapi/v3-v1beta1.json");
const V3_VERSION: &str = include_str!("openapi/v3-version.json");

/// The title in every document's `info`.
pub const TITLE: &str = "kubepulse";

/// A document and its hash (also its `ETag`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    /// JSON body.
    pub body: Vec<u8>,
    /// Upper-case hex hash of the body.
    pub hash: String,
}

/// Every OpenAPI document the server answers with.
#[derive(Clone, Debug)]
pub struct OpenApi {
    v2: Document,
    v3_index: Document,
    v3: BTreeMap<&'static str, Document>,
}

impl OpenApi {
    /// Builds the documents; `version` goes into `info.version` (e.g. `v0.1.0`).
    pub fn build(version: &str) -> Self {
        let v3_sources = [
            ("apis", V3_APIS.to_owned()),
            ("apis/metrics.k8s.io", V3_GROUP.to_owned()),
            ("apis/metrics.k8s.io/v1beta1", V3_V1BETA1.to_owned()),
            ("apis/metrics.k8s.io/v1", to_v1(V3_V1BETA1)),
            ("version", V3_VERSION.to_owned()),
        ];
        let v3: BTreeMap<&'static str, Document> = v3_sources
            .into_iter()
            .map(|(path, text)| (path, document(retitle(&text, version))))
            .collect();
        let mut index = serde_json::Map::new();
        for (path, doc) in &v3 {
            index.insert(
                (*path).to_owned(),
                serde_json::json!({
                    "serverRelativeURL": format!("/openapi/v3/{path}?hash={}", doc.hash)
                }),
            );
        }
        let v3_index = document(serde_json::json!({ "paths": index }));
        Self {
            v2: document(retitle(&v2_with_v1(), version)),
            v3_index,
            v3,
        }
    }

    /// `/openapi/v2`.
    pub fn v2(&self) -> &Document {
        &self.v2
    }

    /// `/openapi/v3`: `{"paths":{"<path>":{"serverRelativeURL":"/openapi/v3/<path>?hash=…"}}}`.
    pub fn v3_index(&self) -> &Document {
        &self.v3_index
    }

    /// `/openapi/v3/<path>` (without the leading `/openapi/v3/`).
    pub fn v3(&self, path: &str) -> Option<&Document> {
        self.v3.get(path.trim_matches('/'))
    }

    /// The paths `/openapi/v3/<path>` serves.
    pub fn v3_paths(&self) -> impl Iterator<Item = &str> {
        self.v3.keys().copied()
    }
}

// === private helpers ===

/// The v1beta1 text with every v1beta1 name turned into its v1 name (paths, definition
/// names, operation ids, tags, group-version-kinds), keeping the one description that
/// speaks of "a v1beta1 version" in general.
fn to_v1(text: &str) -> String {
    const KEEP: &str = "inside a v1beta1 version of the core";
    const HOLD: &str = "inside a \u{0}KEEP\u{0} version of the core";
    text.replace(KEEP, HOLD)
        .replace("v1beta1", "v1")
        .replace("V1beta1", "V1")
        .replace(HOLD, KEEP)
}

/// The Swagger 2.0 document with the `v1` paths and definitions beside the `v1beta1` ones.
fn v2_with_v1() -> String {
    let mut doc: Value = serde_json::from_str(V2).expect("embedded OpenAPI v2 is JSON");
    for section in ["paths", "definitions"] {
        let Some(map) = doc.get_mut(section).and_then(Value::as_object_mut) else {
            continue;
        };
        let v1: Vec<(String, Value)> = map
            .iter()
            .filter(|(key, _)| key.contains("v1beta1"))
            .map(|(key, value)| {
                let text = to_v1(&value.to_string());
                (
                    to_v1(key),
                    serde_json::from_str(&text).expect("renamed JSON is JSON"),
                )
            })
            .collect();
        map.extend(v1);
    }
    doc.to_string()
}

/// Sets `info` to kubepulse's title and version.
fn retitle(text: &str, version: &str) -> Value {
    let mut doc: Value = serde_json::from_str(text).expect("embedded OpenAPI is JSON");
    if let Some(info) = doc.get_mut("info").and_then(Value::as_object_mut) {
        info.insert("title".to_owned(), Value::from(TITLE));
        info.insert("version".to_owned(), Value::from(version));
    }
    doc
}

fn document(doc: Value) -> Document {
    let body = serde_json::to_vec(&doc).expect("JSON value serialises");
    let hash = hash_hex(&body);
    Document { body, hash }
}

/// FNV-1a 128-bit of `bytes`, upper-case hex: a content hash for `ETag` and the v3
/// `?hash=` (any stable content hash works; clients only compare them).
fn hash_hex(bytes: &[u8]) -> String {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut h = OFFSET;
    for &b in bytes {
        h ^= u128::from(b);
        h = h.wrapping_mul(PRIME);
    }
    format!("{h:032X}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(doc: &Document) -> Value {
        serde_json::from_slice(&doc.body).unwrap()
    }

    fn gvk(schema: &Value) -> (String, String, String) {
        let g = &schema["x-kubernetes-group-version-kind"][0];
        (
            g["group"].as_str().unwrap().to_owned(),
            g["version"].as_str().unwrap().to_owned(),
            g["kind"].as_str().unwrap().to_owned(),
        )
    }

    #[test]
    fn v3_has_every_metrics_type_in_both_versions() {
        let api = OpenApi::build("v0.1.0");
        for version in ["v1beta1", "v1"] {
            let doc = json(api.v3(&format!("apis/metrics.k8s.io/{version}")).unwrap());
            assert_eq!(doc["openapi"], "3.0.0");
            assert_eq!(doc["info"]["title"], TITLE);
            assert_eq!(doc["info"]["version"], "v0.1.0");
            let schemas = doc["components"]["schemas"].as_object().unwrap();
            for kind in [
                "NodeMetrics",
                "NodeMetricsList",
                "PodMetrics",
                "PodMetricsList",
            ] {
                let schema = &schemas[&format!("io.k8s.metrics.pkg.apis.metrics.{version}.{kind}")];
                assert_eq!(
                    gvk(schema),
                    ("metrics.k8s.io".into(), version.into(), kind.into())
                );
            }
            assert!(schemas.contains_key(&format!(
                "io.k8s.metrics.pkg.apis.metrics.{version}.ContainerMetrics"
            )));
            for referenced in [
                "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
                "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta",
                "io.k8s.apimachinery.pkg.apis.meta.v1.Time",
                "io.k8s.apimachinery.pkg.apis.meta.v1.Duration",
                "io.k8s.apimachinery.pkg.api.resource.Quantity",
            ] {
                assert!(schemas.contains_key(referenced), "{version}: {referenced}");
            }
            // every $ref resolves inside the document
            let text = doc.to_string();
            for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
                let name = &piece[..piece.find('"').unwrap()];
                assert!(
                    schemas.contains_key(name),
                    "{version}: dangling $ref {name}"
                );
            }
            let paths = doc["paths"].as_object().unwrap();
            assert!(paths.contains_key(&format!(
                "/apis/metrics.k8s.io/{version}/namespaces/{{namespace}}/pods/{{name}}"
            )));
            if version == "v1" {
                assert!(
                    !text.contains("metrics.v1beta1"),
                    "v1 document names v1beta1"
                );
                assert!(!text.contains("\"version\":\"v1beta1\""));
            }
        }
    }

    #[test]
    fn v3_index_points_at_each_document_with_its_hash() {
        let api = OpenApi::build("v0.1.0");
        let index = json(api.v3_index());
        let paths = index["paths"].as_object().unwrap();
        assert_eq!(paths.len(), 5);
        for path in api.v3_paths() {
            let url = paths[path]["serverRelativeURL"].as_str().unwrap();
            assert_eq!(
                url,
                format!("/openapi/v3/{path}?hash={}", api.v3(path).unwrap().hash)
            );
        }
        assert!(api.v3("/apis/metrics.k8s.io/v1/").is_some());
        assert!(api.v3("apis/apps/v1").is_none());
    }

    #[test]
    fn v2_merges_both_versions() {
        let api = OpenApi::build("v0.1.0");
        let doc = json(api.v2());
        assert_eq!(doc["swagger"], "2.0");
        assert_eq!(doc["info"]["title"], TITLE);
        let defs = doc["definitions"].as_object().unwrap();
        for version in ["v1beta1", "v1"] {
            let pm = &defs[&format!("io.k8s.metrics.pkg.apis.metrics.{version}.PodMetrics")];
            assert_eq!(
                gvk(pm),
                ("metrics.k8s.io".into(), version.into(), "PodMetrics".into())
            );
            assert_eq!(
                pm["properties"]["containers"]["items"]["$ref"],
                format!("#/definitions/io.k8s.metrics.pkg.apis.metrics.{version}.ContainerMetrics")
            );
            assert!(
                doc["paths"]
                    .as_object()
                    .unwrap()
                    .contains_key(&format!("/apis/metrics.k8s.io/{version}/nodes/{{name}}"))
            );
        }
        let text = doc.to_string();
        for piece in text.split("\"$ref\":\"#/definitions/").skip(1) {
            let name = &piece[..piece.find('"').unwrap()];
            assert!(defs.contains_key(name), "dangling $ref {name}");
        }
    }

    #[test]
    fn hashes_follow_content() {
        assert_eq!(hash_hex(b"a"), hash_hex(b"a"));
        assert_ne!(hash_hex(b"a"), hash_hex(b"b"));
        assert_eq!(hash_hex(b"").len(), 32);
        let a = OpenApi::build("v1");
        let b = OpenApi::build("v2");
        assert_ne!(a.v2().hash, b.v2().hash);
    }
}
