use super::*;
use crate::identity::{ServiceAccount, authorize};
use crate::meta::{MetaView, PodMeta};
use kubepulse_model::{NodeName, PodKey};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use serde_json::{Value, json};

const ISSUER: &str = "https://kubernetes.default.svc";
const NOW: i64 = 1_800_000_000;
/// A throwaway 2048-bit RSA key (PKCS#1 DER) for the RS256 cases; ring cannot generate RSA.
const RSA_DER: &[u8] = include_bytes!("rsa-2048.der");

fn enc(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

struct Ec {
    key: EcdsaKeyPair,
    kid: String,
}

impl Ec {
    fn new(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
        let key = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.as_ref(),
            &rng,
        )
        .unwrap();
        Self {
            key,
            kid: kid.to_owned(),
        }
    }

    fn jwk(&self) -> Value {
        let point = self.key.public_key().as_ref();
        json!({"use": "sig", "kty": "EC", "kid": self.kid, "crv": "P-256", "alg": "ES256",
               "x": enc(&point[1..33]), "y": enc(&point[33..65])})
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            enc(header.to_string().as_bytes()),
            enc(claims.to_string().as_bytes())
        );
        let sig = self
            .key
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", enc(sig.as_ref()))
    }

    fn token(&self, claims: &Value) -> String {
        self.sign(&json!({"alg": "ES256", "kid": self.kid}), claims)
    }
}

fn rsa() -> RsaKeyPair {
    RsaKeyPair::from_der(RSA_DER).unwrap()
}

fn rsa_jwk(key: &RsaKeyPair, kid: &str) -> Value {
    let signature::RsaPublicKeyComponents { n, e } =
        signature::RsaPublicKeyComponents::<Vec<u8>>::from(key.public());
    json!({"use": "sig", "kty": "RSA", "kid": kid, "alg": "RS256", "n": enc(&n), "e": enc(&e)})
}

fn rsa_token(key: &RsaKeyPair, kid: &str, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        enc(json!({"alg": "RS256", "kid": kid}).to_string().as_bytes()),
        enc(claims.to_string().as_bytes())
    );
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &signature::RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{input}.{}", enc(&sig))
}

fn set(keys: &[Value]) -> KeySet {
    KeySet::parse(json!({ "keys": keys }).to_string().as_bytes()).unwrap()
}

/// What kube-apiserver puts in a projected token of the agent's pod on node-a.
fn claims() -> Value {
    json!({
        "aud": [AUDIENCE],
        "exp": NOW + 600,
        "iat": NOW - 10,
        "nbf": NOW - 10,
        "iss": ISSUER,
        "jti": "0c9b1e53-2f3c-4f0e-9d8e-5b9f0d0d1a11",
        "sub": "system:serviceaccount:kube-system:kubepulse-agent",
        "kubernetes.io": {
            "namespace": "kube-system",
            "node": {"name": "node-a", "uid": "node-a-uid"},
            "pod": {"name": "agent-a", "uid": "agent-a-uid"},
            "serviceaccount": {"name": "kubepulse-agent", "uid": "sa-uid"},
            "warnafter": NOW + 300,
        },
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn refusal(result: Result<Reviewed, Unverified>) -> Refusal {
    match result {
        Err(Unverified::Refused(r)) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn refused_with(result: Result<Reviewed, Unverified>, text: &str) {
    let r = refusal(result);
    assert_eq!(r.reason(), "identity_invalid_token", "{r}");
    assert!(r.to_string().contains(text), "{r:?} lacks {text:?}");
}

#[test]
fn a_valid_es256_token_gives_what_a_token_review_gives() {
    let ec = Ec::new("k1");
    let reviewed = verify(&ec.token(&claims()), &set(&[ec.jwk()]), ISSUER, NOW).unwrap();
    assert_eq!(
        reviewed.username,
        "system:serviceaccount:kube-system:kubepulse-agent"
    );
    assert_eq!(reviewed.audiences, vec![AUDIENCE.to_owned()]);
    let extra = |k: &str| reviewed.extra.get(k).cloned().unwrap_or_default();
    assert_eq!(extra(POD_NAME_EXTRA), ["agent-a"]);
    assert_eq!(extra(POD_UID_EXTRA), ["agent-a-uid"]);
    assert_eq!(extra(NODE_NAME_EXTRA), ["node-a"]);
    assert_eq!(extra(NODE_UID_EXTRA), ["node-a-uid"]);

    // and authorize decides on it as on a review
    let mut meta = MetaView {
        synced: true,
        ..MetaView::default()
    };
    meta.pods.insert(
        PodKey::new("kube-system", "agent-a").unwrap(),
        PodMeta {
            node: Some(NodeName::new("node-a").unwrap()),
            running: true,
            uid: crate::meta::uid_fingerprint("agent-a-uid"),
            ..PodMeta::default()
        },
    );
    let agent = ServiceAccount::parse("kube-system/kubepulse-agent").unwrap();
    let node_a = NodeName::new("node-a").unwrap();
    assert!(authorize(&reviewed, &node_a, &agent, &meta).is_ok());
    let other = authorize(&reviewed, &NodeName::new("node-b").unwrap(), &agent, &meta);
    assert_eq!(other.unwrap_err().reason(), "identity_wrong_node");
    // the pod was deleted and another of the same name runs there now
    let key = PodKey::new("kube-system", "agent-a").unwrap();
    let mut replaced = meta.pods.get(&key).unwrap().clone();
    replaced.uid = crate::meta::uid_fingerprint("agent-a-uid-2");
    meta.pods.insert(key.clone(), replaced);
    let refused = authorize(&reviewed, &node_a, &agent, &meta).unwrap_err();
    assert_eq!(refused, Refusal::PodReplaced(key));
    assert_eq!(refused.reason(), "identity_pod_not_running");
    assert!(refused.to_string().contains("UID differs"), "{refused}");
}

#[test]
fn a_token_without_node_claims_and_with_a_single_audience_string() {
    let ec = Ec::new("k1");
    let mut c = with(claims(), "aud", json!(AUDIENCE));
    c["kubernetes.io"].as_object_mut().unwrap().remove("node");
    let reviewed = verify(&ec.token(&c), &set(&[ec.jwk()]), ISSUER, NOW).unwrap();
    assert!(!reviewed.extra.contains_key(NODE_NAME_EXTRA));
    assert_eq!(reviewed.extra[POD_NAME_EXTRA], ["agent-a"]);
}

#[test]
fn rs256_tokens_verify_against_rsa_keys() {
    let key = rsa();
    let keys = set(&[rsa_jwk(&key, "r1"), Ec::new("k1").jwk()]);
    assert_eq!(keys.len(), 2);
    let token = rsa_token(&key, "r1", &claims());
    assert!(verify(&token, &keys, ISSUER, NOW).is_ok());
    // the same signature under an EC kid does not verify
    let mut parts: Vec<&str> = token.split('.').collect();
    let header = enc(br#"{"alg":"RS256","kid":"k1"}"#);
    parts[0] = &header;
    refused_with(verify(&parts.join("."), &keys, ISSUER, NOW), "no RS256 key");
}

#[test]
fn a_tampered_payload_or_signature_is_refused() {
    let ec = Ec::new("k1");
    let keys = set(&[ec.jwk()]);
    let token = ec.token(&claims());
    let parts: Vec<&str> = token.split('.').collect();
    let other_pod = {
        let mut c = claims();
        c["kubernetes.io"]["pod"]["name"] = json!("agent-b");
        enc(c.to_string().as_bytes())
    };
    let tampered = format!("{}.{other_pod}.{}", parts[0], parts[2]);
    refused_with(verify(&tampered, &keys, ISSUER, NOW), "invalid signature");
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    sig[10] ^= 1;
    let flipped = format!("{}.{}.{}", parts[0], parts[1], enc(&sig));
    refused_with(verify(&flipped, &keys, ISSUER, NOW), "invalid signature");
    // signed by another key with the same kid
    let impostor = Ec::new("k1");
    refused_with(
        verify(&impostor.token(&claims()), &keys, ISSUER, NOW),
        "invalid signature",
    );
}

#[test]
fn an_unknown_kid_or_issuer_is_left_to_the_api_server() {
    let ec = Ec::new("k1");
    let keys = set(&[ec.jwk()]);
    let rotated = Ec::new("k2");
    assert_eq!(
        verify(&rotated.token(&claims()), &keys, ISSUER, NOW),
        Err(Unverified::UnknownKey("k2".to_owned()))
    );
    let foreign = with(claims(), "iss", json!("https://oidc.example"));
    assert_eq!(
        verify(&ec.token(&foreign), &keys, ISSUER, NOW),
        Err(Unverified::UnknownIssuer("https://oidc.example".to_owned()))
    );
    assert!(keys.has_kid("k1") && !keys.has_kid("k2"));
}

#[test]
fn a_token_without_kid_is_tried_against_every_key_of_its_algorithm() {
    let (a, b) = (Ec::new("a"), Ec::new("b"));
    let keys = set(&[a.jwk(), b.jwk()]);
    let token = b.sign(&json!({"alg": "ES256", "typ": "JWT"}), &claims());
    assert!(verify(&token, &keys, ISSUER, NOW).is_ok());
    let stranger = Ec::new("c").sign(&json!({"alg": "ES256"}), &claims());
    refused_with(verify(&stranger, &keys, ISSUER, NOW), "invalid signature");
}

#[test]
fn unsigned_and_unsupported_algorithms_are_refused() {
    let ec = Ec::new("k1");
    let keys = set(&[ec.jwk()]);
    let payload = enc(claims().to_string().as_bytes());
    for alg in ["none", "HS256", "ES384", "PS256", ""] {
        let header = enc(json!({"alg": alg, "kid": "k1"}).to_string().as_bytes());
        refused_with(
            verify(&format!("{header}.{payload}."), &keys, ISSUER, NOW),
            "is not supported",
        );
    }
    // critical extensions are not understood
    let crit = ec.sign(
        &json!({"alg": "ES256", "kid": "k1", "crit": ["exp"], "exp": 1}),
        &claims(),
    );
    refused_with(verify(&crit, &keys, ISSUER, NOW), "crit");
}

#[test]
fn time_claims_are_checked_with_a_minute_of_leeway() {
    let ec = Ec::new("k1");
    let keys = set(&[ec.jwk()]);
    let at = |c: &Value, now| verify(&ec.token(c), &keys, ISSUER, now);
    let exp = NOW + 600;
    assert!(at(&claims(), exp + LEEWAY_SECS).is_ok());
    refused_with(at(&claims(), exp + LEEWAY_SECS + 1), "has expired");
    let future = with(with(claims(), "nbf", json!(NOW + 300)), "iat", json!(NOW));
    assert!(at(&future, NOW + 300 - LEEWAY_SECS).is_ok());
    refused_with(at(&future, NOW + 300 - LEEWAY_SECS - 1), "not valid yet");
    let issued_later = with(claims(), "iat", json!(NOW + 300));
    refused_with(at(&issued_later, NOW), "issued in the future");
    let forever = claims().as_object().unwrap().clone();
    let mut forever = Value::Object(forever);
    forever.as_object_mut().unwrap().remove("exp");
    refused_with(at(&forever, NOW), "no expiry");
}

#[test]
fn another_audience_is_a_wrong_audience() {
    let ec = Ec::new("k1");
    let token = ec.token(&with(claims(), "aud", json!(["vault", "api"])));
    let r = refusal(verify(&token, &set(&[ec.jwk()]), ISSUER, NOW));
    assert_eq!(
        r,
        Refusal::WrongAudience(vec!["vault".into(), "api".into()])
    );
    assert_eq!(r.kind(), crate::identity::Kind::Unauthenticated);
    // audience is checked after the signature: an unsigned claim of the audience proves nothing
    let vault = ec.token(&with(claims(), "aud", json!("vault")));
    let parts: Vec<&str> = vault.split('.').collect();
    let ours = enc(claims().to_string().as_bytes());
    let forged = format!("{}.{ours}.{}", parts[0], parts[2]);
    refused_with(
        verify(&forged, &set(&[ec.jwk()]), ISSUER, NOW),
        "invalid signature",
    );
}

#[test]
fn another_service_account_is_refused_by_authorize() {
    let ec = Ec::new("k1");
    let mut c = claims();
    c["kubernetes.io"]["serviceaccount"]["name"] = json!("intruder");
    let reviewed = verify(&ec.token(&c), &set(&[ec.jwk()]), ISSUER, NOW).unwrap();
    let agent = ServiceAccount::parse("kube-system/kubepulse-agent").unwrap();
    let r = authorize(
        &reviewed,
        &NodeName::new("node-a").unwrap(),
        &agent,
        &MetaView::default(),
    )
    .unwrap_err();
    assert_eq!(r.reason(), "identity_wrong_service_account");
}

#[test]
fn legacy_and_claimless_tokens_are_refused() {
    let ec = Ec::new("k1");
    let keys = set(&[ec.jwk()]);
    let mut c = claims();
    c.as_object_mut().unwrap().remove("kubernetes.io");
    refused_with(
        verify(&ec.token(&c), &keys, ISSUER, NOW),
        "missing kubernetes.io",
    );
    let mut c = claims();
    c["kubernetes.io"]["serviceaccount"]["name"] = json!("");
    refused_with(
        verify(&ec.token(&c), &keys, ISSUER, NOW),
        "no service account",
    );
}

#[test]
fn malformed_tokens_are_refused() {
    let ec = Ec::new("k1");
    let keys = set(&[ec.jwk()]);
    for token in [
        "",
        "a",
        "a.b",
        "a.b.c.d",
        "!!.!!.!!",
        "e30.e30.",
        "e30.bm90IGpzb24.AA",
    ] {
        assert!(
            matches!(
                verify(token, &keys, ISSUER, NOW),
                Err(Unverified::Refused(_))
            ),
            "{token:?}"
        );
    }
    let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
    refused_with(verify(&huge, &keys, ISSUER, NOW), "longer than");
}

#[test]
fn jwks_documents_keep_only_usable_signing_keys() {
    let ec = Ec::new("k1");
    let keys = set(&[
        ec.jwk(),
        json!({"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}),
        json!({"kty": "oct", "k": "c2VjcmV0"}),
        with(ec.jwk(), "use", json!("enc")),
        with(ec.jwk(), "alg", json!("RS256")),
        json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"}),
        json!("not an object"),
    ]);
    assert_eq!((keys.len(), keys.skipped()), (1, 6));
    assert_eq!(
        KeySet::parse(br#"{"keys": []}"#),
        Err(JwksError::NoUsableKey(0))
    );
    assert!(matches!(
        KeySet::parse(b"<html>"),
        Err(JwksError::Malformed(_))
    ));
    // kube-apiserver's own shape (no alg on RSA keys is fine too)
    let key = rsa();
    let mut jwk = rsa_jwk(&key, "r1");
    jwk.as_object_mut().unwrap().remove("alg");
    assert_eq!(set(&[jwk]).len(), 1);
}

#[test]
fn discovery_gives_the_issuer_and_the_jwks_path() {
    let doc = json!({
        "issuer": ISSUER,
        "jwks_uri": "https://10.0.0.1:6443/openid/v1/jwks",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    });
    assert_eq!(
        Discovery::parse(doc.to_string().as_bytes()),
        Ok(Discovery {
            issuer: ISSUER.to_owned(),
            jwks_path: "/openid/v1/jwks".to_owned(),
        })
    );
    for bad in [
        json!({"issuer": ISSUER, "jwks_uri": "https://example.com"}),
        json!({"issuer": ISSUER, "jwks_uri": "/openid/v1/jwks"}),
        json!({"issuer": "", "jwks_uri": "https://a/b"}),
        json!({"issuer": ISSUER}),
    ] {
        assert!(
            Discovery::parse(bad.to_string().as_bytes()).is_err(),
            "{bad}"
        );
    }
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(token in "\\PC{0,300}", doc in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
        let ec = Ec::new("k1");
        let keys = set(&[ec.jwk()]);
        let _ = verify(&token, &keys, ISSUER, NOW);
        let _ = KeySet::parse(&doc);
    }

    #[test]
    fn arbitrary_base64_parts_never_panic(
        header in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
        payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        sig in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
        now in proptest::prelude::any::<i64>(),
    ) {
        let ec = Ec::new("k1");
        let keys = set(&[ec.jwk()]);
        let token = format!("{}.{}.{}", enc(&header), enc(&payload), enc(&sig));
        let _ = verify(&token, &keys, ISSUER, now);
        // a real token at any time never panics either
        let _ = verify(&ec.token(&claims()), &keys, ISSUER, now);
    }
}
