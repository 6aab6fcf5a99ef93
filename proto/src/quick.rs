//! A decoder for what the aggregator receives most — steady deltas and heartbeats, alone or in
//! relay batches — that reads them straight from their bytes.
//!
//! prost decodes a delta's samples as two nested messages each, through its generic
//! field-by-field merge: at 5,000 relayed nodes that was ~28% of the aggregator's CPU, most
//! of it on the 54 `ContainerUsage`/`Usage` pairs of each node update. This decoder reads only
//! the form agents and relays write (known fields, each at most once, the usual wire types)
//! and gives up (`None`) on anything else — a snapshot, a delta that defines or removes ids, a
//! status with text, an unknown field — which prost then decodes as before. What it accepts it
//! decodes to exactly what prost gives for the same bytes (a property test and the `quick`
//! fuzz check compare the two); giving up is always safe. Each message is first read in the
//! order prost writes its fields (ascending, each once, a one-byte key compared per field) and,
//! when that does not take the whole message, field by field in any order.
//!
//! Written by hand rather than generated: prost has no option to decode a message's repeated
//! nested fields without its per-field merge, and the form read here is a small subset of the
//! schema.

use crate::v1::{self, agent_message};

/// A message the codec may decode without prost ([`crate::codec::SliceDecoder`]).
pub trait QuickDecode: prost::Message + Default {
    /// The message in `bytes`, when they hold it in the form this decoder reads. `None` says
    /// nothing about whether prost accepts them.
    fn quick_decode(bytes: &[u8]) -> Option<Self> {
        let _ = bytes;
        None
    }
}

impl QuickDecode for v1::AggregatorMessage {}
impl QuickDecode for v1::RelayReplies {}

impl QuickDecode for v1::AgentMessage {
    fn quick_decode(bytes: &[u8]) -> Option<Self> {
        agent_message(bytes)
    }
}

impl QuickDecode for v1::RelayBatch {
    fn quick_decode(bytes: &[u8]) -> Option<Self> {
        let mut frames = Vec::new();
        each_field(bytes, 1 << 1, |r, field, wire| {
            match (field, wire) {
                (1, LEN) => frames.push(relay_frame(r.bytes()?)?),
                _ => return None,
            }
            Some(())
        })?;
        Some(v1::RelayBatch { frames })
    }
}

const VARINT: u8 = 0;
const LEN: u8 = 2;

/// The unread bytes of one message.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.0.is_empty()
    }

    /// A varint as prost reads it: at most 10 bytes, the 10th at most 1.
    #[inline(always)]
    fn varint(&mut self) -> Option<u64> {
        match self.0 {
            [b, rest @ ..] if *b < 0x80 => {
                self.0 = rest;
                Some(u64::from(*b))
            }
            _ => self.long_varint(),
        }
    }

    #[inline(never)]
    fn long_varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for (i, &b) in self.0.iter().take(10).enumerate() {
            if i == 9 && b > 1 {
                return None;
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                self.0 = &self.0[i + 1..];
                return Some(value);
            }
        }
        None
    }

    /// True, past it, when the next byte is `key` (a one-byte key: field 1–15).
    #[inline(always)]
    fn at(&mut self, key: u8) -> bool {
        match self.0 {
            [b, rest @ ..] if *b == key => {
                self.0 = rest;
                true
            }
            _ => false,
        }
    }

    #[inline(always)]
    fn u32(&mut self) -> Option<u32> {
        // prost truncates a larger value; leave that to prost
        u32::try_from(self.varint()?).ok()
    }

    /// A field's number and wire type.
    #[inline(always)]
    fn key(&mut self) -> Option<(u64, u8)> {
        let key = self.varint()?;
        if key > u64::from(u32::MAX) || key >> 3 == 0 {
            return None;
        }
        Some((key >> 3, (key & 7) as u8))
    }

    /// A length-delimited field's bytes.
    #[inline(always)]
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        if len > self.0.len() {
            return None;
        }
        let (head, tail) = self.0.split_at(len);
        self.0 = tail;
        Some(head)
    }
}

/// Reads one message's fields with `read`, which gives up (`None`) on a field it does not
/// take. A field met twice gives up too (prost would merge or replace it), unless its bit is
/// set in `repeated`; so does a field number beyond every field read here.
fn each_field<'a>(
    bytes: &'a [u8],
    repeated: u32,
    mut read: impl FnMut(&mut Reader<'a>, u64, u8) -> Option<()>,
) -> Option<()> {
    let mut r = Reader(bytes);
    let mut seen = 0u32;
    while !r.done() {
        let (field, wire) = r.key()?;
        if field >= 32 {
            return None;
        }
        let bit = 1 << field;
        if seen & bit != 0 && repeated & bit == 0 {
            return None;
        }
        seen |= bit;
        read(&mut r, field, wire)?;
    }
    Some(())
}

fn relay_frame(bytes: &[u8]) -> Option<v1::RelayFrame> {
    let mut frame = v1::RelayFrame::default();
    each_field(bytes, 0, |r, field, wire| {
        match (field, wire) {
            (1, VARINT) => frame.link = r.u32()?,
            (2, LEN) => {
                let bytes = r.bytes()?;
                let message = match agent_message(bytes) {
                    Some(m) => m,
                    None => prost::Message::decode(bytes).ok()?,
                };
                frame.message = Some(message);
            }
            (3, VARINT) => frame.closed = r.varint()? != 0,
            _ => return None,
        }
        Some(())
    })?;
    Some(frame)
}

fn agent_message(bytes: &[u8]) -> Option<v1::AgentMessage> {
    let mut msg = v1::AgentMessage::default();
    each_field(bytes, 0, |r, field, wire| {
        // one kind at most (a later one would replace it)
        if msg.kind.is_some() && matches!(field, 1..=4) {
            return None;
        }
        match (field, wire) {
            (3, LEN) => msg.kind = Some(agent_message::Kind::Delta(delta(r.bytes()?)?)),
            (4, LEN) => msg.kind = Some(agent_message::Kind::Status(status(r.bytes()?)?)),
            (15, VARINT) => msg.seq = r.varint()?,
            _ => return None,
        }
        Some(())
    })?;
    Some(msg)
}

fn delta(bytes: &[u8]) -> Option<v1::Delta> {
    // a container's usage takes ~25 bytes on the wire
    let mut delta = v1::Delta {
        usages: Vec::with_capacity(bytes.len() / 24),
        ..Default::default()
    };
    each_field(bytes, 1 << 6, |r, field, wire| {
        match (field, wire) {
            (1, VARINT) => delta.base_timestamp_ms = r.varint()? as i64,
            (2, LEN) => delta.node = Some(usage(r.bytes()?)?),
            (3, VARINT) => delta.node_cleared = r.varint()? != 0,
            (6, LEN) => {
                delta.usages.push(container_usage(r.bytes()?)?);
                // the rest of them, which prost writes one after the other
                while r.at(key(6, LEN)) {
                    delta.usages.push(container_usage(r.bytes()?)?);
                }
            }
            _ => return None,
        }
        Some(())
    })?;
    Some(delta)
}

fn container_usage(bytes: &[u8]) -> Option<v1::ContainerUsage> {
    // the order prost writes, as for `usage`
    let mut r = Reader(bytes);
    let mut cu = v1::ContainerUsage::default();
    if r.at(key(1, VARINT)) {
        cu.container_id = r.u32()?;
    }
    if r.at(key(2, LEN)) {
        cu.usage = Some(usage(r.bytes()?)?);
    }
    if r.done() {
        return Some(cu);
    }
    let mut cu = v1::ContainerUsage::default();
    each_field(bytes, 0, |r, field, wire| {
        match (field, wire) {
            (1, VARINT) => cu.container_id = r.u32()?,
            (2, LEN) => cu.usage = Some(usage(r.bytes()?)?),
            _ => return None,
        }
        Some(())
    })?;
    Some(cu)
}

fn usage(bytes: &[u8]) -> Option<v1::Usage> {
    // the order prost writes: ascending fields, each once, zero values left out
    let mut r = Reader(bytes);
    let mut u = v1::Usage::default();
    if r.at(key(1, VARINT)) {
        u.cpu_nanocores = r.varint()?;
    }
    if r.at(key(2, VARINT)) {
        u.memory_bytes = r.varint()?;
    }
    if r.at(key(3, VARINT)) {
        u.timestamp_offset_ms = zigzag(r.varint()?);
    }
    if r.at(key(4, VARINT)) {
        u.window_ns = r.varint()?;
    }
    if r.at(key(5, VARINT)) {
        u.timestamp_sub_ms_ns = r.u32()?;
    }
    match r.done() {
        true => Some(u),
        false => usage_in_any_order(bytes),
    }
}

fn usage_in_any_order(bytes: &[u8]) -> Option<v1::Usage> {
    let mut u = v1::Usage::default();
    each_field(bytes, 0, |r, field, wire| {
        match (field, wire) {
            (1, VARINT) => u.cpu_nanocores = r.varint()?,
            (2, VARINT) => u.memory_bytes = r.varint()?,
            (3, VARINT) => u.timestamp_offset_ms = zigzag(r.varint()?),
            (4, VARINT) => u.window_ns = r.varint()?,
            (5, VARINT) => u.timestamp_sub_ms_ns = r.u32()?,
            _ => return None,
        }
        Some(())
    })?;
    Some(u)
}

/// A one-byte key (field 1–15).
const fn key(field: u8, wire: u8) -> u8 {
    field << 3 | wire
}

/// A `sint64` from its varint.
fn zigzag(n: u64) -> i64 {
    (n >> 1) as i64 ^ -((n & 1) as i64)
}

/// A status without text (a heartbeat of a healthy read, or one counting issues).
fn status(bytes: &[u8]) -> Option<v1::ScrapeStatus> {
    let mut s = v1::ScrapeStatus::default();
    each_field(bytes, 0, |r, field, wire| {
        match (field, wire) {
            (1, VARINT) => s.ok = r.varint()? != 0,
            (3, VARINT) => s.decode_issues = r.u32()?,
            (5, VARINT) => s.pending_dropped = r.u32()?,
            _ => return None,
        }
        Some(())
    })?;
    Some(s)
}

#[cfg(test)]
mod tests;
