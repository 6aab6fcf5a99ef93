//! Every bound on what crosses a trust boundary, crossed: each test sets a limit low, goes
//! past it, and checks the refusal is the documented one (and, where it matters, that
//! everything else keeps working). The limits and their defaults are listed in the README's
//! Reliability section.

use std::time::{Duration, Instant};

use clap::Parser as _;
use kubepulse_agent::kubelet::{KubeletClient, ScrapeError};
use kubepulse_tests::harness::eventually;
use kubepulse_tests::raw_agent::{self, Aggregator, Reply};
use kubepulse_tests::sim::{self, Fault, FleetConfig, SimFleet, SimOptions};

/// A small fleet with a `slow` kubelet that answers after `slow_delay`.
async fn fleet(pods_per_node: usize, slow_delay: Duration) -> anyhow::Result<SimFleet> {
    sim::start(SimOptions {
        fleet: FleetConfig {
            nodes: 1,
            pods_per_node,
            ..FleetConfig::default()
        },
        slow_delay,
        ..SimOptions::default()
    })
    .await
}

/// A kubelet client for node 0 of `fleet`, with extra agent flags.
fn kubelet_client(
    fleet: &SimFleet,
    dir: &std::path::Path,
    extra: &[&str],
) -> anyhow::Result<KubeletClient> {
    let ca = dir.join("kubelet-ca.crt");
    std::fs::write(&ca, &fleet.ca_pem)?;
    let node = &fleet.nodes[0];
    let mut args = vec![
        "kubepulse-agent".to_owned(),
        format!("--node-name={}", node.name),
        format!("--kubelet-address={}", node.address),
        format!("--kubelet-certificate-authority={}", ca.display()),
        "--kubelet-token-file=".to_owned(),
        "--aggregator-endpoints=127.0.0.1:1".to_owned(),
        "--aggregator-plaintext".to_owned(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let config = kubepulse_agent::Config::try_parse_from(args)?;
    config
        .validate()
        .map_err(|p| anyhow::anyhow!("agent config: {}", p.join("; ")))?;
    KubeletClient::new(&config)
}

/// `--kubelet-max-response-bytes`: a body over the cap is refused (and not buffered past it);
/// the same kubelet read with the default cap succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_response_over_the_size_cap_is_refused() -> anyhow::Result<()> {
    let fleet = fleet(20, Duration::from_secs(30)).await?;
    let dir = tempfile::tempdir()?;
    let body = kubelet_client(&fleet, dir.path(), &[])?.scrape().await?;
    assert!(
        body.len() > 2048,
        "the body should cross the cap: {} bytes",
        body.len()
    );

    let mut capped = kubelet_client(&fleet, dir.path(), &["--kubelet-max-response-bytes=2048"])?;
    match capped.scrape().await {
        Err(ScrapeError::TooLarge { limit: 2048 }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let err = capped.scrape().await.unwrap_err();
    assert_eq!(err.to_string(), "kubelet response exceeds 2048 bytes");
    fleet.stop();
    Ok(())
}

/// `--kubelet-request-timeout`: a kubelet that does not answer in time is a timeout error
/// after about the timeout, and the next read (once the kubelet is healthy) succeeds on a
/// fresh connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_read_over_the_timeout_fails_in_time() -> anyhow::Result<()> {
    let fleet = fleet(3, Duration::from_secs(20)).await?;
    let dir = tempfile::tempdir()?;
    let mut client = kubelet_client(&fleet, dir.path(), &["--kubelet-request-timeout=300ms"])?;
    client.scrape().await?;
    let node = fleet.nodes[0].name.clone();
    fleet
        .fleet
        .lock()
        .expect("fleet")
        .set_fault(Some(&node), Fault::Slow);
    let started = Instant::now();
    let err = client.scrape().await.unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, ScrapeError::Timeout(t) if t == Duration::from_millis(300)),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "kubelet read timed out after 300ms");
    assert!(took < Duration::from_secs(3), "the timeout took {took:?}");
    fleet
        .fleet
        .lock()
        .expect("fleet")
        .set_fault(Some(&node), Fault::None);
    client.scrape().await?;
    fleet.stop();
    Ok(())
}

// === ingest ===

const MS: i64 = 1_700_000_000_000;

fn closed_with(reply: &Reply, code: tonic::Code, flag: &str) -> bool {
    matches!(reply, Reply::Closed(c, m) if *c == code && m.contains(flag))
}

/// `--max-message-bytes`: a message over it closes that stream with `RESOURCE_EXHAUSTED`
/// naming the flag; another agent's stream on the same aggregator carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_over_the_size_cap_closes_only_its_stream() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let aggregator = Aggregator::start(dir.path(), &["--max-message-bytes=4096"]).await?;
    let mut good = raw_agent::open(
        raw_agent::channel(aggregator.grpc).await?,
        vec![raw_agent::hello("good", ""), raw_agent::snapshot(2, 1, MS)],
    )
    .await?;
    assert_eq!(good.next(Duration::from_secs(5)).await?, Reply::Ack(0));

    let mut big = raw_agent::open(
        raw_agent::channel(aggregator.grpc).await?,
        vec![raw_agent::hello("big", "")],
    )
    .await?;
    big.send(raw_agent::snapshot(100, 2, MS)).await?;
    let reply = big.next(Duration::from_secs(5)).await?;
    assert!(
        closed_with(
            &reply,
            tonic::Code::ResourceExhausted,
            "--max-message-bytes"
        ),
        "{reply:?}"
    );

    good.send(raw_agent::empty_delta(1)).await?;
    assert_eq!(good.next(Duration::from_secs(5)).await?, Reply::Ack(1));
    aggregator.stop().await;
    Ok(())
}

/// `--max-pods-per-node` and `--max-containers-per-node`, through the ingest: a snapshot over
/// either closes the stream with `RESOURCE_EXHAUSTED` naming the flag (resending it would only
/// fail again, so the agent backs off); at the limit it is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_over_its_pod_or_container_limit_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let aggregator = Aggregator::start(
        dir.path(),
        &["--max-pods-per-node=3", "--max-containers-per-node=6"],
    )
    .await?;
    let channel = raw_agent::channel(aggregator.grpc).await?;
    for (node, pods, containers, expected) in [
        ("at-limit", 3, 2, None),
        (
            "pods",
            4,
            1,
            Some("node pods: node reports more than 3 pods (--max-pods-per-node)"),
        ),
        (
            "containers",
            2,
            4,
            Some(
                "node containers: node reports more than 6 containers (--max-containers-per-node)",
            ),
        ),
    ] {
        let mut stream = raw_agent::open(
            channel.clone(),
            vec![
                raw_agent::hello(node, ""),
                raw_agent::snapshot(pods, containers, MS),
            ],
        )
        .await?;
        let reply = stream.next(Duration::from_secs(5)).await?;
        match expected {
            None => assert_eq!(reply, Reply::Ack(0), "{node}"),
            Some(message) => assert_eq!(
                reply,
                Reply::Closed(tonic::Code::ResourceExhausted, message.to_owned()),
                "{node}"
            ),
        }
    }
    aggregator.stop().await;
    Ok(())
}

/// `--max-streams-per-node` and `--max-streams`: streams beyond either are refused at their
/// hello with `RESOURCE_EXHAUSTED` naming the flag; a closed stream frees its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_per_node_and_in_total_are_bounded() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let aggregator =
        Aggregator::start(dir.path(), &["--max-streams-per-node=2", "--max-streams=3"]).await?;
    let channel = raw_agent::channel(aggregator.grpc).await?;
    let open = |node: &'static str| {
        let channel = channel.clone();
        async move { raw_agent::open(channel, vec![raw_agent::hello(node, "")]).await }
    };
    let a1 = open("a").await?;
    let _a2 = open("a").await?;
    let refused = open("a").await.err().expect("a third stream for node a");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert!(
        refused.message().contains("--max-streams-per-node"),
        "{refused:?}"
    );
    let _b = open("b").await?;
    let refused = open("c").await.err().expect("a fourth stream in total");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert!(refused.message().contains("--max-streams"), "{refused:?}");

    drop(a1);
    let reopened = eventually(Duration::from_secs(5), "node a's place to free up", || {
        let open = open("a");
        async move { Ok(open.await.ok()) }
    })
    .await?;
    drop(reopened);
    aggregator.stop().await;
    Ok(())
}

/// `--max-messages-per-second-per-stream` and `--max-message-burst-per-stream`: a stream
/// sending faster is throttled, not dropped: every message is acknowledged, no sooner than
/// the rate allows, and the throttling is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_stream_is_throttled_not_dropped() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let aggregator = Aggregator::start(
        dir.path(),
        &[
            "--max-messages-per-second-per-stream=20",
            "--max-message-burst-per-stream=5",
        ],
    )
    .await?;
    let throttled_before = kubepulse_aggregator::metrics::get().ingest_throttled.get();
    let started = Instant::now();
    let mut stream = raw_agent::open(
        raw_agent::channel(aggregator.grpc).await?,
        vec![raw_agent::hello("fast", ""), raw_agent::snapshot(1, 1, MS)],
    )
    .await?;
    let n_deltas = 40;
    for seq in 1..=n_deltas {
        stream.send(raw_agent::empty_delta(seq)).await?;
    }
    for seq in 0..=n_deltas {
        assert_eq!(stream.next(Duration::from_secs(10)).await?, Reply::Ack(seq));
    }
    let took = started.elapsed();
    // 41 messages after the hello, 5 of them free: at least 36 / 20 s
    assert!(
        took >= Duration::from_millis(1700),
        "41 messages in {took:?}"
    );
    let throttled = kubepulse_aggregator::metrics::get().ingest_throttled.get() - throttled_before;
    assert!(
        throttled >= 30,
        "only {throttled} messages counted as throttled"
    );
    aggregator.stop().await;
    Ok(())
}

// === every bound is a flag with a default ===

/// The bound flags, their defaults, and the validation of nonsense values.
#[test]
fn every_bound_is_a_flag_with_a_sane_default() {
    let aggregator = |args: &[&str]| {
        kubepulse_aggregator::Config::try_parse_from(
            std::iter::once("kubepulse-aggregator").chain(args.iter().copied()),
        )
        .expect("flags parse")
    };
    let c = aggregator(&[]);
    assert_eq!(c.max_message_bytes, 4 << 20);
    assert_eq!(
        (c.max_pods_per_node, c.max_containers_per_node),
        (1000, 10_000)
    );
    assert_eq!((c.max_streams_per_node, c.max_streams), (4, 200_000));
    assert_eq!(
        (
            c.max_messages_per_second_per_stream,
            c.max_message_burst_per_stream
        ),
        (10, 50)
    );
    assert_eq!(c.max_requests_inflight, 400);
    assert_eq!(c.request_timeout, Duration::from_secs(60));
    assert_eq!(c.hello_timeout, Duration::from_secs(10));
    assert_eq!(c.agent_service_account, "kube-system/kubepulse-agent");
    assert_eq!(
        (c.agent_token_cache_ttl, c.agent_token_cache_max_entries),
        (Duration::from_secs(10), 10_000)
    );
    let problems = aggregator(&[
        "--max-streams-per-node=0",
        "--max-messages-per-second-per-stream=0",
        "--max-requests-inflight=0",
        "--max-message-bytes=10",
        "--agent-service-account=kubepulse-agent",
    ])
    .validate()
    .unwrap_err();
    for flag in [
        "--max-streams-per-node",
        "--max-messages-per-second-per-stream",
        "--max-requests-inflight",
        "--max-message-bytes",
        "--agent-service-account",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(flag)),
            "{flag}: {problems:?}"
        );
    }

    let agent = kubepulse_agent::Config::try_parse_from([
        "kubepulse-agent",
        "--node-name=n",
        "--aggregator-endpoints=127.0.0.1:1",
    ])
    .expect("flags parse");
    assert_eq!(agent.kubelet_max_response_bytes, 16 << 20);
    assert_eq!(agent.kubelet_request_timeout, Duration::from_secs(5));
    assert_eq!(
        agent.aggregator_token_file,
        "/var/run/secrets/kubepulse/token"
    );
}

/// `--hello-timeout`: a stream that says nothing is closed with `DEADLINE_EXCEEDED` after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_stream_is_closed_after_the_hello_timeout() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let aggregator = Aggregator::start(dir.path(), &["--hello-timeout=300ms"]).await?;
    let started = Instant::now();
    let refused = raw_agent::open(raw_agent::channel(aggregator.grpc).await?, Vec::new())
        .await
        .err()
        .expect("a silent stream");
    assert_eq!(refused.code(), tonic::Code::DeadlineExceeded, "{refused:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    aggregator.stop().await;
    Ok(())
}
