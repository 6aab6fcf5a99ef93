//! Self-metrics of both binaries, scraped over their real ports after real traffic: the
//! aggregator's `/metrics` on its HTTPS port, an agent's on its health port. Every promised
//! family is there, the counters move with traffic, and no label value names a node, a pod
//! or a container (metrics-server's per-node series grew with the cluster and never shrank).

use std::collections::BTreeSet;
use std::time::Duration;

use clap::Parser as _;
use kubepulse_tests::harness::{Cluster, ClusterOptions, eventually};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_binaries_export_bounded_self_metrics() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions {
        nodes: 2,
        pods_per_node: 3,
        replicas: 1,
        ..ClusterOptions::default()
    })
    .await?;

    // node 0's agent again, on a health port this test knows
    cluster.stop_agent(0).await;
    let health = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?
    };
    let mut args = cluster.agent_args(0);
    args.retain(|a| !a.starts_with("--health-address"));
    args.push(format!("--health-address={health}"));
    let config = kubepulse_agent::Config::try_parse_from(args)?;
    let (stop_agent, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(kubepulse_agent::run(config, async {
        let _ = stopped.await;
    }));

    let (nodes, pods, containers) = {
        let fleet = cluster.fleet.fleet.lock().unwrap();
        let nodes: Vec<String> = fleet.nodes.iter().map(|n| n.name.clone()).collect();
        let pods: Vec<(String, String)> = fleet
            .nodes
            .iter()
            .flat_map(|n| &n.pods)
            .map(|p| (p.namespace.clone(), p.name.clone()))
            .collect();
        let containers: BTreeSet<String> = fleet
            .nodes
            .iter()
            .flat_map(|n| &n.pods)
            .flat_map(|p| &p.containers)
            .map(|c| c.name.clone())
            .collect();
        (nodes, pods, containers)
    };
    let want = pods.len();
    eventually(Duration::from_secs(40), "every pod served", || async {
        let (_, list) = cluster
            .get_json(0, "/apis/metrics.k8s.io/v1beta1/pods")
            .await?;
        Ok((list["items"].as_array().map_or(0, Vec::len) == want).then_some(()))
    })
    .await?;

    let before = aggregator_metrics(&cluster).await?;
    // traffic: lists, gets, an explain, a 404
    let (ns, pod) = &pods[0];
    for path in [
        "/apis/metrics.k8s.io/v1beta1/nodes".to_owned(),
        format!("/apis/metrics.k8s.io/v1beta1/nodes/{}", nodes[0]),
        format!("/apis/metrics.k8s.io/v1/namespaces/{ns}/pods/{pod}"),
        format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods/{pod}/explain"),
        "/apis/metrics.k8s.io/v1beta1/namespaces/nope/pods/nope".to_owned(),
    ] {
        cluster.get(0, &path, None).await?;
    }
    // more kubelet samples arrive meanwhile
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = aggregator_metrics(&cluster).await?;

    for family in [
        "kubepulse_aggregator_ingest_messages_total",
        "kubepulse_aggregator_ingest_lag_seconds",
        "kubepulse_aggregator_streams_connected",
        "kubepulse_aggregator_resyncs_requested_total",
        "kubepulse_aggregator_ingest_errors_total",
        "kubepulse_aggregator_api_requests_total",
        "kubepulse_aggregator_api_request_duration_seconds",
        "kubepulse_aggregator_auth_decisions_total",
        "kubepulse_aggregator_nodes_expired_total",
        "kubepulse_aggregator_store_nodes",
        "kubepulse_aggregator_store_pods",
        "kubepulse_aggregator_store_containers",
        "kubepulse_aggregator_store_nodes_kubelet_failing",
    ] {
        // OpenMetrics names a counter family without its `_total` suffix
        let family = family.trim_end_matches("_total");
        assert!(
            after.contains(&format!("# TYPE {family} ")),
            "family {family} missing:\n{after}"
        );
    }
    let moved = |series: &str| value(&after, series) - value_or_zero(&before, series);
    // agents send deltas as the kubelet refreshes, and a status heartbeat only in a period
    // with nothing else to send: the stream moved by one or the other
    let moved_or_zero =
        |series: &str| value_or_zero(&after, series) - value_or_zero(&before, series);
    assert!(
        moved_or_zero("kubepulse_aggregator_ingest_messages_total{kind=\"delta\"}")
            + moved_or_zero("kubepulse_aggregator_ingest_messages_total{kind=\"status\"}")
            > 0.0
    );
    assert!(moved("kubepulse_aggregator_ingest_lag_seconds_count") > 0.0);
    assert!(
        moved(
            "kubepulse_aggregator_api_requests_total{verb=\"list\",resource=\"nodes\",code=\"200\"}"
        ) >= 1.0
    );
    assert!(
        moved(
            "kubepulse_aggregator_api_requests_total{verb=\"get\",resource=\"pods\",code=\"404\"}"
        ) >= 1.0
    );
    assert!(
        moved(
            "kubepulse_aggregator_api_requests_total{verb=\"get\",resource=\"pods/explain\",code=\"200\"}"
        ) >= 1.0
    );
    assert!(value(&after, "kubepulse_aggregator_streams_connected") >= 2.0);
    assert_eq!(value(&after, "kubepulse_aggregator_store_nodes"), 2.0);
    assert_eq!(
        value(&after, "kubepulse_aggregator_store_pods"),
        want as f64
    );

    let agent_text = eventually(Duration::from_secs(20), "agent metrics", || async {
        let text = http_get(health, "/metrics").await?;
        Ok((value_or_zero(&text, "kubepulse_agent_streams_up") >= 1.0).then_some(text))
    })
    .await?;
    for family in [
        "kubepulse_agent_kubelet_reads_total",
        "kubepulse_agent_kubelet_read_duration_seconds",
        "kubepulse_agent_decode_issues_total",
        "kubepulse_agent_kubelet_bodies_repeated_total",
        "kubepulse_agent_pods_served",
        "kubepulse_agent_pods_held_back",
        "kubepulse_agent_containers_held_back",
        "kubepulse_agent_streams_up",
        "kubepulse_agent_stream_reconnects_total",
        "kubepulse_agent_messages_sent_total",
        "kubepulse_agent_sent_bytes_total",
    ] {
        let family = family.trim_end_matches("_total");
        assert!(
            agent_text.contains(&format!("# TYPE {family} ")),
            "family {family} missing:\n{agent_text}"
        );
    }
    assert!(
        value(
            &agent_text,
            "kubepulse_agent_kubelet_reads_total{result=\"ok\"}"
        ) >= 1.0
    );
    assert!(value(&agent_text, "kubepulse_agent_sent_bytes_total") > 0.0);
    assert!(
        value(
            &agent_text,
            "kubepulse_agent_messages_sent_total{kind=\"snapshot\"}"
        ) >= 1.0
    );

    // no label value carries a name that grows with the cluster
    let names: BTreeSet<&str> = nodes
        .iter()
        .map(String::as_str)
        .chain(pods.iter().map(|(_, p)| p.as_str()))
        .chain(containers.iter().map(String::as_str))
        .collect();
    for text in [&after, &agent_text] {
        for value in label_values(text) {
            assert!(
                !names.iter().any(|n| value.contains(n)),
                "label value {value:?} names a node, pod or container"
            );
        }
    }

    let _ = stop_agent.send(());
    let _ = agent.await;
    cluster.shutdown().await;
    Ok(())
}

async fn aggregator_metrics(cluster: &Cluster) -> anyhow::Result<String> {
    let (code, body) = cluster.get(0, "/metrics", None).await?;
    anyhow::ensure!(code == 200, "GET /metrics: {code}");
    Ok(String::from_utf8(body.to_vec())?)
}

/// A plain HTTP/1.0 GET (the agent's health port has no TLS).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    tcp.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no HTTP head in {response:?}"))?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    Ok(body.to_owned())
}

fn value_or_zero(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

fn value(text: &str, series: &str) -> f64 {
    assert!(
        text.lines().any(|l| l.starts_with(&format!("{series} "))),
        "no series {series} in\n{text}"
    );
    value_or_zero(text, series)
}

/// Every label value of every sample line.
fn label_values(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((_, rest)) = line.split_once('{') else {
            continue;
        };
        let Some((labels, _)) = rest.rsplit_once('}') else {
            continue;
        };
        for pair in labels.split(',') {
            if let Some((_, v)) = pair.split_once('=') {
                out.push(v.trim_matches('"').to_owned());
            }
        }
    }
    out
}
