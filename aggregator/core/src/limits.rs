//! The pure logic of the ingest bounds: how many agent streams may be open (per node and in
//! total) and how fast one stream may send. The ingest shell holds these behind a short
//! synchronous lock (stream counts) or per stream task (token bucket), and passes the time in:
//! nothing here reads a clock.
//!
//! Policies (the shell applies them, `README.md` § Reliability lists them):
//! - a stream beyond `--max-streams-per-node` or `--max-streams` is refused at its hello with
//!   `RESOURCE_EXHAUSTED` ([`StreamRefusal`] is the message); the agent retries with backoff;
//! - a stream beyond `--max-messages-per-second-per-stream` is throttled, not closed: its task
//!   stops reading until [`TokenBucket::take`] allows the next message, so HTTP/2 flow control
//!   slows the agent down and nothing is dropped;
//! - agent token reviews are cached in a [`TtlCache`], bounded in size and in time.

use std::collections::HashMap;
use std::time::Duration;

use kubepulse_model::NodeName;

// === TokenBucket ===

/// A token bucket: `per_second` tokens a second, holding at most `burst`. Starts full.
/// Arithmetic is in integer token-nanoseconds, so no rate is lost to rounding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    per_second: u64,
    /// Capacity, in token-nanoseconds (`burst` × 10⁹).
    capacity: u128,
    /// Current level, in token-nanoseconds.
    level: u128,
    /// When the level was last brought up to date.
    last: Duration,
}

const NANOS_PER_TOKEN: u128 = 1_000_000_000;

impl TokenBucket {
    /// A full bucket at `now` (any monotonic origin; the same one for every later call).
    /// `per_second` and `burst` are at least 1.
    pub fn new(per_second: u32, burst: u32, now: Duration) -> Self {
        let capacity = u128::from(burst.max(1)) * NANOS_PER_TOKEN;
        Self {
            per_second: u64::from(per_second.max(1)),
            capacity,
            level: capacity,
            last: now,
        }
    }

    /// Takes one token at `now`, or says how long to wait until one is there. A `now` earlier
    /// than a previous one counts as no time passing.
    pub fn take(&mut self, now: Duration) -> Result<(), Duration> {
        self.refill(now);
        if self.level >= NANOS_PER_TOKEN {
            self.level -= NANOS_PER_TOKEN;
            return Ok(());
        }
        let missing = NANOS_PER_TOKEN - self.level;
        // ceil(missing / per_second) nanoseconds
        let wait = missing.div_ceil(u128::from(self.per_second));
        Err(Duration::from_nanos(
            u64::try_from(wait).unwrap_or(u64::MAX),
        ))
    }

    /// Whole tokens available at `now`.
    pub fn available(&mut self, now: Duration) -> u64 {
        self.refill(now);
        u64::try_from(self.level / NANOS_PER_TOKEN).unwrap_or(u64::MAX)
    }

    fn refill(&mut self, now: Duration) {
        if now <= self.last {
            return;
        }
        let elapsed = (now - self.last).as_nanos();
        self.level = self
            .level
            .saturating_add(elapsed.saturating_mul(u128::from(self.per_second)))
            .min(self.capacity);
        self.last = now;
    }
}

// === StreamCounts ===

/// How many agent streams may be open at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamLimits {
    /// Streams one node name may hold (`--max-streams-per-node`): an agent holds one per
    /// replica, and briefly two while it reconnects before the old connection is noticed dead.
    pub per_node: usize,
    /// Streams in total (`--max-streams`).
    pub total: usize,
}

/// Why a stream was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StreamRefusal {
    /// The node already holds its limit.
    #[error(
        "node {node} already has {limit} open streams (--max-streams-per-node); retry after the old ones close"
    )]
    TooManyForNode {
        /// the claimed node
        node: NodeName,
        /// `--max-streams-per-node`
        limit: usize,
    },
    /// The aggregator holds its limit.
    #[error("aggregator already has {limit} open streams (--max-streams); retry later")]
    TooMany {
        /// `--max-streams`
        limit: usize,
    },
}

impl StreamRefusal {
    /// A stable name for metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            StreamRefusal::TooManyForNode { .. } => "max_streams_per_node",
            StreamRefusal::TooMany { .. } => "max_streams",
        }
    }
}

/// The open streams, per node and in total. Every successful [`StreamCounts::open`] must be
/// matched by one [`StreamCounts::close`] of the same node.
#[derive(Clone, Debug)]
pub struct StreamCounts {
    limits: StreamLimits,
    by_node: HashMap<NodeName, usize>,
    total: usize,
}

impl StreamCounts {
    /// No stream open.
    pub fn new(limits: StreamLimits) -> Self {
        Self {
            limits,
            by_node: HashMap::new(),
            total: 0,
        }
    }

    /// Counts a new stream for `node`, or refuses it (counting nothing).
    pub fn open(&mut self, node: &NodeName) -> Result<(), StreamRefusal> {
        if self.total >= self.limits.total {
            return Err(StreamRefusal::TooMany {
                limit: self.limits.total,
            });
        }
        let n = self.by_node.get(node).copied().unwrap_or(0);
        if n >= self.limits.per_node {
            return Err(StreamRefusal::TooManyForNode {
                node: node.clone(),
                limit: self.limits.per_node,
            });
        }
        self.by_node.insert(node.clone(), n + 1);
        self.total += 1;
        Ok(())
    }

    /// A stream of `node` ended.
    pub fn close(&mut self, node: &NodeName) {
        if let Some(n) = self.by_node.get_mut(node) {
            *n -= 1;
            if *n == 0 {
                self.by_node.remove(node);
            }
            self.total -= 1;
        }
    }

    /// Streams open for `node`.
    pub fn of_node(&self, node: &NodeName) -> usize {
        self.by_node.get(node).copied().unwrap_or(0)
    }

    /// Streams open in total.
    pub fn total(&self) -> usize {
        self.total
    }
}

// === TtlCache ===

/// A cache whose entries expire and whose size is bounded: when full, expired entries go
/// first, then the entry closest to expiring. For review answers (TokenReview of agent
/// tokens), keyed by a digest so no secret is kept. Times are durations since any fixed
/// origin, passed in.
#[derive(Clone, Debug)]
pub struct TtlCache<K, V> {
    max_entries: usize,
    entries: HashMap<K, (Duration, V)>,
}

impl<K: std::hash::Hash + Eq + Clone, V> TtlCache<K, V> {
    /// An empty cache of at most `max_entries` (at least 1).
    pub fn new(max_entries: usize) -> Self {
        Self {
            max_entries: max_entries.max(1),
            entries: HashMap::new(),
        }
    }

    /// The value for `key`, unless it expired by `now`.
    pub fn get(&self, key: &K, now: Duration) -> Option<&V> {
        self.entries
            .get(key)
            .filter(|(expires, _)| *expires > now)
            .map(|(_, v)| v)
    }

    /// Keeps `value` until `now + ttl` (a zero TTL keeps nothing).
    pub fn insert(&mut self, key: K, value: V, ttl: Duration, now: Duration) {
        if ttl.is_zero() {
            return;
        }
        if self.entries.len() >= self.max_entries && !self.entries.contains_key(&key) {
            self.entries.retain(|_, (expires, _)| *expires > now);
            if self.entries.len() >= self.max_entries {
                let soonest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (expires, _))| *expires)
                    .map(|(k, _)| k.clone());
                if let Some(k) = soonest {
                    self.entries.remove(&k);
                }
            }
        }
        self.entries.insert(key, (now + ttl, value));
    }

    /// Entries held (expired ones included until they are evicted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests;
