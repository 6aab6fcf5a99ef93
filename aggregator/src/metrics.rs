//! The aggregator's self-metrics, served as OpenMetrics text on the HTTPS port's `/metrics`
//! (authorized like any non-resource path: `get` on `/metrics` through the delegated
//! authorizer, or listed in `--authorization-always-allow-paths`).
//!
//! Names are `kubepulse_aggregator_*`; events update them through [`crate::telemetry`], and
//! the store sizes are counted from the published view when scraped. Every label value is a
//! `&'static str` from a fixed set ([`request_labels`] maps any request path onto a handful
//! of resources), so no series is named after a node or pod and the series count does not
//! grow with the cluster (metrics-server's per-node `kubelet_*` series did).
//!
//! The families live in one process-wide set: a process runs one aggregator (tests that run
//! several replicas in one process see their sum, and the store gauges of whichever replica
//! was scraped last).

use std::sync::LazyLock;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kubepulse_aggregator_core::store::ClusterView;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::http::AppState;

/// A label set of fixed names and values.
pub type Labels<const N: usize> = [(&'static str, &'static str); N];

/// `Content-Type` of `/metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every family the aggregator exports.
pub struct Metrics {
    /// Ingest messages by `kind` (`snapshot`, `delta`, `status`).
    pub ingest_messages: Family<Labels<1>, Counter>,
    /// Wall-clock now minus the newest kubelet sample time of each applied snapshot or delta.
    pub ingest_lag: Histogram,
    /// Agent streams currently open.
    pub streams_connected: Gauge,
    /// Resyncs asked of agents by `reason` (`gap`, `invalid`, `store`).
    pub resyncs: Family<Labels<1>, Counter>,
    /// Ingest errors by `kind` (`invalid_message`, `protocol`, `stream`).
    pub ingest_errors: Family<Labels<1>, Counter>,
    /// HTTP requests by `verb`, `resource` and `code`.
    pub api_requests: Family<Labels<3>, Counter>,
    /// HTTP request latency by `verb` and `resource`.
    pub api_request_duration: Family<Labels<2>, Histogram>,
    /// Authentication and authorization outcomes by `decision`.
    pub auth_decisions: Family<Labels<1>, Counter>,
    /// Nodes whose data expired.
    pub nodes_expired: Counter,
    /// Nodes with data to serve.
    pub store_nodes: Gauge,
    /// Pods held.
    pub store_pods: Gauge,
    /// Containers held.
    pub store_containers: Gauge,
    /// Nodes whose agent reports failing kubelet reads.
    pub store_nodes_kubelet_failing: Gauge,
    /// Agent streams refused or closed by a bound or an identity check, by `reason`.
    pub streams_refused: Family<Labels<1>, Counter>,
    /// Agent tokens verified, by `method`: `local` (against the issuer's public keys) or
    /// `tokenreview` (asked of the API server; answers reused from the cache not counted).
    pub agent_token_verifications: Family<Labels<1>, Counter>,
    /// Agent messages that waited for their stream's rate limit.
    pub ingest_throttled: Counter,
    /// Resync requests the writer dropped because its queue to the stream was full (one is
    /// already queued).
    pub resyncs_coalesced: Counter,
    /// API requests refused or cut off by an overload bound, by `reason`
    /// (`max_requests_inflight`, `request_timeout`).
    pub api_overloaded: Family<Labels<1>, Counter>,
    registry: Registry,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide families.
pub fn get() -> &'static Metrics {
    &METRICS
}

/// Everything as OpenMetrics text, the store gauges counted from `view` first.
pub fn render(view: &ClusterView) -> String {
    let m = get();
    let (mut nodes, mut pods, mut containers, mut failing) = (0, 0, 0, 0);
    for entry in view.nodes.values() {
        nodes += i64::from(entry.has_data);
        pods += entry.view.pods.len() as i64;
        containers += entry.view.container_count() as i64;
        failing += i64::from(!entry.scrape.ok && !entry.scrape.error.is_empty());
    }
    m.store_nodes.set(nodes);
    m.store_pods.set(pods);
    m.store_containers.set(containers);
    m.store_nodes_kubelet_failing.set(failing);
    let mut out = String::with_capacity(8192);
    // writing into a String cannot fail
    let _ = encode(&mut out, &m.registry);
    out
}

/// `GET /metrics`.
pub async fn handler(State(state): State<AppState>) -> Response {
    let body = render(&state.published.view());
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

/// Middleware counting every request and its latency; with delegated auth in front
/// (`auth_enabled`), also the auth decision its status shows (401 unauthenticated, 403
/// denied, anything else allowed).
pub async fn observe_request(
    State(auth_enabled): State<bool>,
    request: Request,
    next: Next,
) -> Response {
    let (verb, resource) = request_labels(
        request.method(),
        request.uri().path(),
        request.uri().query(),
    );
    let started = Instant::now();
    let response = next.run(request).await;
    let took = started.elapsed();
    let status = response.status().as_u16();
    let m = get();
    m.api_requests
        .get_or_create(&[
            ("verb", verb),
            ("resource", resource),
            ("code", code_label(status)),
        ])
        .inc();
    m.api_request_duration
        .get_or_create(&[("verb", verb), ("resource", resource)])
        .observe(took.as_secs_f64());
    if auth_enabled {
        let decision = match status {
            401 => "unauthenticated",
            403 => "denied",
            _ => "allowed",
        };
        m.auth_decisions
            .get_or_create(&[("decision", decision)])
            .inc();
    }
    response
}

/// The `verb` and `resource` labels of a request: a fixed vocabulary whatever the path.
pub fn request_labels(
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> (&'static str, &'static str) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let resource = match parts.as_slice() {
        ["apis", "metrics.k8s.io", _, "nodes"] | ["apis", "metrics.k8s.io", _, "nodes", _] => {
            "nodes"
        }
        ["apis", "metrics.k8s.io", _, "nodes", _, "explain"] => "nodes/explain",
        ["apis", "metrics.k8s.io", _, "pods"]
        | ["apis", "metrics.k8s.io", _, "namespaces", _, "pods"]
        | ["apis", "metrics.k8s.io", _, "namespaces", _, "pods", _] => "pods",
        [
            "apis",
            "metrics.k8s.io",
            _,
            "namespaces",
            _,
            "pods",
            _,
            "explain",
        ] => "pods/explain",
        ["apis"] | ["apis", "metrics.k8s.io"] | ["apis", "metrics.k8s.io", _] => "discovery",
        ["openapi", ..] => "openapi",
        ["healthz" | "livez" | "readyz", ..] => "health",
        ["metrics"] => "metrics",
        ["version"] => "version",
        _ => "other",
    };
    let is_object = matches!(
        parts.as_slice(),
        ["apis", "metrics.k8s.io", _, "nodes", _, ..]
            | ["apis", "metrics.k8s.io", _, "namespaces", _, "pods", _, ..]
    );
    let verb = match *method {
        Method::GET | Method::HEAD => {
            let is_list = matches!(resource, "nodes" | "pods") && !is_object;
            let watch = query.is_some_and(|q| {
                q.split('&').any(|kv| {
                    kv.starts_with("watch=") && !matches!(kv, "watch=" | "watch=0" | "watch=false")
                })
            });
            match (is_list, watch) {
                (true, true) => "watch",
                (true, false) => "list",
                (false, _) => "get",
            }
        }
        _ => "other",
    };
    (verb, resource)
}

/// The `code` label: the status codes this server answers, else `other`.
fn code_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        406 => "406",
        429 => "429",
        500 => "500",
        503 => "503",
        504 => "504",
        _ => "other",
    }
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("kubepulse_aggregator");
        let m = Metrics {
            ingest_messages: Family::default(),
            ingest_lag: Histogram::new([
                0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0,
            ]),
            streams_connected: Gauge::default(),
            resyncs: Family::default(),
            ingest_errors: Family::default(),
            api_requests: Family::default(),
            api_request_duration: Family::new_with_constructor(|| {
                Histogram::new([
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ])
            }),
            auth_decisions: Family::default(),
            nodes_expired: Counter::default(),
            store_nodes: Gauge::default(),
            store_pods: Gauge::default(),
            store_containers: Gauge::default(),
            store_nodes_kubelet_failing: Gauge::default(),
            streams_refused: Family::default(),
            agent_token_verifications: Family::default(),
            ingest_throttled: Counter::default(),
            resyncs_coalesced: Counter::default(),
            api_overloaded: Family::default(),
            registry: Registry::default(),
        };
        // the fixed-vocabulary series exist from the start, at 0
        for kind in ["snapshot", "delta", "status"] {
            let _ = m.ingest_messages.get_or_create(&[("kind", kind)]);
        }
        for method in ["local", "tokenreview"] {
            let _ = m
                .agent_token_verifications
                .get_or_create(&[("method", method)]);
        }
        for reason in ["gap", "invalid", "store"] {
            let _ = m.resyncs.get_or_create(&[("reason", reason)]);
        }
        for kind in ["invalid_message", "protocol", "stream"] {
            let _ = m.ingest_errors.get_or_create(&[("kind", kind)]);
        }
        for decision in ["allowed", "denied", "unauthenticated"] {
            let _ = m.auth_decisions.get_or_create(&[("decision", decision)]);
        }
        let r = &mut registry;
        r.register(
            "ingest_messages",
            "Agent messages received, by kind",
            m.ingest_messages.clone(),
        );
        r.register_with_unit(
            "ingest_lag",
            "Wall-clock time at apply minus the newest kubelet sample time of each snapshot or delta",
            Unit::Seconds,
            m.ingest_lag.clone(),
        );
        r.register(
            "streams_connected",
            "Agent streams currently open",
            m.streams_connected.clone(),
        );
        r.register(
            "resyncs_requested",
            "Fresh snapshots asked of agents, by reason (gap: sequence gap; invalid: undecodable message; store: a delta that does not fit the held view)",
            m.resyncs.clone(),
        );
        r.register(
            "ingest_errors",
            "Ingest errors, by kind (invalid_message: undecodable snapshot or delta; protocol: a stream breaking the protocol; stream: a transport error)",
            m.ingest_errors.clone(),
        );
        r.register(
            "api_requests",
            "HTTPS requests, by verb, resource and status code",
            m.api_requests.clone(),
        );
        r.register_with_unit(
            "api_request_duration",
            "HTTPS request latency until the response head, by verb and resource",
            Unit::Seconds,
            m.api_request_duration.clone(),
        );
        r.register(
            "auth_decisions",
            "Delegated authentication and authorization outcomes, by decision",
            m.auth_decisions.clone(),
        );
        r.register(
            "nodes_expired",
            "Nodes whose data expired (no successful kubelet read within their TTL)",
            m.nodes_expired.clone(),
        );
        r.register(
            "store_nodes",
            "Nodes with data to serve",
            m.store_nodes.clone(),
        );
        r.register("store_pods", "Pods held", m.store_pods.clone());
        r.register(
            "store_containers",
            "Containers held",
            m.store_containers.clone(),
        );
        r.register(
            "store_nodes_kubelet_failing",
            "Nodes whose agent reports failing kubelet reads",
            m.store_nodes_kubelet_failing.clone(),
        );
        r.register(
            "streams_refused",
            "Agent streams refused or closed by a bound or an identity check, by reason",
            m.streams_refused.clone(),
        );
        r.register(
            "agent_token_verifications",
            "Agent tokens verified, by method (local: against the service-account issuer's public keys; tokenreview: by the API server)",
            m.agent_token_verifications.clone(),
        );
        r.register(
            "ingest_throttled",
            "Agent messages that waited for their stream's rate limit (--max-messages-per-second-per-stream)",
            m.ingest_throttled.clone(),
        );
        r.register(
            "resyncs_coalesced",
            "Resync requests dropped because one was already queued for the stream",
            m.resyncs_coalesced.clone(),
        );
        for reason in ["max_requests_inflight", "request_timeout"] {
            let _ = m.api_overloaded.get_or_create(&[("reason", reason)]);
        }
        r.register(
            "api_overloaded",
            "API requests refused (429, --max-requests-inflight) or cut off (504, --request-timeout), by reason",
            m.api_overloaded.clone(),
        );
        Metrics { registry, ..m }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_maps_onto_a_fixed_vocabulary() {
        let get = |path: &str| request_labels(&Method::GET, path, None);
        let v = "/apis/metrics.k8s.io/v1beta1";
        assert_eq!(get(&format!("{v}/nodes")), ("list", "nodes"));
        assert_eq!(get(&format!("{v}/nodes/n1")), ("get", "nodes"));
        assert_eq!(
            get(&format!("{v}/nodes/n1/explain")),
            ("get", "nodes/explain")
        );
        assert_eq!(get(&format!("{v}/pods")), ("list", "pods"));
        assert_eq!(get(&format!("{v}/namespaces/ns/pods")), ("list", "pods"));
        assert_eq!(get(&format!("{v}/namespaces/ns/pods/web")), ("get", "pods"));
        assert_eq!(
            get(&format!("{v}/namespaces/ns/pods/web/explain")),
            ("get", "pods/explain")
        );
        assert_eq!(
            request_labels(&Method::GET, &format!("{v}/pods"), Some("watch=true")),
            ("watch", "pods")
        );
        assert_eq!(get("/apis"), ("get", "discovery"));
        assert_eq!(get("/apis/metrics.k8s.io/v1"), ("get", "discovery"));
        assert_eq!(
            get("/openapi/v3/apis/metrics.k8s.io/v1beta1"),
            ("get", "openapi")
        );
        assert_eq!(get("/readyz/shutdown"), ("get", "health"));
        assert_eq!(get("/metrics"), ("get", "metrics"));
        // a name in an unexpected place never becomes a label
        assert_eq!(get("/some-node-name"), ("get", "other"));
        assert_eq!(get(&format!("{v}/nodes/n1/whatever")), ("get", "other"));
        assert_eq!(
            request_labels(&Method::DELETE, &format!("{v}/nodes/n1"), None),
            ("other", "nodes")
        );
        assert_eq!(code_label(200), "200");
        assert_eq!(code_label(418), "other");
    }
}
