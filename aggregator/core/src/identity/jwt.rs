//! Agent tokens verified locally, without a TokenReview: the service-account issuer's public
//! keys (its JWKS, RFC 7517, as kube-apiserver serves it on `/openid/v1/jwks`), a compact JWS
//! (RFC 7515) checked against them, and the bound-token claims checked as kube-apiserver
//! checks them. The answer is the same [`Reviewed`] a TokenReview gives, so
//! [`authorize`](super::authorize) stays the one decision. The current time is an argument.
//!
//! Supported keys: EC P-256 (`ES256`) and RSA (`RS256`, 2048 to 8192 bits); signatures are
//! verified with `ring`. A token whose issuer is not the key set's, or whose `kid` the key set
//! does not have, is [`Unverified::UnknownIssuer`] / [`Unverified::UnknownKey`]: not a refusal,
//! the shell refreshes the keys or asks the API server instead.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use super::{AUDIENCE, NODE_NAME_EXTRA, POD_NAME_EXTRA, Refusal, Reviewed};

/// `user.extra` key for the UID of the pod a token is bound to (as TokenReview reports it).
pub const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";
/// `user.extra` key for the UID of that pod's node.
pub const NODE_UID_EXTRA: &str = "authentication.kubernetes.io/node-uid";
/// Clock skew tolerated on `exp`, `nbf` and `iat`: kube-apiserver's (go-jose's default), one
/// minute.
pub const LEEWAY_SECS: i64 = 60;
/// Longest token looked at; projected tokens are about a kilobyte.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A signature algorithm this verifier supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    /// ECDSA P-256 with SHA-256 (`ES256`).
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (`RS256`).
    Rs256,
}

impl Alg {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "ES256" => Some(Alg::Es256),
            "RS256" => Some(Alg::Rs256),
            _ => None,
        }
    }

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Es256 => "ES256",
            Alg::Rs256 => "RS256",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Public {
    /// Uncompressed SEC1 point, `04 || x || y`.
    Ec(Vec<u8>),
    /// Big-endian modulus and exponent, without leading zeros.
    Rsa { n: Vec<u8>, e: Vec<u8> },
}

/// One usable signing key of a key set.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Key {
    kid: Option<String>,
    alg: Alg,
    public: Public,
}

/// The issuer's public keys: the usable keys of a JWKS document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeySet {
    keys: Vec<Key>,
    skipped: usize,
}

/// Why a JWKS document gave no key set.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// Not a JSON object with a `keys` array.
    #[error("not a JWKS document: {0}")]
    Malformed(String),
    /// No key of a supported type (EC P-256, RSA) for signatures.
    #[error("no usable signing key (EC P-256 or RSA) among {0} keys")]
    NoUsableKey(usize),
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawKey {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
}

fn b64(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

fn strip_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    bytes.drain(..zeros);
    bytes
}

impl Key {
    /// A key of a supported type for signatures, or `None` (skipped, as other verifiers do).
    fn parse(raw: RawKey) -> Option<Self> {
        if raw.use_.as_deref().is_some_and(|u| u != "sig") {
            return None;
        }
        let (alg, public) = match raw.kty.as_str() {
            "EC" => {
                if raw.crv.as_deref() != Some("P-256") {
                    return None;
                }
                let (x, y) = (b64(raw.x.as_deref()?)?, b64(raw.y.as_deref()?)?);
                if x.len() != 32 || y.len() != 32 {
                    return None;
                }
                let mut point = Vec::with_capacity(65);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                (Alg::Es256, Public::Ec(point))
            }
            "RSA" => {
                let n = strip_leading_zeros(b64(raw.n.as_deref()?)?);
                let e = strip_leading_zeros(b64(raw.e.as_deref()?)?);
                if n.len() < 256 || n.len() > 1024 || e.is_empty() || e.len() > 8 {
                    return None;
                }
                (Alg::Rs256, Public::Rsa { n, e })
            }
            _ => return None,
        };
        if raw.alg.as_deref().is_some_and(|a| a != alg.name()) {
            return None;
        }
        Some(Key {
            kid: raw.kid,
            alg,
            public,
        })
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        use ring::signature;
        match &self.public {
            Public::Ec(point) => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, signature)
                    .is_ok()
            }
            Public::Rsa { n, e } => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok(),
        }
    }
}

impl KeySet {
    /// The usable keys of a JWKS document; keys of other types or uses are skipped.
    pub fn parse(document: &[u8]) -> Result<Self, JwksError> {
        let raw: RawSet =
            serde_json::from_slice(document).map_err(|e| JwksError::Malformed(e.to_string()))?;
        let total = raw.keys.len();
        let keys: Vec<Key> = raw
            .keys
            .into_iter()
            .filter_map(|k| serde_json::from_value::<RawKey>(k).ok())
            .filter_map(Key::parse)
            .collect();
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey(total));
        }
        Ok(Self {
            skipped: total - keys.len(),
            keys,
        })
    }

    /// How many usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// No usable key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many keys of the document were skipped (unsupported type, curve or use).
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Whether a key has this `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

/// Why a token was not verified locally.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unverified {
    /// A definite refusal: malformed, bad signature, expired, wrong audience, no bound claims.
    Refused(Refusal),
    /// Issued by another issuer than the key set's: the API server may still know it.
    UnknownIssuer(String),
    /// Signed with a key (`kid`) the key set does not have: keys may have rotated.
    UnknownKey(String),
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Ref {
    #[serde(default)]
    name: String,
    #[serde(default)]
    uid: String,
}

#[derive(Deserialize)]
struct KubernetesClaims {
    #[serde(default)]
    namespace: String,
    serviceaccount: Option<Ref>,
    #[serde(default)]
    pod: Option<Ref>,
    #[serde(default)]
    node: Option<Ref>,
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    nbf: Option<f64>,
    #[serde(default)]
    iat: Option<f64>,
    #[serde(default, rename = "kubernetes.io")]
    kubernetes: Option<KubernetesClaims>,
}

#[derive(Deserialize)]
struct IssuerOnly {
    #[serde(default)]
    iss: Option<String>,
}

fn refused(message: impl Into<String>) -> Unverified {
    Unverified::Refused(Refusal::Unverified(message.into()))
}

fn part<T: for<'de> Deserialize<'de>>(b64url: &str, what: &str) -> Result<T, Unverified> {
    let bytes = b64(b64url).ok_or_else(|| refused(format!("{what} is not base64url")))?;
    serde_json::from_slice(&bytes).map_err(|e| refused(format!("{what} is not valid: {e}")))
}

/// Verifies `token` (a compact JWS) against `keys` of `issuer` at `now` (seconds since the Unix
/// epoch), as kube-apiserver authenticates a bound service-account token for the kubepulse
/// audience: the issuer first (another issuer's token is not judged here), then the signature,
/// then the audience, then `exp`/`nbf`/`iat` with [`LEEWAY_SECS`], then the `kubernetes.io`
/// claims. The answer is what a TokenReview would say.
pub fn verify(token: &str, keys: &KeySet, issuer: &str, now: i64) -> Result<Reviewed, Unverified> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(refused(format!(
            "token is longer than {MAX_TOKEN_BYTES} bytes"
        )));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(refused(
            "token is not a compact JWS (three dot-separated parts)",
        ));
    };
    let header: Header = part(header, "token header")?;
    let iss = part::<IssuerOnly>(payload, "token claims")?.iss;
    if iss.as_deref() != Some(issuer) {
        return Err(Unverified::UnknownIssuer(iss.unwrap_or_default()));
    }
    if header.crit.is_some() {
        return Err(refused("token header has critical extensions (crit)"));
    }
    let Some(alg) = Alg::parse(&header.alg) else {
        return Err(refused(format!(
            "token signature algorithm {:?} is not supported (ES256, RS256)",
            header.alg
        )));
    };
    let candidates: Vec<&Key> = match &header.kid {
        Some(kid) => {
            let with_kid: Vec<&Key> = keys
                .keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid.as_str()))
                .collect();
            if with_kid.is_empty() {
                return Err(Unverified::UnknownKey(kid.clone()));
            }
            with_kid
        }
        None => keys.keys.iter().collect(),
    };
    let candidates: Vec<&Key> = candidates.into_iter().filter(|k| k.alg == alg).collect();
    if candidates.is_empty() {
        return Err(refused(format!(
            "no {} key of issuer {issuer} for this token",
            alg.name()
        )));
    }
    let signature = b64(signature).ok_or_else(|| refused("token signature is not base64url"))?;
    let signing_input = token.rfind('.').map_or("", |dot| &token[..dot]);
    if !candidates
        .iter()
        .any(|k| k.verify(signing_input.as_bytes(), &signature))
    {
        return Err(refused(format!(
            "invalid signature: no key of issuer {issuer} verifies this token"
        )));
    }

    let claims: Claims = part(payload, "token claims")?;
    let audiences = match claims.aud {
        Some(Audience::One(a)) => vec![a],
        Some(Audience::Many(a)) => a,
        None => Vec::new(),
    };
    if !audiences.iter().any(|a| a == AUDIENCE) {
        return Err(Unverified::Refused(Refusal::WrongAudience(audiences)));
    }
    let Some(exp) = claims.exp else {
        return Err(refused("token has no expiry (exp): not a bound token"));
    };
    let seconds = |t: f64| if t.is_finite() { t as i64 } else { i64::MAX };
    if now.saturating_sub(LEEWAY_SECS) > seconds(exp) {
        return Err(refused("service account token has expired"));
    }
    if let Some(nbf) = claims.nbf
        && now.saturating_add(LEEWAY_SECS) < seconds(nbf)
    {
        return Err(refused("service account token is not valid yet"));
    }
    if let Some(iat) = claims.iat
        && now.saturating_add(LEEWAY_SECS) < seconds(iat)
    {
        return Err(refused("service account token is issued in the future"));
    }
    let Some(k8s) = claims.kubernetes else {
        return Err(refused(
            "service account token claims missing kubernetes.io",
        ));
    };
    let Some(sa) = k8s.serviceaccount.filter(|sa| !sa.name.is_empty()) else {
        return Err(refused("token names no service account"));
    };
    if k8s.namespace.is_empty() {
        return Err(refused("token names no namespace"));
    }
    let mut extra = BTreeMap::new();
    if let Some(pod) = k8s.pod.filter(|p| !p.name.is_empty()) {
        extra.insert(POD_NAME_EXTRA.to_owned(), vec![pod.name]);
        extra.insert(POD_UID_EXTRA.to_owned(), vec![pod.uid]);
    }
    if let Some(node) = k8s.node.filter(|n| !n.name.is_empty()) {
        extra.insert(NODE_NAME_EXTRA.to_owned(), vec![node.name]);
        extra.insert(NODE_UID_EXTRA.to_owned(), vec![node.uid]);
    }
    Ok(Reviewed {
        username: format!("system:serviceaccount:{}:{}", k8s.namespace, sa.name),
        extra,
        audiences: vec![AUDIENCE.to_owned()],
    })
}

/// What an OpenID provider configuration (`/.well-known/openid-configuration`) says the
/// service-account issuer is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovery {
    /// `issuer`: the `iss` of the tokens.
    pub issuer: String,
    /// The path (and query) of `jwks_uri`, to fetch from the API server itself.
    pub jwks_path: String,
}

impl Discovery {
    /// Parses the configuration document.
    pub fn parse(document: &[u8]) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Raw {
            issuer: String,
            jwks_uri: String,
        }
        let raw: Raw = serde_json::from_slice(document)
            .map_err(|e| format!("not an OpenID provider configuration: {e}"))?;
        if raw.issuer.is_empty() {
            return Err("the OpenID provider configuration names no issuer".to_owned());
        }
        let jwks_path = raw
            .jwks_uri
            .split_once("://")
            .map(|(_, rest)| rest.find('/').map_or("/", |slash| &rest[slash..]))
            .filter(|path| path.len() > 1)
            .ok_or_else(|| format!("jwks_uri {:?} is not a URL with a path", raw.jwks_uri))?
            .to_owned();
        Ok(Self {
            issuer: raw.issuer,
            jwks_path,
        })
    }
}

#[cfg(test)]
mod tests;
