//! TLS for the HTTPS server: the configured certificate, or a self-signed one written to
//! `--cert-dir` (as metrics-server does), and the accept loop that serves an axum router over
//! rustls with HTTP/2 and HTTP/1.1.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

pub use kubepulse_shell::certs::CertKey;

/// Reads the configured pair, or generates a self-signed certificate for `localhost` and
/// `127.0.0.1` (plus `extra_names`) and writes it into `cert_dir`.
pub fn load_or_generate(
    cert: Option<&Path>,
    key: Option<&Path>,
    cert_dir: &Path,
    extra_names: &[String],
) -> anyhow::Result<CertKey> {
    if let (Some(cert), Some(key)) = (cert, key) {
        return Ok(CertKey {
            cert_pem: std::fs::read_to_string(cert)
                .with_context(|| format!("read {}", cert.display()))?,
            key_pem: std::fs::read_to_string(key)
                .with_context(|| format!("read {}", key.display()))?,
        });
    }
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    names.extend(extra_names.iter().cloned());
    let generated = rcgen::generate_simple_self_signed(names).context("generate certificate")?;
    let pair = CertKey {
        cert_pem: generated.cert.pem(),
        key_pem: generated.signing_key.serialize_pem(),
    };
    std::fs::create_dir_all(cert_dir)
        .with_context(|| format!("create --cert-dir {}", cert_dir.display()))?;
    std::fs::write(cert_dir.join("kubepulse.crt"), &pair.cert_pem)
        .with_context(|| format!("write certificate into {}", cert_dir.display()))?;
    std::fs::write(cert_dir.join("kubepulse.key"), &pair.key_pem)
        .with_context(|| format!("write key into {}", cert_dir.display()))?;
    Ok(pair)
}

/// A rustls server configuration offering h2 and http/1.1.
pub fn server_config(pair: &CertKey) -> anyhow::Result<Arc<ServerConfig>> {
    let certs = CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("parse certificate PEM")?;
    let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).context("parse key PEM")?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .context("serving certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// As [`server_config`], also asking every client for a certificate without requiring one
/// (Go's `tls.RequestClientCert`). The handshake only proves the client holds the key of the
/// certificate it presents; which CA (front proxy or client CA) signed it is checked per
/// request by `auth::authn` against the current trust, so a CA rotation needs no new TLS
/// configuration and a wrong certificate becomes a 401 with its reason logged.
pub fn server_config_requesting_client_certs(pair: &CertKey) -> anyhow::Result<Arc<ServerConfig>> {
    let certs = CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("parse certificate PEM")?;
    let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).context("parse key PEM")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_client_cert_verifier(Arc::new(RequestClientCert { provider }))
        .with_single_cert(certs, key)
        .context("serving certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts any client certificate chain (verified later, per request) but checks the
/// handshake signature, so a client cannot present a certificate it has no key for.
#[derive(Debug)]
struct RequestClientCert {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::server::danger::ClientCertVerifier for RequestClientCert {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        // no hints: clients then send whatever certificate they have
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Serves `router` on `listener` (TLS when `tls` is set) until `shutdown` resolves, then
/// stops accepting and lets open connections finish. The client certificate chain of a TLS
/// connection, if any, reaches every request as the [`crate::auth::PeerCertificates`]
/// extension.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt as _;

    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, _remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    tracing::debug!(error = %err, "accept failed");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let builder = Builder::new(TokioExecutor::new());
            let result = match acceptor {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls) => {
                        let peer = tls.get_ref().1.peer_certificates().map(|chain| {
                            crate::auth::PeerCertificates(Arc::new(
                                chain.iter().map(|c| c.clone().into_owned()).collect(),
                            ))
                        });
                        let service = TowerToHyperService::new(router.map_request(
                            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                                if let Some(peer) = &peer {
                                    req.extensions_mut().insert(peer.clone());
                                }
                                req
                            },
                        ));
                        let conn = builder.serve_connection(TokioIo::new(tls), service);
                        watcher.watch(conn.into_owned()).await
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, "TLS handshake failed");
                        return;
                    }
                },
                None => {
                    let service = TowerToHyperService::new(router);
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
            };
            if let Err(err) = result {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), graceful.shutdown()).await;
}
