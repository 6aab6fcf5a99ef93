//! A real Kubernetes control plane for the end-to-end tests: etcd, kube-apiserver and
//! kube-controller-manager (HPA, deployment and replicaset controllers only) from
//! `tests/tools/build.sh`, on free loopback ports, with certificates made at run time, plus the
//! pieces that put kubepulse behind it as a cluster would: Node and Pod objects matching the
//! simulated fleet, a Service + APIServices routed to the aggregator replicas, and a kubelet
//! player for pods that controllers create.
//!
//! Every process writes its log into the control plane's folder; [`ControlPlane::log_tails`]
//! is what a failing test prints. Processes run in their own process groups and are killed on
//! drop, and through `setpriv --pdeathsig` also when the test process dies ([`process`]).
//! The recipe (flags, routing, HPA without kubelets) is `shared/reference/control-plane.md`.

pub mod agent_identity;
pub mod binaries;
pub mod forwarder;
pub mod objects;
pub mod pki;
pub mod process;
pub mod stack;
pub mod workload;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;

pub use binaries::Binaries;
use pki::Pki;
use process::Proc;

/// Namespace of the kubepulse Service the APIServices point at.
pub const SERVICE_NAMESPACE: &str = "kube-system";
/// Name of that Service (not `deploy/`'s name, so `kubectl apply --dry-run=server -f deploy/`
/// never touches the test's registration).
pub const SERVICE_NAME: &str = "kubepulse-test";

/// A running control plane. Dropping it kills every process; the folder (certificates, logs,
/// etcd data, kubeconfig) is removed with it unless `KEEP_CONTROL_PLANE=1`.
pub struct ControlPlane {
    /// The binaries in use.
    pub binaries: Binaries,
    /// Certificates and keys.
    pub pki: Pki,
    /// kube-apiserver's `127.0.0.1:port`.
    pub apiserver: SocketAddr,
    /// etcd's client `127.0.0.1:port`.
    pub etcd: SocketAddr,
    /// An admin (`system:masters`) kubeconfig.
    pub kubeconfig: PathBuf,
    /// Where everything lives; logs are `<dir>/logs/*.log`.
    pub dir: PathBuf,
    /// Keep `dir` when dropped (also with `KEEP_CONTROL_PLANE=1`).
    pub keep_dir: bool,
    procs: Mutex<Vec<Proc>>,
    /// kube-apiserver's arguments, to start it again after [`ControlPlane::stop_kube_apiserver`].
    apiserver_args: Vec<String>,
    started: Instant,
}

/// How long each component may take to become healthy.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// etcd `/health`.
    pub etcd: Duration,
    /// kube-apiserver `/readyz` and its published configuration.
    pub apiserver: Duration,
    /// kube-controller-manager starting its controllers.
    pub controller_manager: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            etcd: Duration::from_secs(30),
            apiserver: Duration::from_secs(120),
            controller_manager: Duration::from_secs(60),
        }
    }
}

/// Why a start attempt failed; a taken port is retried with new ports.
enum StartError {
    PortTaken(anyhow::Error),
    Other(anyhow::Error),
}

impl StartError {
    fn into_error(self) -> anyhow::Error {
        match self {
            StartError::PortTaken(e) | StartError::Other(e) => e,
        }
    }
}

impl ControlPlane {
    /// Starts etcd → kube-apiserver → kube-controller-manager in `dir` (created; must be empty
    /// or absent) and waits until the apiserver is ready and has published what aggregated API
    /// servers need. A port taken between choosing and binding is retried with new ports.
    pub async fn start(binaries: Binaries, dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(binaries, dir, Timeouts::default()).await
    }

    /// [`ControlPlane::start`] with other [`Timeouts`].
    pub async fn start_with(
        binaries: Binaries,
        dir: &Path,
        timeouts: Timeouts,
    ) -> anyhow::Result<Self> {
        let started = Instant::now();
        std::fs::create_dir_all(dir.join("logs"))
            .with_context(|| format!("create {}", dir.display()))?;
        let pki = Pki::generate(
            &dir.join("pki"),
            &format!("{SERVICE_NAME}.{SERVICE_NAMESPACE}.svc"),
        )?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::try_start(&binaries, &pki, dir, attempt, started, timeouts).await {
                Ok(cp) => return Ok(cp),
                Err(StartError::PortTaken(err)) if attempt < 3 => {
                    eprintln!("control plane: {err:#}; retrying with other ports");
                }
                Err(StartError::PortTaken(err) | StartError::Other(err)) => return Err(err),
            }
        }
    }

    async fn try_start(
        binaries: &Binaries,
        pki: &Pki,
        dir: &Path,
        attempt: u32,
        started: Instant,
        timeouts: Timeouts,
    ) -> Result<Self, StartError> {
        let other = StartError::Other;
        let [etcd_port, peer_port, api_port] = free_ports().map_err(other)?;
        let etcd = SocketAddr::from(([127, 0, 0, 1], etcd_port));
        let apiserver = SocketAddr::from(([127, 0, 0, 1], api_port));
        let kubeconfig = dir.join("admin.kubeconfig");
        write_kubeconfig(&kubeconfig, apiserver, pki).map_err(other)?;
        // A failed attempt kills its processes but keeps the folder: certificates for the
        // next attempt, logs for the error message.
        let mut cp = Self {
            binaries: binaries.clone(),
            pki: pki.clone(),
            apiserver,
            etcd,
            kubeconfig,
            dir: dir.to_owned(),
            keep_dir: true,
            procs: Mutex::new(Vec::new()),
            apiserver_args: Vec::new(),
            started,
        };
        let log = |name: &str| dir.join("logs").join(format!("{name}.log"));

        // etcd
        let data = dir.join(format!("etcd-data-{attempt}"));
        let peer = format!("http://127.0.0.1:{peer_port}");
        let client = format!("http://{etcd}");
        cp.spawn(
            "etcd",
            &binaries.etcd,
            &[
                "--name=t0".into(),
                format!("--data-dir={}", data.display()),
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
                format!("--listen-client-urls={client}"),
                format!("--advertise-client-urls={client}"),
                format!("--listen-peer-urls={peer}"),
                format!("--initial-advertise-peer-urls={peer}"),
                format!("--initial-cluster=t0={peer}"),
                "--quota-backend-bytes=1073741824".into(),
            ],
            &log("etcd"),
        )?;
        cp.wait_for("etcd", timeouts.etcd, || async {
            Ok(http_get_plain(etcd, "/health")
                .await
                .ok()
                .filter(|b| b.contains("\"health\":\"true\""))
                .map(|_| ()))
        })
        .await?;

        // kube-apiserver
        let p = pki;
        cp.apiserver_args = vec![
            format!("--etcd-servers={client}"),
            "--endpoint-reconciler-type=none".into(),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            p.flag("tls-cert-file", "apiserver.crt"),
            p.flag("tls-private-key-file", "apiserver.key"),
            p.flag("client-ca-file", "ca.crt"),
            // an https issuer is enough for /.well-known/openid-configuration and
            // /openid/v1/jwks to be served (jwks_uri derived from it; --service-account-jwks-uri
            // is only for keys published elsewhere): agents' tokens are verified against them
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            p.flag("service-account-key-file", "sa.pub"),
            p.flag("service-account-signing-key-file", "sa.key"),
            "--authorization-mode=RBAC".into(),
            "--disable-admission-plugins=ServiceAccount".into(),
            p.flag("requestheader-client-ca-file", "front-proxy-ca.crt"),
            "--requestheader-allowed-names=front-proxy-client".into(),
            "--requestheader-username-headers=X-Remote-User".into(),
            "--requestheader-group-headers=X-Remote-Group".into(),
            "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
            p.flag("proxy-client-cert-file", "front-proxy-client.crt"),
            p.flag("proxy-client-key-file", "front-proxy-client.key"),
            "--enable-priority-and-fairness=false".into(),
            "--max-requests-inflight=0".into(),
            "--max-mutating-requests-inflight=0".into(),
        ];
        cp.spawn(
            "kube-apiserver",
            &binaries.kube_apiserver,
            &cp.apiserver_args,
            &log("kube-apiserver"),
        )?;
        let client = cp.client().await.map_err(other)?;
        cp.wait_readyz(&client, "kube-apiserver /readyz", timeouts.apiserver)
            .await?;
        // what aggregated API servers read for requestheader authentication
        cp.wait_for(
            "configmap kube-system/extension-apiserver-authentication",
            timeouts.apiserver,
            || {
                let client = client.clone();
                async move {
                    let api = kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(
                        client,
                        "kube-system",
                    );
                    Ok(api
                        .get_opt("extension-apiserver-authentication")
                        .await
                        .ok()
                        .flatten()
                        .and_then(|cm| cm.data)
                        .filter(|d| d.contains_key("requestheader-client-ca-file"))
                        .map(|_| ()))
                }
            },
        )
        .await?;

        // kube-controller-manager
        cp.spawn(
            "kube-controller-manager",
            &binaries.kube_controller_manager,
            &[
                format!("--kubeconfig={}", cp.kubeconfig.display()),
                "--leader-elect=false".into(),
                "--controllers=horizontal-pod-autoscaler-controller,deployment-controller,replicaset-controller".into(),
                "--bind-address=127.0.0.1".into(),
                "--secure-port=0".into(),
                "--horizontal-pod-autoscaler-sync-period=2s".into(),
                "--horizontal-pod-autoscaler-downscale-stabilization=0s".into(),
                "--horizontal-pod-autoscaler-cpu-initialization-period=10s".into(),
                "--horizontal-pod-autoscaler-initial-readiness-delay=5s".into(),
                "--kube-api-qps=100".into(),
                "--kube-api-burst=200".into(),
            ],
            &log("kube-controller-manager"),
        )?;
        // KCM serves no port here (--secure-port=0): it is up once it runs its controllers.
        cp.wait_for(
            "kube-controller-manager",
            timeouts.controller_manager,
            || {
                let log = log("kube-controller-manager");
                async move {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    Ok((text.contains("Started controller")
                        || text.contains("Starting controller"))
                    .then_some(()))
                }
            },
        )
        .await?;
        eprintln!(
            "control plane: etcd {etcd}, kube-apiserver https://{apiserver}, kube-controller-manager \
             up in {:.1}s (logs: {})",
            started.elapsed().as_secs_f64(),
            dir.join("logs").display()
        );
        cp.keep_dir = false;
        Ok(cp)
    }

    fn spawn(
        &self,
        name: &str,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<(), StartError> {
        let proc = Proc::spawn(name, program, args, log).map_err(StartError::Other)?;
        self.procs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(proc);
        Ok(())
    }

    /// Polls `check` until it answers `Some`; fails at once when a process exited (naming a
    /// taken port when that is why), or after `timeout`, with the log tails.
    /// Waits until kube-apiserver answers `/readyz` through `client`.
    async fn wait_readyz(
        &self,
        client: &kube::Client,
        what: &str,
        timeout: Duration,
    ) -> Result<(), StartError> {
        self.wait_for(what, timeout, || {
            let client = client.clone();
            async move {
                let req = http::Request::get("/readyz").body(Vec::new())?;
                Ok(client.request_text(req).await.ok().map(|_| ()))
            }
        })
        .await
    }

    async fn wait_for<F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: F,
    ) -> Result<(), StartError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Option<()>>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(())) = check().await {
                return Ok(());
            }
            if let Some(err) = self.exited_error() {
                return Err(err);
            }
            if Instant::now() > deadline {
                return Err(StartError::Other(anyhow::anyhow!(
                    "{what} not healthy after {timeout:?}\n{}",
                    self.log_tails(40)
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn exited_error(&self) -> Option<StartError> {
        let mut procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        for proc in procs.iter_mut() {
            if let Some(status) = proc.exited() {
                let tail = proc.log_tail(40);
                let taken = tail.contains("address already in use");
                let err = anyhow::anyhow!(
                    "{} exited during start-up ({status}){}; last lines of {}:\n{tail}",
                    proc.name,
                    if taken { ": its port was taken" } else { "" },
                    proc.log.display()
                );
                return Some(if taken {
                    StartError::PortTaken(err)
                } else {
                    StartError::Other(err)
                });
            }
        }
        None
    }

    /// A control plane shared by every test of one test binary, started on first use in
    /// `base/control-plane-<pid>` (older folders of dead runs are removed). It lives until the
    /// process exits; its processes die with the process (parent-death signal). Returns the
    /// start error to every caller if it could not start.
    pub fn shared(binaries: &Binaries, base: &Path) -> anyhow::Result<&'static ControlPlane> {
        static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
        let result = SHARED.get_or_init(|| {
            let binaries = binaries.clone();
            let base = base.to_owned();
            std::thread::spawn(move || {
                remove_stale_dirs(&base);
                let dir = base.join(format!("control-plane-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                runtime
                    .block_on(ControlPlane::start(binaries, &dir))
                    .map_err(|e| format!("{e:#}"))
            })
            .join()
            .unwrap_or_else(|_| Err("control plane start panicked".to_owned()))
        });
        result
            .as_ref()
            .map_err(|e| anyhow::anyhow!("the shared control plane did not start: {e}"))
    }

    /// A kube client acting as admin. Make one per tokio runtime.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// Runs kubectl with the admin kubeconfig (blocking; see `kubectl_async`).
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<Output> {
        std::process::Command::new(&self.binaries.kubectl)
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .arg("--request-timeout=20s")
            .args(args)
            .output()
            .with_context(|| format!("run kubectl {}", args.join(" ")))
    }

    /// [`ControlPlane::kubectl`] off the async threads; `Err` unless kubectl exits 0, with its
    /// stderr.
    pub async fn kubectl_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let kubectl = self.binaries.kubectl.clone();
        let kubeconfig = self.kubeconfig.clone();
        let owned: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(&kubectl)
                .arg(format!("--kubeconfig={}", kubeconfig.display()))
                .arg("--request-timeout=20s")
                .args(&owned)
                .output()
        })
        .await??;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        anyhow::ensure!(
            out.status.success(),
            "kubectl {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(stdout)
    }

    /// Whether every process still runs (`Err` names the one that exited, with its log).
    pub fn check_alive(&self) -> anyhow::Result<()> {
        self.exited_error().map_or(Ok(()), |e| Err(e.into_error()))
    }

    /// The last `lines` lines of every process's log, for a failing test's output.
    pub fn log_tails(&self, lines: usize) -> String {
        let procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        for proc in procs.iter() {
            out.push_str(&format!(
                "---- last {lines} lines of {} ({})\n{}\n",
                proc.name,
                proc.log.display(),
                proc.log_tail(lines)
            ));
        }
        out
    }

    /// Process ids (etcd, kube-apiserver, kube-controller-manager).
    pub fn pids(&self) -> Vec<u32> {
        let procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        procs.iter().filter_map(Proc::id).collect()
    }

    /// Seconds since start began.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Kills kube-apiserver (SIGKILL to its process group, as a crashed or evicted API server);
    /// etcd and kube-controller-manager keep running. [`ControlPlane::start_kube_apiserver`]
    /// brings it back on the same port.
    pub fn stop_kube_apiserver(&self) -> anyhow::Result<()> {
        let mut procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        let at = procs
            .iter()
            .position(|p| p.name == "kube-apiserver")
            .context("kube-apiserver is not running")?;
        procs.remove(at).kill();
        Ok(())
    }

    /// Starts kube-apiserver again with its first arguments (same port, certificates and etcd)
    /// and waits until `/readyz` answers; returns how long that took.
    pub async fn start_kube_apiserver(&self, timeout: Duration) -> anyhow::Result<Duration> {
        let begun = Instant::now();
        {
            let procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
            anyhow::ensure!(
                !procs.iter().any(|p| p.name == "kube-apiserver"),
                "kube-apiserver is already running"
            );
        }
        let log = self.dir.join("logs").join("kube-apiserver.log");
        self.spawn(
            "kube-apiserver",
            &self.binaries.kube_apiserver,
            &self.apiserver_args,
            &log,
        )
        .map_err(StartError::into_error)?;
        let client = self.client().await?;
        self.wait_readyz(&client, "kube-apiserver /readyz after a restart", timeout)
            .await
            .map_err(StartError::into_error)?;
        Ok(begun.elapsed())
    }

    /// Kills every process (also done on drop).
    pub fn stop(&self) {
        let mut procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(mut proc) = procs.pop() {
            proc.kill();
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
        if std::env::var("KEEP_CONTROL_PLANE").is_ok_and(|v| v == "1") {
            eprintln!("control plane: kept {}", self.dir.display());
        } else if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Three distinct free loopback ports (held together while choosing, so they differ; another
/// process may still take one before the server binds it, which start-up detects and retries).
fn free_ports() -> anyhow::Result<[u16; 3]> {
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind(("127.0.0.1", 0)))
        .collect::<Result<_, _>>()
        .context("find free loopback ports")?;
    let mut ports = [0u16; 3];
    for (p, l) in ports.iter_mut().zip(&listeners) {
        *p = l.local_addr()?.port();
    }
    Ok(ports)
}

fn write_kubeconfig(path: &Path, apiserver: SocketAddr, pki: &Pki) -> anyhow::Result<()> {
    std::fs::write(
        path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kubepulse-test\n  cluster:\n    \
             server: https://{apiserver}\n    certificate-authority: {}\nusers:\n- name: admin\n  \
             user:\n    client-certificate: {}\n    client-key: {}\ncontexts:\n- name: \
             kubepulse-test\n  context: {{cluster: kubepulse-test, user: admin}}\n\
             current-context: kubepulse-test\n",
            pki.path("ca.crt").display(),
            pki.path("admin.crt").display(),
            pki.path("admin.key").display(),
        ),
    )
    .with_context(|| format!("write {}", path.display()))
}

/// A plain-HTTP GET (etcd's health endpoint), body as text.
async fn http_get_plain(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
            .await??;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut buf)).await??;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Removes `base/control-plane-<pid>` folders whose process is gone.
fn remove_stale_dirs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("control-plane-")
            && pid.parse::<u32>().is_ok()
            && !Path::new("/proc").join(pid).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
