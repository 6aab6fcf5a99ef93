//! `kubectl-pulse`, the kubectl plugin of kubepulse: `kubectl pulse explain pod NAME -n NS` and
//! `kubectl pulse explain node NAME` say why an object has metrics or not.
//!
//! It follows kubectl's plugin conventions: the binary is named `kubectl-pulse` and found on
//! `PATH`; it runs the `kubectl` on `PATH` (or `$KUBECTL`) as
//! `kubectl [--kubeconfig …] [--context …] get --raw /apis/metrics.k8s.io/<v>/…/explain`, so
//! the request takes the user's own credentials through kube-apiserver's aggregation layer
//! (`KUBECONFIG` is inherited as is) and is authorized as `get` on the `pods/explain` or
//! `nodes/explain` subresource. The answer is the aggregator's `kubepulse.io/v1alpha1`
//! explanation document, printed as a few lines (one per reason) or as JSON (`-o json`).

use std::ffi::OsString;
use std::process::{Command as Process, ExitCode};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::Value;

/// Asks kubepulse why a pod or node has metrics or not.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl pulse",
    bin_name = "kubectl pulse",
    version,
    after_help = "Examples:\n  kubectl pulse explain pod web-0 -n prod\n  kubectl pulse explain node worker-1 -o json\n\nThe plugin runs `kubectl get --raw` (the kubectl on PATH, or $KUBECTL) with your kubeconfig."
)]
struct Cli {
    #[command(flatten)]
    kube: KubeFlags,
    #[command(subcommand)]
    command: Command,
}

/// The kubectl flags passed through.
#[derive(Clone, Debug, Default, Args)]
struct KubeFlags {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, as kubectl).
    #[arg(long, global = true, value_name = "PATH")]
    kubeconfig: Option<String>,
    /// The kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME")]
    context: Option<String>,
    /// The pod's namespace (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    namespace: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Why a pod or node has metrics, or why not.
    Explain {
        #[command(subcommand)]
        target: Target,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Text, global = true)]
        output: Output,
        /// The metrics.k8s.io version to ask through.
        #[arg(long, default_value = "v1beta1", global = true)]
        api_version: String,
    },
}

#[derive(Debug, Subcommand)]
enum Target {
    /// A pod (in `-n NAMESPACE`).
    #[command(visible_aliases = ["pods", "po"])]
    Pod {
        /// The pod's name.
        name: String,
    },
    /// A node.
    #[command(visible_aliases = ["nodes", "no"])]
    Node {
        /// The node's name.
        name: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    /// A few lines: the verdict, one line per reason, the last sample and the agent stream.
    Text,
    /// The explanation document as the aggregator sent it.
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Kubectl(code)) => ExitCode::from(code),
        Err(Failure::Other(err)) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    /// kubectl failed and said why on stderr (already forwarded); exit with its code.
    Kubectl(u8),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Self {
        Failure::Other(err)
    }
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let Command::Explain {
        target,
        output,
        api_version,
    } = &cli.command;
    let namespace = match (target, &cli.kube.namespace) {
        (Target::Pod { .. }, None) => context_namespace(&cli.kube)?,
        (_, ns) => ns.clone().unwrap_or_default(),
    };
    let path = explain_path(target, &namespace, api_version)?;
    let mut args = kube_args(&cli.kube);
    args.extend(["get".into(), "--raw".into(), path.into()]);
    let body = kubectl(&args)?;
    match output {
        Output::Json => print!("{}", String::from_utf8_lossy(&body)),
        Output::Text => {
            let doc: Value = serde_json::from_slice(&body).context(
                "the answer is not an explanation document (is kubepulse serving metrics.k8s.io?)",
            )?;
            print!("{}", render(&doc));
        }
    }
    Ok(())
}

/// `--kubeconfig` and `--context`, as given.
fn kube_args(flags: &KubeFlags) -> Vec<OsString> {
    let mut args = Vec::new();
    if let Some(path) = &flags.kubeconfig {
        args.push(format!("--kubeconfig={path}").into());
    }
    if let Some(context) = &flags.context {
        args.push(format!("--context={context}").into());
    }
    args
}

/// The aggregated API path of the explanation.
fn explain_path(target: &Target, namespace: &str, version: &str) -> anyhow::Result<String> {
    let check = |what: &str, s: &str| {
        let ok = !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b));
        if ok {
            Ok(())
        } else {
            bail!("invalid {what} {s:?}")
        }
    };
    check("API version", version)?;
    Ok(match target {
        Target::Pod { name } => {
            check("namespace", namespace)?;
            check("pod name", name)?;
            format!("/apis/metrics.k8s.io/{version}/namespaces/{namespace}/pods/{name}/explain")
        }
        Target::Node { name } => {
            check("node name", name)?;
            format!("/apis/metrics.k8s.io/{version}/nodes/{name}/explain")
        }
    })
}

/// The namespace of the current (or `--context`) context, else `default`, as kubectl picks it.
fn context_namespace(flags: &KubeFlags) -> Result<String, Failure> {
    let mut args = kube_args(flags);
    args.extend(
        ["config", "view", "--minify", "-o", "jsonpath={..namespace}"]
            .into_iter()
            .map(OsString::from),
    );
    let out = kubectl(&args)?;
    let ns = String::from_utf8_lossy(&out).trim().to_owned();
    Ok(if ns.is_empty() { "default".into() } else { ns })
}

/// Runs kubectl; its stdout, or its stderr forwarded and its exit code.
fn kubectl(args: &[OsString]) -> Result<Vec<u8>, Failure> {
    let program = std::env::var_os("KUBECTL").unwrap_or_else(|| "kubectl".into());
    let out = Process::new(&program)
        .args(args)
        .output()
        .with_context(|| {
            format!(
                "run {} (set $KUBECTL or put kubectl on PATH)",
                program.to_string_lossy()
            )
        })?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprint!("{stderr}");
    if stderr.contains("could not find the requested resource") {
        eprintln!(
            "hint: the metrics.k8s.io APIService may not point at kubepulse, or the aggregator predates the explain subresource"
        );
    }
    let code = out.status.code().unwrap_or(1).clamp(1, 255) as u8;
    Err(Failure::Kubectl(code))
}

/// The human form: the verdict, one line per reason, the last sample and the agent stream.
fn render(doc: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let meta = &doc["metadata"];
    let what = match meta["namespace"].as_str() {
        Some(ns) => format!("pod {ns}/{}", text(&meta["name"])),
        None => format!("node {}", text(&meta["name"])),
    };
    let mut out = String::new();
    let verdict = if doc["hasMetrics"].as_bool() == Some(true) {
        "has metrics"
    } else {
        "NO METRICS"
    };
    out.push_str(&format!("{what}: {verdict}"));
    if let Some(node) = doc["node"].as_str() {
        out.push_str(&format!(" (node {node})"));
    }
    // a node with metrics that node lists omit (--node-selector)
    if doc["hasMetrics"].as_bool() == Some(true) && doc["listed"].as_bool() == Some(false) {
        out.push_str(" (not listed)");
    }
    out.push('\n');
    for reason in doc["reasons"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  - {}: {}\n",
            text(&reason["code"]),
            text(&reason["message"])
        ));
    }
    let sample = &doc["lastSample"];
    if sample.is_object() {
        out.push_str(&format!(
            "  last sample: {} (window {}), {} old\n",
            text(&sample["timestamp"]),
            text(&sample["window"]),
            text(&sample["age"])
        ));
    }
    let stream = &doc["stream"];
    if stream.is_object() {
        let mut parts = vec![if stream["connected"].as_bool() == Some(true) {
            "connected".to_owned()
        } else {
            format!(
                "disconnected (last message {} ago)",
                text(&stream["lastMessageAge"])
            )
        }];
        if stream["hasData"].as_bool() == Some(true) {
            parts.push(format!(
                "data confirmed {} ago, expires in {} (TTL {})",
                text(&stream["freshAge"]),
                text(&stream["expiresIn"]),
                text(&stream["ttl"])
            ));
        } else if let Some(ago) = stream["expiredAgo"].as_str() {
            parts.push(format!("data expired {ago} ago"));
        } else {
            parts.push("no data yet".to_owned());
        }
        let read = &stream["kubeletRead"];
        parts.push(if read["ok"].as_bool() == Some(true) {
            "last kubelet read ok".to_owned()
        } else if let Some(error) = read["error"].as_str() {
            format!("last kubelet read failed: {error}")
        } else {
            "no kubelet read reported yet".to_owned()
        });
        parts.push(format!(
            "{} pods, {} containers held back",
            stream["pods"], stream["heldBackContainers"]
        ));
        parts.push(format!(
            "agent {} polling every {}",
            text(&stream["agentVersion"]),
            text(&stream["pollInterval"])
        ));
        out.push_str(&format!(
            "  agent stream ({}): {}\n",
            text(&stream["node"]),
            parts.join("; ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("kubectl-pulse").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn flags_pass_through_to_kubectl() {
        let cli = parse(&[
            "explain",
            "pod",
            "web-0",
            "-n",
            "prod",
            "--kubeconfig",
            "/tmp/kc",
            "--context=ci",
            "-o",
            "json",
        ]);
        assert_eq!(
            kube_args(&cli.kube),
            vec![
                OsString::from("--kubeconfig=/tmp/kc"),
                "--context=ci".into()
            ]
        );
        assert_eq!(cli.kube.namespace.as_deref(), Some("prod"));
        let Command::Explain {
            target,
            output,
            api_version,
        } = &cli.command;
        assert_eq!(*output, Output::Json);
        assert_eq!(
            explain_path(target, "prod", api_version).unwrap(),
            "/apis/metrics.k8s.io/v1beta1/namespaces/prod/pods/web-0/explain"
        );
        assert!(kube_args(&KubeFlags::default()).is_empty());
    }

    #[test]
    fn nodes_and_aliases() {
        let cli = parse(&["explain", "no", "worker-1", "--api-version", "v1"]);
        let Command::Explain {
            target,
            api_version,
            ..
        } = &cli.command;
        assert_eq!(
            explain_path(target, "", api_version).unwrap(),
            "/apis/metrics.k8s.io/v1/nodes/worker-1/explain"
        );
        let target = Target::Pod {
            name: "../x".into(),
        };
        assert!(explain_path(&target, "ns", "v1").is_err());
    }

    #[test]
    fn renders_one_line_per_reason() {
        let doc = serde_json::json!({
            "kind": "PodMetricsExplanation",
            "metadata": {"name": "web", "namespace": "prod"},
            "hasMetrics": false,
            "node": "n1",
            "reasons": [
                {"code": "ContainerRestarted", "message": "container app restarted; it waits"},
                {"code": "KubeletReadFailed", "message": "the read failed: 500"}
            ],
            "stream": {"node": "n1", "connected": true, "agentVersion": "0.1.0",
                       "pollInterval": "1s", "freshAge": "400ms", "hasData": true,
                       "ttl": "30s", "expiresIn": "29.6s",
                       "kubeletRead": {"ok": false, "error": "500"},
                       "pods": 3, "heldBackContainers": 1}
        });
        assert_eq!(
            render(&doc),
            "pod prod/web: NO METRICS (node n1)\n\
             \x20 - ContainerRestarted: container app restarted; it waits\n\
             \x20 - KubeletReadFailed: the read failed: 500\n\
             \x20 agent stream (n1): connected; data confirmed 400ms ago, expires in 29.6s (TTL 30s); last kubelet read failed: 500; 3 pods, 1 containers held back; agent 0.1.0 polling every 1s\n"
        );
        let doc = serde_json::json!({
            "metadata": {"name": "n1"}, "hasMetrics": true, "listed": false, "reasons": [],
            "lastSample": {"timestamp": "2026-01-01T00:00:00Z", "window": "15s", "age": "2s"}
        });
        assert_eq!(
            render(&doc),
            "node n1: has metrics (not listed)\n  last sample: 2026-01-01T00:00:00Z (window 15s), 2s old\n"
        );
    }
}
