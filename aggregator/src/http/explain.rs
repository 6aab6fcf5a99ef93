//! The `explain` subresource: `GET /apis/metrics.k8s.io/<v>/namespaces/<ns>/pods/<name>/explain`
//! and `…/nodes/<name>/explain`, answered with `kubepulse_aggregator_core::explain` over the
//! same views the Metrics API serves from, as the `kubepulse.io/v1alpha1` JSON document of
//! `encode::explain`. Under the `metrics.k8s.io` group so kube-apiserver proxies it and
//! authorizes it as `get` on `pods/explain` or `nodes/explain` (and so does our delegated
//! authorizer, which sees the same path).
//!
//! A pod the watch of Running pods does not list is looked up in the Kubernetes API (one
//! `list` narrowed to its name, which the aggregator's RBAC already allows), so the answer can
//! say "Pending" or "does not exist" instead of "not Running or not found".

use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kubepulse_aggregator_core::api::ApiVersion;
use kubepulse_aggregator_core::encode::{self, Format, status};
use kubepulse_aggregator_core::explain::{self, ApiPod, Scope};
use kubepulse_model::{NodeName, PodKey};
use tokio::sync::Semaphore;

use super::{AppState, error, now, reply};

/// How long the API look-up of an unknown pod may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// Look-ups in flight at once (explain is an operator's tool; the API server is not to be
/// hammered through it).
static LOOKUPS: Semaphore = Semaphore::const_new(4);

/// `GET …/namespaces/{namespace}/pods/{name}/explain`.
pub(super) async fn pod(
    State(state): State<AppState>,
    Path((version, namespace, name)): Path<(String, String, String)>,
    method: Method,
) -> Response {
    if let Some(refused) = refuse(&version, &method) {
        return refused;
    }
    let meta = state.meta.as_ref().map(|m| m.view());
    let unknown = meta.as_ref().is_some_and(|m| {
        PodKey::new(&namespace, &name).is_ok_and(|key| !m.pods.contains_key(&key))
    });
    let api = match (&state.kube, unknown) {
        (Some(client), true) => lookup(client, &namespace, &name).await,
        _ => None,
    };
    let view = state.published.view();
    let scope = Scope {
        view: &view,
        meta: meta.as_deref(),
        node_selector: state.node_selector.as_deref(),
        now: Instant::now(),
    };
    let explained = explain::explain_pod(&scope, &namespace, &name, api.as_ref());
    reply(StatusCode::OK, encode::explain::pod(&explained, now()))
}

/// `GET …/nodes/{name}/explain`.
pub(super) async fn node(
    State(state): State<AppState>,
    Path((version, name)): Path<(String, String)>,
    method: Method,
) -> Response {
    if let Some(refused) = refuse(&version, &method) {
        return refused;
    }
    let meta = state.meta.as_ref().map(|m| m.view());
    let view = state.published.view();
    let scope = Scope {
        view: &view,
        meta: meta.as_deref(),
        node_selector: state.node_selector.as_deref(),
        now: Instant::now(),
    };
    let explained = explain::explain_node(&scope, &name);
    reply(StatusCode::OK, encode::explain::node(&explained, now()))
}

/// The Status for an unknown version or a method other than GET/HEAD.
fn refuse(version: &str, method: &Method) -> Option<Response> {
    if ApiVersion::parse(version).is_none() {
        return Some(error(&status::not_found_path(), &Format::Json));
    }
    if method != Method::GET && method != Method::HEAD {
        return Some(error(&status::method_not_allowed(), &Format::Json));
    }
    None
}

/// The pod's phase and node from the API, or `None` when the look-up failed (the
/// explanation then says "not Running or not found").
async fn lookup(client: &kube::Client, namespace: &str, name: &str) -> Option<ApiPod> {
    let _permit = LOOKUPS.try_acquire().ok()?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default()
        .fields(&format!("metadata.name={name}"))
        .limit(1);
    let listed = match tokio::time::timeout(LOOKUP_TIMEOUT, pods.list(&params)).await {
        Ok(Ok(list)) => list,
        Ok(Err(err)) => {
            tracing::debug!(namespace, name, error = %err, "explain: pod look-up failed");
            return None;
        }
        Err(_) => {
            tracing::debug!(namespace, name, "explain: pod look-up timed out");
            return None;
        }
    };
    let Some(pod) = listed.items.into_iter().next() else {
        return Some(ApiPod::NotFound);
    };
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Unknown".to_owned());
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .and_then(|n| NodeName::new(n).ok());
    Some(ApiPod::Found { phase, node })
}
