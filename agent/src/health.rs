//! The agent's plain-HTTP operations port: `/healthz` (the process runs) and `/readyz` (the
//! last kubelet read worked and at least one aggregator stream is up) for the DaemonSet's
//! probes, and `/metrics` (self-metrics, see [`crate::metrics`]; no names of pods or
//! containers, so nothing there needs protecting).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::watch;

use crate::metrics;
use crate::tick::TickOutput;

/// Inputs of the checks.
#[derive(Clone)]
pub struct AgentHealth {
    /// Streams currently up.
    pub streams_up: Arc<AtomicUsize>,
    /// The tick loop's latest output.
    pub ticks: watch::Receiver<Arc<TickOutput>>,
}

/// The health routes.
pub fn router(health: AgentHealth) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(health)
}

async fn render_metrics(State(h): State<AgentHealth>) -> impl IntoResponse {
    let up = h.streams_up.load(Ordering::Relaxed);
    metrics::get().streams_up.set(up as i64);
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::render(),
    )
}

async fn readyz(State(h): State<AgentHealth>) -> (StatusCode, String) {
    let last = h.ticks.borrow().clone();
    let streams = h.streams_up.load(Ordering::Relaxed);
    if !last.status.ok {
        let why = if last.ticks == 0 {
            "no kubelet read yet".to_owned()
        } else {
            last.status.error.clone()
        };
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("[-]kubelet failed: {why}\n"),
        );
    }
    if streams == 0 {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "[-]aggregator failed: no stream up\n".to_owned(),
        );
    }
    (StatusCode::OK, "ok".to_owned())
}
