//! The client side of an aggregator connection, as the agent and the relay both make it: the
//! replica addresses (a headless Service re-resolved periodically, and/or explicit endpoints),
//! TLS verified against a CA and a server name, the HTTP/2 channel settings, and the jittered
//! backoff between attempts. The stream itself is each binary's own.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use rand::Rng as _;
use tokio::task::{JoinHandle, JoinSet};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// Splits `host:port` (IPv6 literals in brackets).
pub fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || (host.contains(':') && host.parse::<IpAddr>().is_err()) {
        return None;
    }
    Some((host, port))
}

/// Full jitter over the upper half: a fleet reconnecting after an aggregator restart spreads out.
pub fn jitter(backoff: Duration) -> Duration {
    let half = backoff / 2;
    half + rand::rng().random_range(Duration::ZERO..=half)
}

/// TLS to the aggregators (`None`: plaintext): the CA bundle from `ca_file` (else the system
/// roots), and the name their certificate must carry: `server_name`, else the host of
/// `service`, else (unset) each endpoint's host. `ca_flag` names the flag in the error.
pub fn client_tls(
    plaintext: bool,
    ca_file: Option<&Path>,
    ca_flag: &str,
    server_name: Option<&str>,
    service: Option<&str>,
) -> Result<Option<ClientTlsConfig>, String> {
    if plaintext {
        return Ok(None);
    }
    let mut tls = ClientTlsConfig::new();
    if let Some(ca) = ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("read {ca_flag} {}: {e}", ca.display()))?;
        tls = tls.ca_certificate(Certificate::from_pem(pem));
    }
    let name = server_name.map(str::to_owned).or_else(|| {
        service
            .and_then(split_host_port)
            .map(|(host, _)| host.to_owned())
    });
    if let Some(name) = name {
        tls = tls.domain_name(name);
    }
    Ok(Some(tls))
}

/// Connects an HTTP/2 channel to one replica (`host:port`), with the keep-alive and timeouts
/// both binaries use. The error says which step failed.
pub async fn connect(endpoint: &str, tls: Option<&ClientTlsConfig>) -> Result<Channel, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut ep = match Endpoint::from_shared(format!("{scheme}://{endpoint}")) {
        Ok(ep) => ep
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10))
            .tcp_nodelay(true),
        Err(err) => return Err(format!("invalid endpoint: {err}")),
    };
    if let Some(tls) = tls {
        ep = ep
            .tls_config(tls.clone())
            .map_err(|err| format!("TLS config: {err}"))?;
    }
    ep.connect().await.map_err(|err| format!("connect: {err}"))
}

/// Keeps one task per aggregator address, made by `spawn`: explicit endpoints are fixed; the
/// service name is resolved every `resolve_every` and tasks follow its addresses (a task
/// whose address left is aborted). Dropping this future aborts every task.
pub async fn follow_replicas<F, Fut>(
    endpoints: Vec<String>,
    service: Option<String>,
    resolve_every: Duration,
    mut spawn: F,
) where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    // every task is owned here: dropping this future aborts them all
    let mut fixed = JoinSet::new();
    for endpoint in endpoints {
        fixed.spawn(spawn(endpoint));
    }
    let Some(service) = service else {
        while fixed.join_next().await.is_some() {}
        return;
    };
    let mut resolved: HashMap<String, AbortOnDrop> = HashMap::new();
    loop {
        match tokio::net::lookup_host(&service).await {
            Ok(addrs) => {
                let now: Vec<String> = addrs.map(|a| a.to_string()).collect();
                resolved.retain(|addr, _| {
                    let keep = now.contains(addr);
                    if !keep {
                        tracing::info!(endpoint = %addr, "aggregator replica left the service");
                    }
                    keep
                });
                for addr in now {
                    if let std::collections::hash_map::Entry::Vacant(entry) = resolved.entry(addr) {
                        let task = tokio::spawn(spawn(entry.key().clone()));
                        entry.insert(AbortOnDrop(task));
                    }
                }
            }
            Err(err) => {
                tracing::warn!(service = %service, error = %err, "resolve aggregator service failed; keeping known replicas");
            }
        }
        tokio::time::sleep(resolve_every).await;
    }
}

/// A task that ends when its handle is dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The flags naming the aggregator replicas and how to reach them, as the agent and the relay
/// both take them.
pub struct AggregatorFlags<'a> {
    /// `--aggregator-service`.
    pub service: Option<&'a String>,
    /// `--aggregator-endpoints`.
    pub endpoints: &'a [String],
    /// `--aggregator-plaintext`.
    pub plaintext: bool,
    /// `--aggregator-ca-file`.
    pub ca_file: Option<&'a std::path::Path>,
    /// `--aggregator-tls-server-name`.
    pub tls_server_name: Option<&'a str>,
    /// `--aggregator-resolve-interval`.
    pub resolve_interval: std::time::Duration,
}

impl AggregatorFlags<'_> {
    /// The client TLS these flags ask for ([`client_tls`]; `None`: plaintext).
    pub fn client_tls(&self) -> Result<Option<ClientTlsConfig>, String> {
        client_tls(
            self.plaintext,
            self.ca_file,
            "--aggregator-ca-file",
            self.tls_server_name,
            self.service.map(String::as_str),
        )
    }

    /// Appends what is wrong with these flags to `problems`.
    pub fn check(&self, problems: &mut Vec<String>) {
        if self.service.is_none() && self.endpoints.is_empty() {
            problems.push("give --aggregator-service or --aggregator-endpoints".to_owned());
        }
        for e in self.service.into_iter().chain(self.endpoints) {
            if split_host_port(e).is_none() {
                problems.push(format!("aggregator address {e:?} is not host:port"));
            }
        }
        if self.plaintext && self.ca_file.is_some() {
            problems
                .push("--aggregator-ca-file has no effect with --aggregator-plaintext".to_owned());
        }
        if let Some(ca) = self.ca_file.filter(|ca| !ca.is_file()) {
            problems.push(format!(
                "--aggregator-ca-file {}: no such file",
                ca.display()
            ));
        }
        if self.resolve_interval < std::time::Duration::from_secs(1) {
            problems.push("--aggregator-resolve-interval must be at least 1s".to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port() {
        assert_eq!(
            split_host_port("127.0.0.1:10250"),
            Some(("127.0.0.1", 10250))
        );
        assert_eq!(split_host_port("[::1]:1"), Some(("::1", 1)));
        assert_eq!(
            split_host_port("svc.ns.svc:10251"),
            Some(("svc.ns.svc", 10251))
        );
        assert_eq!(split_host_port("host"), None);
        assert_eq!(split_host_port(":1"), None);
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        let backoff = Duration::from_secs(2);
        for _ in 0..100 {
            let wait = jitter(backoff);
            assert!(wait >= backoff / 2 && wait <= backoff, "{wait:?}");
        }
    }
}
