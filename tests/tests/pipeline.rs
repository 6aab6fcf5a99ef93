//! End to end, in one process: simulated kubelets → real agents → gRPC delta streams → two
//! aggregator replicas → the Metrics API over HTTPS. Every assertion compares what the API
//! serves with the fleet's ground truth.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kubepulse_aggregator_core::quantity::{parse_cpu, parse_memory};
use kubepulse_tests::harness::{Cluster, ClusterOptions, PodId, eventually, pod_usages};
use kubepulse_tests::sim::Target;
use serde_json::Value;

const PODS: &str = "/apis/metrics.k8s.io/v1beta1/pods";
const NODES: &str = "/apis/metrics.k8s.io/v1beta1/nodes";

fn node_truth(cluster: &Cluster) -> BTreeMap<String, (u64, u64)> {
    let fleet = cluster.fleet.fleet.lock().unwrap();
    fleet
        .nodes
        .iter()
        .map(|n| (n.name.clone(), (n.cpu_nanocores(), n.memory_bytes())))
        .collect()
}

/// The served pods of one replica: (namespace, pod) → container → (cpu, memory).
async fn served_pods(
    cluster: &Cluster,
    replica: usize,
) -> anyhow::Result<BTreeMap<PodId, BTreeMap<String, (u64, u64)>>> {
    let (code, list) = cluster.get_json(replica, PODS).await?;
    anyhow::ensure!(code == 200, "GET {PODS}: {code} {list}");
    pod_usages(&list)
}

fn within_1pct(served: u64, truth: u64) -> bool {
    served.abs_diff(truth) as f64 <= truth as f64 * 0.01 + 1.0
}

fn check_values(
    served: &BTreeMap<PodId, BTreeMap<String, (u64, u64)>>,
    truth: &BTreeMap<PodId, BTreeMap<String, (u64, u64)>>,
) -> anyhow::Result<()> {
    for (pod, containers) in served {
        let t = truth
            .get(pod)
            .ok_or_else(|| anyhow::anyhow!("served pod {pod:?} is not in the fleet"))?;
        anyhow::ensure!(
            containers.len() == t.len(),
            "pod {pod:?}: {} containers served, {} exist",
            containers.len(),
            t.len()
        );
        for (name, (cpu, mem)) in containers {
            let (tcpu, tmem) = t[name];
            anyhow::ensure!(
                within_1pct(*cpu, tcpu),
                "{pod:?}/{name}: cpu {cpu}n served, truth {tcpu}n"
            );
            anyhow::ensure!(
                *mem == tmem,
                "{pod:?}/{name}: memory {mem} served, truth {tmem}"
            );
        }
    }
    Ok(())
}

/// The served nodes of one replica: name → (cpu, memory).
async fn served_nodes(
    cluster: &Cluster,
    replica: usize,
) -> anyhow::Result<BTreeMap<String, (u64, u64)>> {
    let (code, list) = cluster.get_json(replica, NODES).await?;
    anyhow::ensure!(code == 200, "GET {NODES}: {code} {list}");
    let mut out = BTreeMap::new();
    for item in list["items"].as_array().unwrap_or(&Vec::new()) {
        let cpu = parse_cpu(item["usage"]["cpu"].as_str().unwrap_or_default())?;
        let mem = parse_memory(item["usage"]["memory"].as_str().unwrap_or_default())?;
        out.insert(
            item["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            (cpu, mem),
        );
    }
    Ok(out)
}

/// Waits until `replica` serves exactly the fleet's nodes and pods with true values.
async fn wait_whole(cluster: &Cluster, replica: usize, timeout: Duration) -> anyhow::Result<()> {
    eventually(
        timeout,
        "the replica to serve every node and pod",
        || async {
            let served = served_pods(cluster, replica).await?;
            let truth = cluster.truth(None);
            if served.keys().collect::<Vec<_>>() != truth.keys().collect::<Vec<_>>() {
                anyhow::bail!("{} pods served, {} in the fleet", served.len(), truth.len());
            }
            check_values(&served, &truth)?;
            let nodes = served_nodes(cluster, replica).await?;
            let node_truth = node_truth(cluster);
            anyhow::ensure!(
                nodes.len() == node_truth.len(),
                "{} nodes served, {} in the fleet",
                nodes.len(),
                node_truth.len()
            );
            for (name, (cpu, mem)) in &nodes {
                let (tcpu, tmem) = node_truth[name];
                anyhow::ensure!(
                    within_1pct(*cpu, tcpu) && *mem == tmem,
                    "node {name}: {cpu}n {mem}B served, truth {tcpu}n {tmem}B"
                );
            }
            Ok(Some(()))
        },
    )
    .await
}

fn without_creation_timestamps(mut v: Value) -> Value {
    if let Some(items) = v["items"].as_array_mut() {
        for item in items {
            if let Some(meta) = item["metadata"].as_object_mut() {
                meta.remove("creationTimestamp");
            }
        }
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_usage_matches_ground_truth_on_both_replicas() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    for replica in 0..2 {
        wait_whole(&cluster, replica, Duration::from_secs(30)).await?;
    }
    // nodes: cpu within 1%, memory exact, window = the kubelet's refresh period, on both replicas
    let truth = node_truth(&cluster);
    for replica in 0..2 {
        let (code, list) = cluster.get_json(replica, NODES).await?;
        assert_eq!(code, 200);
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), truth.len(), "{list}");
        for item in items {
            let name = item["metadata"]["name"].as_str().unwrap();
            let cpu = parse_cpu(item["usage"]["cpu"].as_str().unwrap())?;
            let mem = parse_memory(item["usage"]["memory"].as_str().unwrap())?;
            let (tcpu, tmem) = truth[name];
            assert!(
                within_1pct(cpu, tcpu),
                "node {name}: cpu {cpu} vs truth {tcpu}"
            );
            assert_eq!(mem, tmem, "node {name} memory");
            assert_eq!(item["window"], "1s", "kubelet refresh period is the window");
        }
    }
    // both replicas answer identically (modulo the tick in flight)
    eventually(Duration::from_secs(10), "replicas to agree", || async {
        let a = without_creation_timestamps(cluster.get_json(0, PODS).await?.1);
        let b = without_creation_timestamps(cluster.get_json(1, PODS).await?.1);
        Ok((a == b).then_some(()))
    })
    .await?;
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_agent_resyncs_without_duplicate_or_lost_pods() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions::default()).await?;
    wait_whole(&cluster, 0, Duration::from_secs(30)).await?;
    let node0: BTreeSet<PodId> = cluster
        .truth(Some(&cluster.fleet.nodes[0].name.clone()))
        .into_keys()
        .collect();
    cluster.stop_agent(0).await;
    cluster.start_agent(0).await?;
    // while the new agent warms up, the old values stay; the pod set never shrinks
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let served = served_pods(&cluster, 0).await?;
        for pod in &node0 {
            assert!(
                served.contains_key(pod),
                "pod {pod:?} of the restarted node went missing"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for replica in 0..2 {
        wait_whole(&cluster, replica, Duration::from_secs(10)).await?;
    }
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_aggregator_is_whole_again_within_two_poll_intervals() -> anyhow::Result<()> {
    let options = ClusterOptions::default();
    let interval = options.poll_interval;
    let mut cluster = Cluster::start(options).await?;
    wait_whole(&cluster, 1, Duration::from_secs(30)).await?;
    cluster.stop_replica(1).await;
    cluster.start_replica(1).await?;
    let restarted = Instant::now();
    wait_whole(&cluster, 1, interval * 2).await?;
    println!(
        "replica whole again {:?} after restart",
        restarted.elapsed()
    );
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_that_stops_reporting_disappears_after_its_ttl() -> anyhow::Result<()> {
    let ttl = Duration::from_secs(3);
    let mut cluster = Cluster::start(ClusterOptions {
        node_ttl_min: ttl,
        ..ClusterOptions::default()
    })
    .await?;
    wait_whole(&cluster, 0, Duration::from_secs(30)).await?;
    let node = cluster.fleet.nodes[2].name.clone();
    let pods: BTreeSet<PodId> = cluster.truth(Some(&node)).into_keys().collect();
    cluster.stop_agent(2).await;
    let stopped = Instant::now();
    // last good values are served until the TTL…
    let (code, _) = cluster.get_json(0, &format!("{NODES}/{node}")).await?;
    assert_eq!(code, 200);
    let gone = eventually(
        Duration::from_secs(10),
        "the node's data to expire",
        || async {
            // pods before the node, the node before pods again: the two requests are not
            // atomic, but data expires all at once, so pods read before a served node must
            // be whole and pods read after a 404 must be gone
            let before = served_pods(&cluster, 0).await?;
            let (code, body) = cluster.get_json(0, &format!("{NODES}/{node}")).await?;
            if code == 404 {
                assert_eq!(
                    body["message"],
                    format!("nodemetrics.metrics.k8s.io \"{node}\" not found")
                );
                let after = served_pods(&cluster, 0).await?;
                let still = pods.iter().filter(|p| after.contains_key(*p)).count();
                assert_eq!(still, 0, "pods outlived their node");
                return Ok(Some(stopped.elapsed()));
            }
            let still = pods.iter().filter(|p| before.contains_key(*p)).count();
            assert_eq!(still, pods.len(), "pods vanished before their node");
            Ok(None)
        },
    )
    .await?;
    assert!(
        gone >= ttl - Duration::from_millis(200),
        "expired after {gone:?}, before the {ttl:?} TTL"
    );
    assert!(
        gone <= ttl + Duration::from_secs(2),
        "expired only after {gone:?}"
    );
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_a_kubelet_keeps_the_last_good_values_until_the_ttl() -> anyhow::Result<()> {
    let ttl = Duration::from_secs(4);
    let cluster = Cluster::start(ClusterOptions {
        node_ttl_min: ttl,
        ..ClusterOptions::default()
    })
    .await?;
    wait_whole(&cluster, 0, Duration::from_secs(30)).await?;
    let node = cluster.fleet.nodes[1].name.clone();
    let path = format!("{NODES}/{node}");
    for fault in ["garbage", "truncated", "500", "scrape-error"] {
        let before = cluster.get_json(0, &path).await?.1;
        set_fault(&cluster, &node, fault).await?;
        // a good read already in flight when the fault was set may still land: take the
        // frozen value once it has (one poll plus the publish period)
        tokio::time::sleep(Duration::from_millis(700)).await;
        let frozen = cluster.get_json(0, &path).await?.1;
        assert!(
            frozen["timestamp"].as_str() >= before["timestamp"].as_str(),
            "{fault}: time went backwards: {frozen} after {before}"
        );
        let before = frozen;
        // within the TTL the node keeps its last good sample, with its real kubelet timestamp
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let (code, during) = cluster.get_json(0, &path).await?;
        assert_eq!(code, 200, "{fault}: node gone before its TTL: {during}");
        assert_eq!(
            during["timestamp"], before["timestamp"],
            "{fault}: a failing kubelet cannot produce new samples"
        );
        assert_eq!(
            during["usage"], before["usage"],
            "{fault}: last good values change"
        );
        set_fault(&cluster, &node, "none").await?;
        eventually(Duration::from_secs(5), "the node to recover", || async {
            let now = cluster.get_json(0, &path).await?.1;
            Ok((now["timestamp"] != before["timestamp"] && now["usage"].is_object()).then_some(()))
        })
        .await?;
        wait_whole(&cluster, 0, Duration::from_secs(5)).await?;
    }
    // a lasting fault: gone after the TTL, back once the kubelet recovers
    set_fault(&cluster, &node, "garbage").await?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let frozen = cluster.get_json(0, &format!("{NODES}/{node}")).await?.1;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let still = cluster.get_json(0, &format!("{NODES}/{node}")).await?.1;
    assert_eq!(
        frozen["timestamp"], still["timestamp"],
        "a failing kubelet cannot produce new samples"
    );
    eventually(Duration::from_secs(8), "the node to expire", || async {
        Ok((cluster.get_json(0, &format!("{NODES}/{node}")).await?.0 == 404).then_some(()))
    })
    .await?;
    set_fault(&cluster, &node, "none").await?;
    wait_whole(&cluster, 0, Duration::from_secs(10)).await?;
    cluster.shutdown().await;
    Ok(())
}

async fn set_fault(cluster: &Cluster, node: &str, kind: &str) -> anyhow::Result<()> {
    control(cluster, &format!("/fault?node={node}&kind={kind}")).await
}

async fn control(cluster: &Cluster, path_and_query: &str) -> anyhow::Result<()> {
    let stream = tokio::net::TcpStream::connect(cluster.fleet.control).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::post(path_and_query)
        .header(http::header::HOST, "sim")
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    anyhow::ensure!(
        resp.status().is_success(),
        "POST {path_and_query}: {}",
        resp.status()
    );
    Ok(())
}

/// After a container restart or a counter reset the served CPU is never negative, never a
/// spike: every value served for the container is its true usage (or the pod is briefly held
/// back until two post-restart samples exist).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_and_counter_resets_never_spike() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        nodes: 1,
        pods_per_node: 4,
        replicas: 1,
        ..ClusterOptions::default()
    })
    .await?;
    wait_whole(&cluster, 0, Duration::from_secs(30)).await?;
    let pods: Vec<PodId> = cluster.truth(None).into_keys().collect();
    let (ns0, pod0) = &pods[0];
    let (ns1, pod1) = &pods[1];
    cluster
        .fleet
        .fleet
        .lock()
        .unwrap()
        .restart(&target(ns0, pod0), kubepulse_tests::sim::server::now_ms());
    cluster
        .fleet
        .fleet
        .lock()
        .unwrap()
        .reset_counter(&target(ns1, pod1), kubepulse_tests::sim::server::now_ms());
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut absent = 0;
    while Instant::now() < deadline {
        let served = served_pods(&cluster, 0).await?;
        check_values(&served, &cluster.truth(None))?;
        absent += pods.iter().filter(|p| !served.contains_key(*p)).count();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("polls with a held-back pod: {absent}");
    wait_whole(&cluster, 0, Duration::from_secs(5)).await?;
    cluster.shutdown().await;
    Ok(())
}

fn target(ns: &str, pod: &str) -> Target {
    Target {
        namespace: Some(ns.to_owned()),
        pod: Some(pod.to_owned()),
        ..Target::default()
    }
}
