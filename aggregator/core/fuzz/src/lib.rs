//! What the aggregator-core fuzz targets check, as plain functions: the fuzz targets
//! (`fuzz_targets/*.rs`, nightly, libFuzzer) and the stable corpus replay
//! (`aggregator/core/tests/fuzz_corpus.rs`, which includes this file with `#[path]`) call the
//! same code, so a crash found by fuzzing becomes a failing `cargo test` as soon as its input
//! is saved under `corpus/`.
//!
//! Inputs are text: bytes that are not UTF-8 are skipped (the HTTP layer hands these parsers
//! `&str` only). Only the workspace crates and `serde_json` are used here, never
//! `libfuzzer-sys`.

use std::collections::BTreeMap;

use kubepulse_aggregator_core::authz::{
    self, Attributes, ExtensionAuth, RequestHeaderConfig, UserInfo,
};
use kubepulse_aggregator_core::encode::{self, Format, negotiate};
use kubepulse_aggregator_core::identity::jwt::{self, Discovery, KeySet};
use kubepulse_aggregator_core::selector::{
    Field, FieldSelector, LabelSelector, MAX_REQUIREMENTS, MAX_SELECTOR_LEN,
};

/// Most label or header lines read from one input.
const MAX_LINES: usize = 64;

/// `LabelSelector`: the first line is the selector, the others `key=value` labels to match.
/// Anything accepted stays within the size bounds, matches as the AND of its requirements,
/// and its canonical form parses back to the same selector.
pub fn label_selector(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (selector, rest) = text.split_once('\n').unwrap_or((text, ""));
    let labels = pairs(rest, '=');
    let Ok(parsed) = LabelSelector::parse(selector) else {
        return;
    };
    assert!(selector.len() <= MAX_SELECTOR_LEN);
    assert!(parsed.requirements().len() <= MAX_REQUIREMENTS);
    let matched = parsed.matches(&labels);
    assert_eq!(
        matched,
        parsed.requirements().iter().all(|r| r.matches(&labels))
    );
    assert!(
        !parsed.is_empty() || matched,
        "the empty selector matches everything"
    );
    let canonical = parsed.to_string();
    if canonical.len() <= MAX_SELECTOR_LEN {
        let again = LabelSelector::parse(&canonical)
            .unwrap_or_else(|e| panic!("canonical form {canonical:?} does not parse: {e}"));
        assert_eq!(
            again, parsed,
            "canonical form {canonical:?} parses differently"
        );
        assert_eq!(again.to_string(), canonical);
    }
}

/// `FieldSelector`: the first line is the selector, the second a name, the third a namespace.
/// Anything accepted matches as its terms say, narrows by `required` soundly, and its
/// canonical form parses back to the same selector.
pub fn field_selector(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let selector = lines.next().unwrap_or_default();
    let name = lines.next().unwrap_or_default();
    let namespace = lines.next();
    let Ok(parsed) = FieldSelector::parse(selector) else {
        return;
    };
    assert!(selector.len() <= MAX_SELECTOR_LEN);
    assert!(parsed.terms().len() <= MAX_REQUIREMENTS);
    let matched = parsed.matches(name, namespace);
    let by_terms = parsed.terms().iter().all(|t| {
        let actual = match t.field {
            Field::Name => name,
            Field::Namespace => namespace.unwrap_or(""),
        };
        (actual == t.value) != t.negated
    });
    assert_eq!(matched, by_terms);
    if let Some(required) = parsed.required(Field::Name)
        && required != name
    {
        assert!(!matched, "a name the selector requires otherwise matched");
    }
    let canonical = parsed.to_string();
    if canonical.len() <= MAX_SELECTOR_LEN {
        let again = FieldSelector::parse(&canonical)
            .unwrap_or_else(|e| panic!("canonical form {canonical:?} does not parse: {e}"));
        assert_eq!(
            again, parsed,
            "canonical form {canonical:?} parses differently"
        );
    }
}

/// `Accept` negotiation: never panics, refuses what is over the length bound, is
/// deterministic, and a refusal is the apiserver's 406 Status as JSON.
pub fn accept(data: &[u8]) {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    let chosen = negotiate(Some(header));
    assert_eq!(
        chosen,
        negotiate(Some(header)),
        "negotiation is not deterministic"
    );
    let _ = encode::wants_aggregated_discovery(Some(header));
    match chosen {
        Ok(Format::Table(_)) => assert!(header.contains("Table"), "a Table nobody asked for"),
        Ok(_) => assert!(header.len() <= encode::MAX_ACCEPT_LEN),
        Err(refusal) => {
            assert_eq!(refusal.status().code, 406);
            let body = refusal.encode();
            let json: serde_json::Value =
                serde_json::from_slice(&body.body).expect("the 406 body is JSON");
            assert_eq!(json["code"], 406);
        }
    }
}

/// Front-proxy identity and request attributes. The first line is `METHOD PATH[?QUERY]`, the
/// others `Name: value` headers. The identity read from the headers depends on identity
/// headers only (exactly those the shell strips), names a user only when a username header
/// is set, and takes its groups from group headers; an anonymous user is allowed locally only
/// on an always-allowed non-resource path; a denial is a 403.
pub fn front_proxy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (request_line, rest) = text.split_once('\n').unwrap_or((text, ""));
    let headers: Vec<(&str, &str)> = rest
        .lines()
        .take(MAX_LINES)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim(), v.trim()))
        .collect();
    let config = front_proxy_config();

    let user = authz::user_from_headers(headers.iter().copied(), &config);
    let identity: Vec<(&str, &str)> = headers
        .iter()
        .copied()
        .filter(|(name, _)| authz::is_identity_header(name, &config))
        .collect();
    assert_eq!(
        user,
        authz::user_from_headers(identity.iter().copied(), &config),
        "a header that is not an identity header changed the identity"
    );
    let has_user_header = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("x-remote-user") && !v.is_empty());
    assert_eq!(user.is_some(), has_user_header);
    if let Some(user) = &user {
        assert!(!user.name.is_empty());
        for group in &user.groups {
            assert!(
                headers
                    .iter()
                    .any(|(n, v)| n.eq_ignore_ascii_case("x-remote-group") && v == group),
                "group {group:?} came from no group header"
            );
        }
    }

    let (method, target) = request_line.split_once(' ').unwrap_or((request_line, "/"));
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let attrs = authz::request_attributes(method, path, query);
    let always_allow = ["/healthz", "/readyz", "/livez"].map(str::to_owned);
    let anonymous = UserInfo::anonymous();
    if authz::decide_locally(&anonymous, &attrs, &always_allow) == Some(true) {
        let Attributes::NonResource { path, .. } = &attrs else {
            panic!("an anonymous resource request was allowed without a review: {attrs:?}");
        };
        // the always-allow list matches with or without the leading `/` (HTTP paths have it)
        let bare = path.trim_start_matches('/');
        assert!(
            always_allow
                .iter()
                .any(|p| p.trim_start_matches('/') == bare),
            "{path:?} allowed"
        );
    }
    if let Attributes::Resource { name, .. } = &attrs {
        assert!(!name.contains('/'), "name {name:?} spans path segments");
    }
    let who = user.unwrap_or(anonymous);
    assert_eq!(authz::forbidden(&who, &attrs, "").code, 403);

    let configmap: BTreeMap<String, String> = pairs(rest, '=');
    let _ = ExtensionAuth::from_configmap(&configmap);
}

fn front_proxy_config() -> RequestHeaderConfig {
    RequestHeaderConfig {
        username_headers: vec!["X-Remote-User".to_owned()],
        uid_headers: vec!["X-Remote-Uid".to_owned()],
        group_headers: vec!["X-Remote-Group".to_owned()],
        extra_prefixes: vec!["X-Remote-Extra-".to_owned()],
        allowed_names: vec!["front-proxy-client".to_owned()],
    }
}

fn pairs(text: &str, separator: char) -> BTreeMap<String, String> {
    text.lines()
        .take(MAX_LINES)
        .filter_map(|line| line.split_once(separator))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The issuer `agent_token` inputs are verified for.
pub const AGENT_TOKEN_ISSUER: &str = "https://kubernetes.default.svc";
/// The time `agent_token` inputs are verified at unless their third line says otherwise: within
/// the validity of [`AGENT_TOKEN_SEED`].
pub const AGENT_TOKEN_NOW: i64 = 1_800_000_000;
/// A JWKS with one P-256 key, and an agent token that key signed (valid at
/// [`AGENT_TOKEN_NOW`]): the `seed-valid` input.
pub const AGENT_TOKEN_SEED: (&str, &str) = (
    r#"{"keys":[{"use":"sig","kty":"EC","kid":"fuzz","crv":"P-256","alg":"ES256","x":"hJFOwAI_sN13CF8wNld9VFWw8AB_zA9O89-sTRoDeNc","y":"OIHbk5zKpSl1SXoU8Ti7mgrOpU8rTB67NzhvrQePW64"}]}"#,
    "eyJhbGciOiJFUzI1NiIsImtpZCI6ImZ1enoifQ.eyJhdWQiOlsia3ViZXB1bHNlIl0sImV4cCI6MTgwMDAwMDYwMCwiaWF0IjoxNzk5OTk5OTkwLCJuYmYiOjE3OTk5OTk5OTAsImlzcyI6Imh0dHBzOi8va3ViZXJuZXRlcy5kZWZhdWx0LnN2YyIsInN1YiI6InN5c3RlbTpzZXJ2aWNlYWNjb3VudDprdWJlLXN5c3RlbTprdWJlcHVsc2UtYWdlbnQiLCJrdWJlcm5ldGVzLmlvIjp7Im5hbWVzcGFjZSI6Imt1YmUtc3lzdGVtIiwibm9kZSI6eyJuYW1lIjoibm9kZS1hIiwidWlkIjoibi11aWQifSwicG9kIjp7Im5hbWUiOiJhZ2VudC1hIiwidWlkIjoicC11aWQifSwic2VydmljZWFjY291bnQiOnsibmFtZSI6Imt1YmVwdWxzZS1hZ2VudCIsInVpZCI6InNhLXVpZCJ9fX0.uOoW9X-J4WXZa1--ibKm11aX_UjxhlwPmhnk6cvKZAHTa6d4jGeOPzVNCm4oNgnnddXwfFwcgdMKQ0ZCvTVuLw",
);

/// Agent-token verification (`identity::jwt`): the first line is a JWKS document (also tried
/// as an OpenID provider configuration), the second a token, the optional third the current
/// time in seconds. Nothing panics; a document that parses as a key set has a usable key; a
/// discovery document gives an absolute JWKS path; a verified token is a service account's,
/// for the kubepulse audience only; verifying twice gives the same answer.
pub fn agent_token(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let document = lines.next().unwrap_or_default();
    let token = lines.next().unwrap_or_default();
    let now = lines
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(AGENT_TOKEN_NOW);
    if let Ok(discovery) = Discovery::parse(document.as_bytes()) {
        assert!(discovery.jwks_path.starts_with('/'));
        assert!(!discovery.issuer.is_empty());
    }
    let Ok(keys) = KeySet::parse(document.as_bytes()) else {
        return;
    };
    assert!(!keys.is_empty());
    let first = jwt::verify(token, &keys, AGENT_TOKEN_ISSUER, now);
    if let Ok(reviewed) = &first {
        assert!(reviewed.username.starts_with("system:serviceaccount:"));
        assert_eq!(
            reviewed.audiences,
            [kubepulse_aggregator_core::identity::AUDIENCE]
        );
    }
    assert_eq!(first, jwt::verify(token, &keys, AGENT_TOKEN_ISSUER, now));
}

/// Seed inputs per target: what kubectl, the HPA, the VPA and kube-apiserver send, and the
/// edge cases of each grammar. `aggregator/core/tests/fuzz_corpus.rs` keeps
/// `corpus/<target>/seed-*` equal to these (`UPDATE_SEEDS=1` rewrites them).
pub fn seeds() -> Vec<(&'static str, &'static str, String)> {
    let mut seeds = Vec::new();
    let mut add = |target: &'static str, name: &'static str, text: &str| {
        seeds.push((target, name, text.to_owned()))
    };
    add(
        "label_selector",
        "seed-equality",
        "app=web\napp=web\ntier=front",
    );
    add(
        "label_selector",
        "seed-set",
        "tier in (a,b),env notin (prod),!legacy,app\ntier=a\napp=x",
    );
    add(
        "label_selector",
        "seed-compare",
        "replicas>3,version<10,x==y,z!=w\nreplicas=4\nversion=2",
    );
    add(
        "label_selector",
        "seed-prefix",
        "example.com/app=web,k8s.io/name in (a-b.c_d)",
    );
    add("label_selector", "seed-errors", "a in (,x=,!b=c,(in)");
    add(
        "label_selector",
        "seed-hpa",
        "app.kubernetes.io/name=php-apache",
    );
    add(
        "field_selector",
        "seed-name",
        "metadata.name=web-0\nweb-0\ndefault",
    );
    add(
        "field_selector",
        "seed-namespace",
        "metadata.namespace!=kube-system,metadata.name==a\\,b\na,b\nprod",
    );
    add(
        "field_selector",
        "seed-escapes",
        "metadata.name=a\\=b\\\\c,spec.nodeName=x\na=b\\c",
    );
    add(
        "field_selector",
        "seed-empty-terms",
        ",,metadata.name=,\n\n",
    );
    add(
        "accept",
        "seed-kubectl",
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
    );
    add(
        "accept",
        "seed-hpa",
        "application/vnd.kubernetes.protobuf, */*",
    );
    add(
        "accept",
        "seed-q",
        "application/yaml;q=0.9, application/json;q=0.1, text/*;q=0",
    );
    add(
        "accept",
        "seed-discovery",
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
    );
    add("accept", "seed-wildcards", "*/*;q=0.5, application/*");
    add("accept", "seed-refused", "application/cbor, text/plain");
    add(
        "front_proxy",
        "seed-list",
        "GET /apis/metrics.k8s.io/v1beta1/namespaces/prod/pods?labelSelector=app%3Dweb\nX-Remote-User: system:serviceaccount:kube-system:horizontal-pod-autoscaler\nX-Remote-Group: system:serviceaccounts\nX-Remote-Group: system:authenticated\nAccept: application/vnd.kubernetes.protobuf",
    );
    add(
        "front_proxy",
        "seed-get",
        "GET /apis/metrics.k8s.io/v1/nodes/node-1\nx-remote-user: jane\nx-remote-uid: 42\nX-Remote-Extra-Scopes: view\nX-Remote-Extra-a%2fb: c",
    );
    add(
        "front_proxy",
        "seed-field-name",
        "GET /apis/metrics.k8s.io/v1beta1/namespaces/a/pods?fieldSelector=metadata.name%3Dweb&watch=false\nX-Remote-User: bob",
    );
    add("front_proxy", "seed-health", "GET /healthz\n");
    add(
        "front_proxy",
        "seed-nonresource",
        "DELETE /apis/metrics.k8s.io/v1beta1/namespaces/a/pods\nX-Remote-User:\nX-Remote-Group: system:masters",
    );
    add(
        "front_proxy",
        "seed-configmap",
        "PROPFIND /../healthz\nrequestheader-client-ca-file=pem\nrequestheader-allowed-names=[\"front-proxy-client\"]\nrequestheader-username-headers=not json",
    );
    let (jwks, token) = AGENT_TOKEN_SEED;
    add("agent_token", "seed-valid", &format!("{jwks}\n{token}"));
    add(
        "agent_token",
        "seed-expired",
        &format!("{jwks}\n{token}\n1900000000"),
    );
    let (_, rest) = token.split_once('.').unwrap_or_default();
    let unsigned = rest.rsplit_once('.').map_or(rest, |(payload, _)| payload);
    add(
        "agent_token",
        "seed-alg-none",
        &format!("{jwks}\neyJhbGciOiJub25lIn0.{unsigned}."),
    );
    add(
        "agent_token",
        "seed-rsa-and-discovery",
        "{\"issuer\":\"https://kubernetes.default.svc\",\"jwks_uri\":\"https://10.0.0.1:6443/openid/v1/jwks\",\"keys\":[{\"kty\":\"RSA\",\"kid\":\"r\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}\na.b.c",
    );
    seeds
}
