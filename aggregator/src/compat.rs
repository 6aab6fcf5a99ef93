//! metrics-server flags that mean nothing to the aggregator, accepted so that the arguments of
//! an existing metrics-server Deployment do not stop it from starting; each one given is
//! logged once at start as a WARN saying why it is ignored and what to use instead.
//!
//! Only flags whose absence is safe are here: scraping settings (agents read their own
//! kubelet), klog verbosity, profiling and generic-apiserver plumbing. Flags that would
//! silently weaken security or change behaviour if dropped (audit logging, TLS versions and
//! cipher suites, CORS and HSTS, request limits and timeouts, kubelet client certificates) are
//! not accepted: the aggregator refuses to start with them. The README's migration table lists
//! every metrics-server flag.

use clap::Args;

/// The accepted-and-ignored metrics-server flags. Each takes an optional value
/// (`--flag`, `--flag=value` or `--flag value`).
#[derive(Debug, Clone, Default, Args)]
#[command(
    next_help_heading = "metrics-server compatibility (accepted and ignored, with a warning)"
)]
pub struct MetricsServerFlags {
    /// Agents read their kubelet every --poll-interval (kubepulse-agent) and forward each new sample.
    #[arg(long, value_name = "DURATION", num_args = 0..=1, default_missing_value = "")]
    pub metric_resolution: Option<String>,
    /// Each agent reads its own node's kubelet (kubepulse-agent --kubelet-address).
    #[arg(long, value_name = "PORT", num_args = 0..=1, default_missing_value = "")]
    pub kubelet_port: Option<String>,
    /// Each agent reads its own node's kubelet (kubepulse-agent --kubelet-address).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub kubelet_use_node_status_port: Option<String>,
    /// Each agent reads its own node's kubelet (kubepulse-agent --kubelet-address).
    #[arg(long, value_name = "TYPES", num_args = 0..=1, default_missing_value = "")]
    pub kubelet_preferred_address_types: Option<String>,
    /// Kubelet TLS is the agent's (kubepulse-agent --kubelet-insecure-tls); the aggregator reads no kubelet.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub kubelet_insecure_tls: Option<String>,
    /// Kubelet TLS is the agent's (kubepulse-agent --kubelet-certificate-authority).
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "")]
    pub kubelet_certificate_authority: Option<String>,
    /// Kubelet reads are the agent's (kubepulse-agent --kubelet-request-timeout).
    #[arg(long, value_name = "DURATION", num_args = 0..=1, default_missing_value = "")]
    pub kubelet_request_timeout: Option<String>,
    /// klog verbosity; use --log-level (a tracing filter, per module if wanted).
    #[arg(short = 'v', long = "v", value_name = "LEVEL", num_args = 0..=1, default_missing_value = "")]
    pub verbosity: Option<String>,
    /// klog per-module verbosity; use --log-level (e.g. info,kubepulse_aggregator::http=debug).
    #[arg(long, value_name = "PATTERN", num_args = 0..=1, default_missing_value = "")]
    pub vmodule: Option<String>,
    /// Logs are written unbuffered.
    #[arg(long, value_name = "DURATION", num_args = 0..=1, default_missing_value = "")]
    pub log_flush_frequency: Option<String>,
    /// No profiling endpoints are served.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub profiling: Option<String>,
    /// No profiling endpoints are served.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub contention_profiling: Option<String>,
    /// No request queueing: handlers read an immutable view and never wait on ingest.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub enable_priority_and_fairness: Option<String>,
    /// There is no watch to time out.
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "")]
    pub min_request_timeout: Option<String>,
    /// Nothing is advertised: kube-apiserver reaches the aggregator through its Service.
    #[arg(long, value_name = "IP", num_args = 0..=1, default_missing_value = "")]
    pub advertise_address: Option<String>,
    /// Nothing is advertised: kube-apiserver reaches the aggregator through its Service.
    #[arg(long, value_name = "HOST", num_args = 0..=1, default_missing_value = "")]
    pub external_hostname: Option<String>,
    /// A port that cannot be bound is an error at start either way.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub permit_port_sharing: Option<String>,
    /// A port that cannot be bound is an error at start either way.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub permit_address_sharing: Option<String>,
    /// Generic apiserver versioning: nothing here is versioned that way.
    #[arg(long, value_name = "VERSION", num_args = 0..=1, default_missing_value = "")]
    pub emulated_version: Option<String>,
    /// Generic apiserver versioning: nothing here is versioned that way.
    #[arg(long, value_name = "VERSION", num_args = 0..=1, default_missing_value = "")]
    pub min_compatibility_version: Option<String>,
    /// Kubernetes feature gates gate nothing here.
    #[arg(long, value_name = "GATES", num_args = 0..=1, default_missing_value = "")]
    pub feature_gates: Option<String>,
    /// There is no storage to initialize.
    #[arg(long, value_name = "DURATION", num_args = 0..=1, default_missing_value = "")]
    pub storage_initialization_timeout: Option<String>,
    /// Generic apiserver versioning: nothing here is versioned that way.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub runtime_config_emulation_forward_compatible: Option<String>,
    /// No debug socket is served.
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = "")]
    pub debug_socket_path: Option<String>,
}

/// One ignored flag as given: its name, value, and what to do instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ignored {
    /// `--metric-resolution`
    pub flag: &'static str,
    /// The value given (empty when none).
    pub value: String,
    /// Why it is ignored.
    pub why: &'static str,
}

impl MetricsServerFlags {
    /// Every flag that was given, in a fixed order.
    pub fn ignored(&self) -> Vec<Ignored> {
        const AGENT_READS: &str = "each kubepulse agent reads its own node's kubelet: set kubelet flags on kubepulse-agent";
        const LOGS: &str = "use --log-level, a tracing filter (per module if wanted)";
        const GENERIC: &str = "a generic kube-apiserver setting with no meaning here";
        let all: [(&'static str, &Option<String>, &'static str); 24] = [
            (
                "--metric-resolution",
                &self.metric_resolution,
                "agents read their kubelet every --poll-interval (kubepulse-agent) and forward each new kubelet sample",
            ),
            ("--kubelet-port", &self.kubelet_port, AGENT_READS),
            (
                "--kubelet-use-node-status-port",
                &self.kubelet_use_node_status_port,
                AGENT_READS,
            ),
            (
                "--kubelet-preferred-address-types",
                &self.kubelet_preferred_address_types,
                AGENT_READS,
            ),
            (
                "--kubelet-insecure-tls",
                &self.kubelet_insecure_tls,
                AGENT_READS,
            ),
            (
                "--kubelet-certificate-authority",
                &self.kubelet_certificate_authority,
                AGENT_READS,
            ),
            (
                "--kubelet-request-timeout",
                &self.kubelet_request_timeout,
                AGENT_READS,
            ),
            ("--v", &self.verbosity, LOGS),
            ("--vmodule", &self.vmodule, LOGS),
            (
                "--log-flush-frequency",
                &self.log_flush_frequency,
                "logs are written unbuffered",
            ),
            (
                "--profiling",
                &self.profiling,
                "no profiling endpoints are served",
            ),
            (
                "--contention-profiling",
                &self.contention_profiling,
                "no profiling endpoints are served",
            ),
            (
                "--enable-priority-and-fairness",
                &self.enable_priority_and_fairness,
                "requests read an immutable view and never queue behind ingest",
            ),
            (
                "--min-request-timeout",
                &self.min_request_timeout,
                "there is no watch",
            ),
            ("--advertise-address", &self.advertise_address, GENERIC),
            ("--external-hostname", &self.external_hostname, GENERIC),
            ("--permit-port-sharing", &self.permit_port_sharing, GENERIC),
            (
                "--permit-address-sharing",
                &self.permit_address_sharing,
                GENERIC,
            ),
            ("--emulated-version", &self.emulated_version, GENERIC),
            (
                "--min-compatibility-version",
                &self.min_compatibility_version,
                GENERIC,
            ),
            ("--feature-gates", &self.feature_gates, GENERIC),
            (
                "--storage-initialization-timeout",
                &self.storage_initialization_timeout,
                GENERIC,
            ),
            (
                "--runtime-config-emulation-forward-compatible",
                &self.runtime_config_emulation_forward_compatible,
                GENERIC,
            ),
            ("--debug-socket-path", &self.debug_socket_path, GENERIC),
        ];
        all.into_iter()
            .filter_map(|(flag, value, why)| {
                value.as_ref().map(|value| Ignored {
                    flag,
                    value: value.chars().take(256).collect(),
                    why,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        compat: MetricsServerFlags,
    }

    fn ignored(args: &[&str]) -> Vec<(&'static str, String)> {
        let cli = Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).unwrap();
        cli.compat
            .ignored()
            .into_iter()
            .map(|i| (i.flag, i.value))
            .collect()
    }

    #[test]
    fn the_upstream_manifest_arguments_are_accepted() {
        // manifests/base/deployment.yaml of metrics-server v0.9.0, plus what kind setups add
        let got = ignored(&[
            "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
            "--kubelet-use-node-status-port",
            "--metric-resolution=15s",
            "--kubelet-insecure-tls",
            "--v=2",
            "--profiling",
            "false",
        ]);
        assert_eq!(
            got,
            [
                ("--metric-resolution", "15s".to_owned()),
                ("--kubelet-use-node-status-port", "true".to_owned()),
                (
                    "--kubelet-preferred-address-types",
                    "InternalIP,ExternalIP,Hostname".to_owned()
                ),
                ("--kubelet-insecure-tls", "true".to_owned()),
                ("--v", "2".to_owned()),
                ("--profiling", "false".to_owned()),
            ]
        );
        assert_eq!(ignored(&["-v", "4"]), [("--v", "4".to_owned())]);
        assert!(ignored(&[]).is_empty());
    }

    #[test]
    fn the_aggregator_starts_with_metrics_server_manifest_arguments() {
        // manifests/base/deployment.yaml of metrics-server v0.9.0, as is
        let config = crate::Config::try_parse_from([
            "kubepulse-aggregator",
            "--standalone",
            "--cert-dir=/tmp",
            "--secure-port=10250",
            "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
            "--kubelet-use-node-status-port",
            "--metric-resolution=15s",
            "--logging-format=json",
        ])
        .unwrap();
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.secure_port, 10250);
        assert_eq!(config.log_format, crate::telemetry::LogFormat::Json);
        assert_eq!(config.metrics_server.ignored().len(), 3);
    }

    #[test]
    fn flags_unsafe_to_drop_are_refused() {
        for flag in [
            "--tls-min-version=VersionTLS12",
            "--tls-cipher-suites=X",
            "--audit-log-path=/tmp/a",
            "--max-requests-inflight=10",
            "--request-timeout=1m",
            "--kubelet-client-certificate=/c",
            "--cors-allowed-origins=x",
        ] {
            assert!(
                Cli::try_parse_from(["x", flag]).is_err(),
                "{flag} must not be silently ignored"
            );
        }
    }
}
