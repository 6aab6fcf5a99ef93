//! The HTTPS surface: the one place routes are listed. Handlers parse the request, call
//! `kubepulse_aggregator_core::query` on the latest published view (joined with the latest
//! Kubernetes metadata in Kubernetes mode), and hand the answer to
//! `kubepulse_aggregator_core::encode`. Built by [`router`], so tests drive it without a
//! socket.
//!
//! Layers, outermost first: request counts and latency for `/metrics` ([`crate::metrics`]),
//! the request log (DEBUG, `kubepulse_aggregator::http`: method,
//! path, user, `Accept`, status, `Content-Type`), `pretty` indentation of JSON answers, and
//! in Kubernetes mode the delegated authentication and authorization of [`crate::auth`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::{Path, Request as HttpRequest, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures::StreamExt as _;
use kubepulse_aggregator_core::api::{ApiStatus, ApiVersion};
use kubepulse_aggregator_core::encode::openapi::{Document, OpenApi};
use kubepulse_aggregator_core::encode::{self, Encoded, Format, IncludeObject, status};
use kubepulse_aggregator_core::meta::MetaView;
use kubepulse_aggregator_core::query::{self, ListOptions};
use kubepulse_aggregator_core::selector::{FieldSelector, LabelSelector};
use kubepulse_aggregator_core::store::ClusterView;
use kubepulse_model::Timestamp;

use crate::auth::{self, Auth, ServedUser};
use crate::health::{self, Health};
use crate::watch::MetaPublished;
use crate::writer::Published;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The writer's latest view.
    pub published: Arc<Published>,
    /// Health checks.
    pub health: Arc<Health>,
    /// The metadata writer's latest view (Kubernetes mode; `None` standalone).
    pub meta: Option<Arc<MetaPublished>>,
    /// `--node-selector`, when not empty.
    pub node_selector: Option<Arc<LabelSelector>>,
    /// The OpenAPI documents.
    pub openapi: Arc<OpenApi>,
    /// Delegated authentication and authorization (Kubernetes mode; `None` standalone).
    pub auth: Option<Arc<Auth>>,
    /// The Kubernetes API (Kubernetes mode), for `explain` to look up a pod the watch of
    /// Running pods does not list.
    pub kube: Option<kube::Client>,
}

impl AppState {
    /// State without metadata, node selector or auth (standalone mode, tests).
    pub fn standalone(published: Arc<Published>, health: Arc<Health>) -> Self {
        Self {
            published,
            health,
            meta: None,
            node_selector: None,
            openapi: Arc::new(OpenApi::build(&build_version())),
            auth: None,
            kube: None,
        }
    }
}

/// `v<crate version>`, the `info.version` of the OpenAPI documents.
pub fn build_version() -> String {
    format!("v{}", env!("CARGO_PKG_VERSION"))
}

/// All routes.
pub fn router(state: AppState) -> Router {
    let metrics = Router::new()
        .route("/nodes", any(list_nodes))
        .route("/nodes/{name}", any(get_node))
        .route("/pods", any(list_pods_all))
        .route("/namespaces/{namespace}/pods", any(list_pods_in))
        .route("/namespaces/{namespace}/pods/{name}", any(get_pod))
        .route("/nodes/{name}/explain", any(explain::node))
        .route(
            "/namespaces/{namespace}/pods/{name}/explain",
            any(explain::pod),
        )
        .fallback(group_not_found);
    let routes = Router::new()
        .route("/apis", get(api_group_list))
        .route("/apis/metrics.k8s.io", get(api_group))
        .route("/apis/metrics.k8s.io/", get(api_group))
        .route("/apis/metrics.k8s.io/{version}", get(resource_list))
        .nest("/apis/metrics.k8s.io/{version}", metrics)
        .route("/version", get(version))
        .route("/metrics", get(crate::metrics::handler))
        .route("/openapi/v2", get(openapi_v2))
        .route("/openapi/v3", get(openapi_v3_index))
        .route("/openapi/v3/{*path}", get(openapi_v3))
        .merge(health::routes())
        .fallback(not_found)
        .with_state(state.clone());
    let routes = match &state.auth {
        Some(auth) => routes.layer(middleware::from_fn_with_state(
            auth.clone(),
            auth::middleware,
        )),
        None => routes,
    };
    routes
        .layer(middleware::from_fn(pretty))
        .layer(middleware::from_fn(log_request))
        .layer(middleware::from_fn_with_state(
            state.auth.is_some(),
            crate::metrics::observe_request,
        ))
}

fn now() -> Timestamp {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default();
    Timestamp(nanos)
}

fn reply(code: StatusCode, encoded: Encoded) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, encoded.content_type)],
        encoded.body,
    )
        .into_response()
}

fn error(s: &ApiStatus, format: &Format) -> Response {
    let code = StatusCode::from_u16(s.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    reply(code, encode::status(s, format))
}

/// Everything a metrics request carries besides its path.
struct Request {
    version: ApiVersion,
    format: Format,
    labels: LabelSelector,
    fields: FieldSelector,
}

/// The parts of an HTTP request a metrics handler reads.
struct Incoming {
    method: Method,
    headers: HeaderMap,
    query: Option<String>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Incoming {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self {
            method: parts.method.clone(),
            headers: parts.headers.clone(),
            query: parts.uri.query().map(str::to_owned),
        })
    }
}

/// Parses version, Accept, method, watch and selectors, then answers with `answer`; any
/// problem becomes the Status metrics-server answers.
fn serve(
    state: &AppState,
    version: &str,
    incoming: Incoming,
    resource: &str,
    is_list: bool,
    answer: impl FnOnce(&Request, &ClusterView, Option<&MetaView>) -> Result<Encoded, ApiStatus>,
) -> Response {
    let accept = incoming
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let mut format = match encode::negotiate(accept) {
        Ok(f) => f,
        Err(e) => return reply(StatusCode::NOT_ACCEPTABLE, e.encode()),
    };
    let Some(version) = ApiVersion::parse(version) else {
        return error(&status::not_found_path(), &format);
    };
    if incoming.method != Method::GET && incoming.method != Method::HEAD {
        return error(&status::method_not_allowed(), &format);
    }
    let params = parse_query(incoming.query.as_deref().unwrap_or_default());
    if let Format::Table(opts) = &mut format {
        let value = params.get("includeObject").map_or("", String::as_str);
        match IncludeObject::parse(value) {
            Some(include) => opts.include_object = include,
            None => {
                return error(
                    &status::bad_request(format!(
                        "Unable to convert to Table as requested: [includeObject: Unsupported value: {value:?}: supported values: \"Metadata\", \"None\", \"Object\"]"
                    )),
                    &Format::Json,
                );
            }
        }
    }
    if is_list
        && params
            .get("watch")
            .is_some_and(|w| w != "0" && w != "false")
    {
        return error(&status::watch_not_supported(resource), &format);
    }
    let selector = |key: &str| params.get(key).map_or("", String::as_str);
    let labels = match LabelSelector::parse(selector("labelSelector")) {
        Ok(l) => l,
        Err(e) => return error(&status::bad_request(e.to_string()), &format),
    };
    let fields = match FieldSelector::parse(selector("fieldSelector")) {
        Ok(f) => f,
        Err(e) => return error(&status::bad_request(e.to_string()), &format),
    };
    let request = Request {
        version,
        format,
        labels,
        fields,
    };
    let view = state.published.view();
    let meta = state.meta.as_ref().map(|m| m.view());
    match answer(&request, &view, meta.as_deref()) {
        Ok(encoded) => reply(StatusCode::OK, encoded),
        Err(s) => error(&s, &request.format),
    }
}

impl Request {
    fn list_options(&self) -> ListOptions<'_> {
        ListOptions {
            labels: &self.labels,
            fields: &self.fields,
        }
    }
}

fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .take(64)
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn list_nodes(
    State(state): State<AppState>,
    Path(version): Path<String>,
    incoming: Incoming,
) -> Response {
    serve(
        &state,
        &version,
        incoming,
        "nodes",
        true,
        |req, view, meta| {
            let filter = state.node_selector.as_deref();
            let items = query::list_nodes(view, meta, req.list_options(), filter);
            Ok(encode::node_list(&items, req.version, &req.format, now()))
        },
    )
}

async fn get_node(
    State(state): State<AppState>,
    Path((version, name)): Path<(String, String)>,
    incoming: Incoming,
) -> Response {
    serve(
        &state,
        &version,
        incoming,
        "nodes",
        false,
        |req, view, meta| {
            let m = query::get_node(view, meta, &name)?;
            Ok(encode::node(&m, req.version, &req.format, now()))
        },
    )
}

async fn list_pods_all(
    State(state): State<AppState>,
    Path(version): Path<String>,
    incoming: Incoming,
) -> Response {
    list_pods(&state, &version, None, incoming)
}

async fn list_pods_in(
    State(state): State<AppState>,
    Path((version, namespace)): Path<(String, String)>,
    incoming: Incoming,
) -> Response {
    list_pods(&state, &version, Some(&namespace), incoming)
}

fn list_pods(
    state: &AppState,
    version: &str,
    namespace: Option<&str>,
    incoming: Incoming,
) -> Response {
    // JSON lists are streamed (see `stream_pod_list`); `serve` still validates the request
    let mut streamed = None;
    let response = serve(state, version, incoming, "pods", true, |req, view, meta| {
        if req.format == Format::Json {
            streamed = Some((req.version, req.labels.clone(), req.fields.clone()));
            return Ok(Encoded {
                content_type: encode::CONTENT_TYPE_JSON,
                body: Vec::new(),
            });
        }
        let items = query::list_pods(view, meta, namespace, req.list_options());
        Ok(encode::pod_list(&items, req.version, &req.format, now()))
    });
    match streamed {
        Some((version, labels, fields)) => stream_pod_list(
            state.published.view(),
            state.meta.as_ref().map(|m| m.view()),
            namespace,
            version,
            labels,
            fields,
        ),
        None => response,
    }
}

/// A JSON `PodMetricsList` sent in chunks of about [`LIST_CHUNK`] bytes as a blocking task
/// walks the view (`query::for_each_pod`, a merge of the nodes' sorted pods): memory stays
/// bounded by the chunk size and the node count, whatever the number of pods, and the first
/// bytes leave before the last pod is encoded. The bytes are exactly `encode::pod_list`'s.
fn stream_pod_list(
    view: Arc<ClusterView>,
    meta: Option<Arc<MetaView>>,
    namespace: Option<&str>,
    version: ApiVersion,
    labels: LabelSelector,
    fields: FieldSelector,
) -> Response {
    let namespace = namespace.map(str::to_owned);
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
    tokio::task::spawn_blocking(move || {
        let mut list = encode::PodListStream::new(version, now());
        let opts = ListOptions {
            labels: &labels,
            fields: &fields,
        };
        let mut open = true;
        query::for_each_pod(&view, meta.as_deref(), namespace.as_deref(), opts, |m| {
            list.push(&m);
            if list.buffered() >= LIST_CHUNK {
                open = tx.blocking_send(list.take()).is_ok();
            }
            open
        });
        if open {
            let _ = tx.blocking_send(list.finish());
        }
    });
    let chunks = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|c| Ok::<_, std::convert::Infallible>(bytes::Bytes::from(c)));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, encode::CONTENT_TYPE_JSON)],
        axum::body::Body::from_stream(chunks),
    )
        .into_response()
}

/// Size of the chunks a streamed list is sent in.
const LIST_CHUNK: usize = 256 * 1024;

async fn get_pod(
    State(state): State<AppState>,
    Path((version, namespace, name)): Path<(String, String, String)>,
    incoming: Incoming,
) -> Response {
    serve(
        &state,
        &version,
        incoming,
        "pods",
        false,
        |req, view, meta| {
            let m = query::get_pod(view, meta, &namespace, &name)?;
            Ok(encode::pod(&m, req.version, &req.format, now()))
        },
    )
}

async fn api_group_list(headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    if encode::wants_aggregated_discovery(accept) {
        return reply(StatusCode::OK, encode::aggregated_discovery());
    }
    reply(StatusCode::OK, encode::api_group_list())
}

async fn api_group() -> Response {
    reply(StatusCode::OK, encode::api_group())
}

async fn resource_list(Path(version): Path<String>) -> Response {
    match ApiVersion::parse(&version) {
        Some(v) => reply(StatusCode::OK, encode::api_resource_list(v)),
        None => error(&status::not_found_path(), &Format::Json),
    }
}

async fn group_not_found() -> Response {
    error(&status::not_found_path(), &Format::Json)
}

async fn not_found() -> Response {
    error(&status::not_found_path(), &Format::Json)
}

async fn version() -> Response {
    let body = format!(
        "{{\"major\":\"0\",\"minor\":\"1\",\"gitVersion\":\"v{}\",\"platform\":\"{}/{}\"}}\n",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

async fn openapi_v2(State(state): State<AppState>, headers: HeaderMap) -> Response {
    document(state.openapi.v2(), &headers)
}

async fn openapi_v3_index(State(state): State<AppState>, headers: HeaderMap) -> Response {
    document(state.openapi.v3_index(), &headers)
}

async fn openapi_v3(
    State(state): State<AppState>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    match state.openapi.v3(&path) {
        Some(doc) => document(doc, &headers),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "404 page not found\n",
        )
            .into_response(),
    }
}

/// An OpenAPI document with its `ETag`; `If-None-Match` with that tag answers 304.
fn document(doc: &Document, headers: &HeaderMap) -> Response {
    let etag = format!("\"{}\"", doc.hash);
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::ETAG, etag),
        ],
        doc.body.clone(),
    )
        .into_response()
}

/// `?pretty=true` (or a curl, Wget or browser user agent without `pretty`) indents JSON
/// answers under `/apis`, as the apiserver's serializer does.
async fn pretty(request: HttpRequest, next: Next) -> Response {
    let wanted = request.uri().path().starts_with("/apis") && wants_pretty(&request);
    let response = next.run(request).await;
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !wanted || !is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "response body").into_response();
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(encode::indent(&bytes)))
}

fn wants_pretty(request: &HttpRequest) -> bool {
    let query = request.uri().query().unwrap_or_default();
    if let Some(value) = parse_query(query).get("pretty").filter(|v| !v.is_empty()) {
        return matches!(value.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True");
    }
    let agent = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    agent.starts_with("curl") || agent.starts_with("Wget") || agent.starts_with("Mozilla/5.0")
}

/// One DEBUG line per request (the HPA's protobuf `Accept` and our `Content-Type` show here).
async fn log_request(request: HttpRequest, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let accept = request.headers().get(header::ACCEPT).cloned();
    let agent = request.headers().get(header::USER_AGENT).cloned();
    let response = next.run(request).await;
    let text = |v: Option<&HeaderValue>| {
        v.and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    tracing::debug!(
        %method,
        path,
        user = response.extensions().get::<ServedUser>().map(|u| u.0.as_str()).unwrap_or_default(),
        accept = text(accept.as_ref()),
        user_agent = text(agent.as_ref()),
        status = response.status().as_u16(),
        content_type = text(response.headers().get(header::CONTENT_TYPE)),
        "request"
    );
    response
}

mod explain;

#[cfg(test)]
mod tests;
