//! The authenticator chain of an extension API server, in the apiserver's order (reference
//! §4.3): the front proxy (client certificate verified against the requestheader CA, common
//! name in the allowed names, identity from the headers), then an x509 client certificate
//! verified against the client CA (user = CN, groups = O), then a bearer token via
//! TokenReview (cached). The TLS handshake only asks for a certificate; the chain is
//! verified here, against each pool in turn, so a wrong certificate becomes a 401 with the
//! exact reason in the log rather than a TLS alert.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::Client;
use kube::api::{Api, PostParams};
use kubepulse_aggregator_core::authz::{
    AuthnAnswer, AuthnOutcome, UserInfo, allowed_name, combine, is_identity_header,
    user_from_headers,
};
use rustls_pki_types::{CertificateDer, UnixTime};

use super::cache::TtlCache;
use super::source::Trust;
use super::{Authenticator, PeerCertificates};

/// The chain: certificates against the current [`Trust`], then tokens.
pub struct Delegating {
    trust: Arc<ArcSwap<Trust>>,
    tokens: Option<TokenReviewer>,
}

impl Delegating {
    /// A chain over `trust` (swapped when the ConfigMap changes) and, when given, a
    /// TokenReview client.
    pub fn new(trust: Arc<ArcSwap<Trust>>, tokens: Option<TokenReviewer>) -> Self {
        Self { trust, tokens }
    }
}

impl Authenticator for Delegating {
    fn authenticate<'a>(&'a self, parts: &'a mut Parts) -> BoxFuture<'a, AuthnOutcome> {
        Box::pin(async move {
            let trust = self.trust.load_full();
            let peer = parts.extensions.get::<PeerCertificates>().cloned();
            let mut answers = Vec::with_capacity(3);
            answers.push(front_proxy(&trust, peer.as_ref(), &parts.headers));
            if let Some(rh) = &trust.request_header {
                // identity headers are never passed on, whoever sent them
                let names: Vec<_> = parts
                    .headers
                    .keys()
                    .filter(|name| is_identity_header(name.as_str(), &rh.config))
                    .cloned()
                    .collect();
                for name in names {
                    parts.headers.remove(name);
                }
            }
            if !matches!(answers[0], AuthnAnswer::User(_)) {
                answers.push(client_certificate(&trust, peer.as_ref()));
            }
            let authenticated = answers.iter().any(|a| matches!(a, AuthnAnswer::User(_)));
            if !authenticated && let Some(reviewer) = &self.tokens {
                let answer = reviewer.authenticate(&parts.headers).await;
                if matches!(answer, AuthnAnswer::User(_)) {
                    parts.headers.remove(header::AUTHORIZATION);
                }
                answers.push(answer);
            }
            combine(answers)
        })
    }
}

/// Authenticator 1: the front proxy.
pub fn front_proxy(
    trust: &Trust,
    peer: Option<&PeerCertificates>,
    headers: &HeaderMap,
) -> AuthnAnswer {
    let (Some(rh), Some(peer)) = (&trust.request_header, peer) else {
        return AuthnAnswer::NotApplicable;
    };
    let Some((leaf, intermediates)) = peer.0.split_first() else {
        return AuthnAnswer::NotApplicable;
    };
    if let Err(err) = rh
        .verifier
        .verify_client_cert(leaf, intermediates, UnixTime::now())
    {
        return AuthnAnswer::Failed(format!(
            "verifying front-proxy certificate {} failed: {}",
            describe(leaf),
            x509_reason(&err)
        ));
    }
    let (cn, _) = subject(leaf);
    if !allowed_name(&cn, &rh.config.allowed_names) {
        return AuthnAnswer::Failed(format!(
            "x509: subject with cn={cn} is not in the allowed list"
        ));
    }
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
        .collect();
    match user_from_headers(pairs.iter().copied(), &rh.config) {
        Some(user) => AuthnAnswer::User(user),
        None => AuthnAnswer::NotApplicable,
    }
}

/// Authenticator 2: an x509 client certificate from the client CA.
pub fn client_certificate(trust: &Trust, peer: Option<&PeerCertificates>) -> AuthnAnswer {
    let (Some(verifier), Some(peer)) = (&trust.client_ca, peer) else {
        return AuthnAnswer::NotApplicable;
    };
    let Some((leaf, intermediates)) = peer.0.split_first() else {
        return AuthnAnswer::NotApplicable;
    };
    if let Err(err) = verifier.verify_client_cert(leaf, intermediates, UnixTime::now()) {
        return AuthnAnswer::Failed(format!(
            "verifying certificate {} failed: {}",
            describe(leaf),
            x509_reason(&err)
        ));
    }
    let (cn, organizations) = subject(leaf);
    if cn.is_empty() {
        return AuthnAnswer::NotApplicable;
    }
    AuthnAnswer::User(UserInfo::from_certificate(&cn, organizations))
}

/// Authenticator 3: bearer tokens, reviewed by the API server and cached.
pub struct TokenReviewer {
    client: Client,
    ttl: Duration,
    cache: TtlCache<[u8; 32], AuthnAnswer>,
}

impl TokenReviewer {
    /// Reviews with `client`, caching answers for `ttl`.
    pub fn new(client: Client, ttl: Duration) -> Self {
        Self {
            client,
            ttl,
            cache: TtlCache::new(),
        }
    }

    async fn authenticate(&self, headers: &HeaderMap) -> AuthnAnswer {
        let Some(token) = bearer_token(headers) else {
            return AuthnAnswer::NotApplicable;
        };
        // keyed by a digest: the cache never holds a token
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let key: [u8; 32] = digest.as_ref().try_into().unwrap_or([0; 32]);
        if let Some(answer) = self.cache.get(&key, Instant::now()) {
            return answer;
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let answer = match Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
        {
            Ok(reviewed) => token_answer(reviewed),
            // not cached: the next request asks again
            Err(err) => return AuthnAnswer::Failed(format!("TokenReview failed: {err}")),
        };
        self.cache
            .insert(key, answer.clone(), self.ttl, Instant::now());
        answer
    }
}

/// The bearer token of `Authorization: Bearer <token>`, as the apiserver reads it.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let mut parts = value.splitn(3, ' ');
    let scheme = parts.next()?;
    let token = parts.next()?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn token_answer(reviewed: TokenReview) -> AuthnAnswer {
    let status = reviewed.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        // an invalid token is an error, never anonymous
        return AuthnAnswer::Failed(match status.error.filter(|e| !e.is_empty()) {
            Some(err) if err.contains("invalid bearer token") => err,
            Some(err) => format!("invalid bearer token: {err}"),
            None => "invalid bearer token".to_owned(),
        });
    }
    let user = status.user.unwrap_or_default();
    AuthnAnswer::User(UserInfo {
        name: user.username.unwrap_or_default(),
        uid: user.uid.unwrap_or_default(),
        groups: user.groups.unwrap_or_default(),
        extra: user.extra.unwrap_or_default(),
    })
}

/// Subject CN and O values of a certificate (empty when it cannot be parsed).
pub fn subject(cert: &CertificateDer<'_>) -> (String, Vec<String>) {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return (String::new(), Vec::new());
    };
    let subject = parsed.subject();
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    let organizations = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect();
    (cn, organizations)
}

/// `CN=…, issuer CN=…, serial …` for logs.
fn describe(cert: &CertificateDer<'_>) -> String {
    match x509_parser::parse_x509_certificate(cert.as_ref()) {
        Ok((_, parsed)) => format!(
            "subject={:?} issuer={:?} serial={}",
            parsed.subject().to_string(),
            parsed.issuer().to_string(),
            parsed.raw_serial_as_string()
        ),
        Err(_) => "(unparsable)".to_owned(),
    }
}

/// The verification failure in the words of Go's `crypto/x509` (what operators search for),
/// followed by rustls' own description.
fn x509_reason(err: &rustls::Error) -> String {
    use rustls::CertificateError as E;
    let go = match err {
        rustls::Error::InvalidCertificate(e) => match e {
            E::UnknownIssuer => Some("x509: certificate signed by unknown authority"),
            E::Expired
            | E::ExpiredContext { .. }
            | E::NotValidYet
            | E::NotValidYetContext { .. } => {
                Some("x509: certificate has expired or is not yet valid")
            }
            E::InvalidPurpose | E::InvalidPurposeContext { .. } => {
                Some("x509: certificate specifies an incompatible key usage")
            }
            E::BadSignature => Some("x509: signature verification failed"),
            _ => None,
        },
        _ => None,
    };
    match go {
        Some(go) => format!("{go} ({err})"),
        None => format!("x509: {err}"),
    }
}
