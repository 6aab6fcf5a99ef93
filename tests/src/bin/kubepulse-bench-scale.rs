//! `kubepulse-bench-scale`: the scale benchmark. `ours` measures the aggregator at one size,
//! `compare` runs it side by side with upstream metrics-server, `agent` measures the real
//! agent, `reads` counts kubelet reads with two replicas, `report` writes the tables and the
//! plot. Every run writes a JSON result under `--out`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kubepulse_model::duration::parse_duration;
use kubepulse_tests::bench;

/// Scale benchmark of kubepulse against simulated nodes, side by side with metrics-server.
#[derive(Debug, Parser)]
#[command(name = "kubepulse-bench-scale", version)]
struct Args {
    /// Where results (JSON) and logs go.
    #[arg(long, default_value = "target/bench-scale")]
    out: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, clap::Args, Clone)]
struct Size {
    /// Simulated nodes.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Pods per node.
    #[arg(long, default_value_t = 30)]
    pods_per_node: usize,
    /// Kubelet refresh interval: each node sends one delta per interval.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    interval: Duration,
    /// Length of the steady measurement window.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// kubepulse-aggregator alone at one size.
    Ours {
        #[command(flatten)]
        size: Size,
        /// Streams connecting at once.
        #[arg(long, default_value_t = 512)]
        connect_concurrency: usize,
        /// VPA-shaped lists taken.
        #[arg(long, default_value_t = 3)]
        vpa_runs: usize,
        /// Streams per HTTP/2 connection (1: one connection per node, as agents connect).
        #[arg(long, default_value_t = 1)]
        streams_per_connection: usize,
        /// Nodes behind each simulated relay, over one `Relay` stream per relay (0: no relay
        /// tier, every node streams itself).
        #[arg(long, default_value_t = 0)]
        nodes_per_relay: usize,
        /// One real kubepulse-relay process between the simulated agents (one connection per
        /// node) and the aggregator, measured too.
        #[arg(long)]
        through_relay: bool,
        /// Result file name (default `ours-<nodes>x<pods>.json`).
        #[arg(long)]
        name: Option<String>,
    },
    /// metrics-server (through a real kube-apiserver) and kubepulse-aggregator on the same
    /// simulated cluster at the same time.
    Compare {
        #[command(flatten)]
        size: Size,
        /// Nodes behind each simulated relay on kubepulse's side (0: every node streams itself).
        #[arg(long, default_value_t = 0)]
        nodes_per_relay: usize,
    },
    /// The real agent binary against one simulated kubelet.
    Agent {
        /// Pods on the node.
        #[arg(long, default_value_t = 110)]
        pods: usize,
        /// Kubelet stats refresh period.
        #[arg(long, default_value = "15s", value_parser = parse_duration)]
        refresh: Duration,
        /// Steady window.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        duration: Duration,
    },
    /// Kubelet reads per node per interval, two replicas of metrics-server and of kubepulse.
    Reads {
        /// Simulated nodes.
        #[arg(long, default_value_t = 20)]
        nodes: usize,
        /// metrics-server --metric-resolution.
        #[arg(long, default_value = "15s", value_parser = parse_duration)]
        interval: Duration,
        /// Counting window.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        duration: Duration,
    },
    /// Tables (Markdown) and the plot (SVG) from every result so far.
    Report {
        /// Also write the plot here.
        #[arg(long)]
        svg: Option<PathBuf>,
    },
}

fn config(
    out: &std::path::Path,
    name: &str,
    size: &Size,
    vpa_runs: usize,
    connect_concurrency: usize,
    streams_per_connection: usize,
    nodes_per_relay: usize,
) -> bench::ours::Config {
    bench::ours::Config {
        nodes: size.nodes,
        pods_per_node: size.pods_per_node,
        interval: size.interval,
        duration: size.duration,
        dir: out.join("runs").join(name),
        lag_probes: 16,
        saturate: Duration::from_secs(10),
        vpa_runs,
        connect_concurrency,
        streams_per_connection,
        nodes_per_relay,
        through_relay: false,
    }
}

fn save(
    out: &std::path::Path,
    name: &str,
    nofile: u64,
    result: impl serde::Serialize,
) -> anyhow::Result<()> {
    let json =
        serde_json::json!({ "machine": bench::machine(), "nofile": nofile, "result": result });
    let path = out.join("results").join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
    println!("{}", serde_json::to_string_pretty(&json)?);
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    kubepulse_shell::init_logging(kubepulse_shell::LogFormat::Text, "warn");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("kubepulse-bench-scale: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(args.out.join("results"))?;
    let nofile = bench::raise_nofile(1 << 20)?;
    if !matches!(args.command, Cmd::Report { .. }) {
        eprintln!("open-file limit: {nofile}");
    }
    match args.command {
        Cmd::Ours {
            size,
            connect_concurrency,
            vpa_runs,
            streams_per_connection,
            nodes_per_relay,
            through_relay,
            name,
        } => {
            let name = name.unwrap_or_else(|| {
                let relayed = if through_relay {
                    "-through-relay".to_owned()
                } else if nodes_per_relay > 0 {
                    format!("-relay{nodes_per_relay}")
                } else {
                    String::new()
                };
                format!("ours-{}x{}{relayed}", size.nodes, size.pods_per_node)
            });
            let mut cfg = config(
                &args.out,
                &name,
                &size,
                vpa_runs,
                connect_concurrency,
                streams_per_connection,
                nodes_per_relay,
            );
            cfg.through_relay = through_relay;
            save(&args.out, &name, nofile, bench::ours::run(cfg).await?)?;
        }
        Cmd::Compare {
            size,
            nodes_per_relay,
        } => {
            let relayed = if nodes_per_relay > 0 {
                format!("-relay{nodes_per_relay}")
            } else {
                String::new()
            };
            let name = format!("compare-{}x{}{relayed}", size.nodes, size.pods_per_node);
            let cfg = config(&args.out, &name, &size, 1, 512, 1, nodes_per_relay);
            save(&args.out, &name, nofile, bench::compare::run(cfg).await?)?;
        }
        Cmd::Agent {
            pods,
            refresh,
            duration,
        } => {
            let name = format!("agent-{pods}pods");
            let dir = args.out.join("runs").join(&name);
            save(
                &args.out,
                &name,
                nofile,
                bench::agent::run(&dir, pods, refresh, duration).await?,
            )?;
        }
        Cmd::Reads {
            nodes,
            interval,
            duration,
        } => {
            let name = format!("reads-{nodes}");
            let dir = args.out.join("runs").join(&name);
            save(
                &args.out,
                &name,
                nofile,
                bench::compare::reads(&dir, nodes, interval, duration).await?,
            )?;
        }
        Cmd::Report { svg } => {
            print!("{}", bench::report::write(&args.out, svg.as_deref())?);
        }
    }
    Ok(())
}
