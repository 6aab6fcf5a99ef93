//! The aggregator binary: parse and validate the configuration, start telemetry, bind the
//! listeners, run until SIGTERM or Ctrl-C. Exit codes: 0 after a clean shutdown, 64 on a bad
//! configuration, 1 on a runtime failure.

use std::process::ExitCode;

use clap::Parser;
use kubepulse_aggregator::{Config, Listeners, telemetry};

/// The shipped image links musl, whose allocator is slow under many threads and holds on to
/// freed memory; jemalloc behaves the same on musl and glibc (so the benchmarks, glibc builds,
/// measure what the image runs) and keeps a store of many small, long-lived allocations
/// tighter than glibc's malloc (10,000 relayed nodes: 123.5 MiB against 135.1 MiB).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

// jemalloc's run-time defaults are built into it from `.cargo/config.toml`
// (`JEMALLOC_SYS_WITH_MALLOC_CONF`; `_RJEM_MALLOC_CONF` in the environment overrides them):
// one arena instead of four per CPU. The store's long-lived allocations are made on whichever
// thread runs an ingest stream's task, so with several arenas they spread over several, each
// holding its own partly used pages; one arena kept the resident set ~1.5 MiB smaller at 5,000
// relayed nodes (34.7-34.9 against 36.1-36.4 MiB anonymous, two runs each) at the same CPU.
// Each thread still allocates from its own cache first, but a small one: at most 16 objects
// of a small size class (jemalloc's default: up to 200), 2 of a large one, none above 4 KiB.
// Every update frees the copy of its node's samples that readers no longer hold (~900 bytes
// each), and the default caches keep up to 200 of a size per thread: at 5,000 relayed nodes
// anonymous memory was 27.2 MiB with the small caches against 29.4 MiB with the default
// ones (26.6 MiB with none), the same CPU and HPA query rate (one run each).

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
