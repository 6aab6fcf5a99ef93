//! The Kubernetes `Status` errors the Metrics API answers with, worded as apimachinery's
//! `errors.New…` helpers and metrics-server word them (reference §3.8). Building an
//! [`ApiStatus`] here and encoding it with [`super::status()`] keeps every error message in one
//! place.

use crate::api::{ApiStatus, StatusDetails};

const GROUP: &str = "metrics.k8s.io";

/// 404 for a node the Node informer does not know: `node "<name>" not found`.
pub fn not_found_node(name: &str) -> ApiStatus {
    not_found("node", "", name)
}

/// 404 for a known node without metrics: `nodemetrics.metrics.k8s.io "<name>" not found`.
pub fn not_found_node_metrics(name: &str) -> ApiStatus {
    not_found("nodemetrics", GROUP, name)
}

/// 404 for a pod that is not a Running pod: `pods "<name>" not found` (the namespace is not
/// part of the message or the details, as in metrics-server).
pub fn not_found_pod(namespace: &str, name: &str) -> ApiStatus {
    let _ = namespace;
    not_found("pods", "", name)
}

/// 404 for a Running pod without metrics:
/// `podmetrics.metrics.k8s.io "<namespace>/<name>" not found`.
pub fn not_found_pod_metrics(namespace: &str, name: &str) -> ApiStatus {
    not_found("podmetrics", GROUP, &format!("{namespace}/{name}"))
}

/// 405 for `?watch=true` on a list: `watch is not supported on resources of kind
/// "pods.metrics.k8s.io"`; `resource` is `pods` or `nodes`.
pub fn watch_not_supported(resource: &str) -> ApiStatus {
    ApiStatus {
        code: 405,
        reason: "MethodNotAllowed",
        message: format!(
            "watch is not supported on resources of kind {}",
            go_quote(&format!("{resource}.{GROUP}"))
        ),
        details: Some(StatusDetails {
            name: String::new(),
            group: GROUP.to_owned(),
            kind: resource.to_owned(),
        }),
    }
}

/// 405 for a method the path does not serve (POST, PUT, PATCH, DELETE…), as the apiserver's
/// routing layer answers it (with empty `details`).
pub fn method_not_allowed() -> ApiStatus {
    ApiStatus {
        code: 405,
        reason: "MethodNotAllowed",
        message: "the server does not allow this method on the requested resource".to_owned(),
        details: Some(empty_details()),
    }
}

/// 404 for an unknown path inside the API group: `the server could not find the requested
/// resource` (with empty `details`, as the routing layer answers).
pub fn not_found_path() -> ApiStatus {
    ApiStatus {
        code: 404,
        reason: "NotFound",
        message: "the server could not find the requested resource".to_owned(),
        details: Some(empty_details()),
    }
}

/// 400 with `message`, e.g. a bad field or label selector.
pub fn bad_request(message: impl Into<String>) -> ApiStatus {
    ApiStatus {
        code: 400,
        reason: "BadRequest",
        message: message.into(),
        details: None,
    }
}

/// 500 with an empty reason and `message` (the error text), as the apiserver reports errors
/// that are not Status errors.
pub fn internal(message: impl Into<String>) -> ApiStatus {
    ApiStatus {
        code: 500,
        reason: "",
        message: message.into(),
        details: None,
    }
}

/// 401 for a request no authenticator accepted: message and reason `Unauthorized`.
pub fn unauthorized() -> ApiStatus {
    ApiStatus {
        code: 401,
        reason: "Unauthorized",
        message: "Unauthorized".to_owned(),
        details: None,
    }
}

/// 403 for a denied list: `pods.metrics.k8s.io is forbidden: User "<user>" cannot list
/// resource "pods" in API group "metrics.k8s.io" in the namespace "<ns>"` (or `at the cluster
/// scope` without a namespace).
pub fn forbidden(user: &str, verb: &str, resource: &str, namespace: Option<&str>) -> ApiStatus {
    forbidden_name(user, verb, resource, namespace, "")
}

/// 403 for a denied request about one object (`get` by name): as [`forbidden`], with
/// `<resource>.metrics.k8s.io "<name>" is forbidden: …` and the name in the details.
pub fn forbidden_name(
    user: &str,
    verb: &str,
    resource: &str,
    namespace: Option<&str>,
    name: &str,
) -> ApiStatus {
    let scope = match namespace {
        Some(ns) if !ns.is_empty() => format!("in the namespace {}", go_quote(ns)),
        _ => "at the cluster scope".to_owned(),
    };
    let reason = format!(
        "User {} cannot {verb} resource {} in API group {} {scope}",
        go_quote(user),
        go_quote(resource),
        go_quote(GROUP),
    );
    let message = if name.is_empty() {
        format!("{resource}.{GROUP} is forbidden: {reason}")
    } else {
        format!(
            "{resource}.{GROUP} {} is forbidden: {reason}",
            go_quote(name)
        )
    };
    ApiStatus {
        code: 403,
        reason: "Forbidden",
        message,
        details: Some(StatusDetails {
            name: name.to_owned(),
            group: GROUP.to_owned(),
            kind: resource.to_owned(),
        }),
    }
}

/// 406 when no media type of the `Accept` header can be served.
pub fn not_acceptable() -> ApiStatus {
    ApiStatus {
        code: 406,
        reason: "NotAcceptable",
        message: format!(
            "only the following media types are accepted: {}",
            super::negotiate::ACCEPTED.join(", ")
        ),
        details: None,
    }
}

/// 429 for a request over `--max-requests-inflight`: apierrors' `NewTooManyRequests` with the
/// wording of the apiserver's max-in-flight filter (sent with `Retry-After: 1`).
pub fn too_many_requests() -> ApiStatus {
    ApiStatus {
        code: 429,
        reason: "TooManyRequests",
        message: "Too many requests, please try again later.".to_owned(),
        details: None,
    }
}

/// 504 for a request over `--request-timeout`, worded as the apiserver's timeout filter:
/// `Timeout: request did not complete within requested timeout - context deadline exceeded`.
pub fn timeout() -> ApiStatus {
    ApiStatus {
        code: 504,
        reason: "Timeout",
        message:
            "Timeout: request did not complete within requested timeout - context deadline exceeded"
                .to_owned(),
        details: None,
    }
}

// === private helpers ===

fn not_found(resource: &str, group: &str, name: &str) -> ApiStatus {
    let qualified = if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    };
    ApiStatus {
        code: 404,
        reason: "NotFound",
        message: format!("{qualified} {} not found", go_quote(name)),
        details: Some(StatusDetails {
            name: name.to_owned(),
            group: group.to_owned(),
            kind: resource.to_owned(),
        }),
    }
}

fn empty_details() -> StatusDetails {
    StatusDetails {
        name: String::new(),
        group: String::new(),
        kind: String::new(),
    }
}

/// Go's `%q` for the strings that reach messages (names, users): double quotes, with `"`,
/// `\` and control characters escaped.
pub(crate) fn go_quote(s: &str) -> String {
    let mut quoted = String::with_capacity(s.len() + 2);
    quoted.push('"');
    for c in s.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            '\u{7}' => quoted.push_str("\\a"),
            '\u{8}' => quoted.push_str("\\b"),
            '\u{c}' => quoted.push_str("\\f"),
            '\u{b}' => quoted.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                quoted.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}
