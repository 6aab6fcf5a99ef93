//! The relay binary: parse and validate the configuration, start telemetry, bind the
//! listeners, run until SIGTERM or Ctrl-C. Exit codes: 0 after a clean shutdown, 64 on a bad
//! configuration, 1 on a runtime failure.

use std::process::ExitCode;

use clap::Parser;
use kubepulse_relay::{Config, Listeners, telemetry};

fn main() -> ExitCode {
    let config = Config::parse();
    if let Err(problems) = config.validate() {
        for p in &problems {
            eprintln!("kubepulse-relay: invalid configuration: {p}");
        }
        return ExitCode::from(64);
    }
    telemetry::init(config.log_format, &config.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("kubepulse-relay: start runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let listeners = Listeners::bind(&config).await?;
        kubepulse_relay::run(config, listeners, telemetry::shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "relay failed");
            ExitCode::FAILURE
        }
    }
}
