//! Agent identity (Kubernetes mode): who is this stream? Its hello's token is verified
//! locally against the service-account issuer's public keys when the API server publishes
//! them (`/.well-known/openid-configuration` and its `jwks_uri`, read through the API client;
//! `--agent-token-verification`), else reviewed by the API server (a TokenReview for the
//! `kubepulse` audience, answers cached briefly and keyed by a digest, so no token is kept).
//! The keys are fetched at start, again when a token names a `kid` they lack (at most every
//! [`KEYS_MIN_REFETCH`]) and when older than [`KEYS_MAX_AGE`]; a token of another issuer, or of
//! a key still unknown, goes to a TokenReview in `auto` mode. Then
//! `kubepulse_aggregator_core::identity::authorize` checks that it is the agent service
//! account's projected token of a Running pod bound to the node the stream claims, by the Pod
//! watch. In `--standalone` mode there is no API server to ask and identity is not checked
//! (said once at start).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use kubepulse_aggregator_core::identity::jwt::{self, Discovery, KeySet, Unverified};
use kubepulse_aggregator_core::identity::{
    self, AUDIENCE, Kind, Refusal, Reviewed, ServiceAccount,
};
use kubepulse_aggregator_core::limits::TtlCache;
use kubepulse_model::{NodeName, PodKey};
use tonic::Status;

use crate::telemetry::{self, TokenVerification};
use crate::watch::MetaPublished;

/// How agent tokens are verified (`--agent-token-verification`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verification {
    /// Locally when the issuer's keys are published and know the token, else a TokenReview.
    Auto,
    /// Locally only: a token the keys cannot judge is refused.
    Local,
    /// A TokenReview for every new token.
    TokenReview,
}

impl Verification {
    /// Parses the flag's value.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "local" => Ok(Self::Local),
            "tokenreview" => Ok(Self::TokenReview),
            _ => Err(format!("{s:?} is not auto, local or tokenreview")),
        }
    }
}

/// Least time between two fetches of the issuer's keys (a token with an unknown `kid` asks
/// for one).
pub const KEYS_MIN_REFETCH: Duration = Duration::from_secs(30);
/// Longest a fetch of the keys may take (hellos waiting for keys wait this long at most).
pub const KEYS_FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Keys older than this are fetched again on the next hello.
pub const KEYS_MAX_AGE: Duration = Duration::from_secs(300);

/// The issuer's keys, as last fetched.
struct IssuerKeys {
    issuer: String,
    keys: KeySet,
    fetched: tokio::time::Instant,
}

/// What local verification made of a token.
enum Local {
    /// Verified or refused.
    Done(Result<Reviewed, Refusal>),
    /// The keys cannot judge it (no keys, another issuer, an unknown key): why.
    Undecided(String),
}

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
    verification: Verification,
    keys: Mutex<Option<Arc<IssuerKeys>>>,
    /// When the keys were last asked for; held while fetching, so one fetch runs at a time.
    last_fetch: tokio::sync::Mutex<Option<tokio::time::Instant>>,
}

/// Most TokenReviews of agent tokens in flight at once; more hellos are told to retry.
pub const MAX_REVIEWS_IN_FLIGHT: usize = 64;

/// `--agent-service-account`, `--agent-token-cache-ttl`, `--agent-token-cache-max-entries` and
/// `--agent-token-verification`.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How tokens are verified.
    pub verification: Verification,
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
            verification: settings.verification,
            keys: Mutex::new(None),
            last_fetch: tokio::sync::Mutex::new(None),
        }
    }

    /// Fetches the issuer's keys unless told to review every token; says what it found. Called
    /// at start; a failure is not fatal (fetched again on the next hello, at most every
    /// [`KEYS_MIN_REFETCH`]).
    pub async fn load_keys(&self) {
        if self.verification != Verification::TokenReview {
            self.fetch_keys(true).await;
        }
    }

    /// Fetches the keys if the last attempt is at least [`KEYS_MIN_REFETCH`] old (or there was
    /// none), within [`KEYS_FETCH_TIMEOUT`]. Concurrent callers wait for one fetch if `wait`,
    /// else return at once (stale keys are still good while a refresh runs).
    async fn fetch_keys(&self, wait: bool) {
        let mut last = if wait {
            self.last_fetch.lock().await
        } else {
            match self.last_fetch.try_lock() {
                Ok(last) => last,
                Err(_) => return,
            }
        };
        let now = tokio::time::Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < KEYS_MIN_REFETCH) {
            return;
        }
        *last = Some(now);
        let fetched = tokio::time::timeout(KEYS_FETCH_TIMEOUT, self.discover())
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer in {KEYS_FETCH_TIMEOUT:?}")));
        match fetched {
            Ok(keys) => {
                telemetry::issuer_keys_fetched(&keys.issuer, keys.keys.len(), keys.keys.skipped());
                *self.keys.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(keys));
            }
            Err(err) => {
                telemetry::issuer_keys_unavailable(&err, self.verification == Verification::Local)
            }
        }
    }

    /// Reads the issuer discovery document and its key set from the API server.
    async fn discover(&self) -> anyhow::Result<IssuerKeys> {
        let get = |path: &str| {
            let request = http::Request::get(path).body(Vec::new());
            let client = self.client.clone();
            let path = path.to_owned();
            async move {
                anyhow::Context::with_context(client.request_text(request?).await, || {
                    format!("GET {path}")
                })
            }
        };
        let discovery =
            Discovery::parse(get("/.well-known/openid-configuration").await?.as_bytes())
                .map_err(anyhow::Error::msg)?;
        let keys = KeySet::parse(get(&discovery.jwks_path).await?.as_bytes())
            .map_err(|e| anyhow::anyhow!("{}: {e}", discovery.jwks_path))?;
        Ok(IssuerKeys {
            issuer: discovery.issuer,
            keys,
            fetched: tokio::time::Instant::now(),
        })
    }

    fn current_keys(&self) -> Option<Arc<IssuerKeys>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Verifies `token` against the issuer's keys, fetching them first when missing, stale, or
    /// lacking the token's `kid`.
    async fn local(&self, token: &str) -> Local {
        let stale = |keys: &Option<Arc<IssuerKeys>>| {
            keys.as_ref()
                .is_none_or(|k| k.fetched.elapsed() >= KEYS_MAX_AGE)
        };
        let current = self.current_keys();
        if stale(&current) {
            self.fetch_keys(current.is_none()).await;
        }
        let mut refetched = false;
        loop {
            let Some(keys) = self.current_keys() else {
                return Local::Undecided(
                    "the service-account issuer's public keys are not available".to_owned(),
                );
            };
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            match jwt::verify(token, &keys.keys, &keys.issuer, now) {
                Ok(reviewed) => return Local::Done(Ok(reviewed)),
                Err(Unverified::Refused(refusal)) => return Local::Done(Err(refusal)),
                Err(Unverified::UnknownIssuer(iss)) => {
                    return Local::Undecided(format!(
                        "token issuer {iss:?} is not the service-account issuer {:?}",
                        keys.issuer
                    ));
                }
                Err(Unverified::UnknownKey(kid)) if !refetched => {
                    refetched = true;
                    self.fetch_keys(true).await;
                    if self.current_keys().is_some_and(|k| !Arc::ptr_eq(&k, &keys)) {
                        continue;
                    }
                    return Local::Undecided(format!(
                        "token key {kid:?} is not among the issuer's public keys"
                    ));
                }
                Err(Unverified::UnknownKey(kid)) => {
                    return Local::Undecided(format!(
                        "token key {kid:?} is not among the issuer's public keys"
                    ));
                }
            }
        }
    }

    /// The pod a stream claiming `node` with `token` belongs to, or why it is refused.
    pub async fn verify(&self, token: &str, node: &NodeName) -> Result<PodKey, Refusal> {
        if token.is_empty() {
            return Err(Refusal::NoToken);
        }
        let reviewed = match self.verification {
            Verification::TokenReview => self.review(token).await?,
            Verification::Local | Verification::Auto => match self.local(token).await {
                Local::Done(answer) => {
                    telemetry::agent_token_verified(TokenVerification::Local);
                    answer?
                }
                Local::Undecided(why) if self.verification == Verification::Local => {
                    return Err(if self.current_keys().is_none() {
                        Refusal::KeysUnavailable(why)
                    } else {
                        Refusal::Unverified(format!("{why} (--agent-token-verification=local)"))
                    });
                }
                Local::Undecided(why) => {
                    tracing::debug!(reason = %why, "agent token reviewed by the API server");
                    self.review(token).await?
                }
            },
        };
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
        telemetry::agent_token_verified(TokenVerification::TokenReview);
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

#[cfg(test)]
mod tests;
