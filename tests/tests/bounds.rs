//! Every bound on what crosses a trust boundary, crossed: each test sets a limit low, goes
//! past it, and checks the refusal is the documented one (and, where it matters, that
//! everything else keeps working). The limits and their defaults are listed in the README's
//! Reliability section.

use std::time::{Duration, Instant};

use clap::Parser as _;
use kubepulse_agent::kubelet::{KubeletClient, ScrapeError};
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
