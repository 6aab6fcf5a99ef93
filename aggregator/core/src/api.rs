//! The values a Metrics API answer is made of, independent of any wire format.

use std::collections::BTreeMap;
use std::sync::Arc;

use kubepulse_model::{ContainerName, NodeName, PodKey, Sample, Timestamp, Usage, Window};

/// Labels of a Kubernetes object, shared between the metadata store and answers.
pub type Labels = Arc<BTreeMap<String, String>>;

/// `metrics.k8s.io` version being served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ApiVersion {
    /// `metrics.k8s.io/v1beta1`
    V1beta1,
    /// `metrics.k8s.io/v1`
    V1,
}

impl ApiVersion {
    /// Both versions, preferred first.
    pub const ALL: [ApiVersion; 2] = [ApiVersion::V1beta1, ApiVersion::V1];

    /// The version segment of the path (`v1beta1`).
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V1beta1 => "v1beta1",
            ApiVersion::V1 => "v1",
        }
    }

    /// The group version (`metrics.k8s.io/v1beta1`).
    pub fn group_version(self) -> &'static str {
        match self {
            ApiVersion::V1beta1 => "metrics.k8s.io/v1beta1",
            ApiVersion::V1 => "metrics.k8s.io/v1",
        }
    }

    /// Parses a path segment.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "v1beta1" => Some(ApiVersion::V1beta1),
            "v1" => Some(ApiVersion::V1),
            _ => None,
        }
    }
}

/// One NodeMetrics object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeMetrics {
    /// The node.
    pub name: NodeName,
    /// The Node object's labels (empty when unknown).
    pub labels: Labels,
    /// Usage, kubelet timestamp and window.
    pub sample: Sample,
}

/// One container of a PodMetrics object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerMetrics {
    /// The container name.
    pub name: ContainerName,
    /// Its usage.
    pub usage: Usage,
}

/// One PodMetrics object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodMetrics {
    /// Namespace and name.
    pub key: PodKey,
    /// The Pod object's labels (empty when unknown).
    pub labels: Labels,
    /// The earliest container timestamp.
    pub timestamp: Timestamp,
    /// That container's window.
    pub window: Window,
    /// Containers sorted by name.
    pub containers: Vec<ContainerMetrics>,
}

/// An API error, rendered as a Kubernetes `Status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiStatus {
    /// HTTP status code (also the Status `code`).
    pub code: u16,
    /// Status `reason` (`NotFound`, `BadRequest`, …; empty for internal errors).
    pub reason: &'static str,
    /// Status `message`.
    pub message: String,
    /// Status `details`, when the error is about one object.
    pub details: Option<StatusDetails>,
}

/// `details` of a Status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusDetails {
    /// `name` (for pods: `namespace/name` in the metrics not-found case).
    pub name: String,
    /// `group`; empty is omitted.
    pub group: String,
    /// `kind`.
    pub kind: String,
}
