//! The simulated fleet's I/O: one HTTPS listener per simulated kubelet (certificate naming
//! the node, signed by the fleet's CA, bearer token checked when configured) and a plain-HTTP
//! control API to read the ground truth and switch faults, usage, restarts and pods.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::model::{Fault, Fleet, FleetConfig, Target};
use super::render;
use crate::certs::Ca;

/// How to run the fleet.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// The fleet.
    pub fleet: FleetConfig,
    /// Address every listener binds.
    pub bind: IpAddr,
    /// Node `i` listens on `base_port + i` (0: any free port).
    pub base_port: u16,
    /// Control API port (0: any free port).
    pub control_port: u16,
    /// Bearer token kubelets require; `None` accepts any request.
    pub token: Option<String>,
    /// How long a `slow` kubelet waits before answering.
    pub slow_delay: Duration,
    /// Replace one random pod this often.
    pub churn_every: Option<Duration>,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            fleet: FleetConfig::default(),
            bind: IpAddr::from([127, 0, 0, 1]),
            base_port: 0,
            control_port: 0,
            token: None,
            slow_delay: Duration::from_secs(30),
            churn_every: None,
        }
    }
}

/// Where a simulated kubelet listens.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeEndpoint {
    /// Node name.
    pub name: String,
    /// `ip:port` of its kubelet.
    pub address: String,
}

/// A running fleet.
pub struct SimFleet {
    /// The shared ground truth.
    pub fleet: Arc<Mutex<Fleet>>,
    /// Every simulated kubelet.
    pub nodes: Vec<NodeEndpoint>,
    /// The control API address.
    pub control: SocketAddr,
    /// The CA that signed every kubelet certificate, PEM.
    pub ca_pem: String,
    /// Requests each kubelet answered (every answer, faults included), in node order.
    pub reads: Vec<Arc<AtomicU64>>,
    stop: watch::Sender<bool>,
}

impl SimFleet {
    /// Stops every listener.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for SimFleet {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Wall-clock milliseconds (the fleet's only clock read).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

#[derive(Clone)]
struct KubeletState {
    fleet: Arc<Mutex<Fleet>>,
    node: String,
    token: Option<String>,
    slow_delay: Duration,
    reads: Arc<AtomicU64>,
}

/// Starts the fleet.
pub async fn start(options: SimOptions) -> anyhow::Result<SimFleet> {
    let fleet = Fleet::generate(&options.fleet, now_ms());
    start_with(options, fleet).await
}

/// Starts kubelets for a fleet the caller built (`options.fleet` is not used).
pub async fn start_with(options: SimOptions, fleet: Fleet) -> anyhow::Result<SimFleet> {
    let fleet = Arc::new(Mutex::new(fleet));
    let ca = Ca::new("kubepulse-sim-kubelet-ca")?;
    let (stop, stop_rx) = watch::channel(false);
    let wait = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let names: Vec<String> = fleet
        .lock()
        .expect("fleet lock")
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .collect();
    let mut nodes = Vec::with_capacity(names.len());
    let mut reads = Vec::with_capacity(names.len());
    for (i, name) in names.into_iter().enumerate() {
        let port = if options.base_port == 0 {
            0
        } else {
            options
                .base_port
                .checked_add(i as u16)
                .context("--base-port + node count exceeds 65535")?
        };
        let addr = SocketAddr::new(options.bind, port);
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("listen on {addr} for node {name}"))?;
        let leaf = ca.server(&[name.as_str(), "localhost", &options.bind.to_string()])?;
        let tls = kubepulse_aggregator::tls::server_config(&kubepulse_aggregator::tls::CertKey {
            cert_pem: leaf.cert_pem,
            key_pem: leaf.key_pem,
        })?;
        nodes.push(NodeEndpoint {
            name: name.clone(),
            address: listener.local_addr()?.to_string(),
        });
        let counter = Arc::new(AtomicU64::new(0));
        reads.push(counter.clone());
        let state = KubeletState {
            fleet: fleet.clone(),
            node: name,
            token: options.token.clone(),
            slow_delay: options.slow_delay,
            reads: counter,
        };
        let router = Router::new()
            .route("/metrics/resource", get(kubelet))
            .with_state(state);
        tokio::spawn(kubepulse_aggregator::tls::serve(
            listener,
            Some(tls),
            router,
            wait(),
        ));
    }
    let control_listener = TcpListener::bind(SocketAddr::new(options.bind, options.control_port))
        .await
        .context("listen for the control API")?;
    let control = control_listener.local_addr()?;
    let control_state = ControlState {
        fleet: fleet.clone(),
        nodes: nodes.clone(),
    };
    tokio::spawn(kubepulse_aggregator::tls::serve(
        control_listener,
        None,
        control_router(control_state),
        wait(),
    ));
    if let Some(every) = options.churn_every {
        let fleet = fleet.clone();
        let stopped = wait();
        tokio::spawn(async move {
            tokio::pin!(stopped);
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Some((ns, name)) = fleet.lock().expect("fleet lock").churn(now_ms()) {
                            tracing::info!(namespace = ns, pod = name, "churn: pod replaced");
                        }
                    }
                    () = &mut stopped => break,
                }
            }
        });
    }
    Ok(SimFleet {
        fleet,
        nodes,
        control,
        ca_pem: ca.cert_pem(),
        reads,
        stop,
    })
}

async fn kubelet(State(state): State<KubeletState>, headers: HeaderMap) -> Response {
    state.reads.fetch_add(1, Ordering::Relaxed);
    if let Some(token) = &state.token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if presented != Some(token.as_str()) {
            return (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
        }
    }
    let now = now_ms();
    let (fault, body) = {
        let fleet = state.fleet.lock().expect("fleet lock");
        let Some(node) = fleet.node(&state.node) else {
            return (StatusCode::NOT_FOUND, "node gone").into_response();
        };
        (node.fault, render::render(&fleet, node, now))
    };
    let text = [(
        header::CONTENT_TYPE,
        "text/plain; version=0.0.4; charset=utf-8",
    )];
    match fault {
        Fault::None => (StatusCode::OK, text, body).into_response(),
        Fault::Error500 => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error: stats unavailable",
        )
            .into_response(),
        Fault::Garbage => (
            StatusCode::OK,
            text,
            "<html><body>502 Bad Gateway</body></html>\n\u{0}\u{1}garbage{{{ 1 2 3\n".to_owned(),
        )
            .into_response(),
        Fault::Truncated => {
            // mid-line: a body cut just after a line feed is a complete, shorter body (the
            // agent would rightly take it, and the node's lines may be in the missing half)
            let cut = body.len() / 2;
            let cut = (0..=cut)
                .rev()
                .find(|i| body.is_char_boundary(*i) && !body[..*i].ends_with('\n'))
                .unwrap_or(0);
            (StatusCode::OK, text, body[..cut].to_owned()).into_response()
        }
        Fault::Slow => {
            tokio::time::sleep(state.slow_delay).await;
            (StatusCode::OK, text, body).into_response()
        }
        Fault::ScrapeError => (StatusCode::OK, text, render::render_scrape_error()).into_response(),
    }
}

#[derive(Clone)]
struct ControlState {
    fleet: Arc<Mutex<Fleet>>,
    nodes: Vec<NodeEndpoint>,
}

fn control_router(state: ControlState) -> Router {
    Router::new()
        .route("/nodes", get(list_nodes))
        .route("/truth", get(truth))
        .route("/fault", post(set_fault))
        .route("/usage", post(set_usage))
        .route("/restart", post(restart))
        .route("/reset-counter", post(reset_counter))
        .route("/pods", post(add_pod).delete(remove_pods))
        .with_state(state)
}

async fn list_nodes(State(s): State<ControlState>) -> Response {
    axum::Json(s.nodes).into_response()
}

async fn truth(State(s): State<ControlState>) -> Response {
    let fleet = s.fleet.lock().expect("fleet lock");
    let nodes: Vec<serde_json::Value> = fleet
        .nodes
        .iter()
        .map(|n| {
            serde_json::json!({
                "name": n.name,
                "fault": n.fault,
                "cpu_nanocores": n.cpu_nanocores(),
                "memory_bytes": n.memory_bytes(),
                "pods": n.pods,
            })
        })
        .collect();
    axum::Json(serde_json::json!({ "nodes": nodes })).into_response()
}

#[derive(Deserialize)]
struct TargetQuery {
    node: Option<String>,
    namespace: Option<String>,
    pod: Option<String>,
    container: Option<String>,
    kind: Option<String>,
    cpu: Option<u64>,
    memory: Option<u64>,
}

impl TargetQuery {
    fn target(&self) -> Target {
        Target {
            node: self.node.clone(),
            namespace: self.namespace.clone(),
            pod: self.pod.clone(),
            container: self.container.clone(),
        }
    }
}

fn counted(n: usize) -> Response {
    if n == 0 {
        (StatusCode::NOT_FOUND, "nothing matched\n").into_response()
    } else {
        (StatusCode::OK, format!("{n}\n")).into_response()
    }
}

async fn set_fault(State(s): State<ControlState>, Query(q): Query<TargetQuery>) -> Response {
    let Some(fault) = q.kind.as_deref().and_then(Fault::parse) else {
        return (
            StatusCode::BAD_REQUEST,
            "kind must be none, 500, garbage, truncated, slow or scrape-error\n",
        )
            .into_response();
    };
    counted(
        s.fleet
            .lock()
            .expect("fleet lock")
            .set_fault(q.node.as_deref(), fault),
    )
}

async fn set_usage(State(s): State<ControlState>, Query(q): Query<TargetQuery>) -> Response {
    counted(
        s.fleet
            .lock()
            .expect("fleet lock")
            .set_usage(&q.target(), q.cpu, q.memory, now_ms()),
    )
}

async fn restart(State(s): State<ControlState>, Query(q): Query<TargetQuery>) -> Response {
    counted(
        s.fleet
            .lock()
            .expect("fleet lock")
            .restart(&q.target(), now_ms()),
    )
}

async fn reset_counter(State(s): State<ControlState>, Query(q): Query<TargetQuery>) -> Response {
    counted(
        s.fleet
            .lock()
            .expect("fleet lock")
            .reset_counter(&q.target(), now_ms()),
    )
}

/// Body of `POST /pods`.
#[derive(Deserialize)]
struct NewPod {
    node: String,
    namespace: String,
    name: String,
    #[serde(default)]
    uid: String,
    containers: Vec<NewContainer>,
}

#[derive(Deserialize)]
struct NewContainer {
    name: String,
    cpu: u64,
    memory: u64,
}

async fn add_pod(State(s): State<ControlState>, axum::Json(pod): axum::Json<NewPod>) -> Response {
    let containers: Vec<(String, u64, u64)> = pod
        .containers
        .into_iter()
        .map(|c| (c.name, c.cpu, c.memory))
        .collect();
    let added = s.fleet.lock().expect("fleet lock").add_pod(
        &pod.node,
        &pod.namespace,
        &pod.name,
        &pod.uid,
        &containers,
        now_ms(),
    );
    if added {
        (StatusCode::CREATED, "created\n").into_response()
    } else {
        (StatusCode::CONFLICT, "unknown node or pod exists\n").into_response()
    }
}

async fn remove_pods(State(s): State<ControlState>, Query(q): Query<TargetQuery>) -> Response {
    counted(
        s.fleet
            .lock()
            .expect("fleet lock")
            .remove_pods(&q.target(), now_ms()),
    )
}
