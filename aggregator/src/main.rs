//! The aggregator binary: parse and validate the configuration, start telemetry, bind the
//! listeners, run until SIGTERM or Ctrl-C. Exit codes: 0 after a clean shutdown, 64 on a bad
//! configuration, 1 on a runtime failure.

use std::process::ExitCode;

use clap::Parser;
use kubepulse_aggregator::{Config, Listeners, telemetry};

fn main() -> ExitCode {
    let config = Config::parse();
    let (format, level) = (config.log_format, config.log_level.clone());
    kubepulse_shell::run_main(
        "kubepulse-aggregator",
        config.validate(),
        kubepulse_shell::Runtime::MultiThread,
        || telemetry::init(format, &level),
        || async {
            let listeners = Listeners::bind(&config).await?;
            kubepulse_aggregator::run(config, listeners, telemetry::shutdown_signal()).await
        },
    )
}
