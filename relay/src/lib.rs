//! The kubepulse relay: the I/O shell around `kubepulse-relay-core`. For very large clusters:
//! agents stream to a relay instead of to every aggregator replica, and the relay carries all
//! its agents to each replica over one stream, in batches (one connection and a few messages
//! per batch interval per replica, instead of one connection and stream per agent).
//!
//! Code map, in data-flow order:
//! - [`ingest`]: the tonic `Ingest` service agents stream to (hello checks, bounds), one task
//!   per agent stream feeding the hub;
//! - [`hub`]: the single writer that owns the core's `Hub` (links, batches, replay, heartbeat
//!   coalescing) and applies its effects;
//! - [`upstream`]: one relay stream per aggregator replica (addresses, TLS, backoff shared
//!   with the agent in `kubepulse_shell::upstream`);
//! - [`tls`]: the serving certificate; [`health`]: probes and `/metrics`; [`config`],
//!   [`telemetry`] and [`metrics`]: flags, logs and named events, self-metrics.
//!
//! [`run`] is what `main` and the tests call: it takes bound listeners and a shutdown future.

pub mod config;
pub mod health;
pub mod hub;
pub mod ingest;
pub mod metrics;
pub mod telemetry;
pub mod tls;
pub mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use kubepulse_proto::v1::ingest_server::IngestServer;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

pub use config::Config;

/// Messages that may wait for the hub (agents' messages, replicas' replies).
const HUB_QUEUE: usize = 4096;

/// The two listening sockets.
pub struct Listeners {
    /// gRPC (agents' streams).
    pub grpc: TcpListener,
    /// Plain HTTP operations endpoint.
    pub health: TcpListener,
}

impl Listeners {
    /// Binds both listeners as configured.
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        let grpc = SocketAddr::new(config.grpc_bind_address, config.grpc_port);
        Ok(Self {
            grpc: TcpListener::bind(grpc)
                .await
                .with_context(|| format!("listen on {grpc} (--grpc-port)"))?,
            health: TcpListener::bind(config.health_address)
                .await
                .with_context(|| {
                    format!("listen on {} (--health-address)", config.health_address)
                })?,
        })
    }
}

/// Runs the relay until `shutdown` resolves.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let serving = tls::serving_pair(&config, SystemTime::now())?;
    let settings = upstream::UpstreamSettings::new(&config)?;
    let upstreams_connected = Arc::new(AtomicUsize::new(0));

    telemetry::hub_started();
    let (hub_tx, hub_rx) = mpsc::channel(HUB_QUEUE);
    let hub_task = tokio::spawn(hub::run(config.hub(), hub_rx, upstreams_connected.clone()));
    let upstream_task = tokio::spawn(upstream::run(
        settings,
        config.aggregator_endpoints.clone(),
        config.aggregator_service.clone(),
        config.aggregator_resolve_interval,
        hub_tx.clone(),
    ));

    let (stop_tx, stop_rx) = watch::channel(false);
    let wait_stop = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    tracing::info!(
        grpc = %listeners.grpc.local_addr()?,
        health = %listeners.health.local_addr()?,
        aggregators = ?config.aggregator_service.iter().chain(&config.aggregator_endpoints).collect::<Vec<_>>(),
        "relay serving"
    );
    let health = health::router(health::RelayHealth {
        upstreams_connected,
    });
    let health_listener = listeners.health;
    let health_stop = wait_stop();
    let health_task = tokio::spawn(async move {
        let _ = axum::serve(health_listener, health)
            .with_graceful_shutdown(health_stop)
            .await;
    });

    let service = ingest::RelayService::new(hub_tx.clone(), config.hello_timeout);
    let ingest = IngestServer::new(service).max_decoding_message_size(config.max_message_bytes);
    let mut grpc = kubepulse_shell::grpc::ingest_server(serving.as_ref()).context("gRPC TLS")?;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listeners.grpc);
    let grpc_task = tokio::spawn(
        grpc.add_service(ingest)
            .serve_with_incoming_shutdown(incoming, wait_stop()),
    );

    shutdown.await;
    tracing::info!("relay shutting down");
    // agents move on at once (UNAVAILABLE), then the server drains
    let _ = hub_tx.send(hub::HubMsg::Shutdown).await;
    let _ = stop_tx.send(true);
    let drain = Duration::from_secs(5);
    match tokio::time::timeout(drain, grpc_task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => tracing::warn!(error = %err, "gRPC server ended with an error"),
        Ok(Err(err)) => tracing::warn!(error = %err, "gRPC server task failed"),
        Err(_) => tracing::warn!("agent connections did not drain in time"),
    }
    upstream_task.abort();
    let _ = upstream_task.await;
    drop(hub_tx);
    hub_task.abort();
    health_task.abort();
    Ok(())
}
