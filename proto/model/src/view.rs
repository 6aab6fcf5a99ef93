//! What one node reports: the node's own usage and, per pod, each container's usage.
//!
//! A pod appears in a view only when every one of its containers has a computed sample (the
//! agent holds a pod back while any container waits for its second kubelet sample, as
//! metrics-server does), so the aggregator can serve any pod it holds.

use std::collections::BTreeMap;

use crate::key::{ContainerName, PodKey};
use crate::usage::{Sample, Timestamp, Window};

/// Everything one node reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeView {
    /// The node's own usage, once two usable kubelet samples exist.
    pub node: Option<Sample>,
    /// Pods on the node with complete usage, sorted by namespace and name.
    pub pods: BTreeMap<PodKey, PodView>,
}

/// One pod's containers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodView {
    /// Per-container samples, sorted by container name.
    pub containers: BTreeMap<ContainerName, Sample>,
}

impl PodView {
    /// The pod's timestamp and window: those of the container whose timestamp is earliest
    /// (metrics-server's rule), or `None` for a pod without containers.
    pub fn timestamp_window(&self) -> Option<(Timestamp, Window)> {
        self.containers
            .values()
            .min_by_key(|s| s.timestamp)
            .map(|s| (s.timestamp, s.window))
    }
}

impl NodeView {
    /// Number of containers across all pods.
    pub fn container_count(&self) -> usize {
        self.pods.values().map(|p| p.containers.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::Usage;

    #[test]
    fn pod_takes_the_earliest_container_time() {
        let s = |ts: i64, w: u64| Sample {
            usage: Usage::default(),
            timestamp: Timestamp::from_millis(ts),
            window: Window(w),
        };
        let mut pod = PodView::default();
        pod.containers
            .insert(ContainerName::new("web").unwrap(), s(2000, 10));
        pod.containers
            .insert(ContainerName::new("proxy").unwrap(), s(1000, 20));
        assert_eq!(
            pod.timestamp_window(),
            Some((Timestamp::from_millis(1000), Window(20)))
        );
        assert_eq!(PodView::default().timestamp_window(), None);
    }
}
