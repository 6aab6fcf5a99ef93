//! The aggregator's configuration: every flag also reads an environment variable
//! (`KUBEPULSE_AGGREGATOR_*`). Flag names follow metrics-server where the meaning is the same.
//! [`Config::validate`] reports every problem at once.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use kubepulse_model::duration::parse_duration;

use crate::telemetry::LogFormat;

/// Command-line configuration.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "kubepulse-aggregator",
    version,
    about = "Serves metrics.k8s.io from the usage that kubepulse agents stream to it"
)]
pub struct Config {
    /// Address the HTTPS Metrics API listens on.
    #[arg(
        long,
        env = "KUBEPULSE_AGGREGATOR_BIND_ADDRESS",
        default_value = "0.0.0.0",
        help_heading = "Serving"
    )]
    pub bind_address: IpAddr,
    /// Port of the HTTPS Metrics API (0 picks a free port).
    #[arg(
        long,
        env = "KUBEPULSE_AGGREGATOR_SECURE_PORT",
        default_value_t = 10250,
        help_heading = "Serving"
    )]
    pub secure_port: u16,
    /// Serving certificate (PEM). Without it a self-signed certificate is generated into --cert-dir.
    #[arg(
        long,
        env = "KUBEPULSE_AGGREGATOR_TLS_CERT_FILE",
        help_heading = "Serving"
    )]
    pub tls_cert_file: Option<PathBuf>,
    /// Private key of --tls-cert-file (PEM).
    #[arg(
        long,
        env = "KUBEPULSE_AGGREGATOR_TLS_PRIVATE_KEY_FILE",
        help_heading = "Serving"
    )]
    pub tls_private_key_file: Option<PathBuf>,
    /// Where the self-signed serving certificate is written when none is given.
    #[arg(
        long,
        env = "KUBEPULSE_AGGREGATOR_CERT_DIR",
        default_value = "/tmp",
        help_heading = "Serving"
    )]
    pub cert_dir: PathBuf,

    /// Address the gRPC ingest listens on.
    #[arg(
        long,
        env = "KUBEPULSE_AGGREGATOR_GRPC_BIND_ADDRESS",
        default_value = "0.0.0.0",
        help_heading = "Ingest"
    )]
    pub grpc_bind_address: IpAddr,
    /// Port of the gRPC ingest that agents stream to (0 picks a free port).
    #[arg(
        long,
        env = "KUBEPULSE_AGGREGATOR_GRPC_PORT",
        default_value_t = 10251,
        help_heading = "Ingest"
    )]
    pub grpc_port: u16,
    /// Serve the gRPC ingest without TLS (local runs only).
    #[arg(
        long,
        env = "KUBEPULSE_AGGREGATOR_GRPC_PLAINTEXT",
        help_heading = "Ingest"
    )]
    pub grpc_plaintext: bool,
    /// Largest gRPC message accepted from an agent, in bytes.
    #[arg(long, env = "KUBEPULSE_AGGREGATOR_MAX_MESSAGE_BYTES", default_value_t = 4 << 20, help_heading = "Ingest")]
    pub max_message_bytes: usize,
    /// Most pods one node may report.
    #[arg(
        long,
        env = "KUBEPULSE_AGGREGATOR_MAX_PODS_PER_NODE",
        default_value_t = 1000,
        help_heading = "Ingest"
    )]
    pub max_pods_per_node: usize,
    /// Most containers one node may report.
    #[arg(
        long,
        env = "KUBEPULSE_AGGREGATOR_MAX_CONTAINERS_PER_NODE",
        default_value_t = 10_000,
        help_heading = "Ingest"
    )]
    pub max_containers_per_node: usize,
    /// How long an agent may take to send its hello after connecting.
    #[arg(long, env = "KUBEPULSE_AGGREGATOR_HELLO_TIMEOUT", default_value = "10s", value_parser = parse_duration, help_heading = "Ingest")]
    pub hello_timeout: Duration,

    /// A node's data is dropped after this many of its agent's poll intervals without a
    /// successful kubelet read…
    #[arg(
        long,
        env = "KUBEPULSE_AGGREGATOR_NODE_TTL_INTERVALS",
        default_value_t = 3,
        help_heading = "Freshness"
    )]
    pub node_ttl_intervals: u32,
    /// …and never sooner than this.
    #[arg(long, env = "KUBEPULSE_AGGREGATOR_NODE_TTL_MIN", default_value = "30s", value_parser = parse_duration, help_heading = "Freshness")]
    pub node_ttl_min: Duration,

    /// Log format: text or json.
    #[arg(
        long,
        env = "KUBEPULSE_AGGREGATOR_LOG_FORMAT",
        default_value = "text",
        help_heading = "Logging"
    )]
    pub log_format: LogFormat,
    /// Log levels, per module if wanted (tracing filter syntax, e.g. `info,kubepulse_aggregator::ingest=debug`).
    #[arg(
        long,
        env = "KUBEPULSE_AGGREGATOR_LOG_LEVEL",
        default_value = "info",
        help_heading = "Logging"
    )]
    pub log_level: String,
}

impl Config {
    /// Every problem with the configuration, or `Ok`.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if self.tls_cert_file.is_some() != self.tls_private_key_file.is_some() {
            problems.push("--tls-cert-file and --tls-private-key-file go together".to_owned());
        }
        for (flag, path) in [
            ("--tls-cert-file", &self.tls_cert_file),
            ("--tls-private-key-file", &self.tls_private_key_file),
        ] {
            if let Some(p) = path.as_ref().filter(|p| !p.is_file()) {
                problems.push(format!("{flag} {}: no such file", p.display()));
            }
        }
        if self.max_message_bytes < 1024 {
            problems.push("--max-message-bytes must be at least 1024".to_owned());
        }
        if self.max_pods_per_node == 0 || self.max_containers_per_node == 0 {
            problems.push(
                "--max-pods-per-node and --max-containers-per-node must be positive".to_owned(),
            );
        }
        if self.node_ttl_intervals < 2 {
            problems.push("--node-ttl-intervals must be at least 2".to_owned());
        }
        if self.node_ttl_min < Duration::from_secs(1) {
            problems.push("--node-ttl-min must be at least 1s".to_owned());
        }
        if self.hello_timeout.is_zero() {
            problems.push("--hello-timeout must be positive".to_owned());
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
        Config::try_parse_from(std::iter::once("kubepulse-aggregator").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(parse(&[]).validate(), Ok(()));
    }

    #[test]
    fn every_problem_is_reported() {
        let c = parse(&[
            "--tls-cert-file=/nonexistent",
            "--node-ttl-intervals=1",
            "--max-pods-per-node=0",
            "--log-level=info,[",
        ]);
        let problems = c.validate().unwrap_err();
        assert_eq!(problems.len(), 5, "{problems:?}");
    }
}
