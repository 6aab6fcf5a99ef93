use std::collections::BTreeMap;

use super::*;
use crate::encode::status;

fn config() -> RequestHeaderConfig {
    RequestHeaderConfig {
        username_headers: vec!["X-Remote-User".into()],
        uid_headers: vec!["X-Remote-Uid".into()],
        group_headers: vec!["X-Remote-Group".into()],
        extra_prefixes: vec!["X-Remote-Extra-".into()],
        allowed_names: vec!["front-proxy-client".into()],
    }
}

fn user(name: &str, groups: &[&str]) -> UserInfo {
    UserInfo {
        name: name.into(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        ..UserInfo::default()
    }
}

fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn reads_the_configmap_as_kube_apiserver_publishes_it() {
    let auth = ExtensionAuth::from_configmap(&data(&[
        ("client-ca-file", "CLIENT PEM"),
        ("requestheader-client-ca-file", "PROXY PEM"),
        ("requestheader-allowed-names", "[\"front-proxy-client\"]"),
        ("requestheader-username-headers", "[\"X-Remote-User\"]"),
        ("requestheader-group-headers", "[\"X-Remote-Group\"]"),
        (
            "requestheader-extra-headers-prefix",
            "[\"X-Remote-Extra-\"]",
        ),
        ("requestheader-uid-headers", "[\"X-Remote-Uid\"]"),
    ]))
    .unwrap();
    assert_eq!(auth.client_ca_pem.as_deref(), Some("CLIENT PEM"));
    let rh = auth.request_header.unwrap();
    assert_eq!(rh.ca_pem, "PROXY PEM");
    assert_eq!(rh.config, config());
}

#[test]
fn configmap_without_requestheader_or_with_bad_arrays() {
    let auth = ExtensionAuth::from_configmap(&data(&[("client-ca-file", "PEM")])).unwrap();
    assert_eq!(auth.request_header, None);
    let empty_allowed = ExtensionAuth::from_configmap(&data(&[
        ("requestheader-client-ca-file", "PEM"),
        ("requestheader-allowed-names", "[]"),
    ]))
    .unwrap();
    assert!(
        empty_allowed
            .request_header
            .unwrap()
            .config
            .allowed_names
            .is_empty()
    );
    let err = ExtensionAuth::from_configmap(&data(&[
        ("requestheader-client-ca-file", "PEM"),
        ("requestheader-username-headers", "X-Remote-User"),
    ]))
    .unwrap_err();
    assert!(
        err.to_string().contains("requestheader-username-headers"),
        "{err}"
    );
}

#[test]
fn identity_from_front_proxy_headers() {
    let headers = [
        ("x-remote-user", "jane"),
        ("X-Remote-Group", "devs"),
        ("x-remote-group", "system:authenticated"),
        ("X-Remote-Extra-Scopes", "a"),
        ("x-remote-extra-scopes", "b"),
        ("X-Remote-Extra-acme.com%2Fproject", "p1"),
        ("x-remote-uid", "42"),
        ("accept", "application/json"),
    ];
    let u = user_from_headers(headers, &config()).unwrap();
    assert_eq!(u.name, "jane");
    assert_eq!(u.uid, "42");
    assert_eq!(u.groups, ["devs", "system:authenticated"]);
    assert_eq!(u.extra["scopes"], ["a", "b"]);
    assert_eq!(u.extra["acme.com/project"], ["p1"]);
    assert!(is_identity_header("X-REMOTE-EXTRA-foo", &config()));
    assert!(is_identity_header("x-remote-group", &config()));
    assert!(!is_identity_header("authorization", &config()));
}

#[test]
fn no_username_header_means_not_a_front_proxy_request() {
    assert_eq!(
        user_from_headers([("x-remote-group", "g")], &config()),
        None
    );
    assert_eq!(user_from_headers([("x-remote-user", "")], &config()), None);
}

#[test]
fn allowed_names() {
    assert!(allowed_name("front-proxy-client", &config().allowed_names));
    assert!(!allowed_name("admin", &config().allowed_names));
    assert!(allowed_name("anyone", &[]));
}

#[test]
fn chain_outcomes() {
    let jane = user("jane", &["devs"]);
    assert_eq!(
        combine([AuthnAnswer::NotApplicable, AuthnAnswer::User(jane.clone())]),
        AuthnOutcome::User(user("jane", &["devs", AUTHENTICATED]))
    );
    // a later success wins over an earlier failure (union authenticator)
    assert_eq!(
        combine([
            AuthnAnswer::Failed("x509: unknown authority".into()),
            AuthnAnswer::User(jane)
        ]),
        AuthnOutcome::User(user("jane", &["devs", AUTHENTICATED]))
    );
    assert_eq!(
        combine([AuthnAnswer::NotApplicable, AuthnAnswer::NotApplicable]),
        AuthnOutcome::User(UserInfo::anonymous())
    );
    assert_eq!(
        combine([
            AuthnAnswer::Failed("x509: unknown authority".into()),
            AuthnAnswer::NotApplicable
        ]),
        AuthnOutcome::Unauthorized(vec!["x509: unknown authority".into()])
    );
    // system:authenticated is not added twice
    assert_eq!(
        combine([AuthnAnswer::User(user("u", &[AUTHENTICATED]))]),
        AuthnOutcome::User(user("u", &[AUTHENTICATED]))
    );
}

fn res(verb: &str, ns: &str, resource: &str, name: &str, version: &str) -> Attributes {
    Attributes::Resource {
        verb: verb.into(),
        group: "metrics.k8s.io".into(),
        version: version.into(),
        resource: resource.into(),
        subresource: String::new(),
        namespace: ns.into(),
        name: name.into(),
    }
}

#[test]
fn request_attributes_follow_request_info_factory() {
    let check = |method: &str, path: &str, query: Option<&str>, want: Attributes| {
        assert_eq!(
            request_attributes(method, path, query),
            want,
            "{method} {path} {query:?}"
        );
    };
    check(
        "GET",
        "/apis/metrics.k8s.io/v1beta1/nodes",
        None,
        res("list", "", "nodes", "", "v1beta1"),
    );
    check(
        "GET",
        "/apis/metrics.k8s.io/v1/nodes/n1",
        None,
        res("get", "", "nodes", "n1", "v1"),
    );
    check(
        "GET",
        "/apis/metrics.k8s.io/v1beta1/pods",
        Some("watch=true"),
        res("watch", "", "pods", "", "v1beta1"),
    );
    check(
        "GET",
        "/apis/metrics.k8s.io/v1beta1/pods",
        Some("watch=false"),
        res("list", "", "pods", "", "v1beta1"),
    );
    check(
        "GET",
        "/apis/metrics.k8s.io/v1beta1/namespaces/prod/pods",
        Some("labelSelector=app%3Dweb"),
        res("list", "prod", "pods", "", "v1beta1"),
    );
    check(
        "GET",
        "/apis/metrics.k8s.io/v1beta1/namespaces/prod/pods/web-0",
        None,
        res("get", "prod", "pods", "web-0", "v1beta1"),
    );
    check(
        "GET",
        "/apis/metrics.k8s.io/v1beta1/namespaces/prod/pods",
        Some("fieldSelector=metadata.name%3Dweb-0"),
        res("list", "prod", "pods", "web-0", "v1beta1"),
    );
    check(
        "DELETE",
        "/apis/metrics.k8s.io/v1beta1/nodes",
        None,
        res("deletecollection", "", "nodes", "", "v1beta1"),
    );
    check(
        "POST",
        "/apis/metrics.k8s.io/v1beta1/nodes",
        None,
        res("create", "", "nodes", "", "v1beta1"),
    );
    let nr = |verb: &str, path: &str| Attributes::NonResource {
        verb: verb.into(),
        path: path.into(),
    };
    check("GET", "/apis", None, nr("get", "/apis"));
    check(
        "GET",
        "/apis/metrics.k8s.io",
        None,
        nr("get", "/apis/metrics.k8s.io"),
    );
    check(
        "GET",
        "/apis/metrics.k8s.io/v1beta1",
        None,
        nr("get", "/apis/metrics.k8s.io/v1beta1"),
    );
    check("GET", "/openapi/v2", None, nr("get", "/openapi/v2"));
    check("GET", "/readyz", Some("verbose"), nr("get", "/readyz"));
    check(
        "OPTIONS",
        "/apis/metrics.k8s.io/v1beta1/nodes",
        None,
        nr("options", "/apis/metrics.k8s.io/v1beta1/nodes"),
    );
}

#[test]
fn local_decisions() {
    let allow = vec![
        "/healthz".to_owned(),
        "/readyz".into(),
        "/livez".into(),
        "/debug/*".into(),
    ];
    let anon = UserInfo::anonymous();
    let get = |path: &str| Attributes::NonResource {
        verb: "get".into(),
        path: path.into(),
    };
    assert_eq!(decide_locally(&anon, &get("/readyz"), &allow), Some(true));
    assert_eq!(
        decide_locally(&anon, &get("/debug/pprof/heap"), &allow),
        Some(true)
    );
    assert_eq!(
        decide_locally(&anon, &get("/readyz/shutdown"), &allow),
        None
    );
    assert_eq!(decide_locally(&anon, &get("/metrics"), &allow), None);
    let list = res("list", "", "pods", "", "v1beta1");
    assert_eq!(decide_locally(&anon, &list, &allow), None);
    let admin = user("kube-aggregator", &[MASTERS, AUTHENTICATED]);
    assert_eq!(decide_locally(&admin, &list, &allow), Some(true));
}

#[test]
fn forbidden_wording_matches_the_apiserver() {
    let jane = user("jane", &[]);
    let list = res("list", "prod", "pods", "", "v1beta1");
    assert_eq!(
        forbidden(&jane, &list, ""),
        status::forbidden("jane", "list", "pods", Some("prod"))
    );
    let get = res("get", "", "nodes", "n1", "v1beta1");
    assert_eq!(
        forbidden(&jane, &get, ""),
        status::forbidden_name("jane", "get", "nodes", None, "n1")
    );
    assert_eq!(
        forbidden(&jane, &get, "no RBAC policy matched").message,
        "nodes.metrics.k8s.io \"n1\" is forbidden: User \"jane\" cannot get resource \"nodes\" in API group \"metrics.k8s.io\" at the cluster scope: no RBAC policy matched"
    );
    let path = Attributes::NonResource {
        verb: "get".into(),
        path: "/metrics".into(),
    };
    let s = forbidden(&jane, &path, "");
    assert_eq!(
        s.message,
        "forbidden: User \"jane\" cannot get path \"/metrics\""
    );
    assert_eq!(s.code, 403);
}
