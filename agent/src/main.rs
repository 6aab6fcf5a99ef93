//! The agent binary: parse and validate the configuration, start telemetry, run until SIGTERM
//! or Ctrl-C. Exit codes: 0 after a clean shutdown, 64 on a bad configuration, 1 on a runtime
//! failure.

use std::process::ExitCode;

use clap::Parser;
use kubepulse_agent::{Config, telemetry};

fn main() -> ExitCode {
    let config = Config::parse();
    let (format, level) = (config.log_format, config.log_level.clone());
    kubepulse_shell::run_main(
        "kubepulse-agent",
        config.validate(),
        kubepulse_shell::Runtime::CurrentThread,
        || telemetry::init(format, &level),
        || kubepulse_agent::run(config, telemetry::shutdown_signal()),
    )
}
