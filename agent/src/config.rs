//! The agent's configuration: every flag also reads an environment variable
//! (`KUBEPULSE_AGENT_*`). Flag names follow metrics-server where the meaning is the same.
//! [`Config::validate`] reports every problem at once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use kubepulse_model::NodeName;
use kubepulse_model::duration::parse_duration;

use crate::telemetry::LogFormat;

/// Command-line configuration.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "kubepulse-agent",
    version,
    about = "Reads this node's kubelet and streams usage changes to every kubepulse aggregator replica"
)]
pub struct Config {
    /// This node's name (from the downward API: spec.nodeName).
    #[arg(long, env = "KUBEPULSE_AGENT_NODE_NAME", help_heading = "Node")]
    pub node_name: String,

    /// Kubelet address (host:port) to read /metrics/resource from.
    #[arg(
        long,
        env = "KUBEPULSE_AGENT_KUBELET_ADDRESS",
        default_value = "127.0.0.1:10250",
        help_heading = "Kubelet"
    )]
    pub kubelet_address: String,
    /// Path of the resource metrics endpoint.
    #[arg(
        long,
        env = "KUBEPULSE_AGENT_KUBELET_PATH",
        default_value = "/metrics/resource",
        help_heading = "Kubelet"
    )]
    pub kubelet_path: String,
    /// Name the kubelet's serving certificate must carry (default: the node name).
    #[arg(
        long,
        env = "KUBEPULSE_AGENT_KUBELET_TLS_SERVER_NAME",
        help_heading = "Kubelet"
    )]
    pub kubelet_tls_server_name: Option<String>,
    /// CA bundle that signed the kubelet's serving certificate.
    #[arg(
        long,
        env = "KUBEPULSE_AGENT_KUBELET_CERTIFICATE_AUTHORITY",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
        help_heading = "Kubelet"
    )]
    pub kubelet_certificate_authority: PathBuf,
    /// Do not verify the kubelet's serving certificate (clusters with self-signed kubelet certificates).
    #[arg(
        long,
        env = "KUBEPULSE_AGENT_KUBELET_INSECURE_TLS",
        help_heading = "Kubelet"
    )]
    pub kubelet_insecure_tls: bool,
    /// Bearer token file presented to the kubelet; empty sends none.
    #[arg(
        long,
        env = "KUBEPULSE_AGENT_KUBELET_TOKEN_FILE",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token",
        help_heading = "Kubelet"
    )]
    pub kubelet_token_file: String,
    /// How long one kubelet read may take.
    #[arg(long, env = "KUBEPULSE_AGENT_KUBELET_REQUEST_TIMEOUT", default_value = "5s", value_parser = parse_duration, help_heading = "Kubelet")]
    pub kubelet_request_timeout: Duration,
    /// Largest kubelet response accepted, in bytes.
    #[arg(long, env = "KUBEPULSE_AGENT_KUBELET_MAX_RESPONSE_BYTES", default_value_t = 16 << 20, help_heading = "Kubelet")]
    pub kubelet_max_response_bytes: usize,
    /// How often the kubelet is read. Usage is forwarded only when the kubelet's own sample
    /// timestamps advance, so polling often costs little and keeps metrics fresh.
    #[arg(long, env = "KUBEPULSE_AGENT_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration, help_heading = "Kubelet")]
    pub poll_interval: Duration,
    /// A container younger than this with a known start time is served from one sample,
    /// averaged from its start (metrics-server's fresh-container rule).
    #[arg(long, env = "KUBEPULSE_AGENT_FRESH_CONTAINER_MAX_AGE", default_value = "15s", value_parser = parse_duration, help_heading = "Kubelet")]
    pub fresh_container_max_age: Duration,

    /// A DNS name resolving to every aggregator replica (a headless Service), as host:port.
    /// Re-resolved every --aggregator-resolve-interval.
    #[arg(
        long,
        env = "KUBEPULSE_AGENT_AGGREGATOR_SERVICE",
        help_heading = "Aggregators"
    )]
    pub aggregator_service: Option<String>,
    /// Explicit aggregator addresses (host:port, comma-separated), instead of or beside --aggregator-service.
    #[arg(
        long,
        env = "KUBEPULSE_AGENT_AGGREGATOR_ENDPOINTS",
        value_delimiter = ',',
        help_heading = "Aggregators"
    )]
    pub aggregator_endpoints: Vec<String>,
    /// How often --aggregator-service is resolved again.
    #[arg(long, env = "KUBEPULSE_AGENT_AGGREGATOR_RESOLVE_INTERVAL", default_value = "30s", value_parser = parse_duration, help_heading = "Aggregators")]
    pub aggregator_resolve_interval: Duration,
    /// Talk to aggregators without TLS (local runs only).
    #[arg(
        long,
        env = "KUBEPULSE_AGENT_AGGREGATOR_PLAINTEXT",
        help_heading = "Aggregators"
    )]
    pub aggregator_plaintext: bool,
    /// CA bundle that signed the aggregators' certificate.
    #[arg(
        long,
        env = "KUBEPULSE_AGENT_AGGREGATOR_CA_FILE",
        help_heading = "Aggregators"
    )]
    pub aggregator_ca_file: Option<PathBuf>,
    /// Name the aggregators' certificate must carry (default: the host of --aggregator-service, else of each endpoint).
    #[arg(
        long,
        env = "KUBEPULSE_AGENT_AGGREGATOR_TLS_SERVER_NAME",
        help_heading = "Aggregators"
    )]
    pub aggregator_tls_server_name: Option<String>,
    /// Projected service-account token (audience `kubepulse`) presented to the aggregators as
    /// this agent's identity; read again on every connect, since the kubelet rotates it. A
    /// missing file sends no token (aggregators in --standalone mode do not check identity);
    /// empty never sends one.
    #[arg(
        long,
        env = "KUBEPULSE_AGENT_AGGREGATOR_TOKEN_FILE",
        default_value = "/var/run/secrets/kubepulse/token",
        help_heading = "Aggregators"
    )]
    pub aggregator_token_file: String,
    /// A status heartbeat is sent at least this often while nothing else is.
    #[arg(long, env = "KUBEPULSE_AGENT_HEARTBEAT_INTERVAL", default_value = "5s", value_parser = parse_duration, help_heading = "Aggregators")]
    pub heartbeat_interval: Duration,
    /// Longest wait between reconnection attempts (jittered exponential backoff).
    #[arg(long, env = "KUBEPULSE_AGENT_MAX_BACKOFF", default_value = "10s", value_parser = parse_duration, help_heading = "Aggregators")]
    pub max_backoff: Duration,

    /// Address of the plain-HTTP operations endpoint: /healthz, /readyz and /metrics (self-metrics);
    /// port 0 picks a free port.
    #[arg(
        long,
        env = "KUBEPULSE_AGENT_HEALTH_ADDRESS",
        default_value = "0.0.0.0:10252",
        help_heading = "Operations"
    )]
    pub health_address: SocketAddr,
    /// Log format: text or json (also as metrics-server's --logging-format).
    #[arg(
        long,
        visible_alias = "logging-format",
        env = "KUBEPULSE_AGENT_LOG_FORMAT",
        default_value = "text",
        help_heading = "Operations"
    )]
    pub log_format: LogFormat,
    /// Log levels, per module if wanted (tracing filter syntax).
    #[arg(
        long,
        env = "KUBEPULSE_AGENT_LOG_LEVEL",
        default_value = "info",
        help_heading = "Operations"
    )]
    pub log_level: String,
}

impl Config {
    /// The validated node name. Call after [`Config::validate`].
    pub fn node(&self) -> NodeName {
        NodeName::new(&self.node_name).expect("validated node name")
    }

    /// The name the kubelet's certificate must carry.
    pub fn kubelet_server_name(&self) -> &str {
        self.kubelet_tls_server_name
            .as_deref()
            .unwrap_or(&self.node_name)
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
        if let Err(e) = NodeName::new(&self.node_name) {
            problems.push(format!("--node-name: {e}"));
        }
        if !self.kubelet_path.starts_with('/') {
            problems.push(format!(
                "--kubelet-path {:?} must start with /",
                self.kubelet_path
            ));
        }
        if split_host_port(&self.kubelet_address).is_none() {
            problems.push(format!(
                "--kubelet-address {:?} is not host:port",
                self.kubelet_address
            ));
        }
        if !self.kubelet_insecure_tls && !self.kubelet_certificate_authority.is_file() {
            problems.push(format!(
                "--kubelet-certificate-authority {}: no such file (pass the CA that signed the kubelet's certificate, or --kubelet-insecure-tls)",
                self.kubelet_certificate_authority.display()
            ));
        }
        if self.kubelet_insecure_tls && self.kubelet_tls_server_name.is_some() {
            problems.push(
                "--kubelet-tls-server-name has no effect with --kubelet-insecure-tls".to_owned(),
            );
        }
        if !self.kubelet_token_file.is_empty() && !Path::new(&self.kubelet_token_file).is_file() {
            problems.push(format!(
                "--kubelet-token-file {}: no such file (pass --kubelet-token-file= to send no token)",
                self.kubelet_token_file
            ));
        }
        if self.poll_interval < Duration::from_millis(100) {
            problems.push("--poll-interval must be at least 100ms".to_owned());
        }
        if self.kubelet_request_timeout.is_zero() {
            problems.push("--kubelet-request-timeout must be positive".to_owned());
        }
        if self.kubelet_max_response_bytes < 1024 {
            problems.push("--kubelet-max-response-bytes must be at least 1024".to_owned());
        }
        self.aggregator_flags().check(&mut problems);
        if self.heartbeat_interval.is_zero() || self.max_backoff < Duration::from_millis(100) {
            problems.push(
                "--heartbeat-interval must be positive and --max-backoff at least 100ms".to_owned(),
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

/// Splits `host:port` (IPv6 literals in brackets).
pub use kubepulse_shell::upstream::split_host_port;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("kubepulse-agent").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn a_minimal_local_config_is_valid() {
        let c = parse(&[
            "--node-name=n1",
            "--kubelet-insecure-tls",
            "--kubelet-token-file=",
            "--aggregator-endpoints=127.0.0.1:1,127.0.0.1:2",
            "--aggregator-plaintext",
        ]);
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.aggregator_endpoints.len(), 2);
        assert_eq!(c.kubelet_server_name(), "n1");
    }

    #[test]
    fn every_problem_is_reported() {
        let c = parse(&[
            "--node-name=bad/name",
            "--kubelet-address=nope",
            "--kubelet-path=metrics",
            "--kubelet-certificate-authority=/nonexistent",
            "--kubelet-token-file=/nonexistent",
            "--poll-interval=10ms",
        ]);
        let problems = c.validate().unwrap_err();
        assert_eq!(problems.len(), 7, "{problems:#?}");
        assert!(problems.iter().any(|p| p.contains("--aggregator-service")));
    }
}
