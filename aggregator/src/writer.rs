//! The single writer: owns the [`ClusterStore`], applies what ingest streams send it in
//! batches, expires stale nodes, and publishes an immutable [`ClusterView`] that HTTP handlers
//! read without ever blocking ingest.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use kubepulse_aggregator_core::store::{
    ClusterStore, ClusterView, StoreError, StreamId, StreamInfo, Update,
};
use kubepulse_model::NodeName;
use tokio::sync::mpsc;

use crate::telemetry;

/// What ingest streams tell the writer.
#[derive(Debug)]
pub enum WriterMsg {
    /// A stream said hello; `resync` reaches it when the store cannot apply its updates.
    Open {
        /// the node it reports for
        node: NodeName,
        /// the stream
        stream: StreamId,
        /// what it announced
        info: StreamInfo,
        /// where to ask it for a snapshot
        resync: ResyncTo,
    },
    /// An update from a stream.
    Update {
        /// the node
        node: NodeName,
        /// the stream
        stream: StreamId,
        /// the update
        update: Update,
    },
    /// A stream ended.
    Close {
        /// the node
        node: NodeName,
        /// the stream
        stream: StreamId,
    },
    /// Many messages, in order: what one relay batch carried (one channel hop for all).
    Batch(Vec<WriterMsg>),
}

/// Where the writer asks a stream for a fresh snapshot.
#[derive(Debug, Clone)]
pub enum ResyncTo {
    /// An agent's own stream.
    Stream(mpsc::Sender<String>),
    /// One link of a relay's stream (the session's channel is shared by its links).
    Link {
        /// the relay session
        tx: mpsc::Sender<(u32, String)>,
        /// the link
        link: u32,
    },
}

impl ResyncTo {
    /// Queues a resync; false when one is already queued (the queue is full).
    fn offer(&self, reason: String) -> bool {
        let full = match self {
            Self::Stream(tx) => {
                matches!(tx.try_send(reason), Err(mpsc::error::TrySendError::Full(_)))
            }
            Self::Link { tx, link } => matches!(
                tx.try_send((*link, reason)),
                Err(mpsc::error::TrySendError::Full(_))
            ),
        };
        !full
    }
}

/// What the writer publishes for readers.
pub struct Published {
    view: ArcSwap<ClusterView>,
    started: Instant,
    last_loop_ms: AtomicU64,
}

impl Published {
    /// An empty view.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            view: ArcSwap::from_pointee(ClusterView::default()),
            started: Instant::now(),
            last_loop_ms: AtomicU64::new(0),
        })
    }

    /// The latest view.
    pub fn view(&self) -> Arc<ClusterView> {
        self.view.load_full()
    }

    /// How long ago the writer last ran its loop (a hung writer fails liveness).
    pub fn writer_idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_loop_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    /// Replaces the published view.
    pub fn publish(&self, view: ClusterView) {
        self.view.store(Arc::new(view));
    }

    fn mark_alive(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_loop_ms.store(ms, Ordering::Relaxed);
    }
}

/// Readers see a new view at most this often. Publishing itself is O(1) (the store's maps are
/// persistent), but the first update of a node after a publish copies its entry (and, for a
/// delta, its pods) because the published view still shares it: publishing after every batch
/// (every few milliseconds under load) would copy nearly every update. A node updates once per
/// kubelet read, so at 50 ms nearly every update copies its entry anyway: publishing at 50
/// rather than 100 ms adds little work and takes 50 ms off the worst-case lag, which the
/// relays' default `--batch-interval` (100 ms, where fewer batches save more) spends.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(50);

/// Messages taken off the queue at a time.
const DRAIN: usize = 1024;

/// Runs the writer until every sender is gone.
///
/// What the writer applies becomes visible only when it publishes, so it wakes for the first
/// message after a publish (which fixes when the next publish is due), then not again until
/// that publish: everything queued meanwhile is applied at once just before it. Under load
/// that is two wake-ups per [`PUBLISH_EVERY`] however many streams or relays send, where
/// waking for every message would take one per message, and readers see each update no later
/// than before.
pub async fn run(
    mut store: ClusterStore,
    mut rx: mpsc::Receiver<WriterMsg>,
    published: Arc<Published>,
) {
    let mut resync: HashMap<StreamId, ResyncTo> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(DRAIN);
    let mut published_at = tokio::time::Instant::now();
    // when the next publish is due: set by the first change after a publish
    let mut due: Option<tokio::time::Instant> = None;
    let mut open = true;
    while open || due.is_some() {
        tokio::select! {
            n = rx.recv_many(&mut batch, DRAIN), if due.is_none() && open => {
                if n == 0 {
                    open = false;
                    continue;
                }
                apply(&mut batch, &mut store, &mut resync, Instant::now());
            }
            _ = tick.tick() => {
                for node in store.evict_stale(Instant::now()) {
                    telemetry::node_expired(&node);
                }
            }
            _ = tokio::time::sleep_until(due.unwrap_or(published_at)), if due.is_some() => {
                // what arrived since the first change: applied now, published together
                open = drain(&mut rx, &mut batch, &mut store, &mut resync);
                published.publish(store.publish());
                published_at = tokio::time::Instant::now();
                due = None;
                published.mark_alive();
                continue;
            }
        }
        due.get_or_insert(published_at + PUBLISH_EVERY);
        published.mark_alive();
    }
}

/// Applies every message queued now, without waiting for more; false once every sender is
/// gone.
fn drain(
    rx: &mut mpsc::Receiver<WriterMsg>,
    batch: &mut Vec<WriterMsg>,
    store: &mut ClusterStore,
    resync: &mut HashMap<StreamId, ResyncTo>,
) -> bool {
    let now = Instant::now();
    let open = loop {
        match rx.try_recv() {
            Ok(msg) => batch.push(msg),
            Err(mpsc::error::TryRecvError::Empty) => break true,
            Err(mpsc::error::TryRecvError::Disconnected) => break false,
        }
        if batch.len() == DRAIN {
            apply(batch, store, resync, now);
        }
    };
    apply(batch, store, resync, now);
    open
}

/// Applies the messages of `batch`, emptying it.
fn apply(
    batch: &mut Vec<WriterMsg>,
    store: &mut ClusterStore,
    resync: &mut HashMap<StreamId, ResyncTo>,
    now: Instant,
) {
    for msg in batch.drain(..) {
        handle(store, resync, msg, now);
    }
}

fn handle(
    store: &mut ClusterStore,
    resync: &mut HashMap<StreamId, ResyncTo>,
    msg: WriterMsg,
    now: Instant,
) {
    match msg {
        WriterMsg::Open {
            node,
            stream,
            info,
            resync: tx,
        } => {
            resync.insert(stream, tx);
            store.open_stream(node, stream, info, now);
        }
        WriterMsg::Update {
            node,
            stream,
            update,
        } => {
            let newest = telemetry::newest_sample(&update);
            match store.apply(&node, stream, update, now) {
                Ok(()) => {
                    if let Some(newest) = newest {
                        telemetry::update_applied(newest);
                    }
                }
                Err(err @ StoreError::NotOwner { .. }) => {
                    tracing::debug!(error = %err, "update from a superseded stream ignored");
                }
                Err(err) => {
                    // a full queue already holds a resync for this stream: drop this one
                    if let Some(to) = resync.get(&stream)
                        && !to.offer(err.to_string())
                    {
                        telemetry::resync_coalesced();
                    }
                }
            }
        }
        WriterMsg::Close { node, stream } => {
            resync.remove(&stream);
            store.close_stream(&node, stream, now);
        }
        WriterMsg::Batch(msgs) => {
            for msg in msgs {
                handle(store, resync, msg, now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use kubepulse_aggregator_core::store::StoreConfig;
    use kubepulse_model::Epoch;
    use tokio::time::sleep;

    use super::*;

    fn open(node: &str) -> WriterMsg {
        WriterMsg::Open {
            node: NodeName::new(node).unwrap(),
            stream: StreamId(node.len() as u64),
            info: StreamInfo {
                epoch: Epoch(1),
                poll_interval: Duration::from_secs(15),
                agent_version: "test".into(),
            },
            resync: ResyncTo::Stream(mpsc::channel(1).0),
        }
    }

    fn shows(published: &Published, node: &str) -> bool {
        published.view().nodes.contains_key(node)
    }

    /// A change after a quiet spell is published at once; what follows within
    /// [`PUBLISH_EVERY`] waits for the end of it and is published together; what is queued
    /// when the senders go is published before the writer ends.
    #[tokio::test(start_paused = true)]
    async fn publishes_at_most_once_a_period() {
        let (tx, rx) = mpsc::channel(16);
        let published = Published::new();
        let writer = tokio::spawn(run(
            ClusterStore::new(StoreConfig::default()),
            rx,
            Arc::clone(&published),
        ));
        sleep(PUBLISH_EVERY * 2).await;
        tx.send(open("a")).await.unwrap();
        sleep(Duration::from_millis(1)).await;
        assert!(shows(&published, "a"), "published at once");
        tx.send(open("bb")).await.unwrap();
        sleep(PUBLISH_EVERY / 5).await;
        tx.send(open("ccc")).await.unwrap();
        sleep(PUBLISH_EVERY / 5).await;
        assert!(!shows(&published, "bb") && !shows(&published, "ccc"));
        sleep(PUBLISH_EVERY).await;
        assert!(shows(&published, "bb") && shows(&published, "ccc"));
        tx.send(open("dddd")).await.unwrap();
        drop(tx);
        writer.await.unwrap();
        assert!(
            shows(&published, "dddd"),
            "published before the writer ends"
        );
    }
}
