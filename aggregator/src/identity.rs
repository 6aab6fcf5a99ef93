//! Agent identity (Kubernetes mode): who is this stream? Its hello's token is reviewed by the
//! API server (a TokenReview for the `kubepulse` audience, answers cached briefly and keyed
//! by a digest, so no token is kept), then `kubepulse_aggregator_core::identity::authorize`
//! checks that it is the agent service account's projected token of a Running pod bound to
//! the node the stream claims, by the Pod watch. In `--standalone` mode there is no API server
//! to ask and identity is not checked (said once at start).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use kubepulse_aggregator_core::identity::{
    self, AUDIENCE, Kind, Refusal, Reviewed, ServiceAccount,
};
use kubepulse_aggregator_core::limits::TtlCache;
use kubepulse_model::{NodeName, PodKey};
use tonic::Status;

use crate::watch::MetaPublished;

/// Checks agent streams' identities.
pub struct AgentIdentity {
    client: kube::Client,
    meta: Arc<MetaPublished>,
    agent: ServiceAccount,
    ttl: Duration,
    cache: Mutex<TtlCache<[u8; 32], Result<Reviewed, Refusal>>>,
    started: tokio::time::Instant,
    /// TokenReviews in flight: a flood of hellos with fresh tokens cannot flood the API server.
    reviews: tokio::sync::Semaphore,
}

/// Most TokenReviews of agent tokens in flight at once; more hellos are told to retry.
pub const MAX_REVIEWS_IN_FLIGHT: usize = 64;

/// `--agent-service-account`, `--agent-token-cache-ttl` and `--agent-token-cache-max-entries`.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The service account agents run as.
    pub agent: ServiceAccount,
    /// How long a review is reused.
    pub ttl: Duration,
    /// Most reviews kept.
    pub max_entries: usize,
}

impl AgentIdentity {
    /// Reviews with `client`; pods and nodes from `meta`.
    pub fn new(client: kube::Client, meta: Arc<MetaPublished>, settings: Settings) -> Self {
        Self {
            client,
            meta,
            agent: settings.agent,
            ttl: settings.ttl,
            cache: Mutex::new(TtlCache::new(settings.max_entries)),
            started: tokio::time::Instant::now(),
            reviews: tokio::sync::Semaphore::new(MAX_REVIEWS_IN_FLIGHT),
        }
    }

    /// The pod a stream claiming `node` with `token` belongs to, or why it is refused.
    pub async fn verify(&self, token: &str, node: &NodeName) -> Result<PodKey, Refusal> {
        if token.is_empty() {
            return Err(Refusal::NoToken);
        }
        let reviewed = self.review(token).await?;
        identity::authorize(&reviewed, node, &self.agent, &self.meta.view())
    }

    /// The API server's answer for `token`, from the cache when fresh. Definite answers
    /// (authenticated or not) are cached; a failed call is not.
    async fn review(&self, token: &str) -> Result<Reviewed, Refusal> {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let key: [u8; 32] = digest.as_ref().try_into().unwrap_or([0; 32]);
        if let Some(answer) = self.lock().get(&key, self.started.elapsed()) {
            return answer.clone();
        }
        let Ok(_permit) = self.reviews.try_acquire() else {
            return Err(Refusal::ReviewFailed(format!(
                "{MAX_REVIEWS_IN_FLIGHT} token reviews already in flight"
            )));
        };
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: Some(vec![AUDIENCE.to_owned()]),
            },
            ..TokenReview::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|err| Refusal::ReviewFailed(err.to_string()))?;
        let status = reviewed.status.unwrap_or_default();
        let answer = if status.authenticated == Some(true) {
            let user = status.user.unwrap_or_default();
            Ok(Reviewed {
                username: user.username.unwrap_or_default(),
                extra: user.extra.unwrap_or_default(),
                audiences: status.audiences.unwrap_or_default(),
            })
        } else {
            Err(Refusal::Invalid(
                status
                    .error
                    .filter(|e| !e.is_empty())
                    .unwrap_or_else(|| "not authenticated".to_owned()),
            ))
        };
        self.lock()
            .insert(key, answer.clone(), self.ttl, self.started.elapsed());
        answer
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TtlCache<[u8; 32], Result<Reviewed, Refusal>>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The gRPC status an agent gets for a refusal.
pub fn status(refusal: &Refusal) -> Status {
    let message = refusal.to_string();
    match refusal.kind() {
        Kind::Unauthenticated => Status::unauthenticated(message),
        Kind::PermissionDenied => Status::permission_denied(message),
        Kind::Unavailable => Status::unavailable(message),
    }
}
