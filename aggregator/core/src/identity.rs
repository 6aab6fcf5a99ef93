//! Which node an agent stream may report for: the pure rules of agent identity. The shell
//! (`aggregator::identity`) has the agent's token reviewed by the API server (a TokenReview
//! for the `kubepulse` audience) and hands the answer here with the claimed node and the
//! latest Pod metadata; nothing here does I/O.
//!
//! A stream is accepted only when its token
//! 1. is for the kubepulse audience,
//! 2. belongs to the agent service account (`--agent-service-account`, the one only the agent
//!    DaemonSet's pods run as),
//! 3. is bound to a pod (a projected token: `authentication.kubernetes.io/pod-name`), and
//! 4. that pod is Running and bound to the node the stream claims, by the Pod watch (and by
//!    the token's own `authentication.kubernetes.io/node-name` when the API server adds it),
//!    and is the very pod the token was issued for (same UID, when the token names one).
//!
//! The token is verified either by a TokenReview or locally against the service-account
//! issuer's public keys ([`jwt`]); both give the same [`Reviewed`].
//!
//! So a compromised node can report only for itself: its agent's token names its own pod,
//! which the API server binds to its own node.

use std::collections::BTreeMap;
use std::fmt;

use kubepulse_model::{NodeName, PodKey};

use crate::meta::MetaView;

pub mod jwt;

/// The audience agents' tokens are issued for.
pub const AUDIENCE: &str = "kubepulse";
/// TokenReview `user.extra` key naming the pod a projected token is bound to.
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
/// TokenReview `user.extra` key naming the node of that pod (Kubernetes 1.30 and later).
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";

/// A service account, `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccount {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ServiceAccount {
    /// Parses `namespace/name`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.split_once('/') {
            Some((ns, name))
                if !ns.is_empty()
                    && !name.is_empty()
                    && !name.contains('/')
                    && !ns.contains(':') =>
            {
                Ok(Self {
                    namespace: ns.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Err(format!("{s:?} is not namespace/name")),
        }
    }

    /// The user name its tokens authenticate as.
    pub fn username(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }
}

impl fmt::Display for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What a TokenReview, or [`jwt::verify`] in its place, says about an authenticated token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reviewed {
    /// `status.user.username`.
    pub username: String,
    /// `status.user.extra`.
    pub extra: BTreeMap<String, Vec<String>>,
    /// `status.audiences` (the requested audiences the token is valid for).
    pub audiences: Vec<String>,
}

/// How a refusal is reported to the agent (the gRPC code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// No valid credential: `UNAUTHENTICATED`.
    Unauthenticated,
    /// A valid credential that may not report for this node: `PERMISSION_DENIED`.
    PermissionDenied,
    /// The aggregator cannot decide now (API server unreachable, metadata not listed yet):
    /// `UNAVAILABLE`, the agent retries.
    Unavailable,
}

/// Why a stream was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The hello carried no token.
    #[error(
        "no service-account token in the hello: the agent must present a projected token with audience {AUDIENCE} (--aggregator-token-file)"
    )]
    NoToken,
    /// The API server did not authenticate the token (expired, revoked, malformed, or for
    /// another audience); its reason is kept.
    #[error("token rejected by the API server: {0}")]
    Invalid(String),
    /// Verification against the issuer's public keys failed (malformed, bad signature,
    /// expired, not valid yet); counted as an invalid token like [`Refusal::Invalid`].
    #[error("token rejected: {0}")]
    Unverified(String),
    /// Authenticated, but not for the kubepulse audience.
    #[error("token is not for audience {AUDIENCE} (it is for {0:?})")]
    WrongAudience(Vec<String>),
    /// Authenticated as someone other than the agent service account.
    #[error("token belongs to {got}, not to the agent service account {want}")]
    WrongServiceAccount {
        /// the token's user
        got: String,
        /// `--agent-service-account`
        want: String,
    },
    /// A token not bound to a pod (a legacy or TokenRequest token without a pod).
    #[error("token is not bound to a pod: agents must present their pod's projected token")]
    NotBoundToPod,
    /// The token's pod is not a Running pod the aggregator knows.
    #[error("pod {0} is not a Running pod of this cluster")]
    PodNotRunning(PodKey),
    /// The token's pod was deleted and another pod of the same name runs now.
    #[error(
        "pod {0} is not the pod the token is bound to (its UID differs): the token's pod is gone"
    )]
    PodReplaced(PodKey),
    /// The token's pod runs on another node than the stream claims.
    #[error(
        "pod {pod} runs on node {bound}, not on node {claimed}: an agent reports only for its own node"
    )]
    WrongNode {
        /// the token's pod
        pod: PodKey,
        /// where it runs (empty when unbound)
        bound: String,
        /// what the hello claims
        claimed: NodeName,
    },
    /// The Pod watch has not listed every pod yet.
    #[error("pod metadata is not synced yet; retry")]
    NotSynced,
    /// The TokenReview itself failed.
    #[error("token review failed: {0}; retry")]
    ReviewFailed(String),
    /// Verifying locally only, and the issuer's public keys could not be fetched yet.
    #[error("cannot verify the token yet: {0}; retry")]
    KeysUnavailable(String),
}

impl Refusal {
    /// The gRPC code the agent gets.
    pub fn kind(&self) -> Kind {
        match self {
            Refusal::NoToken
            | Refusal::Invalid(_)
            | Refusal::Unverified(_)
            | Refusal::WrongAudience(_) => Kind::Unauthenticated,
            Refusal::WrongServiceAccount { .. }
            | Refusal::NotBoundToPod
            | Refusal::PodNotRunning(_)
            | Refusal::PodReplaced(_)
            | Refusal::WrongNode { .. } => Kind::PermissionDenied,
            Refusal::NotSynced | Refusal::ReviewFailed(_) | Refusal::KeysUnavailable(_) => {
                Kind::Unavailable
            }
        }
    }

    /// A stable name for metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NoToken => "identity_no_token",
            Refusal::Invalid(_) | Refusal::Unverified(_) => "identity_invalid_token",
            Refusal::WrongAudience(_) => "identity_wrong_audience",
            Refusal::WrongServiceAccount { .. } => "identity_wrong_service_account",
            Refusal::NotBoundToPod => "identity_not_bound_to_pod",
            Refusal::PodNotRunning(_) | Refusal::PodReplaced(_) => "identity_pod_not_running",
            Refusal::WrongNode { .. } => "identity_wrong_node",
            Refusal::NotSynced => "identity_not_synced",
            Refusal::ReviewFailed(_) | Refusal::KeysUnavailable(_) => "identity_review_failed",
        }
    }
}

/// Decides whether a reviewed token may report for `claimed`: the pod it names, or why not.
pub fn authorize(
    reviewed: &Reviewed,
    claimed: &NodeName,
    agent: &ServiceAccount,
    meta: &MetaView,
) -> Result<PodKey, Refusal> {
    if !reviewed.audiences.is_empty() && !reviewed.audiences.iter().any(|a| a == AUDIENCE) {
        return Err(Refusal::WrongAudience(reviewed.audiences.clone()));
    }
    let want = agent.username();
    if reviewed.username != want {
        return Err(Refusal::WrongServiceAccount {
            got: reviewed.username.clone(),
            want,
        });
    }
    let pod_name = match reviewed.extra.get(POD_NAME_EXTRA).map(Vec::as_slice) {
        Some([name]) if !name.is_empty() => name,
        _ => return Err(Refusal::NotBoundToPod),
    };
    // a bound token's pod is in its service account's namespace
    let pod = PodKey::new(&agent.namespace, pod_name).map_err(|_| Refusal::NotBoundToPod)?;
    if let Some([node]) = reviewed.extra.get(NODE_NAME_EXTRA).map(Vec::as_slice)
        && node.as_str() != claimed.as_str()
    {
        return Err(Refusal::WrongNode {
            pod,
            bound: node.clone(),
            claimed: claimed.clone(),
        });
    }
    let Some(meta_pod) = meta.pods.get(&pod) else {
        return Err(if meta.synced {
            Refusal::PodNotRunning(pod)
        } else {
            Refusal::NotSynced
        });
    };
    if !meta_pod.running {
        return Err(Refusal::PodNotRunning(pod));
    }
    if let Some([uid]) = reviewed.extra.get(jwt::POD_UID_EXTRA).map(Vec::as_slice)
        && meta_pod.uid != 0
        && crate::meta::uid_fingerprint(uid) != meta_pod.uid
    {
        return Err(Refusal::PodReplaced(pod));
    }
    match &meta_pod.node {
        Some(node) if node == claimed => Ok(pod),
        bound => Err(Refusal::WrongNode {
            pod,
            bound: bound.as_ref().map(|n| n.to_string()).unwrap_or_default(),
            claimed: claimed.clone(),
        }),
    }
}

#[cfg(test)]
mod tests;
