//! Kubernetes mode (everything but `--standalone`): the API clients (`--kubeconfig`, or the
//! in-cluster service account; `--authentication-kubeconfig` and
//! `--authorization-kubeconfig` when given), the Pod and Node watches feeding the metadata
//! writer, and the delegated authentication and authorization in front of every route.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use kubepulse_aggregator_core::encode::openapi::OpenApi;
use kubepulse_aggregator_core::selector::LabelSelector;

use crate::auth::authn::{Delegating, TokenReviewer};
use crate::auth::authz::SubjectAccessReviewer;
use crate::auth::{self, Auth};
use crate::health::Health;
use crate::http::{self, AppState};
use crate::watch::{self, MetaPublished};
use crate::writer::Published;
use crate::{Config, bootstrap};

/// Starts the watches and the auth sources; returns the health checks and the router state.
/// `stop` makes a future that resolves at shutdown (one per background task).
pub async fn start<F>(
    config: &Config,
    published: Arc<Published>,
    stop: &impl Fn() -> F,
) -> anyhow::Result<(Arc<Health>, AppState)>
where
    F: Future<Output = ()> + Send + 'static,
{
    let api = bootstrap::client(config.kubeconfig.as_deref())
        .await
        .context("Kubernetes API client (--kubeconfig; --standalone runs without one)")?;
    let authn_client = match &config.authentication_kubeconfig {
        Some(path) => bootstrap::client(Some(path))
            .await
            .context("--authentication-kubeconfig")?,
        None => api.clone(),
    };
    let authz_client = match &config.authorization_kubeconfig {
        Some(path) => bootstrap::client(Some(path))
            .await
            .context("--authorization-kubeconfig")?,
        None => api.clone(),
    };

    let meta = MetaPublished::new();
    let explain_client = api.clone();
    tokio::spawn(watch::run(api, meta.clone(), stop()));

    let trust = auth::source::start(config, &authn_client, stop()).await?;
    let auth = Arc::new(Auth {
        authenticator: Arc::new(Delegating::new(
            trust,
            Some(TokenReviewer::new(
                authn_client,
                config.authentication_token_webhook_cache_ttl,
            )),
        )),
        authorizer: Arc::new(SubjectAccessReviewer::new(
            authz_client,
            config.authorization_webhook_cache_authorized_ttl,
            config.authorization_webhook_cache_unauthorized_ttl,
        )),
        always_allow_paths: config
            .authorization_always_allow_paths
            .iter()
            .filter(|p| !p.is_empty())
            .cloned()
            .collect(),
    });

    let node_selector = LabelSelector::parse(&config.node_selector).context("--node-selector")?;
    let health = Health::with_metadata(published.clone(), meta.clone());
    let state = AppState {
        published,
        health: health.clone(),
        meta: Some(meta),
        node_selector: (!node_selector.is_empty()).then(|| Arc::new(node_selector)),
        openapi: Arc::new(OpenApi::build(&http::build_version())),
        auth: Some(auth),
        kube: Some(explain_client),
    };
    Ok((health, state))
}
