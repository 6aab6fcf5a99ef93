//! The relay's configuration: every flag also reads an environment variable
//! (`KUBEPULSE_RELAY_*`). The flags towards the aggregators are the agent's, with the same
//! names and meanings; the serving flags are the aggregator's gRPC ones. [`Config::validate`]
//! reports every problem at once.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kubepulse_model::duration::parse_duration;
use kubepulse_relay_core::HubConfig;

use crate::telemetry::LogFormat;

/// What one frame may add to a batch beyond the agent's message (see
/// `kubepulse_relay_core::FRAME_OVERHEAD`), rounded up with the batch's own tag.
const BATCH_SLACK: usize = 64;

/// Command-line configuration.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "kubepulse-relay",
    version,
    about = "Accepts kubepulse agents' streams and carries them to every aggregator replica over one stream per replica, in batches"
)]
pub struct Config {
    /// Address the gRPC server (agents' streams) listens on.
    #[arg(
        long,
        env = "KUBEPULSE_RELAY_GRPC_BIND_ADDRESS",
        default_value = "0.0.0.0",
        help_heading = "Agents"
    )]
    pub grpc_bind_address: IpAddr,
    /// Port agents stream to: the aggregators' gRPC port, so agents change only the host name
    /// (0 picks a free port).
    #[arg(
        long,
        env = "KUBEPULSE_RELAY_GRPC_PORT",
        default_value_t = 10251,
        help_heading = "Agents"
    )]
    pub grpc_port: u16,
    /// Serve agents without TLS (local runs only).
    #[arg(long, env = "KUBEPULSE_RELAY_GRPC_PLAINTEXT", help_heading = "Agents")]
    pub grpc_plaintext: bool,
    /// Serving certificate (PEM chain) for agents; with --tls-private-key-file.
    #[arg(long, env = "KUBEPULSE_RELAY_TLS_CERT_FILE", help_heading = "Agents")]
    pub tls_cert_file: Option<PathBuf>,
    /// Key of --tls-cert-file.
    #[arg(
        long,
        env = "KUBEPULSE_RELAY_TLS_PRIVATE_KEY_FILE",
        help_heading = "Agents"
    )]
    pub tls_private_key_file: Option<PathBuf>,
    /// CA certificate (PEM) to sign this relay's own serving certificate with, in memory, for
    /// the DNS names of --service-names (the aggregators' serving CA: agents then verify the
    /// relay with the CA they already mount); with --serving-ca-key-file.
    #[arg(long, env = "KUBEPULSE_RELAY_SERVING_CA_FILE", help_heading = "Agents")]
    pub serving_ca_file: Option<PathBuf>,
    /// Key of --serving-ca-file.
    #[arg(
        long,
        env = "KUBEPULSE_RELAY_SERVING_CA_KEY_FILE",
        help_heading = "Agents"
    )]
    pub serving_ca_key_file: Option<PathBuf>,
    /// Services whose names the signed serving certificate carries (`<svc>`, `<svc>.<ns>`,
    /// `<svc>.<ns>.svc`, `<svc>.<ns>.svc.<cluster-domain>`), comma-separated.
    #[arg(
        long,
        env = "KUBEPULSE_RELAY_SERVICE_NAMES",
        value_delimiter = ',',
        default_value = "kubepulse-relay",
        help_heading = "Agents"
    )]
    pub service_names: Vec<String>,
    /// Namespace of --service-names.
    #[arg(
        long,
        env = "KUBEPULSE_RELAY_NAMESPACE",
        default_value = "kube-system",
        help_heading = "Agents"
    )]
    pub namespace: String,
    /// Cluster DNS domain of --service-names.
    #[arg(
        long,
        env = "KUBEPULSE_RELAY_CLUSTER_DOMAIN",
        default_value = "cluster.local",
        help_heading = "Agents"
    )]
    pub cluster_domain: String,
    /// How long an agent may take to send its hello after connecting.
    #[arg(long, env = "KUBEPULSE_RELAY_HELLO_TIMEOUT", default_value = "10s", value_parser = parse_duration, help_heading = "Agents")]
    pub hello_timeout: Duration,
    /// Most agent streams at once; more are refused with RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "KUBEPULSE_RELAY_MAX_STREAMS",
        default_value_t = 20_000,
        help_heading = "Agents"
    )]
    pub max_streams: usize,
    /// Largest message accepted from an agent, in bytes. A batch holding one such message must
    /// still pass the aggregators' --max-message-bytes (4 MiB by default), hence 64 KiB less.
    #[arg(long, env = "KUBEPULSE_RELAY_MAX_MESSAGE_BYTES", default_value_t = (4 << 20) - (64 << 10), help_heading = "Agents")]
    pub max_message_bytes: usize,

    /// A DNS name resolving to every aggregator replica (a headless Service), as host:port.
    /// Re-resolved every --aggregator-resolve-interval.
    #[arg(
        long,
        env = "KUBEPULSE_RELAY_AGGREGATOR_SERVICE",
        help_heading = "Aggregators"
    )]
    pub aggregator_service: Option<String>,
    /// Explicit aggregator addresses (host:port, comma-separated), instead of or beside --aggregator-service.
    #[arg(
        long,
        env = "KUBEPULSE_RELAY_AGGREGATOR_ENDPOINTS",
        value_delimiter = ',',
        help_heading = "Aggregators"
    )]
    pub aggregator_endpoints: Vec<String>,
    /// How often --aggregator-service is resolved again.
    #[arg(long, env = "KUBEPULSE_RELAY_AGGREGATOR_RESOLVE_INTERVAL", default_value = "30s", value_parser = parse_duration, help_heading = "Aggregators")]
    pub aggregator_resolve_interval: Duration,
    /// Talk to aggregators without TLS (local runs only).
    #[arg(
        long,
        env = "KUBEPULSE_RELAY_AGGREGATOR_PLAINTEXT",
        help_heading = "Aggregators"
    )]
    pub aggregator_plaintext: bool,
    /// CA bundle that signed the aggregators' certificate.
    #[arg(
        long,
        env = "KUBEPULSE_RELAY_AGGREGATOR_CA_FILE",
        help_heading = "Aggregators"
    )]
    pub aggregator_ca_file: Option<PathBuf>,
    /// Name the aggregators' certificate must carry (default: the host of --aggregator-service, else of each endpoint).
    #[arg(
        long,
        env = "KUBEPULSE_RELAY_AGGREGATOR_TLS_SERVER_NAME",
        help_heading = "Aggregators"
    )]
    pub aggregator_tls_server_name: Option<String>,
    /// Longest wait between reconnection attempts (jittered exponential backoff).
    #[arg(long, env = "KUBEPULSE_RELAY_MAX_BACKOFF", default_value = "10s", value_parser = parse_duration, help_heading = "Aggregators")]
    pub max_backoff: Duration,

    /// A frame waits at most this long before its replica's batch goes out.
    #[arg(long, env = "KUBEPULSE_RELAY_BATCH_INTERVAL", default_value = "100ms", value_parser = parse_duration, help_heading = "Batching")]
    pub batch_interval: Duration,
    /// A batch goes out as soon as this many bytes are pending, and holds no more (one larger
    /// message goes alone). Keep it at most the aggregators' --max-message-bytes. Each
    /// replica's receive buffer for this relay's stream grows to about twice the largest batch
    /// and keeps that size; steady batches are far smaller (a delta is ~1-2 KiB), so a larger
    /// value only speeds up the snapshots sent when a replica (re)connects.
    #[arg(long, env = "KUBEPULSE_RELAY_MAX_BATCH_BYTES", default_value_t = 64 << 10, help_heading = "Batching")]
    pub max_batch_bytes: usize,
    /// Bytes that may wait for one replica; a replica that falls further behind is disconnected
    /// and, when it connects again, sent every agent's hello and a fresh snapshot. Must hold
    /// every agent's hello and snapshot (a few KiB per agent).
    #[arg(long, env = "KUBEPULSE_RELAY_MAX_PENDING_BYTES", default_value_t = 256 << 20, help_heading = "Batching")]
    pub max_pending_bytes: usize,
    /// A status equal to the last one forwarded for its agent is forwarded again only after this
    /// long without any message forwarded for that agent. Keep it below the aggregators' node
    /// TTL (--node-ttl-min, 30 s by default) less the agents' --heartbeat-interval (5 s): an
    /// idle agent's node then still hears from it in time. At 18 s an agent whose kubelet
    /// refreshes every 15 s (a delta a second or so after each refresh) has no heartbeat
    /// forwarded at all: its deltas keep its node fresh.
    #[arg(long, env = "KUBEPULSE_RELAY_HEARTBEAT_FORWARD_INTERVAL", default_value = "18s", value_parser = parse_duration, help_heading = "Batching")]
    pub heartbeat_forward_interval: Duration,

    /// Address of the plain-HTTP operations endpoint: /healthz, /readyz and /metrics
    /// (self-metrics); port 0 picks a free port.
    #[arg(
        long,
        env = "KUBEPULSE_RELAY_HEALTH_ADDRESS",
        default_value = "0.0.0.0:10253",
        help_heading = "Operations"
    )]
    pub health_address: SocketAddr,
    /// Log format: text or json.
    #[arg(
        long,
        visible_alias = "logging-format",
        env = "KUBEPULSE_RELAY_LOG_FORMAT",
        default_value = "text",
        help_heading = "Operations"
    )]
    pub log_format: LogFormat,
    /// Log levels, per module if wanted (tracing filter syntax).
    #[arg(
        long,
        env = "KUBEPULSE_RELAY_LOG_LEVEL",
        default_value = "info",
        help_heading = "Operations"
    )]
    pub log_level: String,
}

impl Config {
    /// The hub's settings.
    pub fn hub(&self) -> HubConfig {
        HubConfig {
            batch_interval: self.batch_interval,
            max_batch_bytes: self.max_batch_bytes,
            max_pending_bytes: self.max_pending_bytes,
            heartbeat_forward_interval: self.heartbeat_forward_interval,
            max_links: self.max_streams,
        }
    }

    /// The flags naming the aggregator replicas and how to reach them.
    pub fn aggregator_flags(&self) -> kubepulse_shell::upstream::AggregatorFlags<'_> {
        kubepulse_shell::upstream::AggregatorFlags {
            service: self.aggregator_service.as_ref(),
            endpoints: &self.aggregator_endpoints,
            plaintext: self.aggregator_plaintext,
            ca_file: self.aggregator_ca_file.as_deref(),
            tls_server_name: self.aggregator_tls_server_name.as_deref(),
            resolve_interval: self.aggregator_resolve_interval,
        }
    }

    /// Every problem with the configuration, or `Ok`.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if self.tls_cert_file.is_some() != self.tls_private_key_file.is_some() {
            problems.push("--tls-cert-file and --tls-private-key-file go together".to_owned());
        }
        if self.serving_ca_file.is_some() != self.serving_ca_key_file.is_some() {
            problems.push("--serving-ca-file and --serving-ca-key-file go together".to_owned());
        }
        if self.tls_cert_file.is_some() && self.serving_ca_file.is_some() {
            problems.push(
                "give --tls-cert-file or --serving-ca-file (a certificate to sign), not both"
                    .to_owned(),
            );
        }
        if self.grpc_plaintext && (self.tls_cert_file.is_some() || self.serving_ca_file.is_some()) {
            problems.push(
                "--tls-cert-file and --serving-ca-file have no effect with --grpc-plaintext"
                    .to_owned(),
            );
        }
        for (flag, file) in [
            ("--tls-cert-file", &self.tls_cert_file),
            ("--tls-private-key-file", &self.tls_private_key_file),
            ("--serving-ca-file", &self.serving_ca_file),
            ("--serving-ca-key-file", &self.serving_ca_key_file),
        ] {
            if let Some(file) = file.as_ref().filter(|f| !f.is_file()) {
                problems.push(format!("{flag} {}: no such file", file.display()));
            }
        }
        if self.serving_ca_file.is_some()
            && (self.service_names.iter().all(|s| s.is_empty()) || self.namespace.is_empty())
        {
            problems.push("--serving-ca-file needs --service-names and --namespace".to_owned());
        }
        if self.hello_timeout.is_zero() {
            problems.push("--hello-timeout must be positive".to_owned());
        }
        if self.max_streams == 0 {
            problems.push("--max-streams must be positive".to_owned());
        }
        if self.max_message_bytes < 1024 {
            problems.push("--max-message-bytes must be at least 1024".to_owned());
        }
        self.aggregator_flags().check(&mut problems);
        if self.max_backoff < Duration::from_millis(100) {
            problems.push("--max-backoff must be at least 100ms".to_owned());
        }
        if self.batch_interval.is_zero() || self.batch_interval > Duration::from_secs(1) {
            problems.push("--batch-interval must be positive and at most 1s".to_owned());
        }
        if self.max_batch_bytes < 1024 || self.max_batch_bytes > 4 << 20 {
            problems.push(
                "--max-batch-bytes must be between 1024 and 4194304 (the aggregators' default --max-message-bytes)"
                    .to_owned(),
            );
        }
        if self.max_message_bytes + BATCH_SLACK > 4 << 20 {
            problems.push(format!(
                "--max-message-bytes must leave {BATCH_SLACK} bytes below 4194304 (the aggregators' default --max-message-bytes): a batch carries one message at least"
            ));
        }
        if self.max_pending_bytes < 4 * self.max_batch_bytes.max(self.max_message_bytes) {
            problems.push(
                "--max-pending-bytes must be at least 4 × the larger of --max-batch-bytes and --max-message-bytes"
                    .to_owned(),
            );
        }
        if self.heartbeat_forward_interval < Duration::from_secs(1)
            || self.heartbeat_forward_interval > Duration::from_secs(20)
        {
            problems.push(
                "--heartbeat-forward-interval must be between 1s and 20s (the aggregators' node TTL is at least 30s)"
                    .to_owned(),
            );
        }
        if let Err(problem) = kubepulse_shell::check_log_level(&self.log_level) {
            problems.push(problem);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("kubepulse-relay").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn a_minimal_local_config_is_valid() {
        let c = parse(&[
            "--grpc-plaintext",
            "--aggregator-endpoints=127.0.0.1:1,127.0.0.1:2",
            "--aggregator-plaintext",
        ]);
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.aggregator_endpoints.len(), 2);
        assert_eq!(c.hub(), HubConfig::default());
    }

    #[test]
    fn every_problem_is_reported() {
        let c = parse(&[
            "--tls-cert-file=/nonexistent",
            "--aggregator-plaintext",
            "--aggregator-ca-file=/nonexistent",
            "--batch-interval=0s",
            "--max-batch-bytes=8388608",
            "--max-message-bytes=4194304",
            "--heartbeat-forward-interval=60s",
        ]);
        let problems = c.validate().unwrap_err();
        assert_eq!(problems.len(), 9, "{problems:#?}");
        assert!(problems.iter().any(|p| p.contains("--aggregator-service")));
    }
}
