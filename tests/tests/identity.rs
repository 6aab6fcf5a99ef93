//! Agent identity and transport, end to end:
//!
//! - against a real kube-apiserver (`tests/tools/build.sh`): an aggregator in Kubernetes mode
//!   accepts a stream only with the projected token of the agent service account's Running
//!   pod on the claimed node; a valid agent claiming another node, an expired token, a token
//!   for another audience, a token of another service account and no token are each refused
//!   with a clear gRPC status and counted by reason. Tokens are verified locally against the
//!   API server's published service-account keys (`--agent-token-verification` auto and
//!   local; a token of another issuer goes to a TokenReview in auto mode) and by TokenReview
//!   when forced, each path shown used by `agent_token_verifications_total{method}`. Tokens
//!   come from the API server's TokenRequest API bound to real Pod objects, as the kubelet
//!   projects them; the expired one, and one of another issuer, are signed with the control
//!   plane's service-account key.
//! - agent ↔ aggregator gRPC over TLS (in process): agents verify the aggregator's certificate
//!   against `--aggregator-ca-file` and its name; a wrong CA or name never connects.
//!
//! Without the control-plane binaries the first test prints SKIP, except under `CI=true`.

use std::path::Path;
use std::time::Duration;

use kubepulse_tests::certs::Ca;
use kubepulse_tests::control_plane::agent_identity::{
    self, AGENT_SERVICE_ACCOUNT, AUDIENCE, agent_pod_name,
};
use kubepulse_tests::control_plane::stack::aggregator_has_kubernetes_mode;
use kubepulse_tests::control_plane::{Binaries, ControlPlane, objects};
use kubepulse_tests::harness::{Cluster, ClusterOptions, GrpcTls, eventually, https_get};
use kubepulse_tests::raw_agent::{self, Aggregator, Reply};

fn refused_count(reason: &'static str) -> u64 {
    kubepulse_aggregator::metrics::get()
        .streams_refused
        .get_or_create(&[("reason", reason)])
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_agent_pod_of_a_node_may_report_for_it() {
    let Some(binaries) = Binaries::require("only_the_agent_pod_of_a_node_may_report_for_it") else {
        return;
    };
    if !aggregator_has_kubernetes_mode() {
        eprintln!("SKIP: this aggregator has no Kubernetes mode");
        return;
    }
    let cp = tokio::task::spawn_blocking(move || {
        ControlPlane::shared(&binaries, Path::new(env!("CARGO_TARGET_TMPDIR")))
    })
    .await
    .expect("start the control plane")
    .expect("control plane");
    if let Err(err) = identity_cases(cp).await {
        panic!("{err:#}\n{}", cp.log_tails(60));
    }
}

fn verifications(method: &'static str) -> u64 {
    kubepulse_aggregator::metrics::get()
        .agent_token_verifications
        .get_or_create(&[("method", method)])
        .get()
}

/// The tokens the cases present.
struct Tokens {
    valid: String,
    other_audience: String,
    other_account: String,
    expired: String,
    other_issuer: String,
}

async fn identity_cases(cp: &'static ControlPlane) -> anyhow::Result<()> {
    let client = cp.client().await?;
    let (node_a, node_b) = ("ident-node-a".to_owned(), "ident-node-b".to_owned());
    for node in [&node_a, &node_b] {
        objects::create_node(&client, node, 10250).await?;
    }
    // the agent's pod on node a, and a pod of another service account on node a
    let sa_uid = agent_identity::ensure_service_account(&client, AGENT_SERVICE_ACCOUNT).await?;
    agent_identity::ensure_service_account(&client, "ident-other").await?;
    let pod_a = agent_pod_name(&node_a);
    let uid_a =
        agent_identity::running_pod(&client, &pod_a, AGENT_SERVICE_ACCOUNT, &node_a).await?;
    let other_uid =
        agent_identity::running_pod(&client, "ident-other-a", "ident-other", &node_a).await?;
    let bound = |sa, audience, pod| agent_identity::bound_token(&client, sa, audience, pod);
    let sa_key = std::fs::read_to_string(cp.pki.path("sa.key"))?;
    let tokens = Tokens {
        valid: bound(AGENT_SERVICE_ACCOUNT, AUDIENCE, (&pod_a, &uid_a)).await?,
        other_audience: bound(AGENT_SERVICE_ACCOUNT, "vault", (&pod_a, &uid_a)).await?,
        other_account: bound("ident-other", AUDIENCE, ("ident-other-a", &other_uid)).await?,
        expired: agent_identity::expired_token(
            &sa_key,
            (AGENT_SERVICE_ACCOUNT, &sa_uid),
            (&pod_a, &uid_a),
            AUDIENCE,
        )?,
        other_issuer: agent_identity::other_issuer_token(
            &sa_key,
            "https://issuer.example",
            (AGENT_SERVICE_ACCOUNT, &sa_uid),
            (&pod_a, &uid_a),
            AUDIENCE,
        )?,
    };
    // auto (the default) verifies against the API server's published keys; local must too;
    // a forced TokenReview still refuses the same tokens
    for mode in ["auto", "local", "tokenreview"] {
        refusals(cp, mode, &tokens, (&node_a, &node_b))
            .await
            .map_err(|err| err.context(format!("--agent-token-verification={mode}")))?;
    }
    objects::delete_nodes(&client, &[node_a, node_b]).await;
    Ok(())
}

async fn refusals(
    cp: &'static ControlPlane,
    mode: &str,
    tokens: &Tokens,
    (node_a, node_b): (&str, &str),
) -> anyhow::Result<()> {
    let (local_before, reviews_before) = (verifications("local"), verifications("tokenreview"));
    let dir = tempfile::tempdir()?;
    let aggregator = Aggregator::start_with(
        dir.path(),
        vec![
            format!("--kubeconfig={}", cp.kubeconfig.display()),
            "--grpc-plaintext".to_owned(),
            "--bind-address=127.0.0.1".to_owned(),
            format!("--agent-token-verification={mode}"),
        ],
    )
    .await?;
    let channel = raw_agent::channel(aggregator.grpc).await?;
    let open = |node: &str, token: &str| {
        raw_agent::open(
            channel.clone(),
            vec![
                raw_agent::hello(node, token),
                raw_agent::snapshot(1, 1, 1_700_000_000_000),
            ],
        )
    };

    // the agent of node a, once the Pod watch has listed its pod
    let mut accepted = eventually(
        Duration::from_secs(30),
        "the agent of node a accepted",
        || {
            let open = open(node_a, &tokens.valid);
            async move {
                match open.await {
                    Ok(stream) => Ok(Some(stream)),
                    Err(status) if status.code() == tonic::Code::Unavailable => Ok(None),
                    Err(status) => anyhow::bail!("refused: {status:?}"),
                }
            }
        },
    )
    .await?;
    assert_eq!(accepted.next(Duration::from_secs(5)).await?, Reply::Ack(0));

    let reviewed = mode == "tokenreview";
    // the API server refuses a token for another audience without saying which it is for;
    // local verification reads it
    let (audience_message, audience_reason) = if reviewed {
        ("token rejected by the API server", "identity_invalid_token")
    } else {
        (
            "token is not for audience kubepulse (it is for [\"vault\"])",
            "identity_wrong_audience",
        )
    };
    // another issuer: auto leaves it to a TokenReview, local refuses it itself
    let issuer_message = match mode {
        "local" => "is not the service-account issuer",
        _ => "token rejected by the API server",
    };
    let cases: [(&str, &str, &str, tonic::Code, &str, &'static str); 6] = [
        (
            "a valid agent claiming another node",
            node_b,
            &tokens.valid,
            tonic::Code::PermissionDenied,
            "runs on node ident-node-a, not on node ident-node-b",
            "identity_wrong_node",
        ),
        (
            "an expired token",
            node_a,
            &tokens.expired,
            tonic::Code::Unauthenticated,
            "expired",
            "identity_invalid_token",
        ),
        (
            "a token for another audience",
            node_a,
            &tokens.other_audience,
            tonic::Code::Unauthenticated,
            audience_message,
            audience_reason,
        ),
        (
            "a token of another service account",
            node_a,
            &tokens.other_account,
            tonic::Code::PermissionDenied,
            "not to the agent service account system:serviceaccount:kube-system:kubepulse-agent",
            "identity_wrong_service_account",
        ),
        (
            "no token",
            node_a,
            "",
            tonic::Code::Unauthenticated,
            "no service-account token in the hello",
            "identity_no_token",
        ),
        (
            "a token of another issuer",
            node_a,
            &tokens.other_issuer,
            tonic::Code::Unauthenticated,
            issuer_message,
            "identity_invalid_token",
        ),
    ];
    let mut reviews_before_issuer = 0;
    for (what, node, token, code, message, reason) in cases {
        reviews_before_issuer = verifications("tokenreview");
        let before = refused_count(reason);
        let refused = open(node, token)
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("{what}: accepted"))?;
        anyhow::ensure!(
            refused.code() == code && refused.message().contains(message),
            "{what}: expected {code:?} with {message:?}, got {refused:?}"
        );
        anyhow::ensure!(
            refused_count(reason) > before,
            "{what}: not counted as {reason}"
        );
    }
    let reviews_for_issuer = verifications("tokenreview") - reviews_before_issuer;

    // the accepted agent was not disturbed
    accepted.send(raw_agent::empty_delta(1)).await?;
    assert_eq!(accepted.next(Duration::from_secs(5)).await?, Reply::Ack(1));
    drop(accepted);
    aggregator.stop().await;

    // which path judged the tokens, by the self-metrics
    let local = verifications("local") - local_before;
    let reviews = verifications("tokenreview") - reviews_before;
    match mode {
        "tokenreview" => anyhow::ensure!(
            local == 0 && reviews >= 5,
            "forced TokenReview: {local} local verifications, {reviews} reviews"
        ),
        "local" => anyhow::ensure!(
            local >= 4 && reviews == 0,
            "local: {local} local verifications, {reviews} reviews"
        ),
        _ => anyhow::ensure!(
            local >= 4 && reviews == 1 && reviews_for_issuer == 1,
            "auto: {local} local verifications, {reviews} reviews (only the other issuer's token should be reviewed)"
        ),
    }
    Ok(())
}

/// gRPC over TLS: real agents stream to replicas whose certificate a test CA signed, verifying
/// it with `--aggregator-ca-file` and `--aggregator-tls-server-name`; a client trusting another
/// CA, or expecting another name, never gets a stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_verify_the_aggregator_certificate() -> anyhow::Result<()> {
    let ca = Ca::new("kubepulse-test-grpc-ca")?;
    let serving = ca.server(&["kubepulse-aggregator-grpc.kube-system.svc", "localhost"])?;
    let cluster = Cluster::start(ClusterOptions {
        nodes: 2,
        pods_per_node: 2,
        replicas: 1,
        serving_cert: Some(serving),
        grpc_tls: Some(GrpcTls {
            ca_pem: ca.cert_pem(),
            server_name: "kubepulse-aggregator-grpc.kube-system.svc".to_owned(),
        }),
        ..ClusterOptions::default()
    })
    .await?;
    let nodes = "/apis/metrics.k8s.io/v1beta1/nodes";
    let ca_file = cluster.dir().join("test-ca.crt");
    std::fs::write(&ca_file, ca.cert_pem())?;
    let https = cluster.replicas[0].https;
    eventually(Duration::from_secs(30), "both nodes over TLS", || async {
        let (code, body) = https_get(https, &ca_file, nodes, None).await?;
        let body: serde_json::Value = serde_json::from_slice(&body)?;
        let n = body["items"].as_array().map_or(0, Vec::len);
        Ok((code == 200 && n == 2).then_some(()))
    })
    .await?;

    let grpc = cluster.replicas[0].grpc;
    // a refused connection fails at connect or at the first call, whichever the client does
    let streams = |channel: anyhow::Result<tonic::transport::Channel>| async move {
        match channel {
            Ok(channel) => raw_agent::open(channel, vec![raw_agent::hello("sneaky", "")])
                .await
                .is_ok(),
            Err(_) => false,
        }
    };
    let other_ca = Ca::new("someone-else")?;
    let wrong_ca = raw_agent::tls_channel(grpc, &other_ca.cert_pem(), "localhost").await;
    assert!(
        !streams(wrong_ca).await,
        "a certificate from another CA was trusted"
    );
    let wrong_name = raw_agent::tls_channel(grpc, &ca.cert_pem(), "kubepulse.example").await;
    assert!(
        !streams(wrong_name).await,
        "a certificate for another name was trusted"
    );
    let plaintext = raw_agent::channel(grpc).await;
    assert!(!streams(plaintext).await, "a plaintext stream was accepted");
    let right = raw_agent::tls_channel(grpc, &ca.cert_pem(), "localhost").await?;
    let mut stream = raw_agent::open(
        right,
        vec![
            raw_agent::hello("tls-client", ""),
            raw_agent::snapshot(1, 1, 1_700_000_000_000),
        ],
    )
    .await?;
    assert_eq!(stream.next(Duration::from_secs(5)).await?, Reply::Ack(0));
    cluster.shutdown().await;
    Ok(())
}
