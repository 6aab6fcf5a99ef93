//! Load on the aggregator's Metrics API while it ingests: a keep-alive HTTPS client, the
//! ingest-lag probe, HPA-shaped queries and the VPA-shaped list of every pod.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use kubepulse_aggregator_core::timefmt::format_time;
use kubepulse_model::Timestamp;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use super::agents::Plan;
use super::shapes::Layout;
use super::stats::{Percentiles, percentiles};
use super::wall_ms;

/// What the HPA's client sends (protobuf first).
pub const ACCEPT_PROTOBUF: &str = "application/vnd.kubernetes.protobuf, */*";

/// The label selector of the HPA-shaped query. Standalone aggregators have no pod labels, so
/// it is one every unlabelled pod matches; the namespace (≈ 30 pods) makes the answer the
/// size of one HPA target.
pub const HPA_SELECTOR: &str = "app%21%3Dbench-none";

/// An HTTP/1.1 keep-alive client of one HTTPS server (server name `localhost`).
pub struct ApiClient {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    sender: Option<SendRequest<Empty<Bytes>>>,
}

impl ApiClient {
    /// A client trusting the certificate in `ca_file`.
    pub fn new(addr: SocketAddr, ca_file: &Path) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca_file)? {
            roots.add(cert?)?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Self {
            addr,
            tls: Arc::new(tls),
            sender: None,
        })
    }

    async fn sender(&mut self) -> anyhow::Result<&mut SendRequest<Empty<Bytes>>> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let tcp = tokio::net::TcpStream::connect(self.addr).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(ServerName::try_from("localhost")?, tcp)
                .await?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
            tokio::spawn(conn);
            self.sender = Some(sender);
        }
        let sender = self.sender.as_mut().expect("just set");
        sender.ready().await?;
        Ok(sender)
    }

    /// GET `path`, calling `chunk` with every body frame; returns the status and body bytes.
    pub async fn get_with(
        &mut self,
        path: &str,
        accept: Option<&str>,
        mut chunk: impl FnMut(&[u8]),
    ) -> anyhow::Result<(u16, u64)> {
        let mut req = http::Request::get(path).header(http::header::HOST, "localhost");
        if let Some(accept) = accept {
            req = req.header(http::header::ACCEPT, accept);
        }
        let req = req.body(Empty::<Bytes>::new())?;
        let resp = self.sender().await?.send_request(req).await?;
        let code = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                n += data.len() as u64;
                chunk(&data);
            }
        }
        Ok((code, n))
    }

    /// GET `path` into memory.
    pub async fn get(
        &mut self,
        path: &str,
        accept: Option<&str>,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        let (code, _) = self
            .get_with(path, accept, |c| out.extend_from_slice(c))
            .await?;
        Ok((code, out))
    }
}

/// Ingest lag of a few nodes: for each probed node and each of its kubelet refreshes, the time
/// from the refresh's kubelet timestamp until `GET nodes/<name>` shows that timestamp.
/// Polls every 10 ms from the refresh on, so the figure is exact to about 10 ms plus one
/// request.
pub async fn probe_lag(
    plan: Arc<Plan>,
    https: SocketAddr,
    ca_file: std::path::PathBuf,
    probes: usize,
    until: Instant,
) -> anyhow::Result<Vec<Duration>> {
    let mut tasks = tokio::task::JoinSet::new();
    let n = plan.layout.nodes;
    for j in 0..probes.min(n) {
        let i = j * n / probes.min(n);
        let mut client = ApiClient::new(https, &ca_file)?;
        let plan = plan.clone();
        tasks.spawn(async move {
            let mut lags = Vec::new();
            let name = plan.layout.node_name(i);
            let path = format!("/apis/metrics.k8s.io/v1beta1/nodes/{name}");
            let mut k = plan.last_refresh(i, wall_ms()) + 1;
            while Instant::now() < until {
                let t = plan.refresh_ms(i, k);
                let wait = (t - wall_ms()).max(0) as u64;
                tokio::time::sleep(Duration::from_millis(wait)).await;
                let want = format!(
                    "\"timestamp\":\"{}\"",
                    format_time(Timestamp::from_millis(t))
                );
                let deadline = t + 5_000;
                loop {
                    if let Ok((200, body)) = client.get(&path, None).await
                        && memchr_find(&body, want.as_bytes())
                    {
                        lags.push(Duration::from_millis((wall_ms() - t).max(0) as u64));
                        break;
                    }
                    if wall_ms() > deadline {
                        lags.push(Duration::from_millis(5_000));
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                k += 1;
            }
            lags
        });
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r?);
    }
    Ok(all)
}

fn memchr_find(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

/// The HPA-shaped request for namespace `k`.
pub fn hpa_path(k: usize) -> String {
    format!(
        "/apis/metrics.k8s.io/v1beta1/namespaces/{}/pods?labelSelector={HPA_SELECTOR}",
        Layout::namespace_name(k)
    )
}

/// Results of HPA-shaped queries.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct HpaResult {
    /// 100 HPAs, each querying every 15 s.
    pub paced: Percentiles,
    /// Back to back on one connection.
    pub saturating: Percentiles,
    /// Queries per second in the saturating loop.
    pub saturating_qps: f64,
    /// Mean answer size, bytes.
    pub answer_bytes: u64,
}

/// `hpas` HPAs each querying its namespace once per `period`, until `until`.
pub async fn hpa_paced(
    client: &mut ApiClient,
    layout: &Layout,
    hpas: usize,
    period: Duration,
    until: Instant,
) -> anyhow::Result<(Vec<Duration>, u64)> {
    let gap = period / hpas as u32;
    let mut lat = Vec::new();
    let mut bytes = 0;
    let mut j = 0usize;
    let mut next = Instant::now();
    while Instant::now() < until {
        tokio::time::sleep_until(next.into()).await;
        next += gap;
        // HPA j watches namespace j·(spread): the same namespace every period
        let k = (j % hpas) * layout.namespaces() / hpas;
        j += 1;
        let t = Instant::now();
        let (code, n) = client
            .get_with(&hpa_path(k), Some(ACCEPT_PROTOBUF), |_| {})
            .await?;
        anyhow::ensure!(code == 200, "HPA query answered {code}");
        lat.push(t.elapsed());
        bytes += n;
    }
    let avg = bytes / lat.len().max(1) as u64;
    Ok((lat, avg))
}

/// HPA-shaped queries back to back for `length`.
pub async fn hpa_saturating(
    client: &mut ApiClient,
    layout: &Layout,
    length: Duration,
) -> anyhow::Result<(Percentiles, f64)> {
    let start = Instant::now();
    let mut lat = Vec::new();
    let mut j = 0usize;
    while start.elapsed() < length {
        let k = (j * 7919) % layout.namespaces();
        j += 1;
        let t = Instant::now();
        let (code, _) = client
            .get_with(&hpa_path(k), Some(ACCEPT_PROTOBUF), |_| {})
            .await?;
        anyhow::ensure!(code == 200, "HPA query answered {code}");
        lat.push(t.elapsed());
    }
    let qps = lat.len() as f64 / start.elapsed().as_secs_f64();
    Ok((percentiles(&lat), qps))
}

/// The VPA-shaped list of every pod.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct VpaResult {
    /// Pods in the answer.
    pub pods: u64,
    /// Body bytes.
    pub bytes: u64,
    /// Time to the first body byte, ms.
    pub first_byte_ms: f64,
    /// Whole answer, ms.
    pub total_ms: f64,
    /// Pods per second.
    pub pods_per_s: f64,
    /// Aggregator RSS before the request, bytes.
    pub rss_before: u64,
    /// Aggregator peak RSS during the request, bytes.
    pub rss_peak: u64,
}

/// GET every pod as JSON once, counting pods as they stream in.
pub async fn vpa_list(client: &mut ApiClient, aggregator_pid: u32) -> anyhow::Result<VpaResult> {
    let before = super::procstat::read(aggregator_pid, 100.0, Duration::ZERO)?.rss;
    super::procstat::reset_peak(aggregator_pid);
    let needle = b"\"containers\":";
    let mut carry: Vec<u8> = Vec::new();
    let mut pods = 0u64;
    let start = Instant::now();
    let mut first: Option<Duration> = None;
    let (code, bytes) = client
        .get_with("/apis/metrics.k8s.io/v1beta1/pods", None, |c| {
            first.get_or_insert_with(|| start.elapsed());
            // a match may straddle two frames: keep the tail of the previous one
            carry.extend_from_slice(&c[..c.len().min(needle.len())]);
            pods += memchr::memmem::find_iter(&carry, needle).count() as u64;
            pods += memchr::memmem::find_iter(c, needle).count() as u64;
            pods -=
                memchr::memmem::find_iter(&c[..c.len().min(needle.len())], needle).count() as u64;
            carry.clear();
            carry.extend_from_slice(&c[c.len().saturating_sub(needle.len() - 1)..]);
        })
        .await?;
    let total = start.elapsed();
    anyhow::ensure!(code == 200, "list of all pods answered {code}");
    let peak = super::procstat::read(aggregator_pid, 100.0, Duration::ZERO)?.hwm;
    Ok(VpaResult {
        pods,
        bytes,
        first_byte_ms: first.unwrap_or_default().as_secs_f64() * 1e3,
        total_ms: total.as_secs_f64() * 1e3,
        pods_per_s: pods as f64 / total.as_secs_f64(),
        rss_before: before,
        rss_peak: peak,
    })
}
