//! TLS bootstrap for in-cluster installs: kube-apiserver and the agents verify the aggregator's
//! certificate, with no `insecureSkipTLSVerify` anywhere.
//!
//! 1. The serving CA lives in a Secret (`--tls-bootstrap-secret`, keys `ca.crt`, `ca.key`). The
//!    first replica to start finds it absent or empty, generates a CA and writes it with a
//!    precondition (create, or a patch carrying the Secret's `resourceVersion`); a replica that
//!    loses that race gets 409, reads the winner's CA and uses it. Every replica therefore ends up
//!    with the same CA, whatever the interleaving.
//! 2. Each replica signs its own serving certificate with that CA, in memory, for the DNS names
//!    of the Services (`--service-names`: `<svc>`, `<svc>.<ns>`, `<svc>.<ns>.svc`,
//!    `<svc>.<ns>.svc.<cluster-domain>`). kube-apiserver verifies `<svc>.<ns>.svc` of the
//!    APIService's Service; agents verify the host of their `--aggregator-service`.
//! 3. A background task keeps the CA certificate (never the key) in the ConfigMap the agents
//!    mount (`--ca-bundle-configmap`, key `ca.crt`) and in `spec.caBundle` of the APIServices
//!    (`--apiservice-names`), every [`PUBLISH_PERIOD`]. An APIService is touched only while it
//!    points at this aggregator's Service, so installing next to metrics-server never breaks it.
//!
//! With `--tls-cert-file` (e.g. from cert-manager) instead of the Secret, `--tls-ca-file` names
//! the CA that is published the same way.
//!
//! The RBAC this needs is `get` and `patch` on those named objects (deploy/00-rbac.yaml); the
//! Secret and ConfigMap are shipped empty (deploy/10-tls.yaml) so that no `create` is needed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::{APIService, APIServiceSpec};
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

use crate::Config;
use crate::tls::CertKey;

/// How often the CA bundle is re-published (ConfigMap, APIServices).
pub const PUBLISH_PERIOD: Duration = Duration::from_secs(10);
/// Lifetime of the bootstrap CA.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
use kubepulse_shell::certs::BACKDATE;
pub use kubepulse_shell::certs::{SERVING_VALIDITY, serving_names};
/// Key names in the Secret and the ConfigMap.
pub const CA_CERT_KEY: &str = "ca.crt";
/// The CA private key's key in the Secret.
pub const CA_KEY_KEY: &str = "ca.key";
/// The field manager named in the API server's managedFields.
const FIELD_MANAGER: &str = "kubepulse-aggregator";

/// What to bootstrap and publish, from the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Namespace of the Secret, the ConfigMap and the Services.
    pub namespace: String,
    /// Secret holding the CA (own-CA mode).
    pub ca_secret: Option<String>,
    /// CA of `--tls-cert-file` to publish (bring-your-own-certificate mode).
    pub ca_file: Option<PathBuf>,
    /// ConfigMap the CA certificate is published to.
    pub ca_configmap: Option<String>,
    /// The Services whose names the serving certificate carries; the first is the one the
    /// APIServices point at.
    pub services: Vec<String>,
    /// The cluster's DNS domain.
    pub cluster_domain: String,
    /// APIServices whose `caBundle` is kept.
    pub apiservices: Vec<String>,
    /// Kubeconfig to reach the API server (in-cluster configuration when absent).
    pub kubeconfig: Option<PathBuf>,
}

impl Settings {
    /// The bootstrap part of the configuration; `None` when there is nothing to do.
    pub fn from_config(config: &Config) -> Option<Self> {
        let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        let settings = Self {
            namespace: config.namespace.clone(),
            ca_secret: nonempty(&config.tls_bootstrap_secret),
            ca_file: config.tls_ca_file.clone(),
            ca_configmap: nonempty(&config.ca_bundle_configmap),
            services: config.service_names.clone(),
            cluster_domain: config.cluster_domain.clone(),
            apiservices: config.apiservice_names.clone(),
            kubeconfig: config.kubeconfig.clone(),
        };
        let anything = settings.ca_secret.is_some()
            || settings.ca_configmap.is_some()
            || !settings.apiservices.is_empty();
        anything.then_some(settings)
    }

    /// The DNS names the serving certificate carries.
    pub fn dns_names(&self) -> Vec<String> {
        serving_names(&self.services, &self.namespace, &self.cluster_domain)
    }
}

/// A CA certificate and its key, PEM.
#[derive(Clone)]
pub struct CaPair {
    /// CA certificate, PEM.
    pub cert_pem: String,
    /// CA private key, PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for CaPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaPair").finish_non_exhaustive()
    }
}

/// A new self-signed CA (ECDSA P-256), valid from `now - 1h` for [`CA_VALIDITY`].
pub fn new_ca(now: SystemTime) -> anyhow::Result<CaPair> {
    let key = KeyPair::generate().context("generate CA key")?;
    let mut params = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    let stamp = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("kubepulse-aggregator-ca@{stamp}"),
    );
    params
        .distinguished_name
        .push(DnType::OrganizationName, "kubepulse");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + CA_VALIDITY).into();
    let cert = params.self_signed(&key).context("self-sign CA")?;
    Ok(CaPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A serving certificate for `names`, signed by `ca` ([`kubepulse_shell::certs::issue_serving`]).
pub fn issue_serving(ca: &CaPair, names: &[String], now: SystemTime) -> anyhow::Result<CertKey> {
    kubepulse_shell::certs::issue_serving(&ca.cert_pem, &ca.key_pem, names, now)
}

/// The certificate parses, is a CA, and its public key is the key's.
pub fn check_pair(ca: &CaPair) -> anyhow::Result<()> {
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(ca.cert_pem.as_bytes()).context("CA certificate PEM")?;
    let cert = pem.parse_x509().context("CA certificate")?;
    anyhow::ensure!(cert.is_ca(), "the certificate is not a CA");
    let key = KeyPair::from_pem(&ca.key_pem).context("CA key PEM")?;
    anyhow::ensure!(
        cert.public_key().subject_public_key.data.as_ref() == key.public_key_raw(),
        "the key does not belong to the certificate"
    );
    Ok(())
}

/// What to do with one APIService.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiServiceAction {
    /// It points at our Service and its caBundle is already ours.
    UpToDate,
    /// It points at our Service; set caBundle (and turn insecureSkipTLSVerify off).
    Patch,
    /// It points elsewhere (e.g. still at metrics-server): leave it alone.
    NotOurs(String),
}

/// Decides what to do with an APIService `spec` given our Service and CA bundle.
pub fn apiservice_action(
    spec: &APIServiceSpec,
    namespace: &str,
    service: &str,
    ca_pem: &str,
) -> ApiServiceAction {
    match &spec.service {
        Some(s)
            if s.namespace.as_deref() == Some(namespace) && s.name.as_deref() == Some(service) =>
        {
            let current = spec.ca_bundle.as_ref().map(|b| b.0.as_slice());
            if current == Some(ca_pem.as_bytes()) && spec.insecure_skip_tls_verify != Some(true) {
                ApiServiceAction::UpToDate
            } else {
                ApiServiceAction::Patch
            }
        }
        Some(s) => ApiServiceAction::NotOurs(format!(
            "{}/{}",
            s.namespace.as_deref().unwrap_or_default(),
            s.name.as_deref().unwrap_or_default()
        )),
        None => ApiServiceAction::NotOurs("the API server itself (no service)".to_owned()),
    }
}

/// A Kubernetes client from `--kubeconfig`, or the in-cluster configuration.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("read --kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("use --kubeconfig {}", path.display()))?
        }
        None => kube::Config::incluster().context(
            "no --kubeconfig and not running in a pod (in-cluster configuration unavailable)",
        )?,
    };
    Client::try_from(config).context("build the Kubernetes client")
}

fn api_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// Worth retrying: no answer, or the server's 429/5xx.
fn transient(err: &kube::Error) -> bool {
    match api_code(err) {
        Some(code) => code == 429 || code >= 500,
        None => true,
    }
}

fn secret_data(secret: &Secret) -> (Option<&ByteString>, Option<&ByteString>) {
    let data = secret.data.as_ref();
    (
        data.and_then(|d| d.get(CA_CERT_KEY)),
        data.and_then(|d| d.get(CA_KEY_KEY)),
    )
}

fn ca_from_secret(secret: &Secret, name: &str) -> anyhow::Result<Option<CaPair>> {
    match secret_data(secret) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => {
            let pair = CaPair {
                cert_pem: String::from_utf8(cert.0.clone())
                    .with_context(|| format!("Secret {name}: {CA_CERT_KEY} is not PEM"))?,
                key_pem: String::from_utf8(key.0.clone())
                    .with_context(|| format!("Secret {name}: {CA_KEY_KEY} is not PEM"))?,
            };
            check_pair(&pair).with_context(|| format!("Secret {name} holds an unusable CA"))?;
            Ok(Some(pair))
        }
        _ => bail!(
            "Secret {name} has only one of {CA_CERT_KEY} and {CA_KEY_KEY}: fill both, or empty it to let the aggregator generate a CA"
        ),
    }
}

fn ca_secret_object(name: &str, ca: &CaPair, resource_version: Option<String>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            resource_version,
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([
            (
                CA_CERT_KEY.to_owned(),
                ByteString(ca.cert_pem.clone().into_bytes()),
            ),
            (
                CA_KEY_KEY.to_owned(),
                ByteString(ca.key_pem.clone().into_bytes()),
            ),
        ])),
        ..Secret::default()
    }
}

/// The CA from the Secret `name`: the one already there, or a new one written with a
/// precondition so that concurrent replicas agree on a single CA. Transient API errors are
/// retried for about a minute.
pub async fn ensure_ca(client: &Client, namespace: &str, name: &str) -> anyhow::Result<CaPair> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut backoff = Duration::from_millis(250);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let attempt = claim_ca(&api, namespace, name).await;
        match attempt {
            Ok(Some(ca)) => return Ok(ca),
            // lost a race: read again at once
            Ok(None) => continue,
            Err(Claim::Fatal(err)) => return Err(err),
            Err(Claim::Transient(err)) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = format!("{err:#}"), secret = %format!("{namespace}/{name}"), "CA Secret not reachable yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(Claim::Transient(err)) => return Err(err),
        }
    }
}

enum Claim {
    Transient(anyhow::Error),
    Fatal(anyhow::Error),
}

fn classify(err: kube::Error, what: String) -> Claim {
    if transient(&err) {
        Claim::Transient(anyhow::Error::new(err).context(what))
    } else {
        Claim::Fatal(anyhow::Error::new(err).context(what))
    }
}

/// One round: `Ok(Some)` the CA in force, `Ok(None)` another replica won a race (read again).
async fn claim_ca(api: &Api<Secret>, namespace: &str, name: &str) -> Result<Option<CaPair>, Claim> {
    let full = format!("{namespace}/{name}");
    let existing = api
        .get_opt(name)
        .await
        .map_err(|e| classify(e, format!("get Secret {full}")))?;
    match existing {
        Some(secret) => {
            if let Some(ca) = ca_from_secret(&secret, &full).map_err(Claim::Fatal)? {
                tracing::info!(secret = %full, "using the serving CA from the Secret");
                return Ok(Some(ca));
            }
            let ca = new_ca(SystemTime::now()).map_err(Claim::Fatal)?;
            let rv = secret.metadata.resource_version.clone();
            let patch = ca_secret_object(name, &ca, rv);
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(secret = %full, "generated the serving CA and stored it in the empty Secret");
                    Ok(Some(ca))
                }
                Err(e) if api_code(&e) == Some(409) => {
                    tracing::info!(secret = %full, "another replica filled the CA Secret first; using its CA");
                    Ok(None)
                }
                Err(e) => Err(classify(e, format!("fill Secret {full}"))),
            }
        }
        None => {
            let ca = new_ca(SystemTime::now()).map_err(Claim::Fatal)?;
            let mut secret = ca_secret_object(name, &ca, None);
            secret.metadata.labels = Some(BTreeMap::from([(
                "app.kubernetes.io/name".to_owned(),
                "kubepulse".to_owned(),
            )]));
            secret.type_ = Some("Opaque".to_owned());
            match api.create(&PostParams::default(), &secret).await {
                Ok(_) => {
                    tracing::info!(secret = %full, "generated the serving CA and created the Secret");
                    Ok(Some(ca))
                }
                Err(e) if api_code(&e) == Some(409) => {
                    tracing::info!(secret = %full, "another replica created the CA Secret first; using its CA");
                    Ok(None)
                }
                Err(e) if api_code(&e) == Some(403) => Err(Claim::Fatal(anyhow::anyhow!(
                    "Secret {full} does not exist and this service account may not create it: apply deploy/10-tls.yaml (an empty Secret the aggregator fills) or create it"
                ))),
                Err(e) => Err(classify(e, format!("create Secret {full}"))),
            }
        }
    }
}

/// Writes `ca_pem` into the ConfigMap `name` (key `ca.crt`) unless it is already there.
/// Returns whether it changed anything.
pub async fn publish_configmap(
    client: &Client,
    namespace: &str,
    name: &str,
    ca_pem: &str,
) -> anyhow::Result<bool> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let current = api
        .get_opt(name)
        .await
        .with_context(|| format!("get ConfigMap {namespace}/{name}"))?;
    let Some(current) = current else {
        bail!(
            "ConfigMap {namespace}/{name} does not exist: apply deploy/10-tls.yaml (an empty ConfigMap the aggregator fills)"
        );
    };
    let up_to_date = current
        .data
        .as_ref()
        .and_then(|d| d.get(CA_CERT_KEY))
        .is_some_and(|v| v == ca_pem);
    if up_to_date {
        return Ok(false);
    }
    let patch = serde_json::json!({ "data": { CA_CERT_KEY: ca_pem } });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("patch ConfigMap {namespace}/{name}"))?;
    Ok(true)
}

/// Sets `caBundle` on the APIService `name` if it points at `namespace/service`. Returns the
/// decision taken.
pub async fn publish_apiservice(
    client: &Client,
    name: &str,
    namespace: &str,
    service: &str,
    ca_pem: &str,
) -> anyhow::Result<ApiServiceAction> {
    let api: Api<APIService> = Api::all(client.clone());
    let Some(current) = api
        .get_opt(name)
        .await
        .with_context(|| format!("get APIService {name}"))?
    else {
        bail!("APIService {name} does not exist (apply deploy/40-apiservice.yaml)");
    };
    let spec = current.spec.unwrap_or_default();
    let action = apiservice_action(&spec, namespace, service, ca_pem);
    if action == ApiServiceAction::Patch {
        let bundle = serde_json::to_value(ByteString(ca_pem.as_bytes().to_vec()))
            .context("encode caBundle")?;
        let patch = serde_json::json!({
            "spec": { "caBundle": bundle, "insecureSkipTLSVerify": false }
        });
        api.patch(
            name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PatchParams::default()
            },
            &Patch::Merge(&patch),
        )
        .await
        .with_context(|| format!("patch APIService {name}"))?;
    }
    Ok(action)
}

/// What [`start`] prepared: the serving certificate and the publishing task's inputs.
pub struct Started {
    /// The serving certificate and key (chain: leaf, CA).
    pub serving: CertKey,
    /// The CA certificate that is published.
    pub ca_pem: String,
    client: Client,
    settings: Settings,
}

/// Prepares the serving certificate: from the CA Secret (own-CA mode), or from
/// `--tls-cert-file` with `--tls-ca-file` (bring-your-own mode).
pub async fn start(settings: Settings, config: &Config) -> anyhow::Result<Started> {
    let client = client(settings.kubeconfig.as_deref()).await?;
    let (serving, ca_pem) = if let Some(secret) = &settings.ca_secret {
        let ca = ensure_ca(&client, &settings.namespace, secret).await?;
        let names = settings.dns_names();
        let serving = issue_serving(&ca, &names, SystemTime::now())?;
        tracing::info!(names = ?names, "issued the serving certificate from the bootstrap CA");
        (serving, ca.cert_pem)
    } else {
        let Some(ca_file) = &settings.ca_file else {
            bail!("publishing a CA bundle needs --tls-bootstrap-secret or --tls-ca-file");
        };
        let serving = crate::tls::load_or_generate(
            config.tls_cert_file.as_deref(),
            config.tls_private_key_file.as_deref(),
            &config.cert_dir,
            &[],
        )?;
        let ca_pem = std::fs::read_to_string(ca_file)
            .with_context(|| format!("read --tls-ca-file {}", ca_file.display()))?;
        (serving, ca_pem)
    };
    Ok(Started {
        serving,
        ca_pem,
        client,
        settings,
    })
}

impl Started {
    /// One publishing round: the ConfigMap, then every APIService. Failures are logged (and
    /// retried next round), never fatal.
    pub async fn publish_once(&self) {
        let s = &self.settings;
        if let Some(cm) = &s.ca_configmap {
            match publish_configmap(&self.client, &s.namespace, cm, &self.ca_pem).await {
                Ok(true) => {
                    tracing::info!(configmap = %format!("{}/{cm}", s.namespace), "published the CA bundle for agents")
                }
                Ok(false) => {}
                Err(err) => tracing::warn!(
                    error = format!("{err:#}"),
                    "publishing the CA bundle failed; retrying"
                ),
            }
        }
        let Some(service) = s.services.first() else {
            return;
        };
        for name in &s.apiservices {
            match publish_apiservice(&self.client, name, &s.namespace, service, &self.ca_pem).await
            {
                Ok(ApiServiceAction::Patch) => {
                    tracing::info!(apiservice = %name, "set caBundle on the APIService")
                }
                Ok(ApiServiceAction::UpToDate) => {}
                Ok(ApiServiceAction::NotOurs(other)) => tracing::info!(
                    apiservice = %name,
                    points_at = %other,
                    "APIService does not point at this aggregator; leaving it alone"
                ),
                Err(err) => {
                    tracing::warn!(error = format!("{err:#}"), apiservice = %name, "setting caBundle failed; retrying")
                }
            }
        }
    }

    /// Publishes every [`PUBLISH_PERIOD`] until `stop` resolves.
    pub async fn publish(self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(PUBLISH_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.publish_once().await,
                () = &mut stop => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::ServiceReference;

    #[test]
    fn names_cover_every_service_form_once() {
        let names = serving_names(
            &["kp".to_owned(), "kp-grpc".to_owned(), "kp".to_owned()],
            "kube-system",
            "cluster.local.",
        );
        assert_eq!(
            names,
            [
                "kp",
                "kp.kube-system",
                "kp.kube-system.svc",
                "kp.kube-system.svc.cluster.local",
                "kp-grpc",
                "kp-grpc.kube-system",
                "kp-grpc.kube-system.svc",
                "kp-grpc.kube-system.svc.cluster.local",
            ]
        );
    }

    fn verify(chain_pem: &str, ca_pem: &str, name: &str) -> Result<(), rustls::Error> {
        use rustls::client::danger::ServerCertVerifier as _;
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
            .unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .unwrap();
        let chain: Vec<_> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        verifier
            .verify_server_cert(
                &chain[0],
                &chain[1..],
                &ServerName::try_from(name.to_owned()).unwrap(),
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
    }

    #[test]
    fn serving_certificate_verifies_against_the_ca_for_its_names_only() {
        let now = SystemTime::now();
        let ca = new_ca(now).unwrap();
        let names = serving_names(&["kp".to_owned()], "kube-system", "cluster.local");
        let serving = issue_serving(&ca, &names, now).unwrap();
        for name in &names {
            verify(&serving.cert_pem, &ca.cert_pem, name).unwrap();
        }
        assert!(verify(&serving.cert_pem, &ca.cert_pem, "kp.other.svc").is_err());
        let other_ca = new_ca(now).unwrap();
        assert!(verify(&serving.cert_pem, &other_ca.cert_pem, "kp.kube-system.svc").is_err());
        // the server config accepts the pair
        crate::tls::server_config(&serving).unwrap();
    }

    fn secret_with(cert: Option<&str>, key: Option<&str>) -> Secret {
        let mut data = BTreeMap::new();
        if let Some(c) = cert {
            data.insert(CA_CERT_KEY.to_owned(), ByteString(c.as_bytes().to_vec()));
        }
        if let Some(k) = key {
            data.insert(CA_KEY_KEY.to_owned(), ByteString(k.as_bytes().to_vec()));
        }
        Secret {
            data: Some(data),
            ..Secret::default()
        }
    }

    #[test]
    fn secret_contents_empty_full_or_refused() {
        assert!(ca_from_secret(&Secret::default(), "s").unwrap().is_none());
        assert!(
            ca_from_secret(&secret_with(None, None), "s")
                .unwrap()
                .is_none()
        );
        let ca = new_ca(SystemTime::now()).unwrap();
        let read = ca_from_secret(&secret_with(Some(&ca.cert_pem), Some(&ca.key_pem)), "s")
            .unwrap()
            .unwrap();
        assert_eq!(read.cert_pem, ca.cert_pem);
        assert!(ca_from_secret(&secret_with(Some(&ca.cert_pem), None), "s").is_err());
        assert!(ca_from_secret(&secret_with(Some("junk"), Some("junk")), "s").is_err());
        // a key that is not the certificate's is refused
        let other = new_ca(SystemTime::now()).unwrap();
        let mixed = secret_with(Some(&ca.cert_pem), Some(&other.key_pem));
        let err = ca_from_secret(&mixed, "s").unwrap_err();
        assert!(format!("{err:#}").contains("does not belong"), "{err:#}");
    }

    #[test]
    fn secret_patch_carries_the_precondition() {
        let ca = new_ca(SystemTime::now()).unwrap();
        let v = serde_json::to_value(ca_secret_object("s", &ca, Some("42".to_owned()))).unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "42");
        assert!(v["data"][CA_CERT_KEY].is_string());
        assert!(v["data"][CA_KEY_KEY].is_string());
    }

    fn spec(ns: &str, svc: &str, bundle: Option<&str>, insecure: Option<bool>) -> APIServiceSpec {
        APIServiceSpec {
            service: Some(ServiceReference {
                namespace: Some(ns.to_owned()),
                name: Some(svc.to_owned()),
                port: Some(443),
            }),
            ca_bundle: bundle.map(|b| ByteString(b.as_bytes().to_vec())),
            insecure_skip_tls_verify: insecure,
            ..APIServiceSpec::default()
        }
    }

    #[test]
    fn apiservices_are_patched_only_when_they_point_at_us() {
        let a = |s: &APIServiceSpec| apiservice_action(s, "kube-system", "kp", "CA");
        assert_eq!(
            a(&spec("kube-system", "kp", None, None)),
            ApiServiceAction::Patch
        );
        assert_eq!(
            a(&spec("kube-system", "kp", Some("old"), Some(false))),
            ApiServiceAction::Patch
        );
        assert_eq!(
            a(&spec("kube-system", "kp", Some("CA"), Some(true))),
            ApiServiceAction::Patch
        );
        assert_eq!(
            a(&spec("kube-system", "kp", Some("CA"), Some(false))),
            ApiServiceAction::UpToDate
        );
        assert_eq!(
            a(&spec("kube-system", "metrics-server", None, Some(true))),
            ApiServiceAction::NotOurs("kube-system/metrics-server".to_owned())
        );
        assert_eq!(
            a(&spec("other", "kp", None, None)),
            ApiServiceAction::NotOurs("other/kp".to_owned())
        );
        assert!(matches!(
            a(&APIServiceSpec::default()),
            ApiServiceAction::NotOurs(_)
        ));
    }
}
