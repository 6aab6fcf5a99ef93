//! Agent identities on the control plane, as a cluster gives them: the agent service account,
//! one agent Pod per node (Running, bound to it, running as that account) and each pod's token
//! for the `kubepulse` audience (a TokenRequest bound to the pod: what the kubelet projects
//! into `/var/run/secrets/kubepulse/token`). Plus a forged expired one, signed with the
//! control plane's service-account key, for the refusal tests.

use std::path::Path;
use std::time::SystemTime;

use anyhow::Context as _;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use rustls_pki_types::pem::PemObject as _;
use serde_json::json;

use super::objects;

/// Namespace of the agent service account and pods (the aggregator's default).
pub const NAMESPACE: &str = "kube-system";
/// The agent service account (the aggregator's default `--agent-service-account`).
pub const AGENT_SERVICE_ACCOUNT: &str = "kubepulse-agent";
/// The audience agents' tokens are for.
pub const AUDIENCE: &str = "kubepulse";

/// The agent pod of `node`.
pub fn agent_pod_name(node: &str) -> String {
    format!("kubepulse-agent-{node}")
}

/// Creates service account `name` in [`NAMESPACE`] unless it exists; returns its UID.
pub async fn ensure_service_account(client: &kube::Client, name: &str) -> anyhow::Result<String> {
    let api = Api::<ServiceAccount>::namespaced(client.clone(), NAMESPACE);
    if let Some(sa) = api.get_opt(name).await? {
        return Ok(sa.metadata.uid.unwrap_or_default());
    }
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": NAMESPACE}}))?;
    match api.create(&PostParams::default(), &sa).await {
        Ok(created) => Ok(created.metadata.uid.unwrap_or_default()),
        // created meanwhile by a test sharing the control plane
        Err(kube::Error::Api(e)) if e.code == 409 => {
            Ok(api.get(name).await?.metadata.uid.unwrap_or_default())
        }
        Err(err) => Err(err).with_context(|| format!("create service account {name}")),
    }
}

/// Creates pod `name` in [`NAMESPACE`], running as `service_account`, bound to `node` and
/// marked Running (as its kubelet would); returns its UID.
pub async fn running_pod(
    client: &kube::Client,
    name: &str,
    service_account: &str,
    node: &str,
) -> anyhow::Result<String> {
    let api = Api::<Pod>::namespaced(client.clone(), NAMESPACE);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "kubepulse-agent"}},
        "spec": {
            "nodeName": node,
            "serviceAccountName": service_account,
            "containers": [{"name": "agent", "image": "registry.invalid/kubepulse-agent:0"}],
            "terminationGracePeriodSeconds": 0,
        },
    }))?;
    let created = api
        .create(&PostParams::default(), &pod)
        .await
        .with_context(|| format!("create pod {NAMESPACE}/{name}"))?;
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(objects::running_status(&created)),
    )
    .await
    .with_context(|| format!("mark pod {NAMESPACE}/{name} Running"))?;
    Ok(created.metadata.uid.unwrap_or_default())
}

/// A token of `service_account` for `audience`, bound to pod `pod` (name, UID), valid for an
/// hour: what the kubelet projects.
pub async fn bound_token(
    client: &kube::Client,
    service_account: &str,
    audience: &str,
    pod: (&str, &str),
) -> anyhow::Result<String> {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![audience.to_owned()]),
            expiration_seconds: Some(3600),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Pod".to_owned()),
                name: Some(pod.0.to_owned()),
                uid: Some(pod.1.to_owned()),
            }),
        }),
        ..TokenRequest::default()
    };
    let answer = Api::<ServiceAccount>::namespaced(client.clone(), NAMESPACE)
        .create_token_request(service_account, &PostParams::default(), &request)
        .await
        .with_context(|| format!("TokenRequest for {service_account} bound to pod {}", pod.0))?;
    let token = answer.status.and_then(|s| s.token).unwrap_or_default();
    anyhow::ensure!(!token.is_empty(), "TokenRequest returned no token");
    Ok(token)
}

/// The agent service account, an agent pod on every node in `nodes` and its token, written to
/// `<dir>/<node>.token` (the harness's `agent_token_dir`).
pub async fn provision(client: &kube::Client, nodes: &[String], dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    ensure_service_account(client, AGENT_SERVICE_ACCOUNT).await?;
    for node in nodes {
        let pod = agent_pod_name(node);
        let uid = running_pod(client, &pod, AGENT_SERVICE_ACCOUNT, node).await?;
        let token = bound_token(client, AGENT_SERVICE_ACCOUNT, AUDIENCE, (&pod, &uid)).await?;
        let path = dir.join(format!("{node}.token"));
        // written whole then renamed, as the kubelet updates projected volumes
        let tmp = dir.join(format!(".{node}.token.tmp"));
        std::fs::write(&tmp, token)?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(())
}

/// A token exactly like [`bound_token`]'s, for `audience`, but expired an hour ago: signed
/// (ES256) with the control plane's service-account key `sa_key_pem` (PKCS#8).
pub fn expired_token(
    sa_key_pem: &str,
    service_account: (&str, &str),
    pod: (&str, &str),
    audience: &str,
) -> anyhow::Result<String> {
    signed_token(
        sa_key_pem,
        "https://kubernetes.default.svc",
        -3600,
        service_account,
        pod,
        audience,
    )
}

/// A token like [`bound_token`]'s, valid for ten more minutes and signed with the cluster's
/// service-account key, but naming another `issuer`: kube-apiserver does not accept it, and
/// an aggregator verifying locally must leave it to a TokenReview.
pub fn other_issuer_token(
    sa_key_pem: &str,
    issuer: &str,
    service_account: (&str, &str),
    pod: (&str, &str),
    audience: &str,
) -> anyhow::Result<String> {
    signed_token(sa_key_pem, issuer, 600, service_account, pod, audience)
}

/// A bound-token shape signed (ES256, no `kid`) with `sa_key_pem`, expiring `expires_in`
/// seconds from now (negative: already expired).
fn signed_token(
    sa_key_pem: &str,
    issuer: &str,
    expires_in: i64,
    service_account: (&str, &str),
    pod: (&str, &str),
    audience: &str,
) -> anyhow::Result<String> {
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(sa_key_pem.as_bytes())
        .context("sa.key is not a PKCS#8 PEM key")?;
    let rng = ring::rand::SystemRandom::new();
    let key = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        der.secret_pkcs8_der(),
        &rng,
    )
    .map_err(|e| anyhow::anyhow!("sa.key: {e}"))?;
    let now = i64::try_from(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)?
            .as_secs(),
    )?;
    let claims = json!({
        "aud": [audience],
        "exp": now + expires_in,
        "iat": now + expires_in - 3600,
        "nbf": now + expires_in - 3600,
        "iss": issuer,
        "sub": format!("system:serviceaccount:{NAMESPACE}:{}", service_account.0),
        "kubernetes.io": {
            "namespace": NAMESPACE,
            "serviceaccount": {"name": service_account.0, "uid": service_account.1},
            "pod": {"name": pod.0, "uid": pod.1},
        },
    });
    let signing_input = format!(
        "{}.{}",
        base64url(br#"{"alg":"ES256","typ":"JWT"}"#),
        base64url(&serde_json::to_vec(&claims)?)
    );
    let signature = key
        .sign(&rng, signing_input.as_bytes())
        .map_err(|e| anyhow::anyhow!("sign: {e}"))?;
    Ok(format!("{signing_input}.{}", base64url(signature.as_ref())))
}

/// Unpadded base64url (JWS).
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64url_is_unpadded_and_url_safe() {
        assert_eq!(super::base64url(b""), "");
        assert_eq!(super::base64url(b"f"), "Zg");
        assert_eq!(super::base64url(b"fo"), "Zm8");
        assert_eq!(super::base64url(b"foo"), "Zm9v");
        assert_eq!(super::base64url(&[0xfb, 0xff]), "-_8");
    }
}
