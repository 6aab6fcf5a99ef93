//! The agent binary: parse and validate the configuration, start telemetry, run until SIGTERM
//! or Ctrl-C. Exit codes: 0 after a clean shutdown, 64 on a bad configuration, 1 on a runtime
//! failure.

use std::process::ExitCode;

use clap::Parser;
use kubepulse_agent::{Config, telemetry};

fn main() -> ExitCode {
    let config = Config::parse();
    if let Err(problems) = config.validate() {
        for p in &problems {
            eprintln!("kubepulse-agent: invalid configuration: {p}");
        }
        return ExitCode::from(64);
    }
    telemetry::init(config.log_format, &config.log_level);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("kubepulse-agent: start runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(kubepulse_agent::run(config, telemetry::shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "agent failed");
            ExitCode::FAILURE
        }
    }
}
