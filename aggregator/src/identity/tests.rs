//! The shell's choice of path, against a fake API server: keys fetched at start, again on an
//! unknown `kid` (rate-limited), a TokenReview when the keys cannot judge a token (`auto`),
//! never in `local` mode, always in `tokenreview` mode.

use std::collections::BTreeMap;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::Full;
use kubepulse_aggregator_core::identity::POD_NAME_EXTRA;
use kubepulse_aggregator_core::meta::{MetaView, PodMeta};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::json;

use super::*;

const ISSUER: &str = "https://kubernetes.default.svc";
const AGENT: &str = "system:serviceaccount:kube-system:kubepulse-agent";

fn enc(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn key() -> EcdsaKeyPair {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap()
}

fn jwks(key: &EcdsaKeyPair, kid: &str) -> String {
    let point = key.public_key().as_ref();
    json!({"keys": [{"use": "sig", "kty": "EC", "kid": kid, "crv": "P-256", "alg": "ES256",
                     "x": enc(&point[1..33]), "y": enc(&point[33..65])}]})
    .to_string()
}

/// The agent's token for its pod agent-a on node-a, signed by `key` under `kid`.
fn token(key: &EcdsaKeyPair, kid: &str) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "aud": [AUDIENCE], "exp": now + 600, "iat": now, "nbf": now, "iss": ISSUER,
        "sub": AGENT,
        "kubernetes.io": {"namespace": "kube-system",
                          "serviceaccount": {"name": "kubepulse-agent", "uid": "sa"},
                          "pod": {"name": "agent-a", "uid": "pod-a"}},
    });
    let input = format!(
        "{}.{}",
        enc(json!({"alg": "ES256", "kid": kid}).to_string().as_bytes()),
        enc(claims.to_string().as_bytes())
    );
    let sig = key.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
    format!("{input}.{}", enc(sig.as_ref()))
}

/// A fake API server: the discovery document and `jwks` when given (404 otherwise), and a
/// TokenReview that authenticates any token as the agent of pod agent-a. Records each call.
struct Fake {
    jwks: Mutex<Option<String>>,
    calls: Mutex<Vec<String>>,
}

impl Fake {
    fn new(jwks: Option<String>) -> Arc<Self> {
        Arc::new(Self {
            jwks: Mutex::new(jwks),
            calls: Mutex::new(Vec::new()),
        })
    }

    fn calls(&self, call: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| *c == call)
            .count()
    }

    fn client(self: &Arc<Self>) -> kube::Client {
        let fake = self.clone();
        let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let path = req.uri().path().to_owned();
            fake.calls
                .lock()
                .unwrap()
                .push(format!("{} {path}", req.method()));
            let jwks = fake.jwks.lock().unwrap().clone();
            async move {
                let (status, body) = match (path.as_str(), jwks) {
                    ("/.well-known/openid-configuration", Some(_)) => (
                        200,
                        json!({"issuer": ISSUER,
                               "jwks_uri": "https://10.0.0.1:6443/openid/v1/jwks"})
                        .to_string(),
                    ),
                    ("/openid/v1/jwks", Some(jwks)) => (200, jwks),
                    ("/apis/authentication.k8s.io/v1/tokenreviews", _) => (
                        201,
                        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                               "spec": {},
                               "status": {"authenticated": true, "audiences": [AUDIENCE],
                                          "user": {"username": AGENT,
                                                   "extra": {POD_NAME_EXTRA: ["agent-a"]}}}})
                        .to_string(),
                    ),
                    _ => (
                        404,
                        json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
                               "reason": "NotFound", "code": 404, "message": "not found"})
                        .to_string(),
                    ),
                };
                Ok::<_, std::convert::Infallible>(
                    http::Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(body)))
                        .unwrap(),
                )
            }
        });
        kube::Client::new(service, "default")
    }
}

const DISCOVERY: &str = "GET /.well-known/openid-configuration";
const KEYS: &str = "GET /openid/v1/jwks";
const REVIEW: &str = "POST /apis/authentication.k8s.io/v1/tokenreviews";

async fn identity(fake: &Arc<Fake>, verification: Verification) -> AgentIdentity {
    let meta = MetaPublished::new();
    let mut view = MetaView {
        synced: true,
        ..MetaView::default()
    };
    view.pods.insert(
        PodKey::new("kube-system", "agent-a").unwrap(),
        PodMeta {
            node: Some(NodeName::new("node-a").unwrap()),
            running: true,
            labels: Arc::new(BTreeMap::new()),
            uid: 0,
        },
    );
    meta.publish(view);
    let identity = AgentIdentity::new(
        fake.client(),
        meta,
        Settings {
            verification,
            agent: ServiceAccount::parse("kube-system/kubepulse-agent").unwrap(),
            ttl: Duration::from_secs(10),
            max_entries: 100,
        },
    );
    identity.load_keys().await;
    identity
}

fn node_a() -> NodeName {
    NodeName::new("node-a").unwrap()
}

#[tokio::test(start_paused = true)]
async fn published_keys_verify_locally_and_an_unknown_kid_refetches_them_once() {
    let k1 = key();
    let fake = Fake::new(Some(jwks(&k1, "k1")));
    let identity = identity(&fake, Verification::Auto).await;
    assert_eq!((fake.calls(DISCOVERY), fake.calls(KEYS)), (1, 1));

    assert!(identity.verify(&token(&k1, "k1"), &node_a()).await.is_ok());
    assert_eq!(fake.calls(REVIEW), 0, "verified locally");

    // a key the set lacks, right after the fetch at start: not fetched again, reviewed
    let k2 = key();
    *fake.jwks.lock().unwrap() = Some(jwks(&k2, "k2"));
    assert!(identity.verify(&token(&k2, "k2"), &node_a()).await.is_ok());
    assert_eq!((fake.calls(KEYS), fake.calls(REVIEW)), (1, 1));

    // once the refetch interval has passed: fetched again (now published), verified locally
    tokio::time::advance(KEYS_MIN_REFETCH).await;
    assert!(identity.verify(&token(&k2, "k2"), &node_a()).await.is_ok());
    assert_eq!((fake.calls(KEYS), fake.calls(REVIEW)), (2, 1));

    // another unknown key right after: no fetch within 30 s, a TokenReview instead
    let k3 = key();
    assert!(identity.verify(&token(&k3, "k3"), &node_a()).await.is_ok());
    assert_eq!((fake.calls(KEYS), fake.calls(REVIEW)), (2, 2));

    // a forged signature under a known kid is refused locally, not reviewed
    let refused = identity
        .verify(&token(&key(), "k2"), &node_a())
        .await
        .unwrap_err();
    assert_eq!(refused.reason(), "identity_invalid_token");
    assert!(
        refused.to_string().contains("invalid signature"),
        "{refused}"
    );
    assert_eq!(fake.calls(REVIEW), 2);

    // keys older than KEYS_MAX_AGE are fetched again on the next hello
    tokio::time::advance(KEYS_MAX_AGE).await;
    assert!(identity.verify(&token(&k2, "k2"), &node_a()).await.is_ok());
    assert_eq!((fake.calls(KEYS), fake.calls(REVIEW)), (3, 2));
}

#[tokio::test]
async fn without_published_keys_auto_reviews_and_local_refuses() {
    let k = key();
    let fake = Fake::new(None);
    let auto = identity(&fake, Verification::Auto).await;
    assert_eq!(fake.calls(DISCOVERY), 1);
    assert!(auto.verify(&token(&k, "k"), &node_a()).await.is_ok());
    assert_eq!(fake.calls(REVIEW), 1);
    assert_eq!(fake.calls(DISCOVERY), 1, "not asked again within 30 s");

    let fake = Fake::new(None);
    let local = identity(&fake, Verification::Local).await;
    let refused = local.verify(&token(&k, "k"), &node_a()).await.unwrap_err();
    assert_eq!(
        status(&refused).code(),
        tonic::Code::Unavailable,
        "{refused}"
    );
    assert!(
        refused
            .to_string()
            .contains("public keys are not available"),
        "{refused}"
    );
    assert_eq!(fake.calls(REVIEW), 0);
}

#[tokio::test]
async fn tokenreview_mode_never_reads_the_keys() {
    let k = key();
    let fake = Fake::new(Some(jwks(&k, "k")));
    let reviewed = identity(&fake, Verification::TokenReview).await;
    assert!(reviewed.verify(&token(&k, "k"), &node_a()).await.is_ok());
    assert_eq!(
        (fake.calls(DISCOVERY), fake.calls(KEYS), fake.calls(REVIEW)),
        (0, 0, 1)
    );
}
