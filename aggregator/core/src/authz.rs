//! The pure rules of delegated authentication and authorization, as kube-apiserver's
//! aggregation layer expects an extension API server to apply them (reference §4):
//!
//! - [`ExtensionAuth::from_configmap`] reads the `kube-system/extension-apiserver-authentication`
//!   ConfigMap (client CA, front-proxy CA, allowed names, header names);
//! - [`user_from_headers`] takes the identity a front proxy asserts (`X-Remote-User`, …);
//! - [`combine`] turns the answers of the authenticator chain into one outcome (first identity
//!   wins; anonymous only when no authenticator failed);
//! - [`request_attributes`] is apiserver's `RequestInfoFactory`: which verb, resource,
//!   namespace and name a request is about, or which non-resource path;
//! - [`decide_locally`] allows the always-allowed paths and `system:masters` without a
//!   SubjectAccessReview; [`forbidden`] words the 403 as the apiserver does.
//!
//! The shell (`aggregator::auth`) does the TLS verification, the TokenReview and
//! SubjectAccessReview calls and the caching.

use std::collections::BTreeMap;

use crate::api::{ApiStatus, StatusDetails};
use crate::encode::status::go_quote;
use crate::selector::{Field, FieldSelector};

/// The user of anonymous requests.
pub const ANONYMOUS: &str = "system:anonymous";
/// The group of anonymous requests.
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
/// The group every authenticated user gets.
pub const AUTHENTICATED: &str = "system:authenticated";
/// The group allowed everything without a SubjectAccessReview.
pub const MASTERS: &str = "system:masters";

/// An authenticated (or anonymous) identity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserInfo {
    /// User name.
    pub name: String,
    /// UID (empty when unknown).
    pub uid: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Extra attributes (keys lower-case).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// The anonymous user.
    pub fn anonymous() -> Self {
        Self {
            name: ANONYMOUS.to_owned(),
            groups: vec![UNAUTHENTICATED.to_owned()],
            ..Self::default()
        }
    }

    /// A user from a client certificate: the subject's CN is the name, its O values are the
    /// groups.
    pub fn from_certificate(common_name: &str, organizations: Vec<String>) -> Self {
        Self {
            name: common_name.to_owned(),
            groups: organizations,
            ..Self::default()
        }
    }
}

/// Which headers carry the identity a front proxy asserts, and which client certificate
/// names may assert it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestHeaderConfig {
    /// Headers holding the user name; the first non-empty wins (e.g. `X-Remote-User`).
    pub username_headers: Vec<String>,
    /// Headers holding the UID.
    pub uid_headers: Vec<String>,
    /// Headers holding groups (all values of all of them).
    pub group_headers: Vec<String>,
    /// Prefixes of headers holding extra attributes (`X-Remote-Extra-`).
    pub extra_prefixes: Vec<String>,
    /// Common names the front-proxy certificate may have; empty allows any.
    pub allowed_names: Vec<String>,
}

/// The front-proxy settings: the CA bundle that must have signed the proxy's certificate
/// and the header configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestHeaderAuth {
    /// PEM bundle of the requestheader CA.
    pub ca_pem: String,
    /// Headers and allowed names.
    pub config: RequestHeaderConfig,
}

/// What the `extension-apiserver-authentication` ConfigMap says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtensionAuth {
    /// `client-ca-file`: PEM bundle for x509 client certificates.
    pub client_ca_pem: Option<String>,
    /// The `requestheader-*` keys, present when `requestheader-client-ca-file` is.
    pub request_header: Option<RequestHeaderAuth>,
}

/// A ConfigMap value that could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigMapError {
    /// A key that must hold a JSON array of strings does not.
    #[error("key {key} of the authentication ConfigMap is not a JSON array of strings: {value:?}")]
    NotAStringArray {
        /// the key
        key: &'static str,
        /// what it held
        value: String,
    },
}

impl ExtensionAuth {
    /// Reads the ConfigMap's `data`. Missing keys are absent settings, not errors.
    pub fn from_configmap(data: &BTreeMap<String, String>) -> Result<Self, ConfigMapError> {
        let non_empty = |key: &str| data.get(key).filter(|v| !v.trim().is_empty()).cloned();
        let request_header = match non_empty("requestheader-client-ca-file") {
            Some(ca_pem) => Some(RequestHeaderAuth {
                ca_pem,
                config: RequestHeaderConfig {
                    username_headers: string_array(data, "requestheader-username-headers")?,
                    uid_headers: string_array(data, "requestheader-uid-headers")?,
                    group_headers: string_array(data, "requestheader-group-headers")?,
                    extra_prefixes: string_array(data, "requestheader-extra-headers-prefix")?,
                    allowed_names: string_array(data, "requestheader-allowed-names")?,
                },
            }),
            None => None,
        };
        Ok(Self {
            client_ca_pem: non_empty("client-ca-file"),
            request_header,
        })
    }
}

/// The identity a front proxy asserts in `headers` (name, value pairs; names in any case),
/// or `None` when no username header is set (then the request is not a front-proxy
/// request). Header values are trusted only after the proxy's certificate was verified.
pub fn user_from_headers<'h>(
    headers: impl IntoIterator<Item = (&'h str, &'h str)> + Clone,
    config: &RequestHeaderConfig,
) -> Option<UserInfo> {
    let first_value = |names: &[String]| {
        names.iter().find_map(|wanted| {
            headers
                .clone()
                .into_iter()
                .find(|(name, value)| name.eq_ignore_ascii_case(wanted) && !value.is_empty())
                .map(|(_, value)| value.to_owned())
        })
    };
    let name = first_value(&config.username_headers)?;
    let uid = first_value(&config.uid_headers).unwrap_or_default();
    let mut groups = Vec::new();
    for wanted in &config.group_headers {
        for (header, value) in headers.clone() {
            if header.eq_ignore_ascii_case(wanted) && !value.is_empty() {
                groups.push(value.to_owned());
            }
        }
    }
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (header, value) in headers {
        let lower = header.to_ascii_lowercase();
        let Some(rest) = config
            .extra_prefixes
            .iter()
            .find_map(|prefix| lower.strip_prefix(&prefix.to_ascii_lowercase()))
        else {
            continue;
        };
        if rest.is_empty() || value.is_empty() {
            continue;
        }
        extra
            .entry(unescape_extra_key(rest))
            .or_default()
            .push(value.to_owned());
    }
    Some(UserInfo {
        name,
        uid,
        groups,
        extra,
    })
}

/// The request headers a front proxy uses for identity; removed from a request once read,
/// so nothing downstream trusts them by mistake.
pub fn is_identity_header(header: &str, config: &RequestHeaderConfig) -> bool {
    let matches = |names: &[String]| names.iter().any(|n| header.eq_ignore_ascii_case(n));
    matches(&config.username_headers)
        || matches(&config.uid_headers)
        || matches(&config.group_headers)
        || config
            .extra_prefixes
            .iter()
            // by bytes: a name with a multi-byte character across the prefix's end is simply
            // not a match (slicing the str there would panic)
            .any(|p| {
                header
                    .as_bytes()
                    .get(..p.len())
                    .is_some_and(|h| h.eq_ignore_ascii_case(p.as_bytes()))
            })
}

/// Whether the front-proxy certificate's common name may assert identities.
pub fn allowed_name(common_name: &str, allowed: &[String]) -> bool {
    allowed.is_empty() || allowed.iter().any(|a| a == common_name)
}

/// What one authenticator of the chain answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthnAnswer {
    /// Not for this authenticator (no certificate, no header, no token).
    NotApplicable,
    /// The request is from this user.
    User(UserInfo),
    /// The credentials were presented but are not valid.
    Failed(String),
}

/// The outcome of the whole chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthnOutcome {
    /// Authenticated (with `system:authenticated` added) or anonymous.
    User(UserInfo),
    /// Every authenticator that applied failed: 401, with the reasons to log.
    Unauthorized(Vec<String>),
}

/// Combines the chain's answers in order, as apiserver's union authenticator does: the first
/// user wins; otherwise any failure is a 401; otherwise the request is anonymous.
pub fn combine(answers: impl IntoIterator<Item = AuthnAnswer>) -> AuthnOutcome {
    let mut failures = Vec::new();
    for answer in answers {
        match answer {
            AuthnAnswer::User(mut user) => {
                let has_group = user
                    .groups
                    .iter()
                    .any(|g| g == AUTHENTICATED || g == UNAUTHENTICATED);
                if !has_group {
                    user.groups.push(AUTHENTICATED.to_owned());
                }
                return AuthnOutcome::User(user);
            }
            AuthnAnswer::Failed(reason) => failures.push(reason),
            AuthnAnswer::NotApplicable => {}
        }
    }
    if failures.is_empty() {
        AuthnOutcome::User(UserInfo::anonymous())
    } else {
        AuthnOutcome::Unauthorized(failures)
    }
}

/// What a request is about, as authorization sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Attributes {
    /// An API resource (`/apis/<group>/<version>/…/<resource>[/<name>]`).
    Resource {
        /// `get`, `list`, `watch`, `create`, …
        verb: String,
        /// API group.
        group: String,
        /// API version.
        version: String,
        /// Resource (`pods`, `nodes`).
        resource: String,
        /// Subresource, if any.
        subresource: String,
        /// Namespace (empty for cluster scope).
        namespace: String,
        /// Object name (empty for lists).
        name: String,
    },
    /// Anything else (`/apis`, `/openapi/v2`, `/metrics`, `/healthz`, …).
    NonResource {
        /// Lower-case HTTP method (`get`, `post`, …).
        verb: String,
        /// The path.
        path: String,
    },
}

impl Attributes {
    /// The verb.
    pub fn verb(&self) -> &str {
        match self {
            Attributes::Resource { verb, .. } | Attributes::NonResource { verb, .. } => verb,
        }
    }
}

/// Reads method, path and query the way apiserver's `RequestInfoFactory` does (for the
/// `/apis` prefix; `/api` is treated the same way without a group).
pub fn request_attributes(method: &str, path: &str, query: Option<&str>) -> Attributes {
    let verb_of_method = match method {
        "GET" | "HEAD" => "get",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        other => return non_resource(other, path),
    };
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["apis", group, version, rest @ ..] if !rest.is_empty() => ((*group, *version), rest),
        ["api", version, rest @ ..] if !rest.is_empty() => (("", *version), rest),
        _ => return non_resource(method, path),
    };
    let mut parts = rest;
    let mut namespace = "";
    if parts[0] == "namespaces" && parts.len() > 1 {
        namespace = parts[1];
        if parts.len() > 2 {
            parts = &parts[2..];
        }
    }
    let resource = parts[0];
    let name = parts.get(1).copied().unwrap_or_default();
    let subresource = parts.get(2).copied().unwrap_or_default();
    let mut verb = verb_of_method.to_owned();
    let mut name = name.to_owned();
    if name.is_empty() && verb == "get" {
        let params = query_params(query.unwrap_or_default());
        let watch = params
            .iter()
            .find(|(k, _)| k == "watch")
            .is_some_and(|(_, v)| v != "0" && v != "false");
        verb = if watch { "watch" } else { "list" }.to_owned();
        // a list narrowed to one name by fieldSelector is authorized as that name
        if let Some((_, fs)) = params.iter().find(|(k, _)| k == "fieldSelector")
            && let Ok(fs) = FieldSelector::parse(fs)
            && let Some(n) = fs.required(Field::Name)
            && valid_path_segment(n)
        {
            name = n.to_owned();
        }
    }
    if name.is_empty() && verb == "delete" {
        verb = "deletecollection".to_owned();
    }
    Attributes::Resource {
        verb,
        group: group.0.to_owned(),
        version: group.1.to_owned(),
        resource: resource.to_owned(),
        subresource: subresource.to_owned(),
        namespace: namespace.to_owned(),
        name,
    }
}

/// The decision that needs no SubjectAccessReview: `Some(true)` for an always-allowed
/// non-resource path (`--authorization-always-allow-paths`; an entry ending in `*` is a
/// prefix) or a `system:masters` user; `None` when the API server must be asked.
pub fn decide_locally(
    user: &UserInfo,
    attrs: &Attributes,
    always_allow: &[String],
) -> Option<bool> {
    if let Attributes::NonResource { path, .. } = attrs {
        let path = path.trim_start_matches('/');
        let allowed = always_allow.iter().any(|entry| {
            let entry = entry.trim_start_matches('/');
            match entry.strip_suffix('*') {
                Some(prefix) => path.starts_with(prefix),
                None => path == entry,
            }
        });
        if allowed {
            return Some(true);
        }
    }
    if user.groups.iter().any(|g| g == MASTERS) {
        return Some(true);
    }
    None
}

/// The 403 Status for a denied request, worded as apiserver's `responsewriters.Forbidden`:
/// `pods.metrics.k8s.io "web" is forbidden: User "jane" cannot get resource "pods" in API
/// group "metrics.k8s.io" in the namespace "prod"` (a `: <reason>` suffix when the authorizer
/// gave one), or `forbidden: User "jane" cannot get path "/metrics"`.
pub fn forbidden(user: &UserInfo, attrs: &Attributes, reason: &str) -> ApiStatus {
    let (qualified, name, group, kind, message) = match attrs {
        Attributes::NonResource { verb, path } => (
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            format!(
                "User {} cannot {verb} path {}",
                go_quote(&user.name),
                go_quote(path)
            ),
        ),
        Attributes::Resource {
            verb,
            group,
            resource,
            subresource,
            namespace,
            name,
            ..
        } => {
            let full = if subresource.is_empty() {
                resource.clone()
            } else {
                format!("{resource}/{subresource}")
            };
            let scope = if namespace.is_empty() {
                "at the cluster scope".to_owned()
            } else {
                format!("in the namespace {}", go_quote(namespace))
            };
            let qualified = if group.is_empty() {
                resource.clone()
            } else {
                format!("{resource}.{group}")
            };
            (
                qualified,
                name.clone(),
                group.clone(),
                resource.clone(),
                format!(
                    "User {} cannot {verb} resource {} in API group {} {scope}",
                    go_quote(&user.name),
                    go_quote(&full),
                    go_quote(group)
                ),
            )
        }
    };
    let message = if reason.is_empty() {
        message
    } else {
        format!("{message}: {reason}")
    };
    let message = match (qualified.is_empty(), name.is_empty()) {
        (true, _) => format!("forbidden: {message}"),
        (false, true) => format!("{qualified} is forbidden: {message}"),
        (false, false) => format!("{qualified} {} is forbidden: {message}", go_quote(&name)),
    };
    ApiStatus {
        code: 403,
        reason: "Forbidden",
        message,
        details: Some(StatusDetails { name, group, kind }),
    }
}

// === private helpers ===

fn non_resource(method: &str, path: &str) -> Attributes {
    Attributes::NonResource {
        verb: method.to_ascii_lowercase(),
        path: path.to_owned(),
    }
}

fn string_array(
    data: &BTreeMap<String, String>,
    key: &'static str,
) -> Result<Vec<String>, ConfigMapError> {
    match data.get(key).map(|v| v.trim()) {
        None | Some("") => Ok(Vec::new()),
        Some(value) => serde_json::from_str::<Vec<String>>(value).map_err(|_| {
            ConfigMapError::NotAStringArray {
                key,
                value: value.to_owned(),
            }
        }),
    }
}

/// apiserver's `unescapeExtraKey`: the key part of `X-Remote-Extra-<key>` is lower-cased
/// and percent-decoded; undecodable keys are kept as they are.
fn unescape_extra_key(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |b: u8| (b as char).to_digit(16);
            match (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                    continue;
                }
                _ => return key.to_owned(),
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| key.to_owned())
}

fn query_params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .take(64)
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (unescape_query(k), unescape_query(v))
        })
        .collect()
}

fn unescape_query(s: &str) -> String {
    unescape_extra_key(&s.replace('+', " "))
}

/// apimachinery's `IsValidPathSegmentName`: not `.`/`..`, no `/` or `%`.
fn valid_path_segment(name: &str) -> bool {
    name != "." && name != ".." && !name.contains('/') && !name.contains('%')
}

#[cfg(test)]
mod tests;
