//! Where the authenticators' trust comes from: the `--client-ca-file` and
//! `--requestheader-*` flags, and the `kube-system/extension-apiserver-authentication`
//! ConfigMap that kube-apiserver publishes, read at start and watched afterwards (CA
//! rotation is picked up live by swapping [`Trust`]).
//!
//! As in the apiserver's delegating authentication options: `--client-ca-file` replaces the
//! ConfigMap's `client-ca-file`; `--requestheader-client-ca-file` replaces the ConfigMap's
//! whole requestheader configuration (CA, allowed names and header names then come from the
//! flags). When both are given, the ConfigMap is not read at all.

use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher;
use kubepulse_aggregator_core::authz::{ExtensionAuth, RequestHeaderAuth, RequestHeaderConfig};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::Config;

/// Namespace of the authentication ConfigMap.
pub const CONFIGMAP_NAMESPACE: &str = "kube-system";
/// Name of the authentication ConfigMap.
pub const CONFIGMAP_NAME: &str = "extension-apiserver-authentication";

/// The current trust anchors of the certificate authenticators.
#[derive(Clone, Default)]
pub struct Trust {
    /// Front-proxy verification and header configuration.
    pub request_header: Option<RequestHeaderTrust>,
    /// x509 client certificate verification.
    pub client_ca: Option<Arc<dyn ClientCertVerifier>>,
}

/// Front-proxy trust: the verifier for the requestheader CA and the header configuration.
#[derive(Clone)]
pub struct RequestHeaderTrust {
    /// Verifies a chain against the requestheader CA bundle.
    pub verifier: Arc<dyn ClientCertVerifier>,
    /// Header names and allowed common names.
    pub config: RequestHeaderConfig,
}

/// The trust settings given by flags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    /// `--client-ca-file` contents.
    pub client_ca_pem: Option<String>,
    /// `--requestheader-client-ca-file` contents with the other `--requestheader-*` flags.
    pub request_header: Option<RequestHeaderAuth>,
}

impl Flags {
    /// Reads the CA files named by the configuration.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let read = |path: &std::path::Path, flag: &str| {
            std::fs::read_to_string(path).with_context(|| format!("read {flag} {}", path.display()))
        };
        let client_ca_pem = match &config.client_ca_file {
            Some(p) => Some(read(p, "--client-ca-file")?),
            None => None,
        };
        let request_header = match &config.requestheader_client_ca_file {
            Some(p) => Some(RequestHeaderAuth {
                ca_pem: read(p, "--requestheader-client-ca-file")?,
                config: RequestHeaderConfig {
                    username_headers: non_empty(&config.requestheader_username_headers),
                    uid_headers: non_empty(&config.requestheader_uid_headers),
                    group_headers: non_empty(&config.requestheader_group_headers),
                    extra_prefixes: non_empty(&config.requestheader_extra_headers_prefix),
                    allowed_names: non_empty(&config.requestheader_allowed_names),
                },
            }),
            None => None,
        };
        Ok(Self {
            client_ca_pem,
            request_header,
        })
    }

    /// Whether the ConfigMap has anything the flags do not already give.
    pub fn needs_configmap(&self) -> bool {
        self.client_ca_pem.is_none() || self.request_header.is_none()
    }
}

/// The trust from the flags, completed by the ConfigMap's settings.
pub fn trust(flags: &Flags, configmap: Option<&ExtensionAuth>) -> anyhow::Result<Trust> {
    let client_ca_pem = flags
        .client_ca_pem
        .as_deref()
        .or_else(|| configmap.and_then(|c| c.client_ca_pem.as_deref()));
    let request_header = flags
        .request_header
        .as_ref()
        .or_else(|| configmap.and_then(|c| c.request_header.as_ref()));
    Ok(Trust {
        client_ca: client_ca_pem
            .map(|pem| verifier(pem).context("client CA"))
            .transpose()?,
        request_header: request_header
            .map(|rh| {
                Ok::<_, anyhow::Error>(RequestHeaderTrust {
                    verifier: verifier(&rh.ca_pem).context("requestheader client CA")?,
                    config: rh.config.clone(),
                })
            })
            .transpose()?,
    })
}

/// A verifier for client certificate chains issued by the CAs in `pem`.
pub fn verifier(pem: &str) -> anyhow::Result<Arc<dyn ClientCertVerifier>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots
            .add(cert.context("parse CA PEM")?)
            .context("add CA certificate")?;
    }
    anyhow::ensure!(!roots.is_empty(), "no certificate in the CA bundle");
    WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .context("build client certificate verifier")
}

/// Loads the trust (reading the ConfigMap unless the flags say everything, or
/// `--authentication-skip-lookup`) and, when the ConfigMap is used, keeps watching it.
pub async fn start(
    config: &Config,
    client: &Client,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Arc<ArcSwap<Trust>>> {
    let flags = Flags::from_config(config)?;
    let lookup = flags.needs_configmap() && !config.authentication_skip_lookup;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), CONFIGMAP_NAMESPACE);
    let mut from_configmap = None;
    if lookup {
        match api.get_opt(CONFIGMAP_NAME).await {
            Ok(Some(cm)) => {
                from_configmap = Some(
                    ExtensionAuth::from_configmap(&cm.data.unwrap_or_default())
                        .context("read the authentication ConfigMap")?,
                );
            }
            Ok(None) => tracing::warn!(
                "ConfigMap {CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME} not found; client certificates and front-proxy requests are not trusted until it appears"
            ),
            Err(err) if config.authentication_tolerate_lookup_failure => tracing::warn!(
                error = %err,
                "cannot read ConfigMap {CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME}; continuing without it (--authentication-tolerate-lookup-failure)"
            ),
            Err(err) => {
                return Err(anyhow::Error::new(err).context(format!(
                    "read ConfigMap {CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME} (--authentication-tolerate-lookup-failure starts anyway, --authentication-skip-lookup does not read it)"
                )));
            }
        }
    }
    let initial = trust(&flags, from_configmap.as_ref())?;
    describe(&initial, "authentication configured");
    let current = Arc::new(ArcSwap::from_pointee(initial));
    if lookup {
        tokio::spawn(watch(api, flags, from_configmap, current.clone(), stop));
    }
    Ok(current)
}

async fn watch(
    api: Api<ConfigMap>,
    flags: Flags,
    mut last: Option<ExtensionAuth>,
    current: Arc<ArcSwap<Trust>>,
    stop: impl std::future::Future<Output = ()>,
) {
    let config = watcher::Config::default().fields(&format!("metadata.name={CONFIGMAP_NAME}"));
    let mut changes = watcher::watcher(api, config)
        .default_backoff()
        .applied_objects()
        .boxed();
    tokio::pin!(stop);
    loop {
        let cm = tokio::select! {
            next = changes.next() => match next {
                Some(Ok(cm)) => cm,
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "watch of the authentication ConfigMap failed; retrying with backoff");
                    continue;
                }
                None => break,
            },
            () = &mut stop => break,
        };
        let parsed = match ExtensionAuth::from_configmap(&cm.data.unwrap_or_default()) {
            Ok(parsed) => parsed,
            Err(err) => {
                tracing::warn!(error = %err, "authentication ConfigMap changed but cannot be read; keeping the previous settings");
                continue;
            }
        };
        if last.as_ref() == Some(&parsed) {
            continue;
        }
        match trust(&flags, Some(&parsed)) {
            Ok(trust) => {
                describe(
                    &trust,
                    "authentication configuration reloaded from the ConfigMap",
                );
                current.store(Arc::new(trust));
                last = Some(parsed);
            }
            Err(err) => tracing::warn!(
                error = format!("{err:#}"),
                "authentication ConfigMap changed but its CAs cannot be used; keeping the previous settings"
            ),
        }
    }
}

fn describe(trust: &Trust, what: &str) {
    tracing::info!(
        client_ca = trust.client_ca.is_some(),
        requestheader_ca = trust.request_header.is_some(),
        allowed_names = ?trust.request_header.as_ref().map(|r| &r.config.allowed_names),
        username_headers = ?trust.request_header.as_ref().map(|r| &r.config.username_headers),
        "{what}"
    );
}

fn non_empty(values: &[String]) -> Vec<String> {
    values.iter().filter(|v| !v.is_empty()).cloned().collect()
}
