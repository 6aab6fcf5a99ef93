//! `deploy/` against a real kube-apiserver 1.36.3 (and etcd), with the official kubectl 1.36.3:
//!
//! 1. `kubectl apply --dry-run=server` of `-f deploy/` and `-k deploy/` is clean (no error, no
//!    warning) and both forms give the same objects; every variant renders, and the
//!    no-host-network and relay ones pass the server-side dry run too.
//! 2. The RBAC objects, applied for real, allow every call the binaries make and refuse a sample
//!    of what they must not do (`kubectl auth can-i --as=system:serviceaccount:kube-system:…`).
//! 3. The aggregator's TLS bootstrap, run by two concurrent replicas under the aggregator's own
//!    service-account token (so with exactly the shipped RBAC), next to a metrics-server-style
//!    APIService that `kubectl apply -f deploy/40-apiservice.yaml` takes over: one CA in the
//!    Secret, the same CA in the agents' ConfigMap and in both APIServices' caBundle,
//!    `insecureSkipTLSVerify` off, both APIServices `Available=True`, and kube-apiserver proxying
//!    `metrics.k8s.io` to them with the certificate verified (an APIService pointing at a Service
//!    name the certificate does not carry fails). An agent verifying the aggregators with the CA
//!    from the ConfigMap streams a simulated node that then shows through kube-apiserver. The
//!    documented rollback patch is accepted.
//! 4. The create-if-absent race: rounds of two concurrent bootstraps against a missing Secret
//!    (admin credentials, since the shipped RBAC cannot create it) and an emptied one (the
//!    service account) each end with one Secret and both replicas on the same CA.
//!
//! The control plane is the shared harness (`kubepulse_tests::control_plane`: etcd,
//! kube-apiserver and kube-controller-manager from `tests/tools/build.sh`); under `CI=true` a
//! missing binary fails the test, elsewhere it prints SKIP. Its own test registration
//! (`kubepulse-test`) is not used here: this test registers `deploy/`'s APIServices itself.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser as _;
use kubepulse_tests::control_plane::Binaries;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::sync::oneshot;

const NS: &str = "kube-system";
const AGENT_SA: &str = "system:serviceaccount:kube-system:kubepulse-agent";
const AGGREGATOR_SA: &str = "system:serviceaccount:kube-system:kubepulse-aggregator";
const SECRET: &str = "kubepulse-aggregator-tls";
const CONFIGMAP: &str = "kubepulse-aggregator-ca";
const SERVICE: &str = "kubepulse-aggregator";
const APISERVICES: [&str; 2] = ["v1beta1.metrics.k8s.io", "v1.metrics.k8s.io"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn deploy_dir() -> PathBuf {
    repo_root().join("deploy")
}

/// The control-plane harness (etcd, kube-apiserver, kube-controller-manager) and the kubectl
/// helpers this test uses.
struct ControlPlane {
    inner: kubepulse_tests::control_plane::ControlPlane,
    kubectl: PathBuf,
    _dir: tempfile::TempDir,
}

impl ControlPlane {
    /// `None` (SKIP) when the binaries are missing outside CI.
    async fn start() -> anyhow::Result<Option<Self>> {
        let Some(binaries) = Binaries::require("deploy_manifests_against_a_real_apiserver") else {
            return Ok(None);
        };
        let dir = tempfile::tempdir()?;
        let kubectl = binaries.kubectl.clone();
        let started = Instant::now();
        let inner =
            kubepulse_tests::control_plane::ControlPlane::start(binaries, &dir.path().join("cp"))
                .await?;
        let cp = Self {
            inner,
            kubectl,
            _dir: dir,
        };
        // the built-in roles deploy/ binds to appear shortly after readiness
        tokio::task::block_in_place(|| {
            cp.wait_until(
                Duration::from_secs(60),
                "kube-system bootstrap objects",
                |cp| {
                    cp.kubectl(&[
                        "-n",
                        NS,
                        "get",
                        "role/extension-apiserver-authentication-reader",
                        "configmap/extension-apiserver-authentication",
                    ])
                    .status
                    .success()
                        && cp
                            .kubectl(&["get", "clusterrole/system:auth-delegator"])
                            .status
                            .success()
                },
            )
        })?;
        eprintln!(
            "control plane ready in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        Ok(Some(cp))
    }

    fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn write_kubeconfig(&self, file: &str, user: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir().join(file);
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: https://{}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    {user}\ncontexts:\n- name: t\n  context: {{cluster: t, user: u}}\ncurrent-context: t\n",
                self.inner.apiserver,
                self.inner.pki.path("ca.crt").display()
            ),
        )?;
        Ok(path)
    }

    fn admin_kubeconfig(&self) -> PathBuf {
        self.inner.kubeconfig.clone()
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_in(None, args)
    }

    fn kubectl_in(&self, cwd: Option<&Path>, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.kubectl);
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        cmd.arg(format!(
            "--kubeconfig={}",
            self.admin_kubeconfig().display()
        ))
        .arg("--request-timeout=20s")
        .args(args)
        .output()
        .expect("run kubectl")
    }

    /// kubectl that must succeed; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn apply_stdin(&self, yaml: &str) {
        let mut child = Command::new(&self.kubectl)
            .arg(format!(
                "--kubeconfig={}",
                self.admin_kubeconfig().display()
            ))
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(yaml.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kubectl apply: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn jsonpath(&self, args: &[&str], path: &str) -> String {
        let jp = format!("-o=jsonpath={path}");
        let mut all: Vec<&str> = args.to_vec();
        all.push(&jp);
        self.ok(&all)
    }

    fn wait_until(
        &self,
        limit: Duration,
        what: &str,
        mut check: impl FnMut(&Self) -> bool,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        while !check(self) {
            if started.elapsed() > limit {
                bail!("timed out after {limit:?} waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok(())
    }

    fn can_i(&self, who: &str, args: &[&str]) -> bool {
        let mut all = vec!["auth", "can-i"];
        all.extend_from_slice(args);
        let who = format!("--as={who}");
        all.push(&who);
        let out = self.kubectl(&all);
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(
            answer == "yes" || answer == "no",
            "kubectl {}: {answer} {}",
            all.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        answer == "yes"
    }
}

fn sorted_lines(s: &str) -> BTreeSet<String> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.trim_end_matches(" (server dry run)")
                .trim_end_matches(" created")
                .to_owned()
        })
        .collect()
}

/// A folder with `deploy` (a link to the repository's) and a kustomization listing `components`.
fn variant_dir(components: &[&str]) -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    std::os::unix::fs::symlink(deploy_dir(), dir.path().join("deploy"))?;
    let mut k = String::from("resources:\n  - deploy\ncomponents:\n");
    for c in components {
        k.push_str(&format!("  - deploy/variants/{c}\n"));
    }
    std::fs::write(dir.path().join("kustomization.yaml"), k)?;
    Ok(dir)
}

fn check_manifests(cp: &ControlPlane) -> anyhow::Result<()> {
    let deploy = deploy_dir();
    let deploy = deploy.to_str().unwrap();
    let mut names = Vec::new();
    for form in ["-f", "-k"] {
        let out = cp.kubectl(&["apply", "--dry-run=server", form, deploy, "-o", "name"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "kubectl apply --dry-run=server {form} deploy/: {stderr}"
        );
        names.push(sorted_lines(&String::from_utf8_lossy(&out.stdout)));
    }
    assert_eq!(names[0], names[1], "-f and -k apply different objects");
    for expected in [
        "daemonset.apps/kubepulse-agent",
        "deployment.apps/kubepulse-aggregator",
        "poddisruptionbudget.policy/kubepulse-aggregator",
        "service/kubepulse-aggregator",
        "service/kubepulse-aggregator-grpc",
        "apiservice.apiregistration.k8s.io/v1beta1.metrics.k8s.io",
        "apiservice.apiregistration.k8s.io/v1.metrics.k8s.io",
        "clusterrole.rbac.authorization.k8s.io/system:aggregated-metrics-reader",
    ] {
        assert!(names[0].contains(expected), "deploy/ lacks {expected}");
    }
    let rendered = cp.ok(&["kustomize", deploy]);
    assert!(!rendered.contains("insecureSkipTLSVerify: true"));

    // no-host-network: renders and passes the server-side dry run
    let v = variant_dir(&["no-host-network"])?;
    let out = cp.kubectl_in(
        Some(v.path()),
        &["apply", "--dry-run=server", "-k", ".", "-o", "yaml"],
    );
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "no-host-network variant: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(yaml.contains("--kubelet-address=$(NODE_IP):10250"));
    assert!(yaml.contains("hostNetwork: false") || !yaml.contains("hostNetwork: true"));
    // relay (with no-host-network: both patch the agent's arguments): passes the server-side
    // dry run; the agents stream to the relay Service, the relay to the aggregators
    let v = variant_dir(&["relay", "no-host-network"])?;
    let out = cp.kubectl_in(
        Some(v.path()),
        &["apply", "--dry-run=server", "-k", ".", "-o", "yaml"],
    );
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "relay variant: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "--aggregator-service=kubepulse-relay.kube-system.svc:10251",
        "- /kubepulse-relay",
        "name: kubepulse-relay",
        "kind: PodDisruptionBudget",
        "--serving-ca-file=/etc/kubepulse/serving-ca/ca.crt",
        "--kubelet-address=$(NODE_IP):10250",
    ] {
        assert!(yaml.contains(expected), "relay variant lacks {expected}");
    }
    // only the relay still streams to the aggregators' headless Service (counted in the
    // rendering: the dry run's objects repeat their arguments in an annotation)
    let rendered = cp.kubectl_in(Some(v.path()), &["kustomize", "."]);
    let yaml = String::from_utf8_lossy(&rendered.stdout);
    assert_eq!(
        yaml.matches("--aggregator-service=kubepulse-aggregator-grpc.kube-system.svc:10251")
            .count(),
        1,
        "{yaml}"
    );
    let out = cp.kubectl_in(
        Some(v.path()),
        &["apply", "--dry-run=server", "-k", ".", "-o", "name"],
    );
    let names = sorted_lines(&String::from_utf8_lossy(&out.stdout));
    for expected in [
        "deployment.apps/kubepulse-relay",
        "service/kubepulse-relay",
        "serviceaccount/kubepulse-relay",
        "poddisruptionbudget.policy/kubepulse-relay",
    ] {
        assert!(names.contains(expected), "relay variant lacks {expected}");
    }
    // cert-manager: needs cert-manager's CRDs to apply, so render only
    let v = variant_dir(&["cert-manager", "no-host-network"])?;
    let out = cp.kubectl_in(Some(v.path()), &["kustomize", "."]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "kind: Certificate",
        "--tls-cert-file=/etc/kubepulse/serving/tls.crt",
        "--tls-ca-file=/etc/kubepulse/serving/ca.crt",
        "secretName: kubepulse-aggregator-serving",
        "--kubelet-address=$(NODE_IP):10250",
    ] {
        assert!(
            yaml.contains(expected),
            "cert-manager variant lacks {expected}"
        );
    }
    assert!(!yaml.contains("--tls-bootstrap-secret"));
    assert!(
        !yaml.contains("kind: Secret\n"),
        "the bootstrap Secret is not used"
    );
    Ok(())
}

fn check_rbac(cp: &ControlPlane) {
    cp.ok(&[
        "apply",
        "-f",
        deploy_dir().join("00-rbac.yaml").to_str().unwrap(),
    ]);
    let allowed: &[(&str, &[&str])] = &[
        // the agent: only what the kubelet asks for /metrics/resource
        (AGENT_SA, &["get", "nodes", "--subresource=metrics"]),
        // the aggregator: metadata watch
        (AGGREGATOR_SA, &["list", "pods", "--all-namespaces"]),
        (AGGREGATOR_SA, &["watch", "pods", "--all-namespaces"]),
        (AGGREGATOR_SA, &["list", "nodes"]),
        (AGGREGATOR_SA, &["watch", "nodes"]),
        // the service-account issuer's keys, for verifying agent tokens locally: granted by the
        // default system:service-account-issuer-discovery binding, not by 00-rbac.yaml
        (AGGREGATOR_SA, &["get", "/.well-known/openid-configuration"]),
        (AGGREGATOR_SA, &["get", "/openid/v1/jwks"]),
        // delegated authentication and authorization
        (
            AGGREGATOR_SA,
            &["create", "tokenreviews.authentication.k8s.io"],
        ),
        (
            AGGREGATOR_SA,
            &["create", "subjectaccessreviews.authorization.k8s.io"],
        ),
        (
            AGGREGATOR_SA,
            &[
                "get",
                "configmap/extension-apiserver-authentication",
                "-n",
                NS,
            ],
        ),
        (
            AGGREGATOR_SA,
            &[
                "watch",
                "configmap/extension-apiserver-authentication",
                "-n",
                NS,
            ],
        ),
        // TLS bootstrap, named objects
        (
            AGGREGATOR_SA,
            &["get", "secret/kubepulse-aggregator-tls", "-n", NS],
        ),
        (
            AGGREGATOR_SA,
            &["patch", "secret/kubepulse-aggregator-tls", "-n", NS],
        ),
        (
            AGGREGATOR_SA,
            &["get", "configmap/kubepulse-aggregator-ca", "-n", NS],
        ),
        (
            AGGREGATOR_SA,
            &["patch", "configmap/kubepulse-aggregator-ca", "-n", NS],
        ),
        (
            AGGREGATOR_SA,
            &[
                "get",
                "apiservices.apiregistration.k8s.io/v1beta1.metrics.k8s.io",
            ],
        ),
        (
            AGGREGATOR_SA,
            &[
                "patch",
                "apiservices.apiregistration.k8s.io/v1beta1.metrics.k8s.io",
            ],
        ),
        (
            AGGREGATOR_SA,
            &[
                "get",
                "apiservices.apiregistration.k8s.io/v1.metrics.k8s.io",
            ],
        ),
        (
            AGGREGATOR_SA,
            &[
                "patch",
                "apiservices.apiregistration.k8s.io/v1.metrics.k8s.io",
            ],
        ),
    ];
    let denied: &[(&str, &[&str])] = &[
        (AGENT_SA, &["get", "nodes/proxy"]),
        (AGENT_SA, &["get", "nodes", "--subresource=proxy"]),
        (AGENT_SA, &["get", "nodes", "--subresource=stats"]),
        (AGENT_SA, &["list", "pods", "--all-namespaces"]),
        (AGENT_SA, &["get", "nodes"]),
        (AGENT_SA, &["get", "secrets", "-n", NS]),
        (
            AGENT_SA,
            &["get", "configmap/kubepulse-aggregator-ca", "-n", NS],
        ),
        (AGENT_SA, &["create", "tokenreviews.authentication.k8s.io"]),
        (AGGREGATOR_SA, &["create", "secrets", "-n", NS]),
        (AGGREGATOR_SA, &["list", "secrets", "-n", NS]),
        (AGGREGATOR_SA, &["get", "secret/other", "-n", NS]),
        (
            AGGREGATOR_SA,
            &["update", "secret/kubepulse-aggregator-tls", "-n", NS],
        ),
        (
            AGGREGATOR_SA,
            &["delete", "secret/kubepulse-aggregator-tls", "-n", NS],
        ),
        (AGGREGATOR_SA, &["create", "configmaps", "-n", NS]),
        (
            AGGREGATOR_SA,
            &[
                "patch",
                "configmap/extension-apiserver-authentication",
                "-n",
                NS,
            ],
        ),
        (AGGREGATOR_SA, &["patch", "configmap/other", "-n", NS]),
        (
            AGGREGATOR_SA,
            &["patch", "apiservices.apiregistration.k8s.io/v1.apps"],
        ),
        (
            AGGREGATOR_SA,
            &["create", "apiservices.apiregistration.k8s.io"],
        ),
        (
            AGGREGATOR_SA,
            &[
                "delete",
                "apiservices.apiregistration.k8s.io/v1.metrics.k8s.io",
            ],
        ),
        (AGGREGATOR_SA, &["get", "pods", "-n", "default"]),
        (AGGREGATOR_SA, &["delete", "pods", "-n", "default"]),
        (AGGREGATOR_SA, &["update", "nodes"]),
        (AGGREGATOR_SA, &["get", "nodes", "--subresource=metrics"]),
        (AGGREGATOR_SA, &["get", "nodes", "--subresource=proxy"]),
        (AGGREGATOR_SA, &["impersonate", "users"]),
        (
            AGGREGATOR_SA,
            &["create", "serviceaccounts/token", "-n", NS],
        ),
    ];
    let mut wrong = Vec::new();
    for (who, args) in allowed {
        if !cp.can_i(who, args) {
            wrong.push(format!("{who} should be allowed: {}", args.join(" ")));
        }
    }
    for (who, args) in denied {
        if cp.can_i(who, args) {
            wrong.push(format!("{who} must be denied: {}", args.join(" ")));
        }
    }
    assert!(wrong.is_empty(), "RBAC:\n{}", wrong.join("\n"));
    // view/edit/admin get the Metrics API through the aggregation labels
    let labels = cp.jsonpath(
        &["get", "clusterrole/system:aggregated-metrics-reader"],
        "{.metadata.labels}",
    );
    for role in ["view", "edit", "admin"] {
        assert!(
            labels.contains(&format!(
                "\"rbac.authorization.k8s.io/aggregate-to-{role}\":\"true\""
            )),
            "aggregate-to-{role}: {labels}"
        );
    }
}

/// An aggregator replica running the binary's code in this process.
struct Replica {
    https: SocketAddr,
    grpc: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Replica {
    async fn start(kubeconfig: &Path, cert_dir: &Path) -> anyhow::Result<Self> {
        let args = vec![
            "kubepulse-aggregator".to_owned(),
            "--bind-address=127.0.0.1".into(),
            "--secure-port=0".into(),
            "--grpc-bind-address=127.0.0.1".into(),
            "--grpc-port=0".into(),
            format!("--cert-dir={}", cert_dir.display()),
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--namespace={NS}"),
            format!("--tls-bootstrap-secret={SECRET}"),
            format!("--ca-bundle-configmap={CONFIGMAP}"),
            format!("--apiservice-names={}", APISERVICES.join(",")),
            "--node-ttl-min=30s".into(),
        ];
        let config = kubepulse_aggregator::Config::try_parse_from(args)?;
        config
            .validate()
            .map_err(|p| anyhow::anyhow!("aggregator config: {}", p.join("; ")))?;
        let listeners = kubepulse_aggregator::Listeners::bind(&config).await?;
        let https = listeners.https.local_addr()?;
        let grpc = listeners.grpc.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(kubepulse_aggregator::run(config, listeners, async {
            let _ = stopped.await;
        }));
        Ok(Self {
            https,
            grpc,
            stop,
            task,
        })
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .context("replica did not stop")?
            .context("replica task")?
    }
}

/// A TLS handshake with `addr` trusting only `ca_pem`, for `name`: the certificate chains to
/// the CA and carries the name.
async fn tls_verifies(addr: SocketAddr, ca_pem: &str, name: &str) -> anyhow::Result<()> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::try_from(name.to_owned())?, tcp)
        .await
        .with_context(|| format!("TLS to {addr} as {name}"))?;
    Ok(())
}

fn secret_ca(cp: &ControlPlane) -> String {
    let b64 = cp.jsonpath(&["-n", NS, "get", "secret", SECRET], "{.data.ca\\.crt}");
    decode_b64(&b64)
}

fn decode_b64(b64: &str) -> String {
    let out = Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin.take().unwrap().write_all(b64.trim().as_bytes())?;
            c.wait_with_output()
        })
        .expect("base64 -d");
    String::from_utf8(out.stdout).expect("PEM")
}

fn available(cp: &ControlPlane, apiservice: &str) -> bool {
    cp.jsonpath(
        &["get", "apiservice", apiservice],
        "{.status.conditions[?(@.type==\"Available\")].status}",
    ) == "True"
}

async fn check_tls_bootstrap(cp: &ControlPlane) -> anyhow::Result<()> {
    let deploy = deploy_dir();
    // metrics-server is installed (its APIService as its manifests ship it)...
    cp.apply_stdin(
        "apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata:\n  name: v1beta1.metrics.k8s.io\nspec:\n  group: metrics.k8s.io\n  version: v1beta1\n  groupPriorityMinimum: 100\n  versionPriority: 100\n  insecureSkipTLSVerify: true\n  service: {name: metrics-server, namespace: kube-system}\n",
    );
    // ...and kubepulse is applied over it
    for f in ["10-tls.yaml", "40-apiservice.yaml"] {
        cp.ok(&["apply", "-f", deploy.join(f).to_str().unwrap()]);
    }
    for a in APISERVICES {
        let spec = cp.jsonpath(
            &["get", "apiservice", a],
            "{.spec.insecureSkipTLSVerify}/{.spec.service.name}/{.spec.caBundle}",
        );
        // (false is omitted from the object)
        assert!(
            spec == format!("/{SERVICE}/") || spec == format!("false/{SERVICE}/"),
            "{a} after apply: insecureSkipTLSVerify/service/caBundle = {spec}"
        );
    }
    // No kube-proxy or pod network here: the Service resolves to loopback (ExternalName), and
    // the APIServices' port is the replica's. kube-apiserver still verifies the certificate
    // for `kubepulse-aggregator.kube-system.svc`.
    cp.ok(&[
        "-n",
        NS,
        "create",
        "service",
        "externalname",
        SERVICE,
        "--external-name=127.0.0.1",
    ]);
    let token = cp.ok(&[
        "-n",
        NS,
        "create",
        "token",
        "kubepulse-aggregator",
        "--duration=1h",
    ]);
    let sa_kubeconfig =
        cp.write_kubeconfig("aggregator.kubeconfig", &format!("token: {}", token.trim()))?;

    // two replicas at once, under the aggregator's own service account
    let dir = tempfile::tempdir()?;
    let (d0, d1) = (dir.path().join("r0"), dir.path().join("r1"));
    let (r0, r1) = tokio::join!(
        Replica::start(&sa_kubeconfig, &d0),
        Replica::start(&sa_kubeconfig, &d1),
    );
    let (r0, r1) = (r0?, r1?);
    for a in APISERVICES {
        let patch = format!(
            "{{\"spec\":{{\"service\":{{\"port\":{}}}}}}}",
            r0.https.port()
        );
        cp.ok(&["patch", "apiservice", a, "--type=merge", "-p", &patch]);
    }
    let ca = secret_ca(cp);
    assert!(
        ca.starts_with("-----BEGIN CERTIFICATE-----"),
        "Secret ca.crt: {ca}"
    );
    cp.wait_until(
        Duration::from_secs(60),
        "the CA in the ConfigMap and caBundle",
        |cp| {
            let cm = cp.jsonpath(
                &["-n", NS, "get", "configmap", CONFIGMAP],
                "{.data.ca\\.crt}",
            );
            cm == ca
                && APISERVICES.iter().all(|a| {
                    decode_b64(&cp.jsonpath(&["get", "apiservice", a], "{.spec.caBundle}")) == ca
                })
        },
    )?;
    for a in APISERVICES {
        let insecure = cp.jsonpath(&["get", "apiservice", a], "{.spec.insecureSkipTLSVerify}");
        assert!(
            insecure.is_empty() || insecure == "false",
            "{a}: insecureSkipTLSVerify={insecure}"
        );
    }
    // both replicas serve certificates from that one CA, for both Services' names
    for r in [&r0, &r1] {
        tls_verifies(r.https, &ca, "kubepulse-aggregator.kube-system.svc").await?;
        tls_verifies(
            r.https,
            &ca,
            "kubepulse-aggregator.kube-system.svc.cluster.local",
        )
        .await?;
        tls_verifies(r.grpc, &ca, "kubepulse-aggregator-grpc.kube-system.svc").await?;
        assert!(
            tls_verifies(r.https, &ca, "metrics-server.kube-system.svc")
                .await
                .is_err()
        );
    }
    cp.wait_until(
        Duration::from_secs(90),
        "both APIServices Available=True",
        |cp| APISERVICES.iter().all(|a| available(cp, a)),
    )?;
    // kube-apiserver proxies to the replica, verifying its certificate with caBundle
    for v in ["v1beta1", "v1"] {
        let body = cp.ok(&["get", "--raw", &format!("/apis/metrics.k8s.io/{v}/nodes")]);
        assert!(body.contains("NodeMetricsList"), "{v}: {body}");
    }

    // re-applying the manifests (client-side, then server-side) keeps what the bootstrap filled
    for extra in [None, Some("--server-side=true --force-conflicts")] {
        let mut args = vec!["apply"];
        args.extend(extra.iter().flat_map(|e| e.split(' ')));
        for f in ["10-tls.yaml", "40-apiservice.yaml"] {
            let path = deploy.join(f);
            let mut a = args.clone();
            a.extend(["-f", path.to_str().unwrap()]);
            cp.ok(&a);
        }
        assert_eq!(secret_ca(cp), ca, "re-apply {extra:?}: Secret");
        let cm = cp.jsonpath(
            &["-n", NS, "get", "configmap", CONFIGMAP],
            "{.data.ca\\.crt}",
        );
        assert_eq!(cm, ca, "re-apply {extra:?}: ConfigMap");
        for a in APISERVICES {
            let bundle = cp.jsonpath(&["get", "apiservice", a], "{.spec.caBundle}");
            assert_eq!(decode_b64(&bundle), ca, "re-apply {extra:?}: {a} caBundle");
        }
    }
    for a in APISERVICES {
        let patch = format!(
            "{{\"spec\":{{\"service\":{{\"port\":{}}}}}}}",
            r0.https.port()
        );
        cp.ok(&["patch", "apiservice", a, "--type=merge", "-p", &patch]);
    }

    // an agent that trusts only the published CA streams a node; it shows through kube-apiserver
    let ca_file = dir.path().join("aggregator-ca.crt");
    std::fs::write(
        &ca_file,
        cp.jsonpath(
            &["-n", NS, "get", "configmap", CONFIGMAP],
            "{.data.ca\\.crt}",
        ),
    )?;
    let fleet = kubepulse_tests::sim::start(kubepulse_tests::sim::SimOptions {
        fleet: kubepulse_tests::sim::FleetConfig {
            nodes: 1,
            pods_per_node: 2,
            refresh_ms: 1000,
            ..Default::default()
        },
        token: Some("kubelet-token".to_owned()),
        ..Default::default()
    })
    .await?;
    std::fs::write(dir.path().join("kubelet-ca.crt"), &fleet.ca_pem)?;
    std::fs::write(dir.path().join("token"), "kubelet-token")?;
    let node = fleet.nodes[0].name.clone();
    cp.apply_stdin(&format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {node}\n"
    ));
    // the agent's identity: its pod's projected token, as the DaemonSet mounts it
    let tokens = dir.path().join("agent-tokens");
    kubepulse_tests::control_plane::agent_identity::provision(
        &cp.inner.client().await?,
        std::slice::from_ref(&node),
        &tokens,
    )
    .await?;
    let agent_config = kubepulse_agent::Config::try_parse_from([
        "kubepulse-agent".to_owned(),
        format!("--node-name={node}"),
        format!("--kubelet-address={}", fleet.nodes[0].address),
        format!(
            "--kubelet-certificate-authority={}",
            dir.path().join("kubelet-ca.crt").display()
        ),
        format!(
            "--kubelet-token-file={}",
            dir.path().join("token").display()
        ),
        format!("--aggregator-endpoints={},{}", r0.grpc, r1.grpc),
        format!("--aggregator-ca-file={}", ca_file.display()),
        format!(
            "--aggregator-token-file={}",
            tokens.join(format!("{node}.token")).display()
        ),
        "--aggregator-tls-server-name=kubepulse-aggregator-grpc.kube-system.svc".into(),
        "--health-address=127.0.0.1:0".into(),
    ])?;
    agent_config
        .validate()
        .map_err(|p| anyhow::anyhow!("agent config: {}", p.join("; ")))?;
    let (agent_stop, agent_stopped) = oneshot::channel::<()>();
    let agent = tokio::spawn(kubepulse_agent::run(agent_config, async {
        let _ = agent_stopped.await;
    }));
    let path = format!("/apis/metrics.k8s.io/v1beta1/nodes/{node}");
    let shown = cp.wait_until(
        Duration::from_secs(60),
        "the agent's node through kube-apiserver",
        |cp| cp.kubectl(&["get", "--raw", &path]).status.success(),
    );
    let _ = agent_stop.send(());
    let _ = agent.await;
    shown?;

    // negative control: same endpoint and CA, but a Service name the certificate lacks
    cp.ok(&[
        "-n",
        NS,
        "create",
        "service",
        "externalname",
        "kubepulse-imposter",
        "--external-name=127.0.0.1",
    ]);
    cp.ok(&[
        "patch",
        "apiservice",
        "v1.metrics.k8s.io",
        "--type=merge",
        "-p",
        r#"{"spec":{"service":{"name":"kubepulse-imposter"}}}"#,
    ]);
    cp.wait_until(
        Duration::from_secs(30),
        "the proxy to refuse the imposter name",
        |cp| {
            !cp.kubectl(&["get", "--raw", "/apis/metrics.k8s.io/v1/nodes"])
                .status
                .success()
        },
    )?;
    // the aggregator leaves an APIService that is not its own alone
    assert_eq!(
        decode_b64(&cp.jsonpath(
            &["get", "apiservice", "v1.metrics.k8s.io"],
            "{.spec.caBundle}"
        )),
        ca
    );

    r0.stop().await?;
    r1.stop().await?;
    // the documented rollback patch is accepted
    cp.ok(&[
        "patch",
        "apiservice",
        "v1beta1.metrics.k8s.io",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/caBundle"},{"op":"replace","path":"/spec/insecureSkipTLSVerify","value":true},{"op":"replace","path":"/spec/service/name","value":"metrics-server"}]"#,
    ]);
    Ok(())
}

/// Rounds of two concurrent bootstraps against an absent Secret (admin: the shipped RBAC cannot
/// create it) and an emptied one (the service account): one Secret, one CA, every time.
async fn check_ca_race(cp: &ControlPlane) -> anyhow::Result<()> {
    use kubepulse_aggregator::bootstrap::{client, ensure_ca};
    let admin = client(Some(&cp.admin_kubeconfig())).await?;
    let sa = client(Some(&cp.dir().join("aggregator.kubeconfig"))).await?;
    for round in 0..4 {
        let absent = round % 2 == 0;
        let who = if absent { &admin } else { &sa };
        if absent {
            cp.ok(&["-n", NS, "delete", "secret", SECRET, "--ignore-not-found"]);
        } else {
            cp.ok(&[
                "-n",
                NS,
                "patch",
                "secret",
                SECRET,
                "--type=json",
                "-p",
                r#"[{"op":"remove","path":"/data"}]"#,
            ]);
        }
        let (a, b) = tokio::join!(ensure_ca(who, NS, SECRET), ensure_ca(who, NS, SECRET));
        let (a, b) = (a?, b?);
        assert_eq!(a.cert_pem, b.cert_pem, "round {round}: two CAs");
        assert_eq!(
            secret_ca(cp),
            a.cert_pem,
            "round {round}: the Secret holds another CA"
        );
        let secrets = cp.ok(&["-n", NS, "get", "secrets", "-o", "name"]);
        assert_eq!(
            secrets.lines().filter(|l| l.contains(SECRET)).count(),
            1,
            "round {round}: {secrets}"
        );
    }
    // the shipped RBAC cannot create the Secret, and says what to do
    cp.ok(&["-n", NS, "delete", "secret", SECRET]);
    let err = ensure_ca(&sa, NS, SECRET).await.unwrap_err();
    assert!(format!("{err:#}").contains("10-tls.yaml"), "{err:#}");
    Ok(())
}

// kubectl runs block the test's own task: the in-process replicas keep the other workers
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deploy_manifests_against_a_real_apiserver() -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_test_writer()
        .try_init();
    let Some(cp) = ControlPlane::start().await? else {
        return Ok(());
    };
    let result = async {
        check_manifests(&cp)?;
        check_rbac(&cp);
        check_tls_bootstrap(&cp).await?;
        check_ca_race(&cp).await
    }
    .await;
    if result.is_err() {
        eprintln!("kube-apiserver log tail:\n{}", cp.inner.log_tails(30));
    }
    result
}
