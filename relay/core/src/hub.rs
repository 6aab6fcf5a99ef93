//! The relay's state machine: which agent streams (links) are open, what each upstream (one
//! aggregator replica's relay stream) still has to receive, and when a batch is due.
//!
//! Every frame a link produces is appended, in order, to the pending queue of every connected
//! upstream; [`Hub::flush`] hands out a batch when the oldest pending frame waited
//! [`HubConfig::batch_interval`] or the pending bytes reached [`HubConfig::max_batch_bytes`].
//! An upstream whose pending bytes exceed [`HubConfig::max_pending_bytes`] cannot drain: the
//! hub forgets it and says [`Effect::DropUpstream`]; when it connects again it is sent the
//! hello of every live link first, and every agent is asked for a fresh snapshot. Until that
//! snapshot passes, the link's other frames are held back from that upstream (a delta means
//! nothing to a replica that has no snapshot for it).
//!
//! Side effects for the shell (tell an agent to resync, end an agent's stream, disconnect an
//! upstream) are queued and read with [`Hub::effects`], so the hot path allocates nothing.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// An upper bound of what one frame adds to an encoded batch beyond its message's own bytes:
/// the frame's tag and length (6), the link number (6), the message's tag and length (6) and
/// the `closed` flag (2). Counting it keeps every batch's encoded size within
/// [`HubConfig::max_batch_bytes`].
pub const FRAME_OVERHEAD: usize = 20;

/// Freed link numbers wait until this many others were freed before they are used again, so a
/// late reply about an old link is very unlikely to meet a new one with the same number.
const REUSE_QUARANTINE: usize = 1024;

/// How the hub batches and bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HubConfig {
    /// A pending frame waits at most this long before its upstream's batch is due.
    pub batch_interval: Duration,
    /// A batch is due as soon as this many bytes are pending, and never holds more (unless one
    /// frame alone is larger).
    pub max_batch_bytes: usize,
    /// An upstream with more pending bytes than this cannot drain and is dropped.
    pub max_pending_bytes: usize,
    /// A status equal to the last one forwarded for its link is forwarded again only after this
    /// long without any frame forwarded for the link.
    pub heartbeat_forward_interval: Duration,
    /// Links open at once; [`Hub::open`] refuses more.
    pub max_links: usize,
}

impl Default for HubConfig {
    /// The relay's flag defaults.
    fn default() -> Self {
        Self {
            batch_interval: Duration::from_millis(100),
            max_batch_bytes: 64 << 10,
            max_pending_bytes: 256 << 20,
            heartbeat_forward_interval: Duration::from_secs(18),
            max_links: 20_000,
        }
    }
}

/// One open link as the shell knows it: the wire number and a generation, so that messages
/// of a link that is gone never reach a later link with the same number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LinkKey {
    /// The link number on the wire.
    pub id: u32,
    generation: u64,
}

/// One upstream connection, numbered by the shell (a new number per connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UpstreamId(pub u64);

/// What kind of agent message is pushed (the hello opens a link: [`Hub::open`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// A full snapshot: it ends the wait of an upstream that was sent the hello again.
    Snapshot,
    /// A delta (or anything else that is neither a hello nor a status).
    Delta,
    /// A status, with a fingerprint of its content: equal fingerprints mean equal statuses.
    Status {
        /// Computed by the shell from the status's encoded bytes.
        fingerprint: u64,
    },
}

/// One frame of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame<M> {
    /// An agent's message on a link.
    Message {
        /// The link number.
        link: u32,
        /// The message, as the agent sent it.
        message: M,
    },
    /// The link ended (its number may be used again).
    Closed {
        /// The link number.
        link: u32,
    },
}

impl<M> Frame<M> {
    /// The link this frame belongs to.
    pub fn link(&self) -> u32 {
        match self {
            Frame::Message { link, .. } | Frame::Closed { link } => *link,
        }
    }
}

/// Frames for one upstream, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch<M> {
    /// The frames.
    pub frames: Vec<Frame<M>>,
    /// Their size as counted by the hub (message bytes plus [`FRAME_OVERHEAD`] per frame).
    pub bytes: usize,
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Ask this link's agent for a fresh snapshot.
    Resync {
        /// The link.
        link: LinkKey,
        /// Why (for the agent's log).
        reason: &'static str,
    },
    /// End this link's agent stream with this gRPC status; the link is already closed.
    CloseAgent {
        /// The link.
        link: LinkKey,
        /// The gRPC status code.
        code: u32,
        /// The status message.
        message: String,
    },
    /// Disconnect this upstream: it could not drain. The hub has forgotten it; connect again
    /// (with backoff) and call [`Hub::upstream_connected`].
    DropUpstream {
        /// The upstream.
        upstream: UpstreamId,
        /// Its pending bytes when it was dropped.
        pending_bytes: usize,
    },
}

/// What became of a pushed message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Appended for every connected upstream.
    Forwarded,
    /// A status equal to the last one forwarded, inside the heartbeat forward interval: not sent.
    Coalesced,
}

/// An aggregator's reply about one link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// It wants a fresh snapshot.
    Resync {
        /// Why.
        reason: String,
    },
    /// It ended the link with this gRPC status.
    Closed {
        /// The gRPC status code (non-zero).
        code: u32,
        /// The status message.
        message: String,
    },
}

/// Why the hub refused a call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// [`HubConfig::max_links`] links are open.
    #[error("{max} links are open (--max-streams)")]
    TooManyLinks {
        /// The bound.
        max: usize,
    },
    /// The link is closed (by the agent or by an upstream).
    #[error("link {0} is closed")]
    UnknownLink(u32),
}

/// Result alias of the hub.
pub type Result<T, E = HubError> = std::result::Result<T, E>;

/// The relay's state: links, upstreams and their pending frames.
#[derive(Debug)]
pub struct Hub<M> {
    config: HubConfig,
    /// Indexed by link number.
    links: Vec<Option<Link<M>>>,
    n_links: usize,
    free_ids: VecDeque<u32>,
    next_generation: u64,
    upstreams: BTreeMap<UpstreamId, Upstream<M>>,
    effects: Vec<Effect>,
}

#[derive(Debug)]
struct Link<M> {
    generation: u64,
    node: String,
    hello: M,
    hello_bytes: usize,
    /// The fingerprint of the last status forwarded, until a replica needs it again.
    last_status: Option<u64>,
    /// When a frame of this link was last forwarded.
    last_forwarded: Instant,
}

#[derive(Debug)]
struct Upstream<M> {
    pending: VecDeque<Pending<M>>,
    pending_bytes: usize,
    /// Links that were sent their hello again and wait for a snapshot.
    awaiting_snapshot: HashSet<u32>,
}

#[derive(Debug)]
struct Pending<M> {
    frame: Frame<M>,
    bytes: usize,
    at: Instant,
}

// === impl Hub ===

impl<M: Clone> Hub<M> {
    /// An empty hub.
    pub fn new(config: HubConfig) -> Self {
        Self {
            config,
            links: Vec::new(),
            n_links: 0,
            free_ids: VecDeque::new(),
            next_generation: 0,
            upstreams: BTreeMap::new(),
            effects: Vec::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// Opens a link for an agent stream whose first message, `hello` (`hello_bytes` encoded),
    /// was checked by the shell. The hello is appended for every connected upstream and kept,
    /// to be sent again to an upstream that connects later.
    pub fn open(
        &mut self,
        node: impl Into<String>,
        hello: M,
        hello_bytes: usize,
        now: Instant,
    ) -> Result<LinkKey> {
        if self.n_links >= self.config.max_links {
            return Err(HubError::TooManyLinks {
                max: self.config.max_links,
            });
        }
        let id = self.allocate_id();
        let generation = self.next_generation;
        self.next_generation += 1;
        let frame = Frame::Message {
            link: id,
            message: hello.clone(),
        };
        self.links[id as usize] = Some(Link {
            generation,
            node: node.into(),
            hello,
            hello_bytes,
            last_status: None,
            last_forwarded: now,
        });
        self.n_links += 1;
        self.append_all(frame, hello_bytes, now, |_, _| true);
        Ok(LinkKey { id, generation })
    }

    /// Appends an agent's message on `link` for every connected upstream, unless it is a status
    /// that may be coalesced.
    pub fn push(
        &mut self,
        link: LinkKey,
        message: M,
        bytes: usize,
        kind: MessageKind,
        now: Instant,
    ) -> Result<Pushed> {
        let heartbeat = self.config.heartbeat_forward_interval;
        let entry = self.link_mut(link)?;
        if let MessageKind::Status { fingerprint } = kind {
            if entry.last_status == Some(fingerprint) && now < entry.last_forwarded + heartbeat {
                return Ok(Pushed::Coalesced);
            }
            entry.last_status = Some(fingerprint);
        }
        entry.last_forwarded = now;
        let id = link.id;
        let snapshot = kind == MessageKind::Snapshot;
        let mut waited = false;
        self.append_all(
            Frame::Message { link: id, message },
            bytes,
            now,
            |_, upstream| {
                if upstream.awaiting_snapshot.is_empty()
                    || !upstream.awaiting_snapshot.contains(&id)
                {
                    return true;
                }
                if snapshot {
                    upstream.awaiting_snapshot.remove(&id);
                    waited = true;
                }
                snapshot
            },
        );
        if waited && let Some(entry) = self.links[id as usize].as_mut() {
            // the replica that just got its snapshot gets the next status as well
            entry.last_status = None;
        }
        Ok(Pushed::Forwarded)
    }

    /// The agent's stream ended: the link closes on every connected upstream.
    pub fn close(&mut self, link: LinkKey, now: Instant) -> Result<()> {
        self.link_mut(link)?;
        self.free(link.id);
        self.append_all(Frame::Closed { link: link.id }, 0, now, |_, upstream| {
            upstream.awaiting_snapshot.remove(&link.id);
            true
        });
        Ok(())
    }

    /// An upstream connected (or connected again): it is sent the hello of every live link, and
    /// every agent is asked for a snapshot ([`Effect::Resync`]); until a link's snapshot passes,
    /// its other frames are held back from this upstream. An upstream already known is first
    /// forgotten.
    pub fn upstream_connected(&mut self, upstream: UpstreamId, now: Instant) {
        self.upstreams.remove(&upstream);
        let mut state = Upstream {
            pending: VecDeque::with_capacity(self.n_links),
            pending_bytes: 0,
            awaiting_snapshot: HashSet::with_capacity(self.n_links),
        };
        for (id, link) in self.links.iter().enumerate() {
            let Some(link) = link else { continue };
            let id = id as u32;
            let bytes = link.hello_bytes + FRAME_OVERHEAD;
            state.pending.push_back(Pending {
                frame: Frame::Message {
                    link: id,
                    message: link.hello.clone(),
                },
                bytes,
                at: now,
            });
            state.pending_bytes += bytes;
            state.awaiting_snapshot.insert(id);
            self.effects.push(Effect::Resync {
                link: LinkKey {
                    id,
                    generation: link.generation,
                },
                reason: "an aggregator replica connected to the relay",
            });
        }
        self.upstreams.insert(upstream, state);
    }

    /// An upstream's stream ended: its pending frames are dropped.
    pub fn upstream_gone(&mut self, upstream: UpstreamId) {
        self.upstreams.remove(&upstream);
    }

    /// An aggregator replica's reply about link number `link`; replies about links that are
    /// gone are ignored.
    pub fn on_reply(&mut self, upstream: UpstreamId, link: u32, reply: Reply, now: Instant) {
        let Some(Some(entry)) = self.links.get(link as usize) else {
            return;
        };
        let key = LinkKey {
            id: link,
            generation: entry.generation,
        };
        match reply {
            Reply::Resync { .. } => self.effects.push(Effect::Resync {
                link: key,
                reason: "an aggregator replica asked for a resync",
            }),
            Reply::Closed { code, message } => {
                self.free(link);
                if let Some(state) = self.upstreams.get_mut(&upstream) {
                    // that replica has ended the link: nothing more of it goes there
                    state.pending.retain(|p| p.frame.link() != link);
                    state.pending_bytes = state.pending.iter().map(|p| p.bytes).sum();
                    state.awaiting_snapshot.remove(&link);
                }
                self.append_all(Frame::Closed { link }, 0, now, |id, state| {
                    state.awaiting_snapshot.remove(&link);
                    id != upstream
                });
                self.effects.push(Effect::CloseAgent {
                    link: key,
                    code,
                    message,
                });
            }
        }
    }

    /// The next batch for `upstream`, if one is due at `now`: the oldest pending frames, up to
    /// [`HubConfig::max_batch_bytes`] (a larger frame goes alone).
    pub fn flush(&mut self, upstream: UpstreamId, now: Instant) -> Option<Batch<M>> {
        let interval = self.config.batch_interval;
        let max = self.config.max_batch_bytes;
        let state = self.upstreams.get_mut(&upstream)?;
        let oldest = state.pending.front()?.at;
        if state.pending_bytes < max && now < oldest + interval {
            return None;
        }
        let mut frames = Vec::new();
        let mut bytes = 0;
        while let Some(next) = state.pending.front() {
            if !frames.is_empty() && bytes + next.bytes > max {
                break;
            }
            let Some(next) = state.pending.pop_front() else {
                break;
            };
            bytes += next.bytes;
            frames.push(next.frame);
        }
        state.pending_bytes -= bytes;
        Some(Batch { frames, bytes })
    }

    /// When the next batch of any upstream is due by time (`None`: nothing is pending). A batch
    /// due by size is due now: call [`Hub::flush`] after every push.
    pub fn next_flush_at(&self) -> Option<Instant> {
        self.upstreams
            .values()
            .filter_map(|u| u.pending.front().map(|p| p.at))
            .min()
            .map(|at| at + self.config.batch_interval)
    }

    /// The side effects queued since the last call.
    pub fn effects(&mut self) -> std::vec::Drain<'_, Effect> {
        self.effects.drain(..)
    }

    /// Links open.
    pub fn links_open(&self) -> usize {
        self.n_links
    }

    /// The node a live link reports for.
    pub fn node(&self, link: LinkKey) -> Option<&str> {
        self.links
            .get(link.id as usize)?
            .as_ref()
            .filter(|l| l.generation == link.generation)
            .map(|l| l.node.as_str())
    }

    /// Upstreams connected.
    pub fn upstreams_connected(&self) -> usize {
        self.upstreams.len()
    }

    /// Bytes pending for `upstream` (`None`: not connected).
    pub fn pending_bytes(&self, upstream: UpstreamId) -> Option<usize> {
        self.upstreams.get(&upstream).map(|u| u.pending_bytes)
    }

    fn link_mut(&mut self, link: LinkKey) -> Result<&mut Link<M>> {
        self.links
            .get_mut(link.id as usize)
            .and_then(Option::as_mut)
            .filter(|l| l.generation == link.generation)
            .ok_or(HubError::UnknownLink(link.id))
    }

    fn allocate_id(&mut self) -> u32 {
        if (self.free_ids.len() > REUSE_QUARANTINE || self.links.len() >= u32::MAX as usize)
            && let Some(id) = self.free_ids.pop_front()
        {
            return id;
        }
        self.links.push(None);
        (self.links.len() - 1) as u32
    }

    fn free(&mut self, id: u32) {
        if let Some(slot) = self.links.get_mut(id as usize)
            && slot.take().is_some()
        {
            self.n_links -= 1;
            self.free_ids.push_back(id);
        }
    }

    /// Appends `frame` (`message_bytes` plus the frame overhead) to every connected upstream for
    /// which `keep` says so, then drops the upstreams over their bound.
    fn append_all(
        &mut self,
        frame: Frame<M>,
        message_bytes: usize,
        now: Instant,
        mut keep: impl FnMut(UpstreamId, &mut Upstream<M>) -> bool,
    ) {
        let bytes = message_bytes + FRAME_OVERHEAD;
        let max_pending = self.config.max_pending_bytes;
        let mut over = false;
        let mut targets = self
            .upstreams
            .iter_mut()
            .filter_map(|(id, state)| keep(*id, state).then_some(state))
            .peekable();
        let mut frame = Some(frame);
        while let Some(state) = targets.next() {
            // the last upstream takes the frame itself
            let next = if targets.peek().is_some() {
                frame.clone()
            } else {
                frame.take()
            };
            let Some(next) = next else { break };
            state.pending.push_back(Pending {
                frame: next,
                bytes,
                at: now,
            });
            state.pending_bytes += bytes;
            over |= state.pending_bytes > max_pending;
        }
        drop(targets);
        if over {
            self.drop_lagging();
        }
    }

    fn drop_lagging(&mut self) {
        let max_pending = self.config.max_pending_bytes;
        let lagging: Vec<(UpstreamId, usize)> = self
            .upstreams
            .iter()
            .filter(|(_, u)| u.pending_bytes > max_pending)
            .map(|(id, u)| (*id, u.pending_bytes))
            .collect();
        for (upstream, pending_bytes) in lagging {
            self.upstreams.remove(&upstream);
            self.effects.push(Effect::DropUpstream {
                upstream,
                pending_bytes,
            });
        }
    }
}

#[cfg(test)]
mod tests;
