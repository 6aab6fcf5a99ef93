//! The kubepulse agent: the I/O shell around `kubepulse-agent-core`.
//!
//! Code map, in data-flow order:
//! - [`kubelet`]: reads `/metrics/resource` (TLS verified, token, timeout, size cap);
//! - [`tick`]: the loop that calls `decode` and `NodeState::observe` and publishes the view;
//! - [`uplink`]: one gRPC stream per aggregator replica (snapshot, deltas, resync, backoff);
//! - [`health`]: probes and `/metrics`; [`config`] and [`telemetry`]: flags, logs and named
//!   events; [`metrics`]: the self-metrics those events update.
//!
//! [`run`] is what `main` and the tests call.

pub mod config;
pub mod health;
pub mod kubelet;
pub mod metrics;
pub mod telemetry;
pub mod tick;
pub mod uplink;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::SystemTime;

use anyhow::Context as _;
use kubepulse_agent_core::node_state::{NodeState, NodeStateConfig};
use tokio::sync::watch;

pub use config::Config;

/// A fresh epoch for this agent run: wall-clock nanoseconds mixed with the process id, so two
/// runs on one node never share one.
fn new_epoch() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    nanos ^ (u64::from(std::process::id()) << 40)
}

/// Runs the agent until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let client = kubelet::KubeletClient::new(&config)?;
    let state = NodeState::new(NodeStateConfig {
        fresh_container_max_age: config.fresh_container_max_age,
    });
    let (tick_tx, tick_rx) = watch::channel(Arc::new(tick::TickOutput::default()));
    let streams_up = Arc::new(AtomicUsize::new(0));
    let settings = uplink::StreamSettings::new(&config, new_epoch(), streams_up.clone())?;

    let health_listener = tokio::net::TcpListener::bind(config.health_address)
        .await
        .with_context(|| format!("listen on {} (--health-address)", config.health_address))?;
    tracing::info!(
        node = %config.node_name,
        kubelet = %config.kubelet_address,
        health = %health_listener.local_addr()?,
        epoch = settings.epoch,
        "agent starting"
    );
    let health = health::router(health::AgentHealth {
        streams_up,
        ticks: tick_rx.clone(),
    });
    let health_task = tokio::spawn(async move {
        let _ = axum::serve(health_listener, health).await;
    });
    let tick_task = tokio::spawn(tick::run(client, state, config.poll_interval, tick_tx));
    let uplink_task = tokio::spawn(uplink::run(
        settings,
        config.aggregator_endpoints.clone(),
        config.aggregator_service.clone(),
        config.aggregator_resolve_interval,
        tick_rx,
    ));
    shutdown.await;
    tracing::info!("agent stopping");
    // aborting the uplink drops its streams, which ends them on every replica
    uplink_task.abort();
    tick_task.abort();
    health_task.abort();
    let _ = uplink_task.await;
    let _ = tick_task.await;
    Ok(())
}
