//! Delegated authentication and authorization, as an axum middleware in front of every route
//! (Kubernetes mode only; standalone mode has no auth).
//!
//! Per request: the [`Authenticator`] chain (front-proxy certificate + headers, x509 client
//! certificate, bearer token via TokenReview; see [`authn`]) yields a user, or a 401 Status
//! whose reasons are logged at WARN; then always-allowed paths and `system:masters` pass, and
//! everything else is asked of the [`Authorizer`] (SubjectAccessReview, cached; see
//! [`authz`]), a denial being the apiserver's 403 Status. The rules are pure and live in
//! `kubepulse_aggregator_core::authz`; this module does the I/O.
//!
//! The client certificate chain reaches the middleware as the [`PeerCertificates`] request
//! extension, set by `tls::serve` after the handshake.

pub mod authn;
pub mod authz;
mod cache;
pub mod source;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use kubepulse_aggregator_core::authz::{
    Attributes, AuthnOutcome, UserInfo, decide_locally, forbidden, request_attributes,
};
use kubepulse_aggregator_core::encode::{self, Format, status};
use rustls_pki_types::CertificateDer;

/// The client certificate chain presented in the TLS handshake (end entity first).
#[derive(Clone, Debug)]
pub struct PeerCertificates(pub Arc<Vec<CertificateDer<'static>>>);

/// The user a request was served for (a response extension, for the request log).
#[derive(Clone, Debug)]
pub struct ServedUser(pub String);

/// Who is asking.
pub trait Authenticator: Send + Sync {
    /// Authenticates the request; may remove the identity headers it consumed.
    fn authenticate<'a>(
        &'a self,
        parts: &'a mut axum::http::request::Parts,
    ) -> BoxFuture<'a, AuthnOutcome>;
}

/// What the authorizer decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Serve the request.
    Allow,
    /// 403, with the authorizer's reason (may be empty).
    Deny(String),
    /// The decision could not be made: 500.
    Error(String),
}

/// May this user do this?
pub trait Authorizer: Send + Sync {
    /// Decides for `user` and `attrs` (not called for always-allowed paths and
    /// `system:masters`).
    fn authorize<'a>(
        &'a self,
        user: &'a UserInfo,
        attrs: &'a Attributes,
    ) -> BoxFuture<'a, Decision>;
}

/// The auth layer's state.
pub struct Auth {
    /// The authenticator chain.
    pub authenticator: Arc<dyn Authenticator>,
    /// The authorizer.
    pub authorizer: Arc<dyn Authorizer>,
    /// `--authorization-always-allow-paths`.
    pub always_allow_paths: Vec<String>,
}

/// The middleware: authenticate, authorize, then run the route.
pub async fn middleware(State(auth): State<Arc<Auth>>, request: Request, next: Next) -> Response {
    let format = error_format(&request);
    let (mut parts, body) = request.into_parts();
    let user = match auth.authenticator.authenticate(&mut parts).await {
        AuthnOutcome::User(user) => user,
        AuthnOutcome::Unauthorized(reasons) => {
            for reason in &reasons {
                tracing::warn!(
                    path = parts.uri.path(),
                    error = reason.as_str(),
                    "Unable to authenticate the request due to an error"
                );
            }
            return reply(&status::unauthorized(), &format, "");
        }
    };
    let attrs = request_attributes(parts.method.as_str(), parts.uri.path(), parts.uri.query());
    let decision = match decide_locally(&user, &attrs, &auth.always_allow_paths) {
        Some(true) => Decision::Allow,
        _ => auth.authorizer.authorize(&user, &attrs).await,
    };
    match decision {
        Decision::Allow => {
            let mut response = next.run(Request::from_parts(parts, body)).await;
            response.extensions_mut().insert(ServedUser(user.name));
            response
        }
        Decision::Deny(reason) => {
            tracing::debug!(user = user.name, ?attrs, reason, "request forbidden");
            reply(&forbidden(&user, &attrs, &reason), &format, &user.name)
        }
        Decision::Error(err) => {
            tracing::warn!(
                user = user.name,
                ?attrs,
                error = err,
                "authorization failed"
            );
            reply(
                &status::internal(format!("authorization failed: {err}")),
                &format,
                &user.name,
            )
        }
    }
}

fn error_format(request: &Request) -> Format {
    let accept = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    match encode::negotiate(accept) {
        Ok(Format::Protobuf) => Format::Protobuf,
        _ => Format::Json,
    }
}

fn reply(s: &kubepulse_aggregator_core::api::ApiStatus, format: &Format, user: &str) -> Response {
    let code = StatusCode::from_u16(s.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let encoded = encode::status(s, format);
    let mut response = (
        code,
        [(header::CONTENT_TYPE, encoded.content_type)],
        encoded.body,
    )
        .into_response();
    response
        .extensions_mut()
        .insert(ServedUser(user.to_owned()));
    response
}

#[cfg(test)]
mod tests;
