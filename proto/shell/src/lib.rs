//! Plumbing that the binaries (agent, aggregator, relay) need in the same shape: the log format
//! flag, subscriber setup and the shutdown signal, and ([`upstream`]) the client connection to
//! the aggregator replicas that the agent and the relay both make. It lives beside the wire
//! contract because it is the other thing the sides share; it holds no domain logic.

#[cfg(feature = "certs")]
pub mod certs;
#[cfg(feature = "certs")]
pub mod grpc;
pub mod upstream;

/// Log output format (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Checks a `--log-level` filter.
pub fn check_log_level(level: &str) -> Result<(), String> {
    tracing_subscriber::EnvFilter::try_new(level)
        .map(|_| ())
        .map_err(|err| format!("--log-level {level:?}: {err}"))
}

/// Installs the global tracing subscriber, writing to stderr.
pub fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

/// The runtime a binary runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// One thread (the agent: one stream per replica, little to do in parallel).
    CurrentThread,
    /// A worker per core (the aggregator and the relay).
    MultiThread,
}

/// What every binary's `main` does around its own work: a configuration with problems prints
/// each as `NAME: invalid configuration: …` and exits 64; otherwise `init` starts logging and
/// `body` runs to its end on a `runtime`: exit 0 after a clean end, 1 when it failed (the
/// error logged with its causes).
pub fn run_main<F, E>(
    name: &str,
    validated: Result<(), Vec<String>>,
    runtime: Runtime,
    init: impl FnOnce(),
    body: impl FnOnce() -> F,
) -> std::process::ExitCode
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    use std::process::ExitCode;
    if let Err(problems) = validated {
        for p in &problems {
            eprintln!("{name}: invalid configuration: {p}");
        }
        return ExitCode::from(64);
    }
    init();
    let mut builder = match runtime {
        Runtime::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        Runtime::MultiThread => tokio::runtime::Builder::new_multi_thread(),
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("{name}: start runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(body()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "{name} failed");
            ExitCode::FAILURE
        }
    }
}
