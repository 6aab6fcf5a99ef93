//! The tick loop, the only place the agent's stages meet: await the tick, read the kubelet,
//! decode, observe, publish the node's view for the uplinks. A body with the bytes of the last
//! one decoded is a successful read that changes nothing (the kubelet refreshes its stats every
//! 10–15 s, the agent reads every second). A failed or unusable read keeps the last good view
//! (the aggregator expires it after its TTL) and reports why.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use kubepulse_agent_core::decode::Decoded;
use kubepulse_agent_core::node_state::NodeState;
use kubepulse_agent_core::repeat::{Read, RepeatFilter};
use kubepulse_model::{ContainerName, NodeView, PodKey, Timestamp};
use tokio::sync::watch;

use crate::kubelet::KubeletClient;
use crate::telemetry::{self, ReadResult};

/// The agent's last kubelet read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScrapeStatus {
    /// The read and decode succeeded.
    pub ok: bool,
    /// Why it failed (empty when ok).
    pub error: String,
    /// Lines that could not be decoded.
    pub decode_issues: u32,
    /// Containers held back (their pods are not served) and why, at most [`MAX_PENDING`].
    pub pending: Vec<(PodKey, ContainerName, &'static str)>,
    /// Held-back containers beyond [`MAX_PENDING`].
    pub pending_dropped: u32,
    /// Why the node's own usage is not served.
    pub node_pending: Option<&'static str>,
}

/// Most held-back containers reported to the aggregators per status.
pub const MAX_PENDING: usize = 256;

/// What the tick loop publishes after every read.
#[derive(Clone, Debug, Default)]
pub struct TickOutput {
    /// The node's current view (the last good one after a failure).
    pub view: Arc<NodeView>,
    /// How the last read went.
    pub status: ScrapeStatus,
    /// Reads so far.
    pub ticks: u64,
    /// The view is worth sending: the node has usage (two kubelet samples were seen), or the
    /// agent has read long enough that an empty view is the truth. Until then a restarted agent
    /// does not replace what the aggregators hold with an empty snapshot.
    pub warm: bool,
}

/// The body buffer is kept between reads unless it is more than twice this and twice the body.
const BODY_BUFFER_FLOOR: usize = 256 * 1024;

/// How long an agent reads before an empty view is sent anyway.
const WARM_UP: Duration = Duration::from_secs(30);

fn wall_clock() -> Timestamp {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default();
    Timestamp(nanos)
}

/// Reads the kubelet every `interval` until `out` has no receivers left.
pub async fn run(
    mut client: KubeletClient,
    mut state: NodeState,
    interval: Duration,
    out: watch::Sender<Arc<TickOutput>>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut current = TickOutput::default();
    let mut last_issue_count = 0;
    // the kubelet refreshes every 10–15 s: most reads repeat the last body, which is not
    // decoded again (its batch, view and status still hold)
    let mut bodies = RepeatFilter::new();
    let mut last_result = ReadResult::Ok;
    let mut body = Vec::new();
    loop {
        ticker.tick().await;
        current.ticks += 1;
        let was_ok = current.status.ok || current.ticks == 1;
        let started = Instant::now();
        let scraped = client.scrape_into(&mut body).await;
        let took = started.elapsed();
        match scraped {
            Ok(()) => match bodies.read(&body, wall_clock()) {
                Read::Repeat => {
                    telemetry::body_repeated(last_result, took);
                    if !current.status.ok {
                        telemetry::scrape_failed(&current.status.error, false);
                    }
                }
                Read::New(Decoded { batch, issues, .. }) => {
                    let usable = batch.node.cpu.is_some() || !batch.pods.is_empty();
                    let failure = if batch.resource_scrape_error {
                        Some(
                            "kubelet reports resource_scrape_error: it could not gather stats"
                                .to_owned(),
                        )
                    } else if !usable && !issues.is_empty() {
                        Some(format!(
                            "no usable samples in the kubelet body ({} undecodable lines; first: {})",
                            issues.len(),
                            issues[0]
                        ))
                    } else {
                        None
                    };
                    if let Some(first) = issues.first() {
                        let changed = issues.len() != last_issue_count;
                        telemetry::decode_issues(issues.len(), &first.to_string(), changed);
                    }
                    last_issue_count = issues.len();
                    match failure {
                        Some(error) => {
                            last_result = ReadResult::Unusable;
                            telemetry::kubelet_read(ReadResult::Unusable, took);
                            telemetry::scrape_failed(&error, was_ok);
                            current.status = ScrapeStatus {
                                ok: false,
                                error,
                                decode_issues: issues.len() as u32,
                                ..ScrapeStatus::default()
                            };
                        }
                        None => {
                            last_result = ReadResult::Ok;
                            telemetry::kubelet_read(ReadResult::Ok, took);
                            telemetry::observed(&state.observe(&batch));
                            if state.view() != &*current.view {
                                current.view = Arc::new(state.view().clone());
                            }
                            if !current.status.ok && current.ticks > 1 {
                                telemetry::scrape_recovered();
                            }
                            let mut pending: Vec<_> = state
                                .pending()
                                .into_iter()
                                .map(|(pod, container, reason)| (pod, container, reason.as_str()))
                                .collect();
                            let pending_dropped = pending.len().saturating_sub(MAX_PENDING) as u32;
                            pending.truncate(MAX_PENDING);
                            current.status = ScrapeStatus {
                                ok: true,
                                error: String::new(),
                                decode_issues: issues.len() as u32,
                                pending,
                                pending_dropped,
                                node_pending: state.node_pending().map(|r| r.as_str()),
                            };
                        }
                    }
                }
            },
            Err(err) => {
                // the next body is decoded whatever it holds, and sets the status again
                bodies.failed();
                telemetry::kubelet_read(ReadResult::Failed, took);
                let error = err.to_string();
                telemetry::scrape_failed(&error, was_ok);
                current.status = ScrapeStatus {
                    ok: false,
                    error,
                    ..ScrapeStatus::default()
                };
            }
        }
        // one buffer at the body's size; a one-off huge body does not keep its memory
        if body.capacity() > 2 * body.len().max(BODY_BUFFER_FLOOR) {
            body = Vec::new();
        }
        current.warm = current.warm
            || current.view.node.is_some()
            || interval.saturating_mul(current.ticks.min(u64::from(u32::MAX)) as u32) >= WARM_UP;
        if out.send(Arc::new(current.clone())).is_err() {
            return;
        }
    }
}
