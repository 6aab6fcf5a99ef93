//! The aggregator in Kubernetes mode behind the REAL kube-apiserver, through the shared
//! control-plane harness (`kubepulse_tests::control_plane`: etcd, kube-apiserver and
//! kube-controller-manager v1.36.3, the official kubectl, the replicas registered as
//! `v1beta1.metrics.k8s.io` and `v1.metrics.k8s.io`):
//!
//! - every Metrics API path in `v1beta1` and `v1` through `kubectl get --raw`, with labels
//!   and the Running rule from the Pod and Node watches (a label added later shows up);
//! - `kubectl get podmetrics -A` prints the server-side Table; `kubectl explain podmetrics`
//!   reads our OpenAPI;
//! - a user without RBAC gets 403 through kube-apiserver; a request that bypasses
//!   kube-apiserver with an untrusted client certificate is refused with 401 (the x509 reason
//!   logged), without any certificate it is anonymous and forbidden; a front-proxy CA added
//!   to the `extension-apiserver-authentication` ConfigMap is trusted without a restart;
//! - the HPA controller asks for protobuf and gets it (seen in the aggregator's request log).
//!
//! Without the binaries the test prints SKIP, except under `CI=true` where it fails.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use kubepulse_tests::certs::{Ca, Leaf};
use kubepulse_tests::control_plane::stack::{MetricsStack, StackOptions};
use kubepulse_tests::control_plane::{Binaries, ControlPlane, SERVICE_NAME, SERVICE_NAMESPACE};
use kubepulse_tests::harness::eventually;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Everything the aggregator replicas log, for the request-log assertions.
static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_text() -> String {
    String::from_utf8_lossy(&LOG.lock().unwrap()).into_owned()
}

fn log_tail(lines: usize) -> String {
    let log = log_text();
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_api_through_the_real_kube_apiserver() {
    let Some(binaries) = Binaries::require("metrics_api_through_the_real_kube_apiserver") else {
        return;
    };
    // before the harness installs its own: every replica's log lands in LOG
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "warn,kubepulse_aggregator=info,kubepulse_aggregator::http=debug",
        ))
        .with_ansi(false)
        .with_writer(|| LogWriter)
        .try_init();
    let cp = tokio::task::spawn_blocking(move || {
        ControlPlane::shared(&binaries, Path::new(env!("CARGO_TARGET_TMPDIR")))
    })
    .await
    .expect("start the control plane")
    .unwrap_or_else(|e| panic!("control plane: {e:#}"));
    if let Err(err) = scenario(cp).await {
        panic!(
            "{err:#}\n---- aggregator log\n{}\n{}",
            log_tail(60),
            cp.log_tails(40)
        );
    }
}

async fn scenario(cp: &'static ControlPlane) -> anyhow::Result<()> {
    let stack = MetricsStack::start(
        cp,
        StackOptions {
            node_prefix: "apiserver-node-".into(),
            nodes: 2,
            replicas: 1,
            ..StackOptions::default()
        },
    )
    .await?;
    anyhow::ensure!(
        stack.kubernetes_mode,
        "the aggregator runs in Kubernetes mode"
    );
    stack.wait_available(Duration::from_secs(60)).await?;
    let plans = stack.populate(&["metrics-a", "metrics-b"], 3, 7).await?;
    let kubectl = |args: &[&str]| -> anyhow::Result<std::process::Output> { cp.kubectl(args) };
    let text = |args: &[&str]| -> anyhow::Result<String> {
        let out = cp.kubectl(args)?;
        anyhow::ensure!(
            out.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let json = |args: &[&str]| -> anyhow::Result<serde_json::Value> {
        let t = text(args)?;
        Ok(serde_json::from_str(&t)?)
    };

    // a pod that is not Running (never served), and a node label set after the start
    let (node, ns, pod) = (&plans[0].node, &plans[0].namespace, &plans[0].name);
    text(&[
        "-n",
        ns,
        "run",
        "pending-0",
        "--image=registry.invalid/x:0",
        "--overrides",
        &format!(r#"{{"spec":{{"nodeName":"{node}"}}}}"#),
    ])?;
    text(&[
        "label",
        "node",
        node,
        "kubepulse.test/zone=z1",
        "--overwrite",
    ])?;

    let n_pods = plans.len();
    eventually(
        Duration::from_secs(60),
        "every Running pod and the node label served",
        || {
            let pods = json(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/pods"]);
            let node_json = json(&[
                "get",
                "--raw",
                &format!("/apis/metrics.k8s.io/v1beta1/nodes/{node}"),
            ]);
            async move {
                let pods_ok = pods
                    .ok()
                    .is_some_and(|v| v["items"].as_array().is_some_and(|i| i.len() == n_pods));
                let label_ok = node_json
                    .ok()
                    .is_some_and(|v| v["metadata"]["labels"]["kubepulse.test/zone"] == "z1");
                Ok((pods_ok && label_ok).then_some(()))
            }
        },
    )
    .await?;

    // every path, both versions, through kube-apiserver
    for v in ["v1beta1", "v1"] {
        let gv = format!("metrics.k8s.io/{v}");
        let base = format!("/apis/metrics.k8s.io/{v}");
        for (path, kind) in [
            (base.clone(), "APIResourceList"),
            (format!("{base}/nodes"), "NodeMetricsList"),
            (format!("{base}/nodes/{node}"), "NodeMetrics"),
            (format!("{base}/pods"), "PodMetricsList"),
            (format!("{base}/namespaces/{ns}/pods"), "PodMetricsList"),
            (format!("{base}/namespaces/{ns}/pods/{pod}"), "PodMetrics"),
        ] {
            let body = json(&["get", "--raw", &path])?;
            anyhow::ensure!(body["kind"] == kind, "GET {path}: kind {}", body["kind"]);
            let want = if kind == "APIResourceList" {
                "v1"
            } else {
                gv.as_str()
            };
            anyhow::ensure!(body["apiVersion"] == want, "GET {path}: {body}");
        }
        let pod_json = json(&[
            "get",
            "--raw",
            &format!("{base}/namespaces/{ns}/pods/{pod}"),
        ])?;
        let app = plans[0].labels["app"].as_str();
        anyhow::ensure!(
            pod_json["metadata"]["labels"]["app"] == app,
            "pod labels come from the Pod watch: {pod_json}"
        );
        let selected = json(&[
            "get",
            "--raw",
            &format!("{base}/namespaces/{ns}/pods?labelSelector=app%3D{app}"),
        ])?;
        let want = plans
            .iter()
            .filter(|p| &p.namespace == ns && p.labels["app"] == app)
            .count();
        anyhow::ensure!(
            selected["items"].as_array().map(Vec::len) == Some(want),
            "labelSelector app={app}: {selected}"
        );
        let missing = kubectl(&[
            "get",
            "--raw",
            &format!("{base}/namespaces/{ns}/pods/pending-0"),
        ])?;
        let stderr = String::from_utf8_lossy(&missing.stderr);
        anyhow::ensure!(
            !missing.status.success() && stderr.contains("pods \"pending-0\" not found"),
            "a pod that is not Running is not served: {stderr}"
        );
    }

    // kubectl get podmetrics prints the server-side Table; kubectl explain reads the OpenAPI
    for resource in ["podmetrics", "podmetrics.v1.metrics.k8s.io"] {
        let table = text(&["get", resource, "-A"])?;
        let header = table.lines().next().unwrap_or_default();
        for column in ["NAMESPACE", "NAME", "CPU", "MEMORY", "WINDOW"] {
            anyhow::ensure!(header.contains(column), "{resource} table header: {table}");
        }
        for plan in &plans {
            anyhow::ensure!(
                table.contains(plan.name.as_str()),
                "{} missing: {table}",
                plan.name
            );
        }
    }
    let nodes_table = text(&["get", "nodemetrics"])?;
    anyhow::ensure!(nodes_table.contains(node.as_str()), "{nodes_table}");
    let explain = text(&["explain", "podmetrics"])?;
    anyhow::ensure!(
        explain.contains("KIND:       PodMetrics") && explain.contains("containers"),
        "kubectl explain podmetrics: {explain}"
    );
    let explain = text(&[
        "explain",
        "podmetrics.containers.usage",
        "--api-version=metrics.k8s.io/v1",
    ])?;
    anyhow::ensure!(explain.contains("VERSION:    v1"), "{explain}");

    // a user without RBAC: 403 from kube-apiserver
    let denied = kubectl(&[
        "--as=nobody",
        "get",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/pods",
    ])?;
    let stderr = String::from_utf8_lossy(&denied.stderr);
    anyhow::ensure!(
        !denied.status.success() && stderr.contains("Forbidden"),
        "no RBAC: {stderr}"
    );

    // bypassing kube-apiserver, straight to a replica
    let replica = stack.cluster.replicas[0].https;
    let ca = cp.pki.path("ca.crt");
    let list = "/apis/metrics.k8s.io/v1beta1/pods";
    let masters = [
        ("X-Remote-User", "system:admin"),
        ("X-Remote-Group", "system:masters"),
    ];
    let stranger = Ca::new("not-the-front-proxy-ca")?.client("front-proxy-client", &[])?;
    let (code, body) = direct_get(replica, &ca, list, Some(&stranger), &masters).await?;
    anyhow::ensure!(
        code == 401 && body.contains("\"reason\":\"Unauthorized\""),
        "untrusted client certificate: {code} {body}"
    );
    anyhow::ensure!(
        log_text().contains("x509: certificate signed by unknown authority"),
        "the verification failure is logged"
    );
    let (code, body) = direct_get(replica, &ca, list, None, &masters).await?;
    anyhow::ensure!(
        code == 403 && body.contains("User \\\"system:anonymous\\\" cannot list"),
        "no certificate: identity headers ignored, anonymous is forbidden: {code} {body}"
    );
    let front_proxy = Leaf {
        cert_pem: std::fs::read_to_string(cp.pki.path("front-proxy-client.crt"))?,
        key_pem: std::fs::read_to_string(cp.pki.path("front-proxy-client.key"))?,
    };
    let (code, _) = direct_get(replica, &ca, list, Some(&front_proxy), &masters).await?;
    anyhow::ensure!(
        code == 200,
        "kube-apiserver's own front-proxy certificate: {code}"
    );

    // front-proxy CA rotation: a new CA added to the ConfigMap is trusted without a restart
    let rotated_ca = Ca::new("rotated-front-proxy-ca")?;
    let rotated = rotated_ca.client("front-proxy-client", &[])?;
    let (code, _) = direct_get(replica, &ca, list, Some(&rotated), &masters).await?;
    anyhow::ensure!(code == 401, "a CA not yet in the ConfigMap: {code}");
    let configmaps: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(cp.client().await?, "kube-system");
    let mut auth = configmaps.get("extension-apiserver-authentication").await?;
    let data = auth.data.get_or_insert_with(Default::default);
    let bundle = data
        .get("requestheader-client-ca-file")
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no requestheader-client-ca-file in the ConfigMap"))?;
    data.insert(
        "requestheader-client-ca-file".into(),
        format!("{}\n{}", bundle.trim_end(), rotated_ca.cert_pem()),
    );
    configmaps
        .replace(
            "extension-apiserver-authentication",
            &Default::default(),
            &auth,
        )
        .await?;
    eventually(
        Duration::from_secs(30),
        "the rotated front-proxy CA is trusted",
        || async {
            let (code, body) = direct_get(replica, &ca, list, Some(&rotated), &masters).await?;
            anyhow::ensure!(code == 200, "rotated CA: {code} {body}");
            Ok(Some(()))
        },
    )
    .await?;
    let (code, _) = direct_get(replica, &ca, list, Some(&front_proxy), &masters).await?;
    anyhow::ensure!(code == 200, "the old CA still in the bundle: {code}");

    // the HPA controller reads pod metrics in protobuf
    text(&[
        "-n",
        ns,
        "create",
        "deployment",
        "hpa-target",
        "--image=registry.invalid/x:0",
    ])?;
    text(&[
        "-n",
        ns,
        "set",
        "resources",
        "deployment",
        "hpa-target",
        "--requests=cpu=100m",
    ])?;
    text(&[
        "-n",
        ns,
        "autoscale",
        "deployment",
        "hpa-target",
        "--min=1",
        "--max=3",
        "--cpu=50%",
    ])?;
    let path = format!("path=\"/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods\"");
    eventually(
        Duration::from_secs(60),
        "a protobuf request from the HPA controller",
        || {
            let found = log_text().lines().any(|line| {
                line.contains("horizontal-pod-autoscaler")
                    && line.contains(&path)
                    && line.contains("accept=\"application/vnd.kubernetes.protobuf")
                    && line.contains("status=200")
                    && line.contains("content_type=\"application/vnd.kubernetes.protobuf\"")
            });
            async move { Ok(found.then_some(())) }
        },
    )
    .await?;

    stack.shutdown().await;
    Ok(())
}

/// A GET straight to the aggregator (not through kube-apiserver), with an optional client
/// certificate and extra headers.
async fn direct_get(
    addr: std::net::SocketAddr,
    server_ca: &Path,
    path: &str,
    client: Option<&Leaf>,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, String)> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(server_ca)? {
        roots.add(cert?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots);
    let config = match client {
        Some(leaf) => builder.with_client_auth_cert(
            CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes()).collect::<Result<_, _>>()?,
            PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes())?,
        )?,
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let host = format!("{SERVICE_NAME}.{SERVICE_NAMESPACE}.svc");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(host.clone())?, tcp)
        .await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let mut req = http::Request::get(path).header(http::header::HOST, host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new())?)
        .await?;
    let code = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}
