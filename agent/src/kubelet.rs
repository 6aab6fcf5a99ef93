//! Stage 1 of the agent: read the kubelet's `/metrics/resource` over HTTPS. Only moves bytes:
//! TLS (verified against the node name by default), the bearer token, a timeout and a
//! response size cap; no parsing here. The connection is kept alive between reads.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::Config;

/// Why a kubelet read failed.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// TCP connect failed.
    #[error("connect to kubelet {addr}: {source}")]
    Connect {
        /// the kubelet address
        addr: String,
        /// the error
        source: std::io::Error,
    },
    /// The TLS handshake failed (e.g. the certificate does not name the node).
    #[error("TLS handshake with kubelet: {0}")]
    Tls(std::io::Error),
    /// HTTP-level failure.
    #[error("kubelet request: {0}")]
    Http(#[from] hyper::Error),
    /// A non-200 answer.
    #[error("kubelet answered {code}: {body}")]
    Status {
        /// HTTP status code
        code: u16,
        /// the start of the body
        body: String,
    },
    /// The body exceeds the configured cap.
    #[error("kubelet response exceeds {limit} bytes")]
    TooLarge {
        /// --kubelet-max-response-bytes
        limit: usize,
    },
    /// The body does not end with a newline: the kubelet's answer was cut off.
    #[error("kubelet response is truncated ({len} bytes, no final newline)")]
    Truncated {
        /// bytes received
        len: usize,
    },
    /// The read took longer than --kubelet-request-timeout.
    #[error("kubelet read timed out after {0:?}")]
    Timeout(Duration),
    /// The token file could not be read.
    #[error("read token file: {0}")]
    Token(std::io::Error),
}

/// A kubelet reader holding a keep-alive connection.
pub struct KubeletClient {
    addr: String,
    path: String,
    server_name: ServerName<'static>,
    tls: TlsConnector,
    token_file: Option<PathBuf>,
    timeout: Duration,
    max_bytes: usize,
    conn: Option<SendRequest<Empty<Bytes>>>,
}

impl KubeletClient {
    /// Builds the client from the configuration (reads the CA bundle).
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let tls = if config.kubelet_insecure_tls {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
                .with_no_client_auth()
        } else {
            let mut roots = rustls::RootCertStore::empty();
            let path = &config.kubelet_certificate_authority;
            for cert in CertificateDer::pem_file_iter(path).with_context(|| {
                format!("read --kubelet-certificate-authority {}", path.display())
            })? {
                roots
                    .add(cert.with_context(|| format!("parse {}", path.display()))?)
                    .with_context(|| format!("add CA from {}", path.display()))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        let server_name = ServerName::try_from(config.kubelet_server_name().to_owned())
            .context("--kubelet-tls-server-name is not a valid DNS name or IP")?;
        Ok(Self {
            addr: config.kubelet_address.clone(),
            path: config.kubelet_path.clone(),
            server_name,
            tls: TlsConnector::from(Arc::new(tls)),
            token_file: (!config.kubelet_token_file.is_empty())
                .then(|| PathBuf::from(&config.kubelet_token_file)),
            timeout: config.kubelet_request_timeout,
            max_bytes: config.kubelet_max_response_bytes,
            conn: None,
        })
    }

    /// One read of the resource metrics endpoint.
    pub async fn scrape(&mut self) -> Result<Bytes, ScrapeError> {
        let mut body = Vec::new();
        self.scrape_into(&mut body).await?;
        Ok(Bytes::from(body))
    }

    /// One read into `body` (cleared first): a caller that reads every second keeps one buffer
    /// at the body's size instead of growing a new one each time. On an error `body` holds
    /// whatever arrived.
    pub async fn scrape_into(&mut self, body: &mut Vec<u8>) -> Result<(), ScrapeError> {
        body.clear();
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.scrape_inner(body)).await {
            Ok(result) => result,
            Err(_) => {
                self.conn = None;
                Err(ScrapeError::Timeout(timeout))
            }
        }
    }

    async fn scrape_inner(&mut self, buf: &mut Vec<u8>) -> Result<(), ScrapeError> {
        let token = match &self.token_file {
            // Projected tokens rotate: read the file on every request. A read of a small local
            // file (a projected volume is tmpfs) takes microseconds, so it runs here rather
            // than on tokio's blocking pool, which would keep a thread (and its malloc arena)
            // alive and hand work to it every second.
            Some(path) => Some(std::fs::read_to_string(path).map_err(ScrapeError::Token)?),
            None => None,
        };
        let mut sender = match self.conn.take() {
            Some(s) if !s.is_closed() => s,
            _ => self.connect().await?,
        };
        let mut request = http::Request::get(&self.path).header(http::header::HOST, &self.addr);
        if let Some(token) = token {
            request = request.header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", token.trim()),
            );
        }
        let request = request.body(Empty::new()).expect("static request parts");
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let code = response.status();
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                if buf.len() + data.len() > self.max_bytes {
                    return Err(ScrapeError::TooLarge {
                        limit: self.max_bytes,
                    });
                }
                buf.extend_from_slice(&data);
            }
        }
        self.conn = Some(sender);
        if !code.is_success() {
            let snippet = String::from_utf8_lossy(&buf[..buf.len().min(200)])
                .trim()
                .to_owned();
            return Err(ScrapeError::Status {
                code: code.as_u16(),
                body: snippet,
            });
        }
        if !buf.is_empty() && !buf.ends_with(b"\n") {
            return Err(ScrapeError::Truncated { len: buf.len() });
        }
        Ok(())
    }

    async fn connect(&self) -> Result<SendRequest<Empty<Bytes>>, ScrapeError> {
        let tcp = TcpStream::connect(&self.addr)
            .await
            .map_err(|source| ScrapeError::Connect {
                addr: self.addr.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(ScrapeError::Tls)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(error = %err, "kubelet connection ended");
            }
        });
        Ok(sender)
    }
}

/// `--kubelet-insecure-tls`: accepts any certificate (signatures are still checked so the
/// handshake is well-formed).
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
