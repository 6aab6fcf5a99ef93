//! The kubepulse aggregator: the I/O shell around `kubepulse-aggregator-core`.
//!
//! Code map, in data-flow order:
//! - [`ingest`]: the tonic `Ingest` service, one task per agent stream (wire decoding and
//!   sequence checks), feeding the writer over a bounded channel;
//! - [`writer`]: the single writer that owns the cluster store and publishes immutable views;
//! - [`watch`]: the Pod and Node watches and the metadata writer (Kubernetes mode);
//! - [`http`]: the Metrics API router (axum) reading the latest views; [`health`]: probes;
//! - [`auth`]: delegated authentication and authorization (Kubernetes mode);
//!   [`kubernetes`]: the wiring of that mode (clients, watches, auth);
//! - [`tls`]: serving certificates and the HTTPS accept loop; [`bootstrap`]: the in-cluster
//!   serving CA (Secret), its certificate, and the CA bundle for agents and APIServices;
//! - [`config`] and [`telemetry`]: flags, logs and named events; [`compat`]: metrics-server
//!   flags accepted and ignored; [`metrics`]: the self-metrics on `/metrics`.
//!
//! [`run`] is what `main` and the tests call: it takes bound listeners and a shutdown future.

pub mod auth;
pub mod bootstrap;
pub mod compat;
pub mod config;
pub mod health;
pub mod http;
pub mod identity;
pub mod ingest;
pub mod kubernetes;
pub mod metrics;
pub mod overload;
pub mod telemetry;
pub mod tls;
pub mod watch;
pub mod writer;

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context as _;
use kubepulse_aggregator_core::store::{ClusterStore, StoreConfig};
use kubepulse_proto::Limits;
use kubepulse_proto::v1::ingest_server::IngestServer;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch as signal};

pub use config::Config;

/// The two listening sockets.
pub struct Listeners {
    /// HTTPS Metrics API.
    pub https: TcpListener,
    /// gRPC ingest.
    pub grpc: TcpListener,
}

impl Listeners {
    /// Binds both listeners as configured.
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        let https = SocketAddr::new(config.bind_address, config.secure_port);
        let grpc = SocketAddr::new(config.grpc_bind_address, config.grpc_port);
        Ok(Self {
            https: TcpListener::bind(https)
                .await
                .with_context(|| format!("listen on {https} (--secure-port)"))?,
            grpc: TcpListener::bind(grpc)
                .await
                .with_context(|| format!("listen on {grpc} (--grpc-port)"))?,
        })
    }
}

/// Runs the aggregator until `shutdown` resolves.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    for ignored in config.metrics_server.ignored() {
        telemetry::flag_ignored(&ignored);
    }
    let bootstrapped = match bootstrap::Settings::from_config(&config) {
        Some(settings) => Some(bootstrap::start(settings, &config).await?),
        None => None,
    };
    let pair = match &bootstrapped {
        Some(b) => b.serving.clone(),
        None => tls::load_or_generate(
            config.tls_cert_file.as_deref(),
            config.tls_private_key_file.as_deref(),
            &config.cert_dir,
            &[],
        )?,
    };
    let https_tls = if config.standalone {
        tls::server_config(&pair)?
    } else {
        tls::server_config_requesting_client_certs(&pair)?
    };

    let published = writer::Published::new();
    let (writer_tx, writer_rx) = mpsc::channel(8192);
    let store = ClusterStore::new(StoreConfig {
        ttl_intervals: config.node_ttl_intervals,
        min_ttl: config.node_ttl_min,
    });
    let writer_task = tokio::spawn(writer::run(store, writer_rx, published.clone()));

    let (stop_tx, stop_rx) = signal::channel(false);
    let stop_rx_ingest = stop_rx.clone();
    let wait_stop = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let (health, state) = if config.standalone {
        tracing::warn!(
            "standalone mode: no Kubernetes API, no Pod/Node metadata, and NO authentication or authorization: anyone who reaches the HTTPS port reads every metric"
        );
        let health = health::Health::new(published.clone());
        let state = http::AppState::standalone(published.clone(), health.clone());
        (health, state)
    } else {
        kubernetes::start(&config, published.clone(), &wait_stop).await?
    };
    let agent_identity = agent_identity(&config, &state).await?;

    tracing::info!(
        https = %listeners.https.local_addr()?,
        grpc = %listeners.grpc.local_addr()?,
        "aggregator serving"
    );
    let https_task = tokio::spawn(tls::serve(
        listeners.https,
        Some(https_tls),
        overload::limit(
            http::router(state),
            overload::Overload {
                max_inflight: config.max_requests_inflight,
                timeout: config.request_timeout,
            },
        ),
        wait_stop(),
    ));

    if let Some(b) = bootstrapped {
        tokio::spawn(b.publish(wait_stop()));
    }

    let mut ingest_service = ingest::IngestService::new(
        writer_tx,
        stop_rx_ingest,
        Limits {
            max_pods: config.max_pods_per_node,
            max_containers: config.max_containers_per_node,
        },
        config.hello_timeout,
    )
    .with_bounds(ingest::IngestBounds {
        streams: kubepulse_aggregator_core::limits::StreamLimits {
            per_node: config.max_streams_per_node,
            total: config.max_streams,
        },
        messages_per_second: config.max_messages_per_second_per_stream,
        message_burst: config.max_message_burst_per_stream,
    });
    if let Some(checker) = agent_identity {
        ingest_service = ingest_service.with_identity(checker);
    }
    let ingest =
        IngestServer::new(ingest_service).max_decoding_message_size(config.max_message_bytes);
    let mut grpc = kubepulse_shell::grpc::ingest_server((!config.grpc_plaintext).then_some(&pair))
        .context("gRPC TLS")?;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listeners.grpc);
    let grpc_task = tokio::spawn(
        grpc.add_service(ingest)
            .serve_with_incoming_shutdown(incoming, wait_stop()),
    );

    shutdown.await;
    tracing::info!("shutting down");
    health.begin_shutdown();
    let _ = stop_tx.send(true);
    let drain = std::time::Duration::from_secs(5);
    let _ = tokio::time::timeout(drain, https_task).await;
    match tokio::time::timeout(drain, grpc_task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => tracing::warn!(error = %err, "gRPC server ended with an error"),
        Ok(Err(err)) => tracing::warn!(error = %err, "gRPC server task failed"),
        Err(_) => tracing::warn!("gRPC connections did not drain in time"),
    }
    writer_task.abort();
    Ok(())
}

/// The agent identity check of Kubernetes mode (the issuer's keys and TokenReviews through
/// `--authentication-kubeconfig`, else `--kubeconfig`); `None`, said once, with --standalone.
async fn agent_identity(
    config: &Config,
    state: &http::AppState,
) -> anyhow::Result<Option<std::sync::Arc<identity::AgentIdentity>>> {
    let Some(meta) = state.meta.clone().filter(|_| !config.standalone) else {
        tracing::warn!(
            "standalone mode: agent identity is not checked: any client that reaches the gRPC port can report metrics for any node"
        );
        return Ok(None);
    };
    let agent =
        kubepulse_aggregator_core::identity::ServiceAccount::parse(&config.agent_service_account)
            .map_err(|e| anyhow::anyhow!("--agent-service-account: {e}"))?;
    let kubeconfig = config
        .authentication_kubeconfig
        .as_deref()
        .or(config.kubeconfig.as_deref());
    let client = bootstrap::client(kubeconfig)
        .await
        .context("Kubernetes API client for agent TokenReviews")?;
    tracing::info!(
        service_account = %agent,
        "agent identity: a stream is accepted only with its pod's projected token (audience kubepulse), from a Running pod on the node it claims"
    );
    let verification = identity::Verification::parse(&config.agent_token_verification)
        .map_err(|e| anyhow::anyhow!("--agent-token-verification: {e}"))?;
    let identity = identity::AgentIdentity::new(
        client,
        meta,
        identity::Settings {
            verification,
            agent,
            ttl: config.agent_token_cache_ttl,
            max_entries: config.agent_token_cache_max_entries,
        },
    );
    identity.load_keys().await;
    Ok(Some(std::sync::Arc::new(identity)))
}
