//! The HTTPS surface: the one place routes are listed. Handlers parse the request, call
//! `kubepulse_aggregator_core::query` on the latest published view, and hand the answer to
//! `kubepulse_aggregator_core::encode`. Built by [`router`], so tests drive it without a
//! socket.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures::StreamExt as _;
use kubepulse_aggregator_core::api::{ApiStatus, ApiVersion};
use kubepulse_aggregator_core::encode::{self, Encoded, Format, status};
use kubepulse_aggregator_core::query::{self, ListOptions};
use kubepulse_aggregator_core::selector::{FieldSelector, LabelSelector};
use kubepulse_aggregator_core::store::ClusterView;
use kubepulse_model::Timestamp;

use crate::health::{self, Health};
use crate::writer::Published;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The writer's latest view.
    pub published: Arc<Published>,
    /// Health checks.
    pub health: Arc<Health>,
}

/// All routes.
pub fn router(state: AppState) -> Router {
    let metrics = Router::new()
        .route("/nodes", any(list_nodes))
        .route("/nodes/{name}", any(get_node))
        .route("/pods", any(list_pods_all))
        .route("/namespaces/{namespace}/pods", any(list_pods_in))
        .route("/namespaces/{namespace}/pods/{name}", any(get_pod))
        .fallback(group_not_found);
    Router::new()
        .route("/apis", get(api_group_list))
        .route("/apis/metrics.k8s.io", get(api_group))
        .route("/apis/metrics.k8s.io/", get(api_group))
        .route("/apis/metrics.k8s.io/{version}", get(resource_list))
        .nest("/apis/metrics.k8s.io/{version}", metrics)
        .route("/version", get(version))
        .merge(health::routes())
        .fallback(not_found)
        .with_state(state)
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
    answer: impl FnOnce(&Request, &ClusterView) -> Result<Encoded, ApiStatus>,
) -> Response {
    let accept = incoming
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let format = match encode::negotiate(accept) {
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
    match answer(&request, &view) {
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
    serve(&state, &version, incoming, "nodes", true, |req, view| {
        let items = query::list_nodes(view, None, req.list_options(), None);
        Ok(encode::node_list(&items, req.version, &req.format, now()))
    })
}

async fn get_node(
    State(state): State<AppState>,
    Path((version, name)): Path<(String, String)>,
    incoming: Incoming,
) -> Response {
    serve(&state, &version, incoming, "nodes", false, |req, view| {
        let m = query::get_node(view, None, &name)?;
        Ok(encode::node(&m, req.version, &req.format, now()))
    })
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
    let response = serve(state, version, incoming, "pods", true, |req, view| {
        if req.format == Format::Json {
            streamed = Some((req.version, req.labels.clone(), req.fields.clone()));
            return Ok(Encoded {
                content_type: encode::CONTENT_TYPE_JSON,
                body: Vec::new(),
            });
        }
        let items = query::list_pods(view, None, namespace, req.list_options());
        Ok(encode::pod_list(&items, req.version, &req.format, now()))
    });
    match streamed {
        Some((version, labels, fields)) => {
            stream_pod_list(state.published.view(), namespace, version, labels, fields)
        }
        None => response,
    }
}

/// A JSON `PodMetricsList` sent in chunks of about [`LIST_CHUNK`] bytes as a blocking task
/// walks the view (`query::for_each_pod`, a merge of the nodes' sorted pods): memory stays
/// bounded by the chunk size and the node count, whatever the number of pods, and the first
/// bytes leave before the last pod is encoded. The bytes are exactly `encode::pod_list`'s.
fn stream_pod_list(
    view: Arc<ClusterView>,
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
        query::for_each_pod(&view, None, namespace.as_deref(), opts, |m| {
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
    serve(&state, &version, incoming, "pods", false, |req, view| {
        let m = query::get_pod(view, None, &namespace, &name)?;
        Ok(encode::pod(&m, req.version, &req.format, now()))
    })
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

#[cfg(test)]
mod tests;
