//! The relay tier end to end, in one process: simulated kubelets → real agents → a real relay
//! (`kubepulse_relay::run`, what the binary runs) → two aggregator replicas over TLS. The
//! replicas' gRPC certificate is one the agents cannot verify (they trust another CA), so
//! every byte the replicas hold came through the relay.
//!
//! - every replica serves every node's pods with true values; the relay holds one link per
//!   agent and one stream per replica;
//! - a replica killed and started again gets everything back through the relay (the links'
//!   hellos replayed and a snapshot asked of every agent), without any agent's stream
//!   restarting;
//! - an agent restarted behind the relay leaves no duplicate and no missing pod;
//! - a replica's refusal (`--max-pods-per-node`) ends that agent's stream with
//!   RESOURCE_EXHAUSTED while the relay's other links go on; `Relay` on a relay is
//!   UNIMPLEMENTED.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser as _;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use kubepulse_tests::certs::Ca;
use kubepulse_tests::harness::{
    Cluster, ClusterOptions, GrpcTls, PodUsages, eventually, https_get, pod_usages,
};
use kubepulse_tests::raw_agent::{self, Reply};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const PODS: &str = "/apis/metrics.k8s.io/v1beta1/pods";

/// The relay's self-metrics are process-wide (as in the binary): one relay at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const NODES: &str = "/apis/metrics.k8s.io/v1beta1/nodes";

/// A relay running in this process.
struct Relay {
    grpc: SocketAddr,
    health: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Relay {
    async fn start(flags: &[String]) -> anyhow::Result<Self> {
        let mut args = vec![
            "kubepulse-relay".to_owned(),
            "--grpc-plaintext".to_owned(),
            "--batch-interval=20ms".to_owned(),
            "--max-backoff=500ms".to_owned(),
        ];
        args.extend(flags.iter().cloned());
        let config = kubepulse_relay::Config::try_parse_from(args)?;
        config
            .validate()
            .map_err(|p| anyhow::anyhow!("relay config: {}", p.join("; ")))?;
        let listeners = kubepulse_relay::Listeners {
            grpc: tokio::net::TcpListener::bind("127.0.0.1:0").await?,
            health: tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        };
        let grpc = listeners.grpc.local_addr()?;
        let health = listeners.health.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(kubepulse_relay::run(config, listeners, async {
            let _ = stopped.await;
        }));
        let relay = Self {
            grpc,
            health,
            stop,
            task,
        };
        Ok(relay)
    }

    /// Waits until `n` replicas are connected.
    async fn wait_upstreams(&self, n: u64) -> anyhow::Result<()> {
        eventually(
            Duration::from_secs(20),
            "the relay's replica streams",
            || async {
                let text = http_get(self.health, "/metrics").await?;
                Ok((metric(&text, "kubepulse_relay_upstreams_connected") == n).then_some(()))
            },
        )
        .await
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// A real agent running in this process.
struct Agent {
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Agent {
    /// The agent of node `i`, streaming to the relay instead of the replicas.
    fn start(cluster: &Cluster, i: usize, relay: SocketAddr) -> anyhow::Result<Self> {
        let mut args: Vec<String> = cluster
            .agent_args(i)
            .into_iter()
            .filter(|a| {
                !a.starts_with("--aggregator-endpoints=")
                    && !a.starts_with("--aggregator-ca-file=")
                    && !a.starts_with("--aggregator-tls-server-name=")
                    && a != "--aggregator-plaintext"
            })
            .collect();
        args.push(format!("--aggregator-endpoints={relay}"));
        args.push("--aggregator-plaintext".to_owned());
        let config = kubepulse_agent::Config::try_parse_from(args)?;
        config
            .validate()
            .map_err(|p| anyhow::anyhow!("agent config: {}", p.join("; ")))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(kubepulse_agent::run(config, async {
            let _ = stopped.await;
        }));
        Ok(Self { stop, task })
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// A plain-HTTP GET (the relay's operations port).
async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let code = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    anyhow::ensure!(code == 200, "GET {path}: {code}");
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The value of an unlabelled series (or a full `name{labels}`) in OpenMetrics text.
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .parse::<f64>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no series {series} in\n{text}")) as u64
}

/// What a replica serves: (namespace, pod) → container → (cpu, memory); a pod served twice
/// is an error.
async fn served_pods(https: SocketAddr, ca_file: &Path) -> anyhow::Result<PodUsages> {
    let (code, body) = https_get(https, ca_file, PODS, None).await?;
    anyhow::ensure!(code == 200, "GET {PODS}: {code}");
    pod_usages(&serde_json::from_slice(&body)?)
}

/// Waits until the replica at `https` serves exactly the fleet's pods (CPU within 1%, memory
/// exact) and every node.
async fn wait_whole(
    cluster: &Cluster,
    https: SocketAddr,
    ca_file: &Path,
    what: &str,
) -> anyhow::Result<()> {
    eventually(Duration::from_secs(30), what, || async {
        let served = served_pods(https, ca_file).await?;
        let truth = cluster.truth(None);
        anyhow::ensure!(
            served.keys().eq(truth.keys()),
            "{} pods served, {} in the fleet",
            served.len(),
            truth.len()
        );
        for (pod, containers) in &served {
            for (name, (cpu, mem)) in containers {
                let (tcpu, tmem) = truth[pod][name];
                anyhow::ensure!(
                    cpu.abs_diff(tcpu) as f64 <= tcpu as f64 * 0.01 + 1.0 && *mem == tmem,
                    "{pod:?}/{name}: {cpu}n {mem}B served, truth {tcpu}n {tmem}B"
                );
            }
        }
        let (code, body) = https_get(https, ca_file, NODES, None).await?;
        let nodes: serde_json::Value = serde_json::from_slice(&body)?;
        let n = nodes["items"].as_array().map_or(0, Vec::len);
        anyhow::ensure!(
            code == 200 && n == cluster.fleet.nodes.len(),
            "{n} nodes served"
        );
        Ok(Some(()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_reach_every_replica_through_the_relay() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    const NODE_COUNT: usize = 4;
    let ca = Ca::new("kubepulse-test-grpc-ca")?;
    let other_ca = Ca::new("kubepulse-test-other-ca")?;
    let mut cluster = Cluster::start(ClusterOptions {
        nodes: NODE_COUNT,
        pods_per_node: 4,
        replicas: 2,
        serving_cert: Some(ca.server(&["localhost"])?),
        // the harness's own agents trust another CA: they never stream to the replicas
        grpc_tls: Some(GrpcTls {
            ca_pem: other_ca.cert_pem(),
            server_name: "localhost".to_owned(),
        }),
        ..ClusterOptions::default()
    })
    .await?;
    for i in 0..NODE_COUNT {
        cluster.stop_agent(i).await;
    }
    let ca_file = cluster.dir().join("relay-test-ca.crt");
    std::fs::write(&ca_file, ca.cert_pem())?;
    let endpoints: Vec<String> = cluster
        .replicas
        .iter()
        .map(|r| r.grpc.to_string())
        .collect();
    let relay = Relay::start(&[
        format!("--aggregator-endpoints={}", endpoints.join(",")),
        format!("--aggregator-ca-file={}", ca_file.display()),
        "--aggregator-tls-server-name=localhost".to_owned(),
    ])
    .await?;
    relay.wait_upstreams(2).await?;
    let mut agents: Vec<Option<Agent>> = (0..NODE_COUNT)
        .map(|i| Agent::start(&cluster, i, relay.grpc).map(Some))
        .collect::<anyhow::Result<_>>()?;

    let https: Vec<SocketAddr> = cluster.replicas.iter().map(|r| r.https).collect();
    for (i, addr) in https.iter().enumerate() {
        wait_whole(
            &cluster,
            *addr,
            &ca_file,
            &format!("replica {i} to serve the fleet"),
        )
        .await?;
    }
    let text = http_get(relay.health, "/metrics").await?;
    assert_eq!(
        metric(&text, "kubepulse_relay_links_open"),
        NODE_COUNT as u64,
        "{text}"
    );
    assert!(metric(&text, "kubepulse_relay_batches_sent_total") > 0);
    assert!(metric(&text, "kubepulse_relay_frames_forwarded_total") > 0);
    assert!(
        !text.contains("node-") && !text.contains("127.0.0.1"),
        "no node or address names a series"
    );
    let agent_reconnects = || {
        metric(
            &kubepulse_agent::metrics::render(),
            "kubepulse_agent_stream_reconnects_total",
        )
    };
    let reconnects_before = agent_reconnects();

    // a replica restarts with an empty store: the relay's stream to it gets every hello again
    // and every agent is asked for a snapshot; no agent's own stream restarts
    cluster.stop_replica(1).await;
    eventually(Duration::from_secs(20), "the relay to notice", || async {
        let text = http_get(relay.health, "/metrics").await?;
        Ok((metric(&text, "kubepulse_relay_upstreams_connected") == 1).then_some(()))
    })
    .await?;
    cluster.start_replica(1).await?;
    relay.wait_upstreams(2).await?;
    wait_whole(
        &cluster,
        https[1],
        &ca_file,
        "the restarted replica to serve the fleet again",
    )
    .await?;
    wait_whole(
        &cluster,
        https[0],
        &ca_file,
        "replica 0 to keep serving the fleet",
    )
    .await?;
    assert_eq!(
        agent_reconnects(),
        reconnects_before,
        "an agent's stream restarted: the replica got its data by a reconnect, not through the relay"
    );
    let text = http_get(relay.health, "/metrics").await?;
    assert!(metric(&text, "kubepulse_relay_resyncs_total") >= NODE_COUNT as u64);
    assert_eq!(
        metric(&text, "kubepulse_relay_links_open"),
        NODE_COUNT as u64
    );

    // an agent restarts (a new epoch) behind the relay: no duplicate, no missing pod
    if let Some(agent) = agents[0].take() {
        agent.stop().await;
    }
    agents[0] = Some(Agent::start(&cluster, 0, relay.grpc)?);
    eventually(
        Duration::from_secs(20),
        "the restarted agent's link",
        || async {
            let text = http_get(relay.health, "/metrics").await?;
            Ok((metric(&text, "kubepulse_relay_links_open") == NODE_COUNT as u64).then_some(()))
        },
    )
    .await?;
    for (i, addr) in https.iter().enumerate() {
        wait_whole(
            &cluster,
            *addr,
            &ca_file,
            &format!("replica {i} after the agent restart"),
        )
        .await?;
    }

    for agent in agents.into_iter().flatten() {
        agent.stop().await;
    }
    relay.stop().await;
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_refusal_ends_only_that_agents_stream() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let strict =
        raw_agent::Aggregator::start(&dir.path().join("strict"), &["--max-pods-per-node=2"])
            .await?;
    let lenient = raw_agent::Aggregator::start(&dir.path().join("lenient"), &[]).await?;
    let relay = Relay::start(&[
        format!("--aggregator-endpoints={},{}", strict.grpc, lenient.grpc),
        "--aggregator-plaintext".to_owned(),
    ])
    .await?;
    relay.wait_upstreams(2).await?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;

    // within the limits: served by both replicas
    let small = raw_agent::open(
        raw_agent::channel(relay.grpc).await?,
        vec![
            raw_agent::hello("node-small", ""),
            raw_agent::snapshot_of("small", 2, 1, now_ms),
        ],
    )
    .await?;
    for replica in [&strict, &lenient] {
        eventually(
            Duration::from_secs(20),
            "node-small on both replicas",
            || async {
                let (code, body) = replica.get(NODES).await?;
                Ok(
                    (code == 200 && String::from_utf8_lossy(&body).contains("node-small"))
                        .then_some(()),
                )
            },
        )
        .await?;
    }

    // over the strict replica's limit: the agent's stream ends with its status
    let mut big = raw_agent::open(
        raw_agent::channel(relay.grpc).await?,
        vec![
            raw_agent::hello("node-big", ""),
            raw_agent::snapshot_of("big", 5, 1, now_ms),
        ],
    )
    .await?;
    let closed = loop {
        match big.next(Duration::from_secs(20)).await? {
            Reply::Resync(_) => continue,
            other => break other,
        }
    };
    match closed {
        Reply::Closed(code, message) => {
            assert_eq!(code, tonic::Code::ResourceExhausted, "{message}");
            assert!(message.contains("--max-pods-per-node"), "{message}");
        }
        other => panic!("expected RESOURCE_EXHAUSTED, got {other:?}"),
    }

    // the other link goes on
    let text = http_get(relay.health, "/metrics").await?;
    assert_eq!(metric(&text, "kubepulse_relay_links_open"), 1, "{text}");
    assert!(
        metric(
            &text,
            "kubepulse_relay_links_refused_total{reason=\"aggregator\"}"
        ) >= 1
    );

    // relays do not chain
    let refused = kubepulse_proto::v1::ingest_client::IngestClient::new(
        raw_agent::channel(relay.grpc).await?,
    )
    .relay(tokio_stream::iter(
        Vec::<kubepulse_proto::v1::RelayBatch>::new(),
    ))
    .await
    .expect_err("a relay refuses Relay");
    assert_eq!(refused.code(), tonic::Code::Unimplemented);

    drop(small);
    relay.stop().await;
    strict.stop().await;
    lenient.stop().await;
    Ok(())
}
