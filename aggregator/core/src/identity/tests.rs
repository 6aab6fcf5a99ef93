use super::*;
use crate::meta::PodMeta;

fn agent() -> ServiceAccount {
    ServiceAccount::parse("kube-system/kubepulse-agent").unwrap()
}

fn node(name: &str) -> NodeName {
    NodeName::new(name).unwrap()
}

/// A token of `username` bound to pod `pod` (in kube-system), for `audiences`.
fn reviewed(username: &str, pod: Option<&str>, audiences: &[&str]) -> Reviewed {
    let mut extra = BTreeMap::new();
    if let Some(pod) = pod {
        extra.insert(POD_NAME_EXTRA.to_owned(), vec![pod.to_owned()]);
    }
    Reviewed {
        username: username.to_owned(),
        extra,
        audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
    }
}

const AGENT: &str = "system:serviceaccount:kube-system:kubepulse-agent";

/// Pods kube-system/agent-a on node-a (Running), kube-system/agent-b on node-b (not
/// running) and kube-system/unbound (Running, no node).
fn meta(synced: bool) -> MetaView {
    let mut view = MetaView {
        synced,
        ..MetaView::default()
    };
    for (name, node_name, running) in [
        ("agent-a", Some("node-a"), true),
        ("agent-b", Some("node-b"), false),
        ("unbound", None, true),
    ] {
        view.pods.insert(
            PodKey::new("kube-system", name).unwrap(),
            PodMeta {
                node: node_name.map(node),
                running,
                ..PodMeta::default()
            },
        );
    }
    view
}

fn check(reviewed: &Reviewed, claimed: &str, synced: bool) -> Result<PodKey, Refusal> {
    authorize(reviewed, &node(claimed), &agent(), &meta(synced))
}

#[test]
fn the_agent_pod_of_the_claimed_node_is_accepted() {
    let token = reviewed(AGENT, Some("agent-a"), &["kubepulse"]);
    assert_eq!(
        check(&token, "node-a", true),
        Ok(PodKey::new("kube-system", "agent-a").unwrap())
    );
    // a review without audiences in its status (older API servers) is the audience asked for
    assert!(check(&reviewed(AGENT, Some("agent-a"), &[]), "node-a", true).is_ok());
}

#[test]
fn a_valid_agent_claiming_another_node_is_denied() {
    let token = reviewed(AGENT, Some("agent-a"), &[AUDIENCE]);
    let refusal = check(&token, "node-b", true).unwrap_err();
    assert_eq!(refusal.kind(), Kind::PermissionDenied);
    assert_eq!(refusal.reason(), "identity_wrong_node");
    assert_eq!(
        refusal.to_string(),
        "pod kube-system/agent-a runs on node node-a, not on node node-b: an agent reports only for its own node"
    );
    // the token's own node claim is checked too, even when the watch agrees
    let mut token = reviewed(AGENT, Some("agent-a"), &[AUDIENCE]);
    token
        .extra
        .insert(NODE_NAME_EXTRA.to_owned(), vec!["node-z".to_owned()]);
    assert_eq!(
        check(&token, "node-a", true).unwrap_err().reason(),
        "identity_wrong_node"
    );
    let unbound = check(
        &reviewed(AGENT, Some("unbound"), &[AUDIENCE]),
        "node-a",
        true,
    );
    assert_eq!(unbound.unwrap_err().reason(), "identity_wrong_node");
}

#[test]
fn other_service_accounts_audiences_and_unbound_tokens_are_refused() {
    let other = reviewed(
        "system:serviceaccount:kube-system:other",
        Some("agent-a"),
        &[AUDIENCE],
    );
    let refusal = check(&other, "node-a", true).unwrap_err();
    assert_eq!(
        (refusal.kind(), refusal.reason()),
        (Kind::PermissionDenied, "identity_wrong_service_account")
    );
    assert_eq!(
        refusal.to_string(),
        "token belongs to system:serviceaccount:kube-system:other, not to the agent service account system:serviceaccount:kube-system:kubepulse-agent"
    );
    let audience = check(
        &reviewed(AGENT, Some("agent-a"), &["vault"]),
        "node-a",
        true,
    );
    assert_eq!(
        audience.unwrap_err(),
        Refusal::WrongAudience(vec!["vault".to_owned()])
    );
    let unbound = check(&reviewed(AGENT, None, &[AUDIENCE]), "node-a", true).unwrap_err();
    assert_eq!(
        (unbound.kind(), unbound.reason()),
        (Kind::PermissionDenied, "identity_not_bound_to_pod")
    );
}

#[test]
fn pods_not_running_or_unknown_are_refused_and_unsynced_metadata_is_retried() {
    let stopped = check(
        &reviewed(AGENT, Some("agent-b"), &[AUDIENCE]),
        "node-b",
        true,
    );
    assert_eq!(stopped.unwrap_err().reason(), "identity_pod_not_running");
    let gone = check(
        &reviewed(AGENT, Some("agent-x"), &[AUDIENCE]),
        "node-a",
        true,
    );
    assert_eq!(
        gone.unwrap_err(),
        Refusal::PodNotRunning(PodKey::new("kube-system", "agent-x").unwrap())
    );
    let early = check(
        &reviewed(AGENT, Some("agent-x"), &[AUDIENCE]),
        "node-a",
        false,
    );
    assert_eq!(early.as_ref().unwrap_err().kind(), Kind::Unavailable);
    assert_eq!(early.unwrap_err(), Refusal::NotSynced);
}

#[test]
fn service_accounts_parse() {
    assert_eq!(agent().username(), AGENT);
    assert_eq!(agent().to_string(), "kube-system/kubepulse-agent");
    for bad in ["", "kubepulse-agent", "/a", "a/", "a/b/c", "a:b/c"] {
        assert!(ServiceAccount::parse(bad).is_err(), "{bad:?}");
    }
    assert_eq!(Refusal::NoToken.kind(), Kind::Unauthenticated);
    assert_eq!(
        Refusal::Invalid("expired".into()).kind(),
        Kind::Unauthenticated
    );
    assert_eq!(Refusal::ReviewFailed("x".into()).kind(), Kind::Unavailable);
    let keys = Refusal::KeysUnavailable("x".into());
    assert_eq!(
        (keys.kind(), keys.reason()),
        (Kind::Unavailable, "identity_review_failed")
    );
}

#[test]
fn a_token_of_an_earlier_pod_of_the_same_name_is_refused() {
    let mut view = meta(true);
    let key = PodKey::new("kube-system", "agent-a").unwrap();
    let mut pod = view.pods.get(&key).unwrap().clone();
    pod.uid = crate::meta::uid_fingerprint("uid-now");
    view.pods.insert(key.clone(), pod);
    let with_uid = |uid: &str| {
        let mut r = reviewed(AGENT, Some("agent-a"), &[AUDIENCE]);
        r.extra
            .insert(jwt::POD_UID_EXTRA.to_owned(), vec![uid.to_owned()]);
        r
    };
    assert_eq!(
        authorize(&with_uid("uid-now"), &node("node-a"), &agent(), &view),
        Ok(key.clone())
    );
    assert_eq!(
        authorize(&with_uid("uid-before"), &node("node-a"), &agent(), &view),
        Err(Refusal::PodReplaced(key.clone()))
    );
    // a review without the pod's UID, or a watch that has none, is judged by name
    assert!(
        authorize(
            &reviewed(AGENT, Some("agent-a"), &[AUDIENCE]),
            &node("node-a"),
            &agent(),
            &view
        )
        .is_ok()
    );
    assert!(
        authorize(
            &with_uid("uid-before"),
            &node("node-a"),
            &agent(),
            &meta(true)
        )
        .is_ok()
    );
}
