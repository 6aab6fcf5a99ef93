//! Overload protection for the HTTPS API, outermost around the router (before
//! authentication, so a flood cannot queue TokenReviews either):
//!
//! - at most `--max-requests-inflight` requests are served at once, counting a response
//!   until its body is fully sent; one more is refused at once with the apiserver's 429
//!   `TooManyRequests` Status and `Retry-After: 1` (load shedding: nothing queues);
//! - a request whose answer is not ready within `--request-timeout` gets the apiserver's 504
//!   `Timeout` Status; a body still streaming at the deadline is cut off (the client sees an
//!   aborted response, never a truncated document that looks whole).
//!
//! Health probes (`/healthz`, `/livez`, `/readyz` and below) are exempt: a busy aggregator
//! is not a dead one, and the kubelet must not restart it for being busy.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use kubepulse_aggregator_core::encode::{self, Format, status};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::telemetry;

/// The two limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overload {
    /// `--max-requests-inflight`.
    pub max_inflight: usize,
    /// `--request-timeout`.
    pub timeout: Duration,
}

struct Guard {
    permits: Arc<Semaphore>,
    timeout: Duration,
}

/// `router` with the limits applied around it.
pub fn limit(router: Router, overload: Overload) -> Router {
    let guard = Arc::new(Guard {
        permits: Arc::new(Semaphore::new(overload.max_inflight)),
        timeout: overload.timeout,
    });
    router.layer(middleware::from_fn_with_state(guard, guard_request))
}

async fn guard_request(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    if is_probe(request.uri().path()) {
        return next.run(request).await;
    }
    let Ok(permit) = guard.permits.clone().try_acquire_owned() else {
        telemetry::api_overloaded("max_requests_inflight");
        let mut response = status_response(&status::too_many_requests());
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    };
    let deadline = Instant::now() + guard.timeout;
    match tokio::time::timeout_at(deadline, next.run(request)).await {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            let body = Body::from_stream(Bounded {
                inner: body.into_data_stream(),
                deadline: Box::pin(tokio::time::sleep_until(deadline)),
                expired: false,
                _permit: permit,
            });
            Response::from_parts(parts, body)
        }
        Err(_) => {
            telemetry::api_overloaded("request_timeout");
            status_response(&status::timeout())
        }
    }
}

fn is_probe(path: &str) -> bool {
    ["/healthz", "/livez", "/readyz"]
        .iter()
        .any(|p| path == *p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/')))
}

fn status_response(s: &kubepulse_aggregator_core::api::ApiStatus) -> Response {
    let encoded = encode::status(s, &Format::Json);
    let code = StatusCode::from_u16(s.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        code,
        [(header::CONTENT_TYPE, encoded.content_type)],
        encoded.body,
    )
        .into_response()
}

/// A response body that holds its request's in-flight place until it is sent, and fails
/// once the request's deadline passes.
struct Bounded {
    inner: axum::body::BodyDataStream,
    deadline: Pin<Box<Sleep>>,
    expired: bool,
    _permit: OwnedSemaphorePermit,
}

impl Stream for Bounded {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.expired {
            return Poll::Ready(None);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.expired = true;
            telemetry::api_overloaded("request_timeout");
            return Poll::Ready(Some(Err(axum::Error::new(
                "request did not complete within --request-timeout",
            ))));
        }
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

#[cfg(test)]
mod tests;
