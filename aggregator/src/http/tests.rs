//! The router driven without a socket (`oneshot`), over a writer-published view.

use std::time::{Duration, Instant};

use axum::body::Body;
use http_body_util::BodyExt as _;
use kubepulse_aggregator_core::store::{ClusterStore, StoreConfig, StreamId, StreamInfo, Update};
use kubepulse_model::{
    ContainerName, Epoch, NodeName, NodeView, PodKey, Sample, Timestamp, Usage, Window,
};
use tower::ServiceExt as _;

use super::*;
use crate::writer::Published;

fn sample(cpu: u64, mem: u64) -> Sample {
    Sample {
        usage: Usage {
            cpu_nanocores: cpu,
            memory_bytes: mem,
        },
        timestamp: Timestamp::from_millis(1_717_243_210_522),
        window: Window(15_204_000_000),
    }
}

fn app() -> Router {
    router(state())
}

fn state() -> AppState {
    let mut store = ClusterStore::new(StoreConfig::default());
    let node = NodeName::new("node-a").unwrap();
    let now = Instant::now();
    store.open_stream(
        node.clone(),
        StreamId(1),
        StreamInfo {
            epoch: Epoch(1),
            poll_interval: Duration::from_secs(1),
            agent_version: "".into(),
        },
        now,
    );
    let mut view = NodeView {
        node: Some(sample(5_710_780_139, 3_219_374_080)),
        ..NodeView::default()
    };
    view.pods
        .entry(PodKey::new("prod", "shop-7d9f8c6b5-x2kqp").unwrap())
        .or_default()
        .containers
        .insert(
            ContainerName::new("web").unwrap(),
            sample(181_878_321, 247_603_200),
        );
    store
        .apply(&node, StreamId(1), Update::Snapshot(view.into()), now)
        .unwrap();
    let published = Published::new();
    published.publish(store.publish());
    let health = Health::new(published.clone());
    AppState::standalone(published, health)
}

async fn call(method: &str, uri: &str, accept: Option<&str>) -> (u16, String, String) {
    call_with(app(), method, uri, accept.map(|a| ("accept", a))).await
}

async fn call_with(
    app: Router,
    method: &str,
    uri: &str,
    header: Option<(&str, &str)>,
) -> (u16, String, String) {
    let mut req = axum::http::Request::builder().method(method).uri(uri);
    if let Some((name, value)) = header {
        req = req.header(name, value);
    }
    let resp = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let code = resp.status().as_u16();
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (code, ct, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn serves_nodes_and_pods_in_both_versions() {
    for v in ["v1beta1", "v1"] {
        let (code, ct, body) = call(
            "GET",
            &format!("/apis/metrics.k8s.io/{v}/nodes/node-a"),
            None,
        )
        .await;
        assert_eq!((code, ct.as_str()), (200, "application/json"), "{body}");
        assert!(
            body.contains(&format!("\"apiVersion\":\"metrics.k8s.io/{v}\"")),
            "{body}"
        );
        assert!(
            body.contains("\"usage\":{\"cpu\":\"5710780139n\",\"memory\":\"3143920Ki\"}"),
            "{body}"
        );
        let (code, _, body) = call(
            "GET",
            &format!("/apis/metrics.k8s.io/{v}/namespaces/prod/pods"),
            None,
        )
        .await;
        assert_eq!(code, 200);
        assert!(body.contains("\"window\":\"15.204s\""), "{body}");
        assert!(
            body.contains("\"cpu\":\"181878321n\",\"memory\":\"241800Ki\""),
            "{body}"
        );
    }
}

#[tokio::test]
async fn discovery() {
    let (code, _, body) = call("GET", "/apis", None).await;
    assert_eq!(code, 200);
    assert!(body.contains("\"kind\":\"APIGroupList\""), "{body}");
    let (code, _, body) = call("GET", "/apis/metrics.k8s.io/v1beta1", None).await;
    assert_eq!(code, 200);
    assert!(body.contains("\"kind\":\"APIResourceList\""), "{body}");
    let (code, _, body) = call("GET", "/apis/metrics.k8s.io", None).await;
    assert_eq!(code, 200);
    assert!(body.contains("\"kind\":\"APIGroup\""), "{body}");
}

#[tokio::test]
async fn errors_are_statuses() {
    let (code, _, body) = call("GET", "/apis/metrics.k8s.io/v1beta1/nodes/nope", None).await;
    assert_eq!(code, 404);
    assert!(
        body.contains("nodemetrics.metrics.k8s.io \\\"nope\\\" not found"),
        "{body}"
    );
    let (code, _, body) = call("GET", "/apis/metrics.k8s.io/v1beta1/pods?watch=true", None).await;
    assert_eq!(code, 405);
    assert!(body.contains("watch is not supported"), "{body}");
    let (code, _, _) = call("DELETE", "/apis/metrics.k8s.io/v1beta1/nodes/node-a", None).await;
    assert_eq!(code, 405);
    let (code, _, body) = call(
        "GET",
        "/apis/metrics.k8s.io/v1beta1/pods?labelSelector=a%20in%20(",
        None,
    )
    .await;
    assert_eq!(code, 400, "{body}");
    let (code, _, body) = call(
        "GET",
        "/apis/metrics.k8s.io/v1beta1/pods?fieldSelector=spec.nodeName%3Dx",
        None,
    )
    .await;
    assert_eq!(code, 400);
    assert!(body.contains("is not a known field selector"), "{body}");
    let (code, _, _) = call(
        "GET",
        "/apis/metrics.k8s.io/v1beta1/nodes",
        Some("application/yaml"),
    )
    .await;
    assert_eq!(code, 406);
    let (code, _, _) = call("GET", "/apis/metrics.k8s.io/v2/nodes", None).await;
    assert_eq!(code, 404);
    let (code, _, _) = call("GET", "/nope", None).await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn protobuf_and_table() {
    let (code, ct, body) = call(
        "GET",
        "/apis/metrics.k8s.io/v1beta1/nodes",
        Some("application/vnd.kubernetes.protobuf, application/json"),
    )
    .await;
    assert_eq!(
        (code, ct.as_str()),
        (200, "application/vnd.kubernetes.protobuf")
    );
    assert!(body.starts_with("k8s\0"));
    let (code, _, body) = call(
        "GET",
        "/apis/metrics.k8s.io/v1beta1/pods",
        Some("application/json;as=Table;v=v1;g=meta.k8s.io"),
    )
    .await;
    assert_eq!(code, 200);
    assert!(body.contains("\"kind\":\"Table\""), "{body}");
}

#[tokio::test]
async fn health_follows_metrics_server() {
    let (code, _, body) = call("GET", "/readyz", None).await;
    assert_eq!((code, body.as_str()), (200, "ok"));
    let (code, _, body) = call("GET", "/readyz?verbose", None).await;
    assert_eq!(code, 200);
    assert!(body.starts_with("[+]ping ok\n[+]log ok\n"), "{body}");
    assert!(
        body.ends_with("[+]shutdown ok\nreadyz check passed\n"),
        "{body}"
    );
    let (code, _, body) = call("GET", "/livez/metric-collection-timely", None).await;
    assert_eq!((code, body.as_str()), (200, "ok"));
}

#[tokio::test]
async fn readiness_needs_data() {
    let published = Published::new();
    let health = Health::new(published.clone());
    let app = router(AppState::standalone(published, health));
    let resp = app
        .oneshot(
            axum::http::Request::get("/readyz")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(
        String::from_utf8_lossy(&body).contains("[-]metric-storage-ready failed: reason withheld")
    );
}

#[test]
fn query_strings() {
    let q = parse_query("labelSelector=app%3Dweb%2Ctier+in+(a)&watch=&x");
    assert_eq!(q["labelSelector"], "app=web,tier in (a)");
    assert_eq!(q["watch"], "");
    assert_eq!(q["x"], "");
    assert_eq!(percent_decode("%zz%4"), "%zz%4");
}

const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

#[tokio::test]
async fn table_include_object() {
    let (code, _, body) = call(
        "GET",
        "/apis/metrics.k8s.io/v1beta1/nodes?includeObject=None",
        Some(TABLE),
    )
    .await;
    assert_eq!(code, 200);
    assert!(body.contains("\"object\":null"), "{body}");
    let (_, _, body) = call(
        "GET",
        "/apis/metrics.k8s.io/v1beta1/nodes?includeObject=Object",
        Some(TABLE),
    )
    .await;
    assert!(
        body.contains("\"object\":{\"kind\":\"NodeMetrics\""),
        "{body}"
    );
    let (_, _, body) = call("GET", "/apis/metrics.k8s.io/v1beta1/nodes", Some(TABLE)).await;
    assert!(
        body.contains("\"kind\":\"PartialObjectMetadata\""),
        "{body}"
    );
    let (code, _, body) = call(
        "GET",
        "/apis/metrics.k8s.io/v1beta1/pods?includeObject=All",
        Some(TABLE),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains(r#"Unable to convert to Table as requested: [includeObject: Unsupported value: \"All\": supported values: \"Metadata\", \"None\", \"Object\"]"#),
        "{body}"
    );
    // ignored when no Table is asked for
    let (code, _, _) = call(
        "GET",
        "/apis/metrics.k8s.io/v1beta1/pods?includeObject=All",
        None,
    )
    .await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn pretty_json() {
    let (_, _, compact) = call("GET", "/apis/metrics.k8s.io/v1beta1/nodes/node-a", None).await;
    assert!(
        compact.starts_with("{\"kind\":\"NodeMetrics\""),
        "{compact}"
    );
    let (code, _, pretty) = call(
        "GET",
        "/apis/metrics.k8s.io/v1beta1/nodes/node-a?pretty=true",
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert!(
        pretty.starts_with("{\n  \"kind\": \"NodeMetrics\",\n"),
        "{pretty}"
    );
    // (creationTimestamp is the serving time: it may differ by a second)
    let reparsed = |s: &str| {
        let mut v = serde_json::from_str::<serde_json::Value>(s).unwrap();
        v["metadata"]["creationTimestamp"] = serde_json::Value::Null;
        v
    };
    assert_eq!(reparsed(&pretty), reparsed(&compact));
    // curl is answered pretty unless it says pretty=false, as by the apiserver
    let (_, _, body) = call_with(
        app(),
        "GET",
        "/apis/metrics.k8s.io/v1beta1/nodes/node-a",
        Some(("user-agent", "curl/8.5.0")),
    )
    .await;
    assert!(body.starts_with("{\n"), "{body}");
    let (_, _, body) = call_with(
        app(),
        "GET",
        "/apis/metrics.k8s.io/v1beta1/nodes/node-a?pretty=false",
        Some(("user-agent", "curl/8.5.0")),
    )
    .await;
    assert!(body.starts_with("{\"kind\":\"NodeMetrics\""), "{body}");
    // never protobuf
    let (_, ct, body) = call(
        "GET",
        "/apis/metrics.k8s.io/v1beta1/nodes?pretty=true",
        Some("application/vnd.kubernetes.protobuf"),
    )
    .await;
    assert_eq!(ct, "application/vnd.kubernetes.protobuf");
    assert!(body.starts_with("k8s\0"));
}

#[tokio::test]
async fn openapi_documents() {
    let (code, ct, body) = call("GET", "/openapi/v2", None).await;
    assert_eq!((code, ct.as_str()), (200, "application/json"));
    assert!(body.contains("io.k8s.metrics.pkg.apis.metrics.v1.PodMetrics"));
    let etag = format!("\"{}\"", state().openapi.v2().hash);
    let (code, _, body) =
        call_with(app(), "GET", "/openapi/v2", Some(("if-none-match", &etag))).await;
    assert_eq!((code, body.as_str()), (304, ""));
    let (code, _, body) = call("GET", "/openapi/v3", None).await;
    assert_eq!(code, 200);
    let index: serde_json::Value = serde_json::from_str(&body).unwrap();
    let url = index["paths"]["apis/metrics.k8s.io/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap();
    let (code, _, body) = call("GET", url, None).await;
    assert_eq!(code, 200);
    assert!(body.contains("\"openapi\":\"3.0.0\""));
    let (code, _, _) = call("GET", "/openapi/v3/apis/apps/v1", None).await;
    assert_eq!(code, 404);
}

fn labels(pairs: &[(&str, &str)]) -> kubepulse_aggregator_core::api::Labels {
    std::sync::Arc::new(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

#[tokio::test]
async fn kubernetes_metadata_and_node_selector() {
    use kubepulse_aggregator_core::meta::{MetaView, NodeMeta, PodMeta};

    let mut state = state();
    let meta = crate::watch::MetaPublished::new();
    state.meta = Some(meta.clone());
    state.health = Health::with_metadata(state.published.clone(), meta.clone());
    state.node_selector = Some(std::sync::Arc::new(LabelSelector::parse("zone=b").unwrap()));

    // not synced yet: not ready
    let (code, _, body) = call_with(router(state.clone()), "GET", "/readyz?verbose", None).await;
    assert_eq!(code, 500);
    assert!(body.contains("[-]metric-informer-sync failed"), "{body}");

    let mut view = MetaView::default();
    view.nodes.insert(
        NodeName::new("node-a").unwrap(),
        NodeMeta {
            labels: labels(&[("zone", "a")]),
        },
    );
    view.pods.insert(
        PodKey::new("prod", "shop-7d9f8c6b5-x2kqp").unwrap(),
        PodMeta {
            labels: labels(&[("app", "shop")]),
            node: Some(NodeName::new("node-a").unwrap()),
            running: true,
            uid: 0,
        },
    );
    view.synced = true;
    meta.publish(view);
    let app = router(state);
    let (code, _, _) = call_with(app.clone(), "GET", "/readyz", None).await;
    assert_eq!(code, 200);
    // --node-selector filters lists only
    let (_, _, body) = call_with(
        app.clone(),
        "GET",
        "/apis/metrics.k8s.io/v1beta1/nodes",
        None,
    )
    .await;
    assert!(body.contains("\"items\":[]"), "{body}");
    let (code, _, body) = call_with(
        app.clone(),
        "GET",
        "/apis/metrics.k8s.io/v1beta1/nodes/node-a",
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert!(body.contains("\"labels\":{\"zone\":\"a\"}"), "{body}");
    // labels come from the watch and select
    let (_, _, body) = call_with(
        app.clone(),
        "GET",
        "/apis/metrics.k8s.io/v1beta1/pods?labelSelector=app%3Dshop",
        None,
    )
    .await;
    assert!(body.contains("\"labels\":{\"app\":\"shop\"}"), "{body}");
    let (_, _, body) = call_with(
        app.clone(),
        "GET",
        "/apis/metrics.k8s.io/v1beta1/pods?labelSelector=app%3Dother",
        None,
    )
    .await;
    assert!(body.contains("\"items\":[]"), "{body}");
    // a pod the watch does not know is not Running: NotFound, as metrics-server
    let (code, _, body) = call_with(
        app,
        "GET",
        "/apis/metrics.k8s.io/v1beta1/namespaces/prod/pods/gone",
        None,
    )
    .await;
    assert_eq!(code, 404);
    assert!(body.contains("pods \\\"gone\\\" not found"), "{body}");
}
