//! `/livez`, `/readyz`, `/healthz` with named checks, in metrics-server's format so probes
//! and its e2e expectations work unchanged: `ok` on success, `?verbose` lists the checks, a
//! failure answers 500 with every check listed and reasons withheld (they are logged), and
//! `/<endpoint>/<check>` shows one check with its reason.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::http::AppState;
use crate::watch::MetaPublished;
use crate::writer::Published;

/// Inputs of the checks.
pub struct Health {
    published: Arc<Published>,
    meta: Option<Arc<MetaPublished>>,
    shutting_down: AtomicBool,
}

impl Health {
    /// Checks over the writer's published state (standalone: no watches to sync).
    pub fn new(published: Arc<Published>) -> Arc<Self> {
        Arc::new(Self {
            published,
            meta: None,
            shutting_down: AtomicBool::new(false),
        })
    }

    /// Checks over the writer's state and the Pod and Node watches (Kubernetes mode):
    /// `metric-informer-sync` and `metadata-informer-sync` pass once both watches listed
    /// everything, so `/readyz` is ready only when synced and a node reported.
    pub fn with_metadata(published: Arc<Published>, meta: Arc<MetaPublished>) -> Arc<Self> {
        Arc::new(Self {
            published,
            meta: Some(meta),
            shutting_down: AtomicBool::new(false),
        })
    }

    /// Graceful shutdown began: readiness fails from now on.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    fn check(&self, name: &str) -> Result<(), String> {
        match name {
            "metric-storage-ready" => {
                if self.published.view().has_data() {
                    Ok(())
                } else {
                    Err("no metrics to serve".to_owned())
                }
            }
            "metric-collection-timely" => {
                let idle = self.published.writer_idle();
                if idle > Duration::from_secs(10) {
                    Err(format!("writer idle for {}s", idle.as_secs()))
                } else {
                    Ok(())
                }
            }
            "shutdown" => {
                if self.shutting_down.load(Ordering::Relaxed) {
                    Err("process is shutting down".to_owned())
                } else {
                    Ok(())
                }
            }
            "metric-informer-sync" | "metadata-informer-sync" => match &self.meta {
                Some(meta) if !meta.synced() => {
                    Err("Pod and Node watches have not listed everything yet".to_owned())
                }
                _ => Ok(()),
            },
            // ping, log and the post-start hooks
            _ => Ok(()),
        }
    }
}

const COMMON: [&str; 4] = [
    "ping",
    "log",
    "poststarthook/max-in-flight-filter",
    "poststarthook/storage-object-count-tracker-hook",
];

fn checks(endpoint: &str) -> Vec<&'static str> {
    let mut names = COMMON.to_vec();
    match endpoint {
        "readyz" => names.extend([
            "metric-storage-ready",
            "metric-informer-sync",
            "metadata-informer-sync",
            "shutdown",
        ]),
        "livez" => names.extend(["metric-collection-timely", "metadata-informer-sync"]),
        _ => names.push("metadata-informer-sync"),
    }
    names
}

/// The health routes.
pub fn routes() -> Router<AppState> {
    let mut router = Router::new();
    for endpoint in ["livez", "readyz", "healthz"] {
        router = router
            .route(
                &format!("/{endpoint}"),
                get(move |state: State<AppState>, query: RawQuery| all(state, query, endpoint)),
            )
            .route(
                &format!("/{endpoint}/{{*check}}"),
                get(move |state: State<AppState>, check: Path<String>| one(state, check, endpoint)),
            );
    }
    router
}

async fn all(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    endpoint: &'static str,
) -> Response {
    let query = query.unwrap_or_default();
    let verbose = query
        .split('&')
        .any(|kv| kv == "verbose" || kv.starts_with("verbose="));
    let excluded: Vec<&str> = query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("exclude="))
        .collect();
    let mut body = String::new();
    let mut failed = false;
    for name in checks(endpoint) {
        if excluded.contains(&name) {
            body.push_str(&format!("[+]{name} excluded: ok\n"));
            continue;
        }
        match state.health.check(name) {
            Ok(()) => body.push_str(&format!("[+]{name} ok\n")),
            Err(reason) => {
                tracing::info!(check = name, endpoint, reason, "health check failed");
                failed = true;
                body.push_str(&format!("[-]{name} failed: reason withheld\n"));
            }
        }
    }
    for name in excluded {
        if !checks(endpoint).contains(&name) {
            body.push_str(&format!(
                "warn: some health checks cannot be excluded: no matches for \"{name}\"\n"
            ));
        }
    }
    let text = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if failed {
        body.push_str(&format!("{endpoint} check failed\n"));
        (StatusCode::INTERNAL_SERVER_ERROR, text, body).into_response()
    } else if verbose {
        body.push_str(&format!("{endpoint} check passed\n"));
        (StatusCode::OK, text, body).into_response()
    } else {
        (StatusCode::OK, text, "ok").into_response()
    }
}

async fn one(
    State(state): State<AppState>,
    Path(check): Path<String>,
    endpoint: &'static str,
) -> Response {
    let text = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if !checks(endpoint).contains(&check.as_str()) {
        return (
            StatusCode::NOT_FOUND,
            text,
            "404 page not found\n".to_owned(),
        )
            .into_response();
    }
    match state.health.check(&check) {
        Ok(()) => (StatusCode::OK, text, "ok".to_owned()).into_response(),
        Err(reason) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            text,
            format!("internal server error: {reason}\n"),
        )
            .into_response(),
    }
}
