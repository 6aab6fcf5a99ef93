//! The aggregator's side of the relay protocol (`Ingest/Relay`), driven by a hand-made relay
//! stream against a real aggregator replica: each link is held exactly like an agent's own
//! stream (served, bounded, resynced, refused), replies name their link, and a link's fault
//! never touches its neighbours on the same relay stream.

use std::time::Duration;

use kubepulse_tests::harness::eventually;
use kubepulse_tests::raw_agent::{self, Aggregator, LinkReply, RawRelay, closed_frame, frame};
use serde_json::Value;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// Pod names the aggregator serves in `default`.
async fn served_pods(aggregator: &Aggregator) -> anyhow::Result<Vec<String>> {
    let (code, body) = aggregator
        .get("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods")
        .await?;
    anyhow::ensure!(code == 200, "pods list answered {code}");
    let v: Value = serde_json::from_slice(&body)?;
    let mut names: Vec<String> = v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}

async fn node_served(aggregator: &Aggregator, node: &str) -> anyhow::Result<bool> {
    let path = format!("/apis/metrics.k8s.io/v1beta1/nodes/{node}");
    Ok(aggregator.get(&path).await?.0 == 200)
}

/// Everything the relay sends that the aggregator answered, until it has been quiet for
/// `quiet`.
async fn replies(relay: &mut RawRelay, quiet: Duration) -> anyhow::Result<Vec<(u32, LinkReply)>> {
    let mut all = Vec::new();
    while let Some(r) = relay.next(quiet).await? {
        all.push(r);
    }
    Ok(all)
}

/// Two nodes on one relay stream are served like two agents' own streams, and the aggregator
/// sends no acks on links.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_on_one_relay_stream_are_served() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let aggregator = Aggregator::start(dir.path(), &[]).await?;
    let mut relay = RawRelay::open(raw_agent::channel(aggregator.grpc).await?).await?;
    let ms = now_ms();
    relay
        .send(vec![
            frame(7, raw_agent::hello("node-a", "")),
            frame(9, raw_agent::hello("node-b", "")),
            frame(7, raw_agent::snapshot_of("a", 2, 1, ms)),
            frame(9, raw_agent::snapshot_of("b", 3, 2, ms)),
        ])
        .await?;
    let names = eventually(Duration::from_secs(10), "both nodes' pods", || async {
        let names = served_pods(&aggregator).await?;
        Ok((names.len() == 5).then_some(names))
    })
    .await?;
    assert_eq!(names, ["a-0", "a-1", "b-0", "b-1", "b-2"]);
    assert!(node_served(&aggregator, "node-a").await?);
    assert!(node_served(&aggregator, "node-b").await?);
    // a delta on one link, an unchanged status on the other: still no reply of any kind
    relay
        .send(vec![
            frame(7, raw_agent::empty_delta(1)),
            frame(
                9,
                raw_agent::message(
                    0,
                    kubepulse_proto::v1::agent_message::Kind::Status(
                        kubepulse_proto::v1::ScrapeStatus {
                            ok: true,
                            ..Default::default()
                        },
                    ),
                ),
            ),
        ])
        .await?;
    assert_eq!(replies(&mut relay, Duration::from_millis(500)).await?, []);
    aggregator.stop().await;
    Ok(())
}

/// A frame for a link that never said hello, a sequence gap and a node over its pod limit
/// each get their own answer for their own link; the other link on the stream carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_fault_is_answered_on_that_link_only() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let aggregator = Aggregator::start(dir.path(), &["--max-pods-per-node=3"]).await?;
    let mut relay = RawRelay::open(raw_agent::channel(aggregator.grpc).await?).await?;
    let ms = now_ms();
    relay
        .send(vec![
            frame(1, raw_agent::hello("good", "")),
            frame(1, raw_agent::snapshot_of("good", 1, 1, ms)),
            // no hello on link 2
            frame(2, raw_agent::snapshot_of("nohello", 1, 1, ms)),
            frame(3, raw_agent::hello("gap", "")),
            frame(3, raw_agent::snapshot_of("gap", 1, 1, ms)),
            frame(3, raw_agent::empty_delta(5)),
            frame(4, raw_agent::hello("big", "")),
            frame(4, raw_agent::snapshot_of("big", 4, 1, ms)),
        ])
        .await?;
    let mut got = replies(&mut relay, Duration::from_secs(2)).await?;
    got.sort_by_key(|(link, _)| *link);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        matches!(&got[0], (2, LinkReply::Closed(tonic::Code::FailedPrecondition, m)) if m.contains("no hello")),
        "{got:?}"
    );
    assert!(
        matches!(&got[1], (3, LinkReply::Resync(m)) if m.contains("sequence gap")),
        "{got:?}"
    );
    assert!(
        matches!(&got[2], (4, LinkReply::Closed(tonic::Code::ResourceExhausted, m)) if m.contains("--max-pods-per-node")),
        "{got:?}"
    );
    // the link that was asked to resync recovers with a snapshot; the good one was untouched
    relay
        .send(vec![frame(
            3,
            raw_agent::message(
                6,
                raw_agent::snapshot_of("gap", 2, 1, ms).kind.expect("kind"),
            ),
        )])
        .await?;
    let names = eventually(Duration::from_secs(10), "good and gap pods", || async {
        let names = served_pods(&aggregator).await?;
        Ok((names.len() == 3).then_some(names))
    })
    .await?;
    assert_eq!(names, ["gap-0", "gap-1", "good-0"]);
    assert!(!node_served(&aggregator, "big").await?);
    aggregator.stop().await;
    Ok(())
}

/// A closed link gives its node's stream place back (`--max-streams-per-node`), and so does
/// the end of the whole relay stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_links_and_relays_free_their_places() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let aggregator = Aggregator::start(dir.path(), &["--max-streams-per-node=1"]).await?;
    let mut relay = RawRelay::open(raw_agent::channel(aggregator.grpc).await?).await?;
    relay
        .send(vec![
            frame(1, raw_agent::hello("a", "")),
            frame(2, raw_agent::hello("a", "")),
        ])
        .await?;
    let got = replies(&mut relay, Duration::from_secs(1)).await?;
    assert!(
        matches!(&got[..], [(2, LinkReply::Closed(tonic::Code::ResourceExhausted, m))] if m.contains("--max-streams-per-node")),
        "{got:?}"
    );
    relay
        .send(vec![closed_frame(1), frame(3, raw_agent::hello("a", ""))])
        .await?;
    assert_eq!(replies(&mut relay, Duration::from_secs(1)).await?, []);

    // a second relay is refused node a while the first holds it, and gets it once that ends
    let mut other = RawRelay::open(raw_agent::channel(aggregator.grpc).await?).await?;
    other
        .send(vec![frame(1, raw_agent::hello("a", ""))])
        .await?;
    let got = replies(&mut other, Duration::from_secs(1)).await?;
    assert!(
        matches!(
            &got[..],
            [(1, LinkReply::Closed(tonic::Code::ResourceExhausted, _))]
        ),
        "{got:?}"
    );
    drop(relay);
    // a refusal means the place is still taken: try again on another link
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut link = 1;
    loop {
        link += 1;
        other
            .send(vec![frame(link, raw_agent::hello("a", ""))])
            .await?;
        if other.next(Duration::from_millis(300)).await?.is_none() {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "node a's place was not freed when the first relay went away"
        );
    }
    other
        .send(vec![frame(
            link,
            raw_agent::snapshot_of("a", 1, 1, now_ms()),
        )])
        .await?;
    eventually(
        Duration::from_secs(10),
        "node a served through the other relay",
        || async { Ok(node_served(&aggregator, "a").await?.then_some(())) },
    )
    .await?;
    aggregator.stop().await;
    Ok(())
}
