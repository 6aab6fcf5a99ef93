use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::*;

/// A test payload: which link instance sent it, its number within that instance, and whether it
/// is the hello.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Msg {
    instance: u64,
    n: u32,
    hello: bool,
}

const MS: Duration = Duration::from_millis(1);
const UP1: UpstreamId = UpstreamId(1);
const UP2: UpstreamId = UpstreamId(2);

fn config() -> HubConfig {
    HubConfig {
        batch_interval: 50 * MS,
        max_batch_bytes: 1000,
        max_pending_bytes: 10_000,
        heartbeat_forward_interval: Duration::from_secs(10),
        max_links: 100,
    }
}

fn hello(instance: u64) -> Msg {
    Msg {
        instance,
        n: 0,
        hello: true,
    }
}

fn msg(instance: u64, n: u32) -> Msg {
    Msg {
        instance,
        n,
        hello: false,
    }
}

/// Everything due for `upstream` at `now`, as (link, n or "closed") lines.
fn drain(hub: &mut Hub<Msg>, upstream: UpstreamId, now: Instant) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(batch) = hub.flush(upstream, now) {
        for frame in batch.frames {
            out.push(match frame {
                Frame::Message { link, message } if message.hello => format!("{link} hello"),
                Frame::Message { link, message } => format!("{link} {}", message.n),
                Frame::Closed { link } => format!("{link} closed"),
            });
        }
    }
    out
}

#[test]
fn frames_wait_for_the_batch_interval_or_the_batch_size() {
    let t0 = Instant::now();
    let mut hub = Hub::new(config());
    hub.upstream_connected(UP1, t0);
    let link = hub.open("n1", hello(1), 100, t0).unwrap();
    hub.push(link, msg(1, 1), 100, MessageKind::Snapshot, t0 + MS)
        .unwrap();
    assert_eq!(hub.flush(UP1, t0 + 49 * MS), None);
    assert_eq!(hub.next_flush_at(), Some(t0 + 50 * MS));
    assert_eq!(drain(&mut hub, UP1, t0 + 50 * MS), ["0 hello", "0 1"]);
    assert_eq!(hub.next_flush_at(), None);
    // 8 × 120 bytes reach 960; the 9th makes the batch due by size; the 9th does not fit
    for n in 2..=10 {
        hub.push(link, msg(1, n), 100, MessageKind::Delta, t0 + 60 * MS)
            .unwrap();
    }
    let batch = hub.flush(UP1, t0 + 60 * MS).unwrap();
    assert_eq!(batch.frames.len(), 8);
    assert_eq!(batch.bytes, 8 * (100 + FRAME_OVERHEAD));
    assert_eq!(hub.flush(UP1, t0 + 60 * MS), None);
    assert_eq!(drain(&mut hub, UP1, t0 + 110 * MS), ["0 10"]);
}

#[test]
fn a_frame_larger_than_a_batch_goes_alone() {
    let t0 = Instant::now();
    let mut hub = Hub::new(config());
    hub.upstream_connected(UP1, t0);
    let link = hub.open("n1", hello(1), 10, t0).unwrap();
    hub.push(link, msg(1, 1), 5000, MessageKind::Snapshot, t0)
        .unwrap();
    let first = hub.flush(UP1, t0).unwrap();
    assert_eq!(first.frames.len(), 1, "the hello alone");
    let second = hub.flush(UP1, t0).unwrap();
    assert_eq!(second.bytes, 5000 + FRAME_OVERHEAD);
}

#[test]
fn an_equal_status_is_coalesced_until_the_heartbeat_forward_interval() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut hub = Hub::new(config());
    hub.upstream_connected(UP1, t0);
    let link = hub.open("n1", hello(1), 10, t0).unwrap();
    let status = |fingerprint| MessageKind::Status { fingerprint };
    let mut push = |n, kind, at| hub.push(link, msg(1, n), 10, kind, at).unwrap();
    assert_eq!(push(1, MessageKind::Snapshot, t0), Pushed::Forwarded);
    assert_eq!(push(2, status(7), t0), Pushed::Forwarded);
    assert_eq!(push(3, status(7), t0 + s(5)), Pushed::Coalesced);
    assert_eq!(push(4, status(8), t0 + s(6)), Pushed::Forwarded);
    assert_eq!(push(5, status(8), t0 + s(15)), Pushed::Coalesced);
    assert_eq!(push(6, status(8), t0 + s(16)), Pushed::Forwarded);
    // a delta counts as forwarded traffic: the same status stays coalesced for another period
    assert_eq!(push(7, MessageKind::Delta, t0 + s(20)), Pushed::Forwarded);
    assert_eq!(push(8, status(8), t0 + s(29)), Pushed::Coalesced);
    assert_eq!(push(9, status(8), t0 + s(30)), Pushed::Forwarded);
}

/// What an agent sends with its defaults (a heartbeat after 5 s in which it sent nothing),
/// pushed through a hub with the relay's defaults: the instants at which it forwards a frame
/// of the agent's. `deltas` are when the agent sends a delta, ascending.
fn forwarded_with_defaults(deltas: &[Duration], until: Duration) -> Vec<Duration> {
    const AGENT_HEARTBEAT: Duration = Duration::from_secs(5);
    let t0 = Instant::now();
    let mut hub = Hub::new(HubConfig::default());
    hub.upstream_connected(UP1, t0);
    let link = hub.open("n1", hello(1), 10, t0).unwrap();
    // an agent's stream opens with its snapshot and its kubelet read status
    hub.push(link, msg(1, 1), 10, MessageKind::Snapshot, t0)
        .unwrap();
    hub.push(
        link,
        msg(1, 2),
        10,
        MessageKind::Status { fingerprint: 1 },
        t0,
    )
    .unwrap();
    let (mut forwarded, mut last_sent, mut next) = (Vec::new(), Duration::ZERO, 2);
    let mut deltas = deltas.iter().copied().peekable();
    while last_sent < until {
        let heartbeat = last_sent + AGENT_HEARTBEAT;
        let (at, kind) = match deltas.peek() {
            Some(&d) if d <= heartbeat => {
                deltas.next();
                (d, MessageKind::Delta)
            }
            _ => (heartbeat, MessageKind::Status { fingerprint: 1 }),
        };
        next += 1;
        if hub.push(link, msg(1, next), 10, kind, t0 + at).unwrap() == Pushed::Forwarded {
            forwarded.push(at);
        }
        last_sent = at;
    }
    forwarded
}

#[test]
fn with_the_defaults_deltas_every_15_s_carry_no_heartbeat_and_an_idle_node_is_heard_in_time() {
    let s = Duration::from_secs;
    // a kubelet refreshing every 15 s, seen by the agent's 1 s poll up to a second later
    let deltas: Vec<Duration> = (1..=19u64)
        .map(|k| s(15 * k) + Duration::from_millis(137 * k % 1000))
        .collect();
    let forwarded = forwarded_with_defaults(&deltas, s(300));
    assert_eq!(forwarded, deltas, "only the deltas are forwarded");
    // no delta at all: the heartbeats that are forwarded keep the node inside its 30 s TTL
    let idle = forwarded_with_defaults(&[], s(300));
    assert!(idle.len() >= 10, "{idle:?}");
    let widest = (idle.windows(2).map(|w| w[1] - w[0]))
        .chain([idle[0]])
        .max()
        .unwrap();
    assert!(widest < s(25), "an idle node is heard every {widest:?}");
}

#[test]
fn a_reconnected_upstream_gets_every_hello_then_waits_for_each_snapshot() {
    let t0 = Instant::now();
    let mut hub = Hub::new(config());
    hub.upstream_connected(UP1, t0);
    let a = hub.open("a", hello(1), 10, t0).unwrap();
    let b = hub.open("b", hello(2), 10, t0).unwrap();
    hub.push(a, msg(1, 1), 10, MessageKind::Snapshot, t0)
        .unwrap();
    hub.push(b, msg(2, 1), 10, MessageKind::Snapshot, t0)
        .unwrap();
    assert_eq!(
        drain(&mut hub, UP1, t0 + 50 * MS),
        ["0 hello", "1 hello", "0 1", "1 1"]
    );
    hub.upstream_gone(UP1);
    hub.push(a, msg(1, 2), 10, MessageKind::Delta, t0 + 60 * MS)
        .unwrap();
    hub.upstream_connected(UP1, t0 + 70 * MS);
    let resyncs: Vec<Effect> = hub.effects().collect();
    assert_eq!(resyncs.len(), 2);
    assert!(
        resyncs
            .iter()
            .all(|e| matches!(e, Effect::Resync { link, .. } if *link == a || *link == b))
    );
    // a delta before the snapshot means nothing to the new replica; so does a status
    hub.push(a, msg(1, 3), 10, MessageKind::Delta, t0 + 70 * MS)
        .unwrap();
    let fp = MessageKind::Status { fingerprint: 1 };
    hub.push(b, msg(2, 2), 10, fp, t0 + 70 * MS).unwrap();
    hub.push(a, msg(1, 4), 10, MessageKind::Snapshot, t0 + 70 * MS)
        .unwrap();
    hub.push(a, msg(1, 5), 10, MessageKind::Delta, t0 + 70 * MS)
        .unwrap();
    hub.push(b, msg(2, 3), 10, MessageKind::Snapshot, t0 + 70 * MS)
        .unwrap();
    // the status b sent before its snapshot is sent again although equal
    assert_eq!(
        hub.push(b, msg(2, 4), 10, fp, t0 + 80 * MS).unwrap(),
        Pushed::Forwarded
    );
    assert_eq!(
        drain(&mut hub, UP1, t0 + 130 * MS),
        ["0 hello", "1 hello", "0 4", "0 5", "1 3", "1 4"]
    );
}

#[test]
fn an_upstream_that_cannot_drain_is_dropped() {
    let t0 = Instant::now();
    let mut hub = Hub::new(config());
    hub.upstream_connected(UP1, t0);
    hub.upstream_connected(UP2, t0);
    let link = hub.open("n1", hello(1), 10, t0).unwrap();
    for n in 1..=100 {
        hub.push(link, msg(1, n), 80, MessageKind::Delta, t0)
            .unwrap();
        // UP2 drains, UP1 does not
        drain(&mut hub, UP2, t0 + 50 * MS);
    }
    let effects: Vec<Effect> = hub.effects().collect();
    assert!(
        matches!(effects[..], [Effect::DropUpstream { upstream: UP1, pending_bytes }] if pending_bytes > 10_000),
        "{effects:?}"
    );
    assert_eq!(hub.pending_bytes(UP1), None);
    assert_eq!(hub.upstreams_connected(), 1);
}

#[test]
fn a_closed_reply_ends_the_agent_stream_and_the_link_elsewhere() {
    let t0 = Instant::now();
    let mut hub = Hub::new(config());
    hub.upstream_connected(UP1, t0);
    hub.upstream_connected(UP2, t0);
    let link = hub.open("n1", hello(1), 10, t0).unwrap();
    hub.push(link, msg(1, 1), 10, MessageKind::Snapshot, t0)
        .unwrap();
    hub.on_reply(
        UP1,
        link.id,
        Reply::Closed {
            code: 8,
            message: "over --max-pods-per-node".into(),
        },
        t0,
    );
    assert_eq!(
        hub.effects().collect::<Vec<_>>(),
        [Effect::CloseAgent {
            link,
            code: 8,
            message: "over --max-pods-per-node".into()
        }]
    );
    assert_eq!(hub.links_open(), 0);
    assert_eq!(
        hub.push(link, msg(1, 2), 10, MessageKind::Delta, t0),
        Err(HubError::UnknownLink(0))
    );
    assert!(drain(&mut hub, UP1, t0 + 50 * MS).is_empty());
    assert_eq!(
        drain(&mut hub, UP2, t0 + 50 * MS),
        ["0 hello", "0 1", "0 closed"]
    );
    // a later reply about a gone link changes nothing
    hub.on_reply(UP2, link.id, Reply::Resync { reason: "x".into() }, t0);
    assert_eq!(hub.effects().count(), 0);
}

#[test]
fn link_numbers_are_reused_after_a_quarantine_and_old_keys_stay_dead() {
    let t0 = Instant::now();
    let mut hub = Hub::new(HubConfig {
        max_links: 10,
        ..config()
    });
    let first = hub.open("n", hello(0), 1, t0).unwrap();
    hub.close(first, t0).unwrap();
    let mut ids = Vec::new();
    for i in 1..=(REUSE_QUARANTINE as u64 + 2) {
        let link = hub.open("n", hello(i), 1, t0).unwrap();
        ids.push(link.id);
        hub.close(link, t0).unwrap();
    }
    assert!(ids.contains(&first.id), "number 0 is used again");
    assert!(*ids.iter().max().unwrap() as usize <= REUSE_QUARANTINE + 1);
    let reused = ids.iter().position(|id| *id == first.id).unwrap();
    assert!(reused >= REUSE_QUARANTINE, "not before the quarantine");
    assert_eq!(hub.close(first, t0), Err(HubError::UnknownLink(first.id)));
    assert_eq!(hub.node(first), None);
}

#[test]
fn links_are_bounded() {
    let t0 = Instant::now();
    let mut hub = Hub::new(HubConfig {
        max_links: 2,
        ..config()
    });
    let a = hub.open("a", hello(1), 1, t0).unwrap();
    hub.open("b", hello(2), 1, t0).unwrap();
    assert_eq!(
        hub.open("c", hello(3), 1, t0),
        Err(HubError::TooManyLinks { max: 2 })
    );
    hub.close(a, t0).unwrap();
    assert!(hub.open("c", hello(3), 1, t0).is_ok());
    assert_eq!(hub.links_open(), 2);
}

// === properties ===

#[derive(Clone, Debug)]
enum Op {
    Open,
    Push { link: usize, kind: u8, bytes: usize },
    Close { link: usize },
    Connect { upstream: u64 },
    Gone { upstream: u64 },
    ReplyClosed { upstream: u64, link: usize },
    ReplyResync { upstream: u64, link: usize },
    Flush { upstream: u64 },
    Advance { ms: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Open),
        8 => (0..8usize, 0..3u8, 1..600usize).prop_map(|(link, kind, bytes)| Op::Push { link, kind, bytes }),
        1 => (0..8usize).prop_map(|link| Op::Close { link }),
        1 => (0..3u64).prop_map(|upstream| Op::Connect { upstream }),
        1 => (0..3u64).prop_map(|upstream| Op::Gone { upstream }),
        1 => (0..3u64, 0..8usize).prop_map(|(upstream, link)| Op::ReplyClosed { upstream, link }),
        1 => (0..3u64, 0..8usize).prop_map(|(upstream, link)| Op::ReplyResync { upstream, link }),
        3 => (0..3u64).prop_map(|upstream| Op::Flush { upstream }),
        2 => (0..80u64).prop_map(|ms| Op::Advance { ms }),
    ]
}

/// What one upstream connection received.
#[derive(Default)]
struct Received {
    /// link number → the instance open on it at this upstream and the messages seen.
    open: HashMap<u32, (u64, Vec<u32>)>,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Per upstream connection: a link's frames start with its hello, arrive in push order,
    /// nothing follows a `closed` but a new hello; batches respect the size bound; an upstream
    /// connected from the start and never dropped receives exactly what was forwarded.
    #[test]
    fn frames_reach_every_upstream_in_order(ops in proptest::collection::vec(op(), 1..200)) {
        let t0 = Instant::now();
        let config = HubConfig { max_pending_bytes: 6_000, ..config() };
        let mut hub: Hub<Msg> = Hub::new(config);
        let mut now = t0;
        // a stable upstream, connected before everything and always drained
        let stable = UpstreamId(100);
        hub.upstream_connected(stable, now);
        let mut connection = 0u64;
        // upstream slot → its current connection id
        let mut slots: BTreeMap<u64, UpstreamId> = BTreeMap::new();
        let mut received: HashMap<UpstreamId, Received> = HashMap::new();
        let mut links: Vec<(LinkKey, u64, u32)> = Vec::new(); // key, instance, last n
        let mut next_instance = 0u64;
        // instance → messages forwarded, in order
        let mut forwarded: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
        let mut stable_got: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
        let mut stable_ok = true;

        let check = |hub: &mut Hub<Msg>, upstream: UpstreamId, now: Instant,
                         received: &mut HashMap<UpstreamId, Received>,
                         stable_got: &mut BTreeMap<u64, Vec<u32>>| -> Result<(), TestCaseError> {
            while let Some(batch) = hub.flush(upstream, now) {
                prop_assert!(batch.bytes <= config.max_batch_bytes || batch.frames.len() == 1);
                let r = received.entry(upstream).or_default();
                for frame in batch.frames {
                    match frame {
                        Frame::Message { link, message } if message.hello => {
                            prop_assert!(!r.open.contains_key(&link), "hello on an open link");
                            r.open.insert(link, (message.instance, Vec::new()));
                        }
                        Frame::Message { link, message } => {
                            let Some((instance, seen)) = r.open.get_mut(&link) else {
                                return Err(TestCaseError::fail(format!("frame before hello on link {link}")));
                            };
                            prop_assert_eq!(*instance, message.instance, "frame of another instance");
                            prop_assert!(seen.last().is_none_or(|last| *last < message.n), "out of order");
                            seen.push(message.n);
                            if upstream == stable {
                                stable_got.entry(message.instance).or_default().push(message.n);
                            }
                        }
                        Frame::Closed { link } => {
                            prop_assert!(r.open.remove(&link).is_some(), "closed for a link not open");
                        }
                    }
                }
            }
            Ok(())
        };

        for op in ops {
            match op {
                Op::Open => {
                    next_instance += 1;
                    if let Ok(key) = hub.open("n", hello(next_instance), 50, now) {
                        links.push((key, next_instance, 0));
                        forwarded.insert(next_instance, Vec::new());
                    }
                }
                Op::Push { link, kind, bytes } => {
                    if let Some((key, instance, last)) = links.get_mut(link) {
                        *last += 1;
                        let kind = match kind {
                            0 => MessageKind::Snapshot,
                            1 => MessageKind::Delta,
                            _ => MessageKind::Status { fingerprint: u64::from(*last % 2) },
                        };
                        if let Ok(Pushed::Forwarded) = hub.push(*key, msg(*instance, *last), bytes, kind, now) {
                            forwarded.get_mut(instance).unwrap().push(*last);
                        }
                    }
                }
                Op::Close { link } => {
                    if link < links.len() {
                        let (key, _, _) = links.remove(link);
                        let _ = hub.close(key, now);
                    }
                }
                Op::Connect { upstream } => {
                    connection += 1;
                    let id = UpstreamId(connection);
                    if let Some(old) = slots.insert(upstream, id) {
                        hub.upstream_gone(old);
                    }
                    hub.upstream_connected(id, now);
                }
                Op::Gone { upstream } => {
                    if let Some(id) = slots.remove(&upstream) {
                        hub.upstream_gone(id);
                    }
                }
                Op::ReplyClosed { upstream, link } => {
                    if let (Some(id), Some((key, _, _))) = (slots.get(&upstream), links.get(link)) {
                        hub.on_reply(*id, key.id, Reply::Closed { code: 8, message: "limit".into() }, now);
                        // that replica ended the link itself: it expects no `closed` for it
                        received.entry(*id).or_default().open.remove(&key.id);
                    }
                }
                Op::ReplyResync { upstream, link } => {
                    if let (Some(id), Some((key, _, _))) = (slots.get(&upstream), links.get(link)) {
                        hub.on_reply(*id, key.id, Reply::Resync { reason: "gap".into() }, now);
                    }
                }
                Op::Flush { upstream } => {
                    if let Some(id) = slots.get(&upstream) {
                        check(&mut hub, *id, now, &mut received, &mut stable_got)?;
                    }
                }
                Op::Advance { ms } => now += Duration::from_millis(ms),
            }
            check(&mut hub, stable, now, &mut received, &mut stable_got)?;
            for effect in hub.effects() {
                match effect {
                    Effect::DropUpstream { upstream, .. } => {
                        slots.retain(|_, id| *id != upstream);
                        stable_ok &= upstream != stable;
                    }
                    Effect::CloseAgent { link, .. } => links.retain(|(key, _, _)| *key != link),
                    Effect::Resync { link, .. } => {
                        prop_assert!(links.iter().any(|(key, _, _)| *key == link), "resync for a gone link");
                    }
                }
            }
            prop_assert_eq!(hub.links_open(), links.len());
        }
        now += Duration::from_secs(1);
        check(&mut hub, stable, now, &mut received, &mut stable_got)?;
        if stable_ok {
            for (instance, sent) in &forwarded {
                let got = stable_got.get(instance).cloned().unwrap_or_default();
                prop_assert_eq!(&got, sent, "instance {}", instance);
            }
        }
    }
}
