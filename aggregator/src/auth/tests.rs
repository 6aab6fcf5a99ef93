//! Auth decisions through the router (`oneshot`): the real certificate authenticators over
//! certificates made here, a scripted authorizer that records what it was asked.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use axum::body::Body;
use http_body_util::BodyExt as _;
use kubepulse_aggregator_core::authz::RequestHeaderConfig;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tower::ServiceExt as _;

use super::authn::Delegating;
use super::source::{RequestHeaderTrust, Trust, verifier};
use super::*;
use crate::health::Health;
use crate::http::{AppState, router};
use crate::writer::Published;

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

fn client_cert(ca: &Ca, cn: &str, orgs: &[&str]) -> PeerCertificates {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    for o in orgs {
        params.distinguished_name.push(DnType::OrganizationName, *o);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    PeerCertificates(Arc::new(vec![cert.der().clone()]))
}

/// Allows users named `allowed-*`; records every question.
#[derive(Default)]
struct Scripted {
    asked: Mutex<Vec<(UserInfo, Attributes)>>,
    fail: bool,
}

impl Authorizer for Scripted {
    fn authorize<'a>(
        &'a self,
        user: &'a UserInfo,
        attrs: &'a Attributes,
    ) -> BoxFuture<'a, Decision> {
        self.asked
            .lock()
            .unwrap()
            .push((user.clone(), attrs.clone()));
        let decision = if self.fail {
            Decision::Error("connection refused".into())
        } else if user.name.starts_with("allowed-") {
            Decision::Allow
        } else {
            Decision::Deny(String::new())
        };
        Box::pin(async move { decision })
    }
}

struct Setup {
    proxy_ca: Ca,
    client_ca: Ca,
    authorizer: Arc<Scripted>,
    app: axum::Router,
}

fn setup(fail: bool) -> Setup {
    let proxy_ca = ca("front-proxy-ca");
    let client_ca = ca("client-ca");
    let trust = Trust {
        request_header: Some(RequestHeaderTrust {
            verifier: verifier(&proxy_ca.pem).unwrap(),
            config: RequestHeaderConfig {
                username_headers: vec!["X-Remote-User".into()],
                uid_headers: vec![],
                group_headers: vec!["X-Remote-Group".into()],
                extra_prefixes: vec!["X-Remote-Extra-".into()],
                allowed_names: vec!["front-proxy-client".into()],
            },
        }),
        client_ca: Some(verifier(&client_ca.pem).unwrap()),
    };
    let authorizer = Arc::new(Scripted {
        fail,
        ..Scripted::default()
    });
    let published = Published::new();
    let health = Health::new(published.clone());
    let mut state = AppState::standalone(published, health);
    state.auth = Some(Arc::new(Auth {
        authenticator: Arc::new(Delegating::new(
            Arc::new(ArcSwap::from_pointee(trust)),
            None,
        )),
        authorizer: authorizer.clone(),
        always_allow_paths: vec!["/healthz".into(), "/readyz".into(), "/livez".into()],
    }));
    Setup {
        proxy_ca,
        client_ca,
        authorizer,
        app: router(state),
    }
}

async fn call(
    app: &axum::Router,
    path: &str,
    peer: Option<PeerCertificates>,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let mut req = axum::http::Request::get(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut req = req.body(Body::empty()).unwrap();
    if let Some(peer) = peer {
        req.extensions_mut().insert(peer);
    }
    let resp = app.clone().oneshot(req).await.unwrap();
    let code = resp.status().as_u16();
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (code, ct, String::from_utf8_lossy(&body).into_owned())
}

const PODS: &str = "/apis/metrics.k8s.io/v1beta1/namespaces/prod/pods";

#[tokio::test]
async fn front_proxy_identity_is_authorized_by_review() {
    let s = setup(false);
    let proxy = client_cert(&s.proxy_ca, "front-proxy-client", &[]);
    let (code, _, body) = call(
        &s.app,
        PODS,
        Some(proxy.clone()),
        &[
            ("X-Remote-User", "allowed-jane"),
            ("X-Remote-Group", "devs"),
            ("X-Remote-Extra-Scopes", "read"),
        ],
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let asked = s.authorizer.asked.lock().unwrap().clone();
    let (user, attrs) = &asked[0];
    assert_eq!(user.name, "allowed-jane");
    assert_eq!(user.groups, ["devs", "system:authenticated"]);
    assert_eq!(user.extra["scopes"], ["read"]);
    assert_eq!(
        attrs,
        &Attributes::Resource {
            verb: "list".into(),
            group: "metrics.k8s.io".into(),
            version: "v1beta1".into(),
            resource: "pods".into(),
            subresource: String::new(),
            namespace: "prod".into(),
            name: String::new(),
        }
    );

    // denied by the review: the apiserver's 403 wording
    let (code, _, body) = call(
        &s.app,
        "/apis/metrics.k8s.io/v1beta1/namespaces/prod/pods/web-0",
        Some(proxy),
        &[("X-Remote-User", "jane")],
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains(r#""message":"pods.metrics.k8s.io \"web-0\" is forbidden: User \"jane\" cannot get resource \"pods\" in API group \"metrics.k8s.io\" in the namespace \"prod\"","reason":"Forbidden","details":{"name":"web-0","group":"metrics.k8s.io","kind":"pods"},"code":403"#),
        "{body}"
    );
}

#[tokio::test]
async fn system_masters_needs_no_review() {
    let s = setup(false);
    let proxy = client_cert(&s.proxy_ca, "front-proxy-client", &[]);
    let (code, _, body) = call(
        &s.app,
        "/apis/metrics.k8s.io/v1beta1",
        Some(proxy),
        &[
            ("X-Remote-User", "system:kube-aggregator"),
            ("X-Remote-Group", "system:masters"),
        ],
    )
    .await;
    assert_eq!(code, 200, "{body}");
    // an x509 client certificate in system:masters, too
    let admin = client_cert(&s.client_ca, "admin", &["system:masters"]);
    let (code, _, _) = call(&s.app, PODS, Some(admin), &[]).await;
    assert_eq!(code, 200);
    assert!(s.authorizer.asked.lock().unwrap().is_empty());
}

#[tokio::test]
async fn client_certificates_from_the_client_ca() {
    let s = setup(false);
    let user = client_cert(&s.client_ca, "allowed-bob", &["team-a"]);
    let (code, _, body) = call(&s.app, PODS, Some(user), &[("X-Remote-User", "mallory")]).await;
    assert_eq!(code, 200, "{body}");
    let asked = s.authorizer.asked.lock().unwrap().clone();
    // the client CA's certificate cannot assert identities through headers
    assert_eq!(asked[0].0.name, "allowed-bob");
    assert_eq!(asked[0].0.groups, ["team-a", "system:authenticated"]);
}

#[tokio::test]
async fn untrusted_certificates_are_refused_with_401() {
    let s = setup(false);
    let stranger = ca("stranger");
    for (peer, headers) in [
        // signed by an unknown CA
        (
            client_cert(&stranger, "front-proxy-client", &[]),
            vec![
                ("X-Remote-User", "system:admin"),
                ("X-Remote-Group", "system:masters"),
            ],
        ),
        // the right CA but a common name that is not allowed
        (
            client_cert(&s.proxy_ca, "someone-else", &[]),
            vec![("X-Remote-User", "jane")],
        ),
        // a front-proxy certificate without identity headers is no client certificate
        (client_cert(&s.proxy_ca, "front-proxy-client", &[]), vec![]),
    ] {
        let (code, ct, body) = call(&s.app, PODS, Some(peer), &headers).await;
        assert_eq!(code, 401, "{body}");
        assert_eq!(ct, "application/json");
        assert_eq!(
            body,
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Unauthorized\",\"reason\":\"Unauthorized\",\"code\":401}\n"
        );
    }
    // in protobuf when asked for protobuf (the HPA's Accept)
    let (code, ct, body) = call(
        &s.app,
        PODS,
        Some(client_cert(&stranger, "x", &[])),
        &[(
            "Accept",
            "application/vnd.kubernetes.protobuf, application/json",
        )],
    )
    .await;
    assert_eq!(
        (code, ct.as_str()),
        (401, "application/vnd.kubernetes.protobuf")
    );
    assert!(body.starts_with("k8s\0"));
    assert!(s.authorizer.asked.lock().unwrap().is_empty());
}

#[tokio::test]
async fn anonymous_requests() {
    let s = setup(false);
    // health paths are always allowed (an empty store is not ready: 500, but not 401/403)
    let (code, _, body) = call(&s.app, "/livez", None, &[]).await;
    assert_eq!((code, body.as_str()), (200, "ok"));
    let (code, _, _) = call(&s.app, "/readyz", None, &[]).await;
    assert_eq!(code, 500);
    // identity headers without a certificate are ignored: anonymous, then denied
    let (code, _, body) = call(
        &s.app,
        "/apis/metrics.k8s.io/v1beta1/nodes",
        None,
        &[("X-Remote-User", "allowed-x")],
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains(r#"nodes.metrics.k8s.io is forbidden: User \"system:anonymous\" cannot list resource \"nodes\" in API group \"metrics.k8s.io\" at the cluster scope"#),
        "{body}"
    );
    let asked = s.authorizer.asked.lock().unwrap().clone();
    assert_eq!(asked[0].0, UserInfo::anonymous());
    // non-resource paths are reviewed as paths
    let (code, _, body) = call(&s.app, "/openapi/v2", None, &[]).await;
    assert_eq!(code, 403);
    assert!(
        body.contains(r#"forbidden: User \"system:anonymous\" cannot get path \"/openapi/v2\""#),
        "{body}"
    );
}

#[tokio::test]
async fn failed_reviews_are_500() {
    let s = setup(true);
    let (code, _, body) = call(&s.app, PODS, None, &[]).await;
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("authorization failed"), "{body}");
}
