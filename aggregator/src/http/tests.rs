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
    let mut store = ClusterStore::new(StoreConfig::default());
    let node = NodeName::new("node-a").unwrap();
    let now = Instant::now();
    store.open_stream(
        node.clone(),
        StreamId(1),
        StreamInfo {
            epoch: Epoch(1),
            poll_interval: Duration::from_secs(1),
            agent_version: String::new(),
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
        .apply(&node, StreamId(1), Update::Snapshot(view), now)
        .unwrap();
    let published = Published::new();
    published.publish(store.publish());
    let health = Health::new(published.clone());
    router(AppState { published, health })
}

async fn call(method: &str, uri: &str, accept: Option<&str>) -> (u16, String, String) {
    let mut req = axum::http::Request::builder().method(method).uri(uri);
    if let Some(a) = accept {
        req = req.header(header::ACCEPT, a);
    }
    let resp = app()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
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
    let app = router(AppState { published, health });
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
