//! Why a pod or a node has metrics, or why not: the answer to "why does `kubectl top` say no
//! metrics for my pod?", read from the same published views the Metrics API serves from.
//!
//! [`explain_pod`] and [`explain_node`] first ask [`query`] exactly what a `GET`
//! would answer (so an explanation never disagrees with the API), then list every condition
//! the aggregator can see that keeps the object from being served or makes its data suspect:
//! the pod is unknown to the watch of Running pods or not Running, its node has no agent
//! stream (never connected, or quiet since …), the agent's last kubelet read failed (with the
//! error), a container is held back by the agent (restarted, waiting for a second sample, …),
//! the node's data expired, or the node is outside `--node-selector`. Each answer carries the
//! last sample's kubelet timestamp and window and the state of the node's stream (age of its
//! last fresh report, TTL).
//!
//! Pure: `now` is an argument (the caller's monotonic clock, the same one the writer stamps
//! `fresh_at` with). The watch of pods only lists Running pods, so it cannot tell "does not
//! exist" from "is Pending"; the shell may look the pod up in the Kubernetes API and pass the
//! answer as an [`ApiPod`]. Wire form: [`encode::explain`](crate::encode::explain).

use std::time::{Duration, Instant};

use kubepulse_model::{ContainerName, NodeName, PodKey, Timestamp, Window};

use crate::meta::MetaView;
use crate::query;
use crate::selector::LabelSelector;
use crate::store::{ClusterView, NodeEntry};

/// What an explanation is computed from.
#[derive(Clone, Copy, Debug)]
pub struct Scope<'a> {
    /// The writer's latest view.
    pub view: &'a ClusterView,
    /// The metadata (Kubernetes mode), or `None` standalone.
    pub meta: Option<&'a MetaView>,
    /// `--node-selector`, when not empty.
    pub node_selector: Option<&'a LabelSelector>,
    /// The caller's monotonic "now".
    pub now: Instant,
}

/// What a direct look-up of the pod in the Kubernetes API found (the shell's optional
/// refinement of [`Reason::PodUnknown`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiPod {
    /// The API has no such pod.
    NotFound,
    /// The pod exists.
    Found {
        /// `status.phase` (`Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`).
        phase: String,
        /// `spec.nodeName`, once scheduled.
        node: Option<NodeName>,
    },
}

/// Why a pod or node is not served, or why its served data is suspect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The name cannot name a Kubernetes object.
    InvalidName {
        /// why
        error: String,
    },
    /// The Pod/Node watches have not completed their first list yet.
    MetadataNotSynced,
    /// The watch of Running pods does not list the pod: it does not exist or is not Running.
    PodUnknown,
    /// The Kubernetes API has no such pod.
    PodNotFound,
    /// The pod exists but is not Running.
    PodNotRunning {
        /// its phase (empty when only "not Running" is known)
        phase: String,
    },
    /// The pod is not scheduled to a node yet.
    PodNotScheduled,
    /// The API shows the pod Running but the watch has not delivered it yet.
    WatchBehind,
    /// The Node watch does not list the node.
    NodeUnknown {
        /// the node
        node: NodeName,
    },
    /// No agent stream for the node ever reached this replica (or it was forgotten after its
    /// data expired).
    NoAgentStream {
        /// the node
        node: NodeName,
    },
    /// The node's agent stream closed.
    AgentDisconnected {
        /// the node
        node: NodeName,
        /// time since the stream last sent anything
        quiet_for: Duration,
        /// whether the last values are still served (until the TTL)
        serving_last_values: bool,
    },
    /// The stream is open but the agent has not sent its first snapshot (it waits until it
    /// has two kubelet samples, up to 30 s after it starts).
    AwaitingSnapshot {
        /// the node
        node: NodeName,
    },
    /// The agent's last kubelet read failed.
    KubeletReadFailed {
        /// the node
        node: NodeName,
        /// the agent's error
        error: String,
        /// whether the last values are still served (until the TTL)
        serving_last_values: bool,
    },
    /// The node's data expired: no successful kubelet read within its TTL.
    DataExpired {
        /// the node
        node: NodeName,
        /// how long ago
        ago: Duration,
        /// the node's TTL
        ttl: Duration,
    },
    /// The agent holds a container back (so the whole pod is not served).
    ContainerPending {
        /// the container
        container: ContainerName,
        /// the agent's stable reason name (`restarted`, `waiting_for_second_sample`, …)
        reason: String,
        /// the agent's kubelet poll interval (a second sample comes within the kubelet's
        /// refresh period, typically 10–15 s)
        poll_interval: Duration,
    },
    /// The agent holds back more containers than it lists; this pod may be among them.
    PendingListTruncated {
        /// the node
        node: NodeName,
        /// held-back containers not listed
        dropped: u32,
    },
    /// The node's own usage is held back by the agent.
    NodeUsagePending {
        /// the agent's reason name
        reason: String,
    },
    /// The agent reports the node but not this pod and gives no reason: the kubelet lists no
    /// stats for it (a pod that just started, or a kubelet that does not report pods).
    NotReportedByAgent {
        /// the node
        node: NodeName,
    },
    /// No agent reports the pod at all (and no metadata says where it runs).
    NotReportedAnywhere,
    /// The agent reports the pod, but from another node than the one it is bound to.
    ReportedByOtherNode {
        /// the reporting node
        reported_by: NodeName,
        /// the node the pod is bound to
        bound_to: NodeName,
    },
    /// The node does not match `--node-selector`: node lists omit it.
    NodeNotSelected {
        /// the node
        node: NodeName,
        /// the selector
        selector: String,
    },
}

/// A pod's explanation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodExplanation {
    /// The namespace asked about.
    pub namespace: String,
    /// The name asked about.
    pub name: String,
    /// A `GET` of the pod's metrics succeeds right now.
    pub has_metrics: bool,
    /// The node the pod runs on, as far as the metadata or the agents tell.
    pub node: Option<NodeName>,
    /// Why it has no metrics; with metrics, what makes them suspect. Most important first.
    pub reasons: Vec<Reason>,
    /// The served sample: kubelet timestamp (the earliest container's) and window.
    pub sample: Option<(Timestamp, Window)>,
    /// The node's stream.
    pub stream: Option<StreamState>,
}

/// A node's explanation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeExplanation {
    /// The name asked about.
    pub name: String,
    /// A `GET` of the node's metrics succeeds right now.
    pub has_metrics: bool,
    /// The node appears in node lists (it matches `--node-selector`).
    pub listed: bool,
    /// Why it has no metrics (or is not listed); with metrics, what makes them suspect.
    pub reasons: Vec<Reason>,
    /// The served sample: kubelet timestamp and window.
    pub sample: Option<(Timestamp, Window)>,
    /// The node's stream.
    pub stream: Option<StreamState>,
}

/// What the aggregator knows of a node's agent stream, relative to `now`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamState {
    /// The node.
    pub node: NodeName,
    /// A stream is open.
    pub connected: bool,
    /// Time since a stream for the node last sent anything.
    pub last_message_age: Duration,
    /// Time since the data was last confirmed fresh (a snapshot, a delta, or a status of a
    /// successful kubelet read): the lag of what is served behind the agent.
    pub fresh_age: Duration,
    /// The node has data to serve.
    pub has_data: bool,
    /// When the data expires unless refreshed (with data).
    pub expires_in: Option<Duration>,
    /// How long ago the data expired (once expired).
    pub expired_ago: Option<Duration>,
    /// The node's TTL.
    pub ttl: Duration,
    /// The agent's kubelet poll interval.
    pub poll_interval: Duration,
    /// The agent's version.
    pub agent_version: String,
    /// The agent's last kubelet read succeeded.
    pub kubelet_ok: bool,
    /// Why it failed.
    pub kubelet_error: String,
    /// Lines of the last kubelet body that could not be decoded.
    pub decode_issues: u32,
    /// Pods served from the node.
    pub pods: usize,
    /// Containers the agent holds back.
    pub held_back: usize,
}

/// Explains pod `namespace/name`; `api` is what a direct look-up in the Kubernetes API found,
/// when the shell made one.
pub fn explain_pod(
    scope: &Scope<'_>,
    namespace: &str,
    name: &str,
    api: Option<&ApiPod>,
) -> PodExplanation {
    let mut out = PodExplanation {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        has_metrics: false,
        node: None,
        reasons: Vec::new(),
        sample: None,
        stream: None,
    };
    let key = match PodKey::new(namespace, name) {
        Ok(key) => key,
        Err(err) => {
            out.reasons.push(Reason::InvalidName {
                error: err.to_string(),
            });
            return out;
        }
    };
    if let Ok(m) = query::get_pod(scope.view, scope.meta, namespace, name) {
        out.has_metrics = true;
        out.sample = Some((m.timestamp, m.window));
    }

    // The metadata: is the pod known, Running, and where is it bound?
    let pod_meta = scope.meta.and_then(|m| m.pods.get(&key));
    let mut bound = pod_meta.and_then(|pm| pm.node.clone());
    if let Some(meta) = scope.meta {
        match pod_meta {
            None => {
                if !meta.synced {
                    out.reasons.push(Reason::MetadataNotSynced);
                }
                match api {
                    None => out.reasons.push(Reason::PodUnknown),
                    Some(ApiPod::NotFound) => out.reasons.push(Reason::PodNotFound),
                    Some(ApiPod::Found { phase, node }) => {
                        if phase == "Running" {
                            out.reasons.push(Reason::WatchBehind);
                        } else {
                            out.reasons.push(Reason::PodNotRunning {
                                phase: phase.clone(),
                            });
                        }
                        if node.is_none() {
                            out.reasons.push(Reason::PodNotScheduled);
                        }
                        bound = node.clone();
                    }
                }
            }
            Some(pm) => {
                if !pm.running {
                    let phase = match api {
                        Some(ApiPod::Found { phase, .. }) => phase.clone(),
                        _ => String::new(),
                    };
                    out.reasons.push(Reason::PodNotRunning { phase });
                }
                if pm.node.is_none() {
                    out.reasons.push(Reason::PodNotScheduled);
                }
            }
        }
    }

    // Which node reports it, or holds it back?
    let reported_by = scope
        .view
        .nodes
        .iter()
        .find(|(_, e)| e.view.pods.contains_key(&key))
        .map(|(n, _)| n.clone());
    let held_by = scope
        .view
        .nodes
        .iter()
        .find(|(_, e)| e.scrape.pending.iter().any(|p| p.pod == key))
        .map(|(n, _)| n.clone());
    if let (Some(bound), Some(reporter)) = (&bound, &reported_by)
        && bound != reporter
        && !scope
            .view
            .nodes
            .get(bound)
            .is_some_and(|e| e.view.pods.contains_key(&key))
    {
        out.reasons.push(Reason::ReportedByOtherNode {
            reported_by: reporter.clone(),
            bound_to: bound.clone(),
        });
    }
    out.node = bound.or(reported_by).or(held_by);

    match &out.node {
        Some(node) => {
            let served_here = scope
                .view
                .nodes
                .get(node)
                .is_some_and(|e| e.view.pods.contains_key(&key));
            node_reasons(scope, node, &mut out.reasons, |entry, reasons| {
                let pending: Vec<_> = entry
                    .scrape
                    .pending
                    .iter()
                    .filter(|p| p.pod == key)
                    .collect();
                for p in &pending {
                    reasons.push(Reason::ContainerPending {
                        container: p.container.clone(),
                        reason: p.reason.clone(),
                        poll_interval: entry.info.poll_interval,
                    });
                }
                let reads_ok = entry.scrape.ok || entry.scrape.error.is_empty();
                if !served_here && pending.is_empty() && entry.has_data && reads_ok {
                    if entry.scrape.pending_dropped > 0 {
                        reasons.push(Reason::PendingListTruncated {
                            node: node.clone(),
                            dropped: entry.scrape.pending_dropped,
                        });
                    } else {
                        reasons.push(Reason::NotReportedByAgent { node: node.clone() });
                    }
                }
            });
            if let Some(selector) = scope.node_selector
                && let Some(reason) = not_selected(scope, node, selector)
            {
                out.reasons.push(reason);
            }
            out.stream = stream_state(scope, node);
        }
        None if scope.meta.is_none() => out.reasons.push(Reason::NotReportedAnywhere),
        None => {}
    }
    if !out.has_metrics && out.reasons.is_empty() {
        // served by no node although nothing above objects: say what the agents say
        out.reasons.push(match &out.node {
            Some(node) => Reason::NotReportedByAgent { node: node.clone() },
            None => Reason::NotReportedAnywhere,
        });
    }
    out
}

/// Explains node `name`.
pub fn explain_node(scope: &Scope<'_>, name: &str) -> NodeExplanation {
    let mut out = NodeExplanation {
        name: name.to_owned(),
        has_metrics: false,
        listed: false,
        reasons: Vec::new(),
        sample: None,
        stream: None,
    };
    let node = match NodeName::new(name) {
        Ok(node) => node,
        Err(err) => {
            out.reasons.push(Reason::InvalidName {
                error: err.to_string(),
            });
            return out;
        }
    };
    if let Ok(m) = query::get_node(scope.view, scope.meta, name) {
        out.has_metrics = true;
        out.sample = Some((m.sample.timestamp, m.sample.window));
    }
    if let Some(meta) = scope.meta
        && !meta.nodes.contains_key(&node)
    {
        if !meta.synced {
            out.reasons.push(Reason::MetadataNotSynced);
        }
        out.reasons.push(Reason::NodeUnknown { node: node.clone() });
    }
    node_reasons(scope, &node, &mut out.reasons, |entry, reasons| {
        if entry.view.node.is_none() && !entry.scrape.node_pending.is_empty() {
            reasons.push(Reason::NodeUsagePending {
                reason: entry.scrape.node_pending.clone(),
            });
        }
    });
    out.listed = out.has_metrics;
    if let Some(selector) = scope.node_selector
        && let Some(reason) = not_selected(scope, &node, selector)
    {
        out.listed = false;
        out.reasons.push(reason);
    }
    out.stream = stream_state(scope, &node);
    out
}

impl Reason {
    /// A stable name for the reason (`ContainerRestarted`, `KubeletReadFailed`, …).
    pub fn code(&self) -> &'static str {
        match self {
            Reason::InvalidName { .. } => "InvalidName",
            Reason::MetadataNotSynced => "MetadataNotSynced",
            Reason::PodUnknown => "PodUnknown",
            Reason::PodNotFound => "PodNotFound",
            Reason::PodNotRunning { .. } => "PodNotRunning",
            Reason::PodNotScheduled => "PodNotScheduled",
            Reason::WatchBehind => "WatchBehind",
            Reason::NodeUnknown { .. } => "NodeUnknown",
            Reason::NoAgentStream { .. } => "NoAgentStream",
            Reason::AgentDisconnected { .. } => "AgentDisconnected",
            Reason::AwaitingSnapshot { .. } => "AwaitingSnapshot",
            Reason::KubeletReadFailed { .. } => "KubeletReadFailed",
            Reason::DataExpired { .. } => "DataExpired",
            Reason::ContainerPending { reason, .. } => match reason.as_str() {
                "restarted" => "ContainerRestarted",
                "waiting_for_second_sample" => "WaitingForSecondSample",
                _ => "ContainerHeldBack",
            },
            Reason::PendingListTruncated { .. } => "PendingListTruncated",
            Reason::NodeUsagePending { .. } => "NodeUsagePending",
            Reason::NotReportedByAgent { .. } => "NotReportedByAgent",
            Reason::NotReportedAnywhere => "NotReportedAnywhere",
            Reason::ReportedByOtherNode { .. } => "ReportedByOtherNode",
            Reason::NodeNotSelected { .. } => "NodeNotSelected",
        }
    }

    /// One sentence for a human.
    pub fn message(&self) -> String {
        match self {
            Reason::InvalidName { error } => format!("not a valid name: {error}"),
            Reason::MetadataNotSynced => {
                "the aggregator's Pod and Node watches have not completed their first list yet"
                    .to_owned()
            }
            Reason::PodUnknown => {
                "the aggregator's watch of Running pods does not list this pod: it does not exist or is not Running (metrics exist only for Running pods)".to_owned()
            }
            Reason::PodNotFound => "the pod does not exist in the Kubernetes API".to_owned(),
            Reason::PodNotRunning { phase } if phase.is_empty() => {
                "the pod is not Running; metrics exist only for Running pods".to_owned()
            }
            Reason::PodNotRunning { phase } => {
                format!("the pod is {phase}, not Running; metrics exist only for Running pods")
            }
            Reason::PodNotScheduled => "the pod is not scheduled to a node yet".to_owned(),
            Reason::WatchBehind => {
                "the Kubernetes API shows the pod Running, but the aggregator's watch has not delivered it yet".to_owned()
            }
            Reason::NodeUnknown { node } => {
                format!("the aggregator's Node watch does not list node {node}")
            }
            Reason::NoAgentStream { node } => format!(
                "no agent on node {node} streams to this aggregator replica: is the kubepulse agent pod running on the node, and can it reach the aggregator's gRPC port?"
            ),
            Reason::AgentDisconnected {
                node,
                quiet_for,
                serving_last_values,
            } => {
                let tail = if *serving_last_values {
                    "; its last values are served until the node's TTL"
                } else {
                    ""
                };
                format!(
                    "the agent on node {node} is not connected (last message {} ago){tail}",
                    human(*quiet_for)
                )
            }
            Reason::AwaitingSnapshot { node } => format!(
                "the agent on node {node} is connected but has not sent its first report (it waits for two kubelet samples)"
            ),
            Reason::KubeletReadFailed {
                node,
                error,
                serving_last_values,
            } => {
                let tail = if *serving_last_values {
                    " (the last good values are served until the node's TTL)"
                } else {
                    ""
                };
                format!("the agent's last read of the kubelet on node {node} failed: {error}{tail}")
            }
            Reason::DataExpired { node, ago, ttl } => format!(
                "node {node}'s data expired {} ago: no successful kubelet read within its TTL of {}",
                human(*ago),
                human(*ttl)
            ),
            Reason::ContainerPending {
                container,
                reason,
                poll_interval,
            } => {
                let why = match reason.as_str() {
                    "restarted" => "restarted; its CPU counter started over, so it waits for a second kubelet sample".to_owned(),
                    "waiting_for_second_sample" => {
                        "has one kubelet sample so far and waits for a second one".to_owned()
                    }
                    "out_of_order" => "got a sample older than the previous one".to_owned(),
                    "counter_decreased" => "has a CPU counter that went down".to_owned(),
                    "start_time_decreased" => "has a start time that went back".to_owned(),
                    "not_newer" => "has no newer kubelet sample than the last".to_owned(),
                    "missing_cpu" => "has no CPU sample in the kubelet's answer".to_owned(),
                    "missing_memory" => {
                        "has no memory sample in the kubelet's answer".to_owned()
                    }
                    "zero_memory" => {
                        "has a zero working set (the kubelet has no real stats for it)".to_owned()
                    }
                    other => format!("is held back by the agent ({other})"),
                };
                format!(
                    "container {container} {why}; the pod is served once every container has usage (the agent reads the kubelet every {}, the kubelet refreshes its stats every 10-15 s)",
                    human(*poll_interval)
                )
            }
            Reason::PendingListTruncated { node, dropped } => format!(
                "the agent on node {node} does not report this pod and holds back {dropped} containers it did not list; the pod is probably among them"
            ),
            Reason::NodeUsagePending { reason } => {
                format!("the agent holds the node's own usage back ({reason})")
            }
            Reason::NotReportedByAgent { node } => format!(
                "the agent on node {node} does not report this pod: the kubelet's /metrics/resource lists no stats for it (a pod that has just started, or a kubelet that does not report pods)"
            ),
            Reason::NotReportedAnywhere => {
                "no agent reports this pod (standalone mode: no Kubernetes API tells where it runs)"
                    .to_owned()
            }
            Reason::ReportedByOtherNode {
                reported_by,
                bound_to,
            } => format!(
                "node {reported_by} reports the pod but it is bound to node {bound_to}; only the bound node's report is served"
            ),
            Reason::NodeNotSelected { node, selector } => format!(
                "node {node} does not match --node-selector={selector:?}: node lists omit it"
            ),
        }
    }

    /// The node a reason is about, if any.
    pub fn node(&self) -> Option<&NodeName> {
        match self {
            Reason::NodeUnknown { node }
            | Reason::NoAgentStream { node }
            | Reason::AgentDisconnected { node, .. }
            | Reason::AwaitingSnapshot { node }
            | Reason::KubeletReadFailed { node, .. }
            | Reason::DataExpired { node, .. }
            | Reason::PendingListTruncated { node, .. }
            | Reason::NotReportedByAgent { node }
            | Reason::NodeNotSelected { node, .. } => Some(node),
            Reason::ReportedByOtherNode { reported_by, .. } => Some(reported_by),
            _ => None,
        }
    }
}

/// `d` rounded for people: milliseconds below a minute, whole seconds above (`1.25s`,
/// `2m5s`).
pub fn human(d: Duration) -> String {
    let nanos = if d >= Duration::from_secs(60) {
        d.as_secs() * 1_000_000_000
    } else {
        d.as_millis() as u64 * 1_000_000
    };
    crate::timefmt::format_duration(nanos)
}

// === private helpers ===

/// Appends what the node's stream and data say; `per_entry` adds the object-specific reasons
/// when the node is known.
fn node_reasons(
    scope: &Scope<'_>,
    node: &NodeName,
    reasons: &mut Vec<Reason>,
    per_entry: impl FnOnce(&NodeEntry, &mut Vec<Reason>),
) {
    let Some(entry) = scope.view.nodes.get(node) else {
        reasons.push(Reason::NoAgentStream { node: node.clone() });
        return;
    };
    let now = scope.now;
    if !entry.connected {
        reasons.push(Reason::AgentDisconnected {
            node: node.clone(),
            quiet_for: now.saturating_duration_since(entry.last_message_at),
            serving_last_values: entry.has_data,
        });
    } else if !entry.has_data && entry.expired_at.is_none() {
        reasons.push(Reason::AwaitingSnapshot { node: node.clone() });
    }
    if !entry.scrape.ok && !entry.scrape.error.is_empty() {
        reasons.push(Reason::KubeletReadFailed {
            node: node.clone(),
            error: entry.scrape.error.clone(),
            serving_last_values: entry.has_data,
        });
    }
    if let (false, Some(at)) = (entry.has_data, entry.expired_at) {
        reasons.push(Reason::DataExpired {
            node: node.clone(),
            ago: now.saturating_duration_since(at),
            ttl: entry.ttl,
        });
    }
    per_entry(entry, reasons);
}

fn not_selected(scope: &Scope<'_>, node: &NodeName, selector: &LabelSelector) -> Option<Reason> {
    let empty = Default::default();
    let labels = match scope.meta {
        Some(meta) => meta.nodes.get(node).map_or(&empty, |n| &*n.labels),
        None => &empty,
    };
    (!selector.matches(labels)).then(|| Reason::NodeNotSelected {
        node: node.clone(),
        selector: selector.to_string(),
    })
}

fn stream_state(scope: &Scope<'_>, node: &NodeName) -> Option<StreamState> {
    let entry = scope.view.nodes.get(node)?;
    let now = scope.now;
    let fresh_age = now.saturating_duration_since(entry.fresh_at);
    Some(StreamState {
        node: node.clone(),
        connected: entry.connected,
        last_message_age: now.saturating_duration_since(entry.last_message_at),
        fresh_age,
        has_data: entry.has_data,
        expires_in: entry.has_data.then(|| entry.ttl.saturating_sub(fresh_age)),
        expired_ago: entry
            .expired_at
            .filter(|_| !entry.has_data)
            .map(|at| now.saturating_duration_since(at)),
        ttl: entry.ttl,
        poll_interval: entry.info.poll_interval,
        agent_version: entry.info.agent_version.to_string(),
        kubelet_ok: entry.scrape.ok,
        kubelet_error: entry.scrape.error.clone(),
        decode_issues: entry.scrape.decode_issues,
        pods: entry.view.pods.len(),
        held_back: entry.scrape.pending.len() + entry.scrape.pending_dropped as usize,
    })
}

#[cfg(test)]
mod tests;
