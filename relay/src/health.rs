//! The relay's plain-HTTP operations port: `/healthz` and `/livez` (the process runs),
//! `/readyz` (at least one aggregator replica's relay stream is up, so agents that connect are
//! carried somewhere) and `/metrics` (self-metrics, see [`crate::metrics`]; no node names).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics;

/// Inputs of the checks.
#[derive(Clone)]
pub struct RelayHealth {
    /// Aggregator replicas with a relay stream up.
    pub upstreams_connected: Arc<AtomicUsize>,
}

/// The health routes.
pub fn router(health: RelayHealth) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(health)
}

async fn render_metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::render(),
    )
}

async fn readyz(State(h): State<RelayHealth>) -> (StatusCode, String) {
    if h.upstreams_connected.load(Ordering::Relaxed) == 0 {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "[-]aggregator failed: no relay stream up\n".to_owned(),
        );
    }
    (StatusCode::OK, "ok".to_owned())
}
