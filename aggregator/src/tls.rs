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

/// PEM certificate chain and key.
#[derive(Clone)]
pub struct CertKey {
    /// Certificate chain, PEM.
    pub cert_pem: String,
    /// Private key, PEM.
    pub key_pem: String,
}

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

/// Serves `router` on `listener` (TLS when `tls` is set) until `shutdown` resolves, then
/// stops accepting and lets open connections finish.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

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
        let service = TowerToHyperService::new(router.clone());
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let builder = Builder::new(TokioExecutor::new());
            let result = match acceptor {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls) => {
                        let conn = builder.serve_connection(TokioIo::new(tls), service);
                        watcher.watch(conn.into_owned()).await
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, "TLS handshake failed");
                        return;
                    }
                },
                None => {
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
