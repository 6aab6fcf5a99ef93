//! Stage 2 of the agent: turns successive [`ScrapeBatch`]es into the [`NodeView`] the node
//! serves. Keeps exactly two cumulative CPU points per series (reference §2.4), computes usage
//! with [`cpu_rate`] (§2.5) and holds back pods that are not complete (§2.6). Never reads the
//! clock: all times are the kubelet's sample times inside the batches.
//!
//! Per series (the node, and each pod/container), with `N` the new CPU point, `L` the last one
//! and `P` the one before:
//!
//! | condition | new last | new prev |
//! |---|---|---|
//! | fresh container: `10 s ≤ N.ts − N.start < fresh_container_max_age` | N | synthetic `{ts: N.start, cpu: 0}` |
//! | no `L` | N | none (waiting for a second sample) |
//! | restart: `N.start` differs from `L.start`, or `N.start ≥ L.ts` | N | none (restarted) |
//! | `N.ts > L.ts` | N | L |
//! | `N.ts ≤ L.ts`, `P` exists and `P.ts < N.ts` | N | P (an unrefreshed kubelet cache keeps serving the same rate) |
//! | otherwise | N | none (out of order, or waiting) |
//!
//! A counter that goes down with no restart visible gives no value for that series until two
//! samples after the reset exist; a served CPU value is never negative nor a spike. Memory is
//! the working set of the newest batch; a served [`Sample`] carries the newest CPU timestamp
//! and the CPU window.
//!
//! Serving rules: a container is served when it has a CPU rate and a non-zero working set; a pod
//! is in the view only when **every** container the kubelet currently reports for it is served,
//! otherwise the whole pod is held back and [`NodeState::pending`] says why. The node is served
//! when it has a CPU rate and a non-zero working set. A series absent from a batch is forgotten
//! at once, so a vanished pod leaves the view on the next observe.
//!
//! Deliberate differences from metrics-server:
//! - a container whose cumulative CPU is exactly 0 is served with 0 nanocores (it is idle, not
//!   broken); metrics-server drops its whole pod. A zero working set still holds the pod back,
//!   as there;
//! - a node whose cumulative CPU is 0 is served; only its working set must be non-zero;
//! - a container whose rate cannot be computed holds its whole pod back; metrics-server omits
//!   the container and serves the rest of the pod, which makes pod sums jump;
//! - a container without memory keeps its CPU history, and the other containers of a held-back
//!   pod keep theirs, so the pod comes back one sample sooner; metrics-server drops the whole
//!   pod from storage;
//! - a start time that changes counts as a restart even when it stays before the last sample
//!   time, and the restart rule only applies when both samples know the start time;
//! - rates are exact integer arithmetic (see [`crate::rate`]).

use std::collections::BTreeMap;
use std::time::Duration;

use kubepulse_model::{ContainerName, NodeView, PodKey, PodView, Sample, Timestamp, Usage};

use crate::decode::{CpuPoint, MemoryPoint, ScrapeBatch};
use crate::rate::{Cumulative, RateError, cpu_rate};

/// The youngest a container may be for the fresh-container shortcut (metrics-server's
/// `freshContainerMinMetricsResolution`): younger ones have too short a window to trust.
pub const FRESH_CONTAINER_MIN_AGE: Duration = Duration::from_secs(10);

/// Settings of a [`NodeState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeStateConfig {
    /// A container younger than this (and at least [`FRESH_CONTAINER_MIN_AGE`] old) gets usage
    /// from one sample, averaged since it started. metrics-server uses its metric resolution
    /// here; the default, 15 s, is its manifests' resolution.
    pub fresh_container_max_age: Duration,
}

impl Default for NodeStateConfig {
    fn default() -> Self {
        Self {
            fresh_container_max_age: Duration::from_secs(15),
        }
    }
}

/// Why a container (and so its pod), or the node, is not served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PendingReason {
    /// Only one usable sample so far (new series, or the kubelet has not refreshed yet).
    #[error("waiting for a second sample")]
    WaitingForSecondSample,
    /// The container restarted since the last sample; its counter started over.
    #[error("container restarted")]
    Restarted,
    /// The new sample is older than the ones kept, which are discarded.
    #[error("sample older than the previous one")]
    OutOfOrder,
    /// The two samples give no rate (usually a counter that went down).
    #[error("no rate: {0}")]
    Rate(RateError),
    /// No CPU sample in the batch (the memory sample may be missing too).
    #[error("no cpu sample")]
    MissingCpu,
    /// No working-set sample in the batch.
    #[error("no memory sample")]
    MissingMemory,
    /// The working set is zero: the kubelet has no real stats for it.
    #[error("memory working set is zero")]
    ZeroMemory,
}

impl PendingReason {
    /// A short stable name, for a metric label or a log field.
    pub fn as_str(&self) -> &'static str {
        match self {
            PendingReason::WaitingForSecondSample => "waiting_for_second_sample",
            PendingReason::Restarted => "restarted",
            PendingReason::OutOfOrder => "out_of_order",
            PendingReason::Rate(RateError::CounterDecreased { .. }) => "counter_decreased",
            PendingReason::Rate(RateError::StartTimeDecreased { .. }) => "start_time_decreased",
            PendingReason::Rate(RateError::NotNewer { .. }) => "not_newer",
            PendingReason::MissingCpu => "missing_cpu",
            PendingReason::MissingMemory => "missing_memory",
            PendingReason::ZeroMemory => "zero_memory",
        }
    }
}

/// What one [`NodeState::observe`] did, for telemetry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObserveSummary {
    /// 1 when the node's own sample is served, else 0.
    pub nodes_served: usize,
    /// Pods in the view.
    pub pods_served: usize,
    /// Containers in the view.
    pub containers_served: usize,
    /// Pods the batch reported but the view holds back.
    pub pods_held_back: usize,
    /// Containers not served (each is listed by [`NodeState::pending`]).
    pub containers_pending: usize,
    /// Series (node included) whose two samples gave no rate.
    pub rate_errors: usize,
    /// Containers whose start time shows a restart since the last batch.
    pub restarts_detected: usize,
}

/// The per-node state of the agent: the last two samples of every series and the view they
/// give.
#[derive(Clone, Debug, Default)]
pub struct NodeState {
    config: NodeStateConfig,
    node: Option<Series>,
    node_pending: Option<PendingReason>,
    /// The series of every container with a CPU point in the last batch, sorted by pod and
    /// container (the batch's order), so each observe is one merge pass.
    containers: Vec<ContainerSeries>,
    /// The buffer `containers` used the time before, kept empty for its allocation.
    spare: Vec<ContainerSeries>,
    view: NodeView,
    previous_view: NodeView,
    pending: Vec<(PodKey, ContainerName, PendingReason)>,
}

/// The two points kept for one series.
#[derive(Clone, Copy, Debug)]
struct Series {
    last: Cumulative,
    prev: Option<Cumulative>,
}

/// One container's series.
#[derive(Clone, Debug)]
struct ContainerSeries {
    pod: PodKey,
    container: ContainerName,
    series: Series,
}

// === impl NodeState ===

impl NodeState {
    /// An empty state: nothing is served until two usable batches have been observed.
    pub fn new(config: NodeStateConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// Takes in one batch and recomputes the view. Series absent from `batch` are forgotten.
    ///
    /// The batch is taken literally: an empty one (a kubelet that answered only
    /// `resource_scrape_error 1`) empties the view, as in metrics-server. A shell that prefers
    /// to keep serving through a failed kubelet stats pass skips `observe` for such a batch.
    pub fn observe(&mut self, batch: &ScrapeBatch) -> ObserveSummary {
        let mut summary = ObserveSummary::default();
        let fresh_max_age = self.config.fresh_container_max_age;

        let (node_series, node_result) = advance(
            self.node.as_ref(),
            batch.node.cpu,
            batch.node.memory,
            None,
            None,
            &mut summary,
        );
        self.node = node_series;
        let node_sample = match node_result {
            Ok(sample) => {
                summary.nodes_served = 1;
                self.node_pending = None;
                Some(sample)
            }
            Err(reason) => {
                self.node_pending = Some(reason);
                None
            }
        };

        self.pending.clear();
        let old = std::mem::take(&mut self.containers);
        let mut kept = std::mem::take(&mut self.spare);
        let mut old_cursor = 0;
        let mut view_pods = Vec::with_capacity(batch.pods.len());
        for (pod_key, containers) in &batch.pods {
            let mut served = BTreeMap::new();
            for (container, raw) in containers {
                let prior = take_prior(&old, &mut old_cursor, pod_key, container);
                let (series, result) = advance(
                    prior.as_ref(),
                    raw.cpu,
                    raw.memory,
                    raw.start_time,
                    Some(fresh_max_age),
                    &mut summary,
                );
                if let Some(series) = series {
                    kept.push(ContainerSeries {
                        pod: pod_key.clone(),
                        container: container.clone(),
                        series,
                    });
                }
                match result {
                    Ok(sample) => {
                        served.insert(container.clone(), sample);
                    }
                    Err(reason) => {
                        self.pending
                            .push((pod_key.clone(), container.clone(), reason));
                    }
                }
            }
            if served.len() == containers.len() && !served.is_empty() {
                summary.containers_served += served.len();
                view_pods.push((pod_key.clone(), PodView { containers: served }));
            } else {
                summary.pods_held_back += 1;
            }
        }
        self.containers = kept;
        self.spare = old;
        self.spare.clear();
        summary.pods_served = view_pods.len();
        summary.containers_pending = self.pending.len();
        let view = NodeView {
            node: node_sample,
            pods: view_pods.into_iter().collect(),
        };
        self.previous_view = std::mem::replace(&mut self.view, view);
        summary
    }

    /// The view as of the last [`observe`](Self::observe).
    pub fn view(&self) -> &NodeView {
        &self.view
    }

    /// The view before the last [`observe`](Self::observe), so a caller can
    /// `diff(state.previous_view(), state.view())` without keeping a copy.
    pub fn previous_view(&self) -> &NodeView {
        &self.previous_view
    }

    /// Every container the last batch reported but the view does not serve, with the reason,
    /// sorted by pod and container. Its pod is held back whole.
    pub fn pending(&self) -> Vec<(PodKey, ContainerName, PendingReason)> {
        self.pending.clone()
    }

    /// Why the node's own sample is not served, or `None` when it is.
    pub fn node_pending(&self) -> Option<PendingReason> {
        self.node_pending
    }
}

/// Runs the update table for one series and computes its sample. Returns the series to keep
/// (none when the batch has no CPU point for it) and the sample or why there is none.
fn advance(
    old: Option<&Series>,
    cpu: Option<CpuPoint>,
    memory: Option<MemoryPoint>,
    start_time: Option<Timestamp>,
    fresh_max_age: Option<Duration>,
    summary: &mut ObserveSummary,
) -> (Option<Series>, Result<Sample, PendingReason>) {
    let Some(cpu) = cpu else {
        return (None, Err(PendingReason::MissingCpu));
    };
    let new = Cumulative {
        cpu_ns: cpu.cumulative_ns,
        timestamp: cpu.timestamp,
        start_time,
    };
    let restarted = old.is_some_and(|old| is_restart(&old.last, &new));
    if restarted {
        summary.restarts_detected += 1;
    }
    let (prev, no_prev_reason) = match (fresh_prev(&new, fresh_max_age), old) {
        (Some(synthetic), _) => (Some(synthetic), None),
        (None, None) => (None, Some(PendingReason::WaitingForSecondSample)),
        (None, Some(_)) if restarted => (None, Some(PendingReason::Restarted)),
        (None, Some(old)) if new.timestamp > old.last.timestamp => (Some(old.last), None),
        (None, Some(old)) => match old.prev {
            Some(prev) if prev.timestamp < new.timestamp => (Some(prev), None),
            _ if new.timestamp < old.last.timestamp => (None, Some(PendingReason::OutOfOrder)),
            _ => (None, Some(PendingReason::WaitingForSecondSample)),
        },
    };
    let series = Series { last: new, prev };
    let memory_bytes = match memory {
        None => return (Some(series), Err(PendingReason::MissingMemory)),
        Some(memory) if memory.bytes == 0 => {
            return (Some(series), Err(PendingReason::ZeroMemory));
        }
        Some(memory) => memory.bytes,
    };
    let Some(prev) = prev else {
        let reason = no_prev_reason.unwrap_or(PendingReason::WaitingForSecondSample);
        return (Some(series), Err(reason));
    };
    let result = match cpu_rate(&prev, &new) {
        Ok((cpu_nanocores, window)) => Ok(Sample {
            usage: Usage {
                cpu_nanocores,
                memory_bytes,
            },
            timestamp: new.timestamp,
            window,
        }),
        Err(error) => {
            summary.rate_errors += 1;
            Err(PendingReason::Rate(error))
        }
    };
    (Some(series), result)
}

/// The container started again since `last`: its start time moved, or lies at or after the
/// last sample. Unknown start times never signal a restart.
fn is_restart(last: &Cumulative, new: &Cumulative) -> bool {
    let Some(new_start) = new.start_time else {
        return false;
    };
    last.start_time
        .is_some_and(|last_start| last_start != new_start)
        || new_start >= last.timestamp
}

/// The synthetic previous point of the fresh-container shortcut: a container between
/// [`FRESH_CONTAINER_MIN_AGE`] and `max_age` old is measured from its start, with zero CPU
/// then.
fn fresh_prev(new: &Cumulative, max_age: Option<Duration>) -> Option<Cumulative> {
    let max_age = max_age?;
    let start = new.start_time?;
    let age = new.timestamp.since(start)?.as_duration();
    (FRESH_CONTAINER_MIN_AGE <= age && age < max_age).then_some(Cumulative {
        cpu_ns: 0,
        timestamp: start,
        start_time: Some(start),
    })
}

/// The old series of `pod`/`container`, advancing `cursor` past the ones before it (series that
/// vanished). Both the old series and the batch are sorted, so a whole batch is one merge pass.
fn take_prior(
    old: &[ContainerSeries],
    cursor: &mut usize,
    pod: &PodKey,
    container: &ContainerName,
) -> Option<Series> {
    while let Some(entry) = old.get(*cursor) {
        match (&entry.pod, &entry.container).cmp(&(pod, container)) {
            std::cmp::Ordering::Less => *cursor += 1,
            std::cmp::Ordering::Equal => {
                *cursor += 1;
                return Some(entry.series);
            }
            std::cmp::Ordering::Greater => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests;
