//! The wire form of [`explain`](crate::explain) answers: a small JSON document of our own
//! group, `kubepulse.io/v1alpha1`, kinds `PodMetricsExplanation` and `NodeMetricsExplanation`
//! (JSON only; served under the `metrics.k8s.io` paths as the `explain` subresource, so
//! `kubectl get --raw` reaches it through kube-apiserver).
//!
//! ```json
//! {
//!   "kind": "PodMetricsExplanation",
//!   "apiVersion": "kubepulse.io/v1alpha1",
//!   "metadata": {"name": "web-0", "namespace": "prod", "creationTimestamp": "2026-05-01T10:00:00Z"},
//!   "hasMetrics": false,
//!   "node": "node-1",
//!   "summary": "no metrics: container web restarted; …",
//!   "reasons": [{"code": "ContainerRestarted", "message": "container web restarted; …",
//!                "node": "node-1", "container": "web", "agentReason": "restarted"}],
//!   "lastSample": {"timestamp": "2026-05-01T09:59:58Z", "window": "15s", "age": "2.31s"},
//!   "stream": {"node": "node-1", "connected": true, "agentVersion": "0.1.0",
//!              "pollInterval": "1s", "lastMessageAge": "412ms", "freshAge": "412ms",
//!              "lastFresh": "2026-05-01T09:59:59Z", "hasData": true, "ttl": "30s",
//!              "expiresIn": "29.588s", "kubeletRead": {"ok": true, "decodeIssues": 0},
//!              "pods": 10, "heldBackContainers": 1}
//! }
//! ```
//!
//! - `hasMetrics`: a `GET` of the object's metrics succeeds right now. `reasons` then lists
//!   what makes the data suspect (a failing kubelet read, a disconnected agent); without
//!   metrics, why not, most important first. `code` is stable (see
//!   [`Reason::code`](crate::explain::Reason::code)); `message` is a sentence for people.
//! - Nodes have `listed` (the node matches `--node-selector`, so lists include it).
//! - Durations are Go duration strings; `*Age`, `expiresIn` and `expiredAgo` are relative to
//!   `creationTimestamp`. `lastSample.timestamp` is the kubelet's sample time, so
//!   `lastSample.age` is the end-to-end lag of what is served; `stream.freshAge` is how long
//!   ago the agent last confirmed the node's data.

use serde::Serialize;

use kubepulse_model::Timestamp;

use super::{CONTENT_TYPE_JSON, Encoded};
use crate::explain::{NodeExplanation, PodExplanation, Reason, StreamState, human};
use crate::timefmt::{format_duration, format_time};

/// The `apiVersion` of explanations.
pub const API_VERSION: &str = "kubepulse.io/v1alpha1";

/// Kind of a pod's explanation.
pub const POD_KIND: &str = "PodMetricsExplanation";

/// Kind of a node's explanation.
pub const NODE_KIND: &str = "NodeMetricsExplanation";

/// A pod's explanation as JSON, built at `now` (wall clock).
pub fn pod(e: &PodExplanation, now: Timestamp) -> Encoded {
    let doc = Document {
        kind: POD_KIND,
        api_version: API_VERSION,
        metadata: Metadata {
            name: &e.name,
            namespace: Some(&e.namespace),
            creation_timestamp: format_time(now),
        },
        has_metrics: e.has_metrics,
        listed: None,
        node: e.node.as_ref().map(|n| n.as_str()),
        summary: summary(
            e.has_metrics,
            &e.reasons,
            e.node.as_ref().map(|n| n.as_str()),
        ),
        reasons: e.reasons.iter().map(ReasonDto::from).collect(),
        last_sample: e.sample.map(|(ts, w)| sample(ts, w.as_nanos(), now)),
        stream: e.stream.as_ref().map(|s| stream(s, now)),
    };
    json(&doc)
}

/// A node's explanation as JSON, built at `now` (wall clock).
pub fn node(e: &NodeExplanation, now: Timestamp) -> Encoded {
    let doc = Document {
        kind: NODE_KIND,
        api_version: API_VERSION,
        metadata: Metadata {
            name: &e.name,
            namespace: None,
            creation_timestamp: format_time(now),
        },
        has_metrics: e.has_metrics,
        listed: Some(e.listed),
        node: None,
        summary: summary(e.has_metrics, &e.reasons, None),
        reasons: e.reasons.iter().map(ReasonDto::from).collect(),
        last_sample: e.sample.map(|(ts, w)| sample(ts, w.as_nanos(), now)),
        stream: e.stream.as_ref().map(|s| stream(s, now)),
    };
    json(&doc)
}

// === DTOs ===

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Document<'a> {
    kind: &'static str,
    api_version: &'static str,
    metadata: Metadata<'a>,
    has_metrics: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    listed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
    summary: String,
    reasons: Vec<ReasonDto<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_sample: Option<SampleDto>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<StreamDto<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Metadata<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    creation_timestamp: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReasonDto<'a> {
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<&'a str>,
    /// the agent's reason name of a held-back container or node
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_reason: Option<&'a str>,
    /// the agent's kubelet error
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    phase: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SampleDto {
    timestamp: String,
    window: String,
    age: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StreamDto<'a> {
    node: &'a str,
    connected: bool,
    agent_version: &'a str,
    poll_interval: String,
    last_message_age: String,
    fresh_age: String,
    last_fresh: String,
    has_data: bool,
    ttl: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_in: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expired_ago: Option<String>,
    kubelet_read: KubeletReadDto<'a>,
    pods: usize,
    held_back_containers: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KubeletReadDto<'a> {
    ok: bool,
    #[serde(skip_serializing_if = "str::is_empty")]
    error: &'a str,
    decode_issues: u32,
}

impl<'a> From<&'a Reason> for ReasonDto<'a> {
    fn from(r: &'a Reason) -> Self {
        let mut dto = ReasonDto {
            code: r.code(),
            message: r.message(),
            node: r.node().map(|n| n.as_str()),
            container: None,
            agent_reason: None,
            error: None,
            phase: None,
        };
        match r {
            Reason::ContainerPending {
                container, reason, ..
            } => {
                dto.container = Some(container.as_str());
                dto.agent_reason = Some(reason);
            }
            Reason::NodeUsagePending { reason } => dto.agent_reason = Some(reason),
            Reason::KubeletReadFailed { error, .. } | Reason::InvalidName { error } => {
                dto.error = Some(error)
            }
            Reason::PodNotRunning { phase } if !phase.is_empty() => dto.phase = Some(phase),
            _ => {}
        }
        dto
    }
}

// === private helpers ===

fn summary(has_metrics: bool, reasons: &[Reason], node: Option<&str>) -> String {
    match (has_metrics, reasons.first()) {
        (true, None) => match node {
            Some(node) => format!("has metrics, reported by the agent on node {node}"),
            None => "has metrics".to_owned(),
        },
        (true, Some(first)) => format!("has metrics, but {}", first.message()),
        (false, Some(first)) => format!("no metrics: {}", first.message()),
        (false, None) => "no metrics".to_owned(),
    }
}

fn sample(ts: Timestamp, window_nanos: u64, now: Timestamp) -> SampleDto {
    let age = now.as_nanos().saturating_sub(ts.as_nanos()).max(0) as u64;
    SampleDto {
        timestamp: format_time(ts),
        window: format_duration(window_nanos),
        age: human(std::time::Duration::from_nanos(age)),
    }
}

fn stream(s: &StreamState, now: Timestamp) -> StreamDto<'_> {
    let fresh_nanos = i64::try_from(s.fresh_age.as_nanos()).unwrap_or(i64::MAX);
    StreamDto {
        node: s.node.as_str(),
        connected: s.connected,
        agent_version: &s.agent_version,
        poll_interval: human(s.poll_interval),
        last_message_age: human(s.last_message_age),
        fresh_age: human(s.fresh_age),
        last_fresh: format_time(Timestamp(now.as_nanos().saturating_sub(fresh_nanos))),
        has_data: s.has_data,
        ttl: human(s.ttl),
        expires_in: s.expires_in.map(human),
        expired_ago: s.expired_ago.map(human),
        kubelet_read: KubeletReadDto {
            ok: s.kubelet_ok,
            error: &s.kubelet_error,
            decode_issues: s.decode_issues,
        },
        pods: s.pods,
        held_back_containers: s.held_back,
    }
}

fn json(doc: &Document<'_>) -> Encoded {
    let mut body = serde_json::to_vec(doc).unwrap_or_default();
    body.push(b'\n');
    Encoded {
        content_type: CONTENT_TYPE_JSON,
        body,
    }
}
