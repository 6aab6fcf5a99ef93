use std::sync::Arc;

use axum::routing::get;
use futures::StreamExt as _;
use http_body_util::BodyExt as _;
use tokio::sync::Notify;
use tower::ServiceExt as _;

use super::*;

/// A router whose `/slow` waits for `release`, `/sleep` sleeps 300 ms, `/trickle` streams one
/// chunk then nothing, and `/healthz` answers at once.
fn app(release: Arc<Notify>, overload: Overload) -> Router {
    let slow = move || {
        let release = release.clone();
        async move {
            release.notified().await;
            "done"
        }
    };
    let trickle = || async {
        let chunks = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"{"))])
            .chain(futures::stream::pending());
        Body::from_stream(chunks)
    };
    let router = Router::new()
        .route("/slow", get(slow))
        .route(
            "/sleep",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "late"
            }),
        )
        .route("/trickle", get(trickle))
        .route("/healthz", get(|| async { "ok" }));
    limit(router, overload)
}

fn get_req(path: &str) -> Request {
    Request::get(path).body(Body::empty()).unwrap()
}

async fn json(response: Response) -> serde_json::Value {
    let body = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn requests_over_the_inflight_limit_get_429_and_probes_still_pass() {
    let release = Arc::new(Notify::new());
    let app = app(
        release.clone(),
        Overload {
            max_inflight: 2,
            timeout: Duration::from_secs(30),
        },
    );
    let first = tokio::spawn(app.clone().oneshot(get_req("/slow")));
    let second = tokio::spawn(app.clone().oneshot(get_req("/slow")));
    // both hold their places before the third arrives
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = app.clone().oneshot(get_req("/slow")).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()[header::RETRY_AFTER], "1");
    assert_eq!(refused.headers()[header::CONTENT_TYPE], "application/json");
    let body = json(refused).await;
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "TooManyRequests");
    assert_eq!(
        body["message"],
        "Too many requests, please try again later."
    );
    assert_eq!(body["code"], 429);

    let probe = app.clone().oneshot(get_req("/healthz")).await.unwrap();
    assert_eq!(probe.status(), StatusCode::OK);

    release.notify_waiters();
    for task in [first, second] {
        let response = task.await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let _ = response.into_body().collect().await.unwrap();
    }
    // places are given back once the bodies are sent
    let again = tokio::spawn(app.clone().oneshot(get_req("/slow")));
    tokio::time::sleep(Duration::from_millis(50)).await;
    release.notify_waiters();
    assert_eq!(again.await.unwrap().unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn a_request_over_the_timeout_gets_504() {
    let app = app(
        Arc::new(Notify::new()),
        Overload {
            max_inflight: 10,
            timeout: Duration::from_millis(50),
        },
    );
    let response = app.oneshot(get_req("/sleep")).await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    let body = json(response).await;
    assert_eq!(body["reason"], "Timeout");
    assert_eq!(
        body["message"],
        "Timeout: request did not complete within requested timeout - context deadline exceeded"
    );
    assert_eq!(body["code"], 504);
}

#[tokio::test]
async fn a_body_still_streaming_at_the_deadline_is_cut_off_and_frees_its_place() {
    let app = app(
        Arc::new(Notify::new()),
        Overload {
            max_inflight: 1,
            timeout: Duration::from_millis(100),
        },
    );
    let response = app.clone().oneshot(get_req("/trickle")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let outcome = tokio::time::timeout(Duration::from_secs(5), response.into_body().collect())
        .await
        .expect("the body ends at the deadline");
    assert!(
        outcome.is_err(),
        "a cut-off body must fail, not end cleanly"
    );
    // its place is free again: the next request times out instead of being refused
    let next = app.oneshot(get_req("/sleep")).await.unwrap();
    assert_eq!(next.status(), StatusCode::GATEWAY_TIMEOUT);
}
