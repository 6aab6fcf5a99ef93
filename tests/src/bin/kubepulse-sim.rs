//! `kubepulse-sim`: runs a simulated kubelet fleet until SIGTERM or Ctrl-C, writing the
//! kubelets' CA to `<state-dir>/ca.crt` and the node list with the control API address to
//! `<state-dir>/fleet.json`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use kubepulse_model::duration::parse_duration;
use kubepulse_tests::sim::{self, FleetConfig, SimOptions};

/// Simulated kubelets with known ground truth.
#[derive(Debug, Parser)]
#[command(name = "kubepulse-sim", version)]
struct Args {
    /// Number of simulated nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Pods per node.
    #[arg(long, default_value_t = 10)]
    pods_per_node: usize,
    /// Node names are this prefix plus an index.
    #[arg(long, default_value = "sim-node-")]
    node_prefix: String,
    /// Seed of the generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How often each kubelet refreshes its stats (real kubelets: 10-15s).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    refresh: Duration,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
    /// Node i listens on base-port + i (0: free ports).
    #[arg(long, default_value_t = 0)]
    base_port: u16,
    /// Control API port (0: a free port).
    #[arg(long, default_value_t = 0)]
    control_port: u16,
    /// Bearer token the kubelets require.
    #[arg(long)]
    token: Option<String>,
    /// Replace one random pod this often.
    #[arg(long, value_parser = parse_duration)]
    churn_every: Option<Duration>,
    /// Where ca.crt and fleet.json are written.
    #[arg(long)]
    state_dir: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.nodes == 0 || args.refresh < Duration::from_millis(10) {
        eprintln!("kubepulse-sim: --nodes must be positive and --refresh at least 10ms");
        return ExitCode::from(64);
    }
    kubepulse_shell::init_logging(kubepulse_shell::LogFormat::Text, "info");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result: anyhow::Result<()> = runtime.block_on(async {
        let fleet = sim::start(SimOptions {
            fleet: FleetConfig {
                nodes: args.nodes,
                pods_per_node: args.pods_per_node,
                node_prefix: args.node_prefix.clone(),
                seed: args.seed,
                refresh_ms: args.refresh.as_millis() as i64,
            },
            bind: args.bind,
            base_port: args.base_port,
            control_port: args.control_port,
            token: args.token.clone(),
            churn_every: args.churn_every,
            ..SimOptions::default()
        })
        .await?;
        std::fs::create_dir_all(&args.state_dir)?;
        std::fs::write(args.state_dir.join("ca.crt"), &fleet.ca_pem)?;
        let state = serde_json::json!({
            "control": fleet.control.to_string(),
            "nodes": fleet.nodes,
        });
        let tmp = args.state_dir.join("fleet.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&state)?)?;
        std::fs::rename(&tmp, args.state_dir.join("fleet.json"))?;
        tracing::info!(nodes = fleet.nodes.len(), control = %fleet.control, "simulated fleet serving");
        kubepulse_shell::shutdown_signal().await;
        fleet.stop();
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("kubepulse-sim: {err:#}");
            ExitCode::FAILURE
        }
    }
}
