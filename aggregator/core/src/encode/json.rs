//! JSON as Go's `encoding/json` writes Kubernetes objects: struct field order, `omitempty`
//! rules, HTML-safe string escaping, compact, and (from `json.Encoder`) a trailing newline.
//!
//! Written by hand into one `Vec<u8>` rather than through serde: the all-pods list of the VPA
//! must stream at millions of pods per second, and the escaping must match Go byte for byte
//! (`<`, `>`, `&`, U+2028 and U+2029 become `\u003c`…, which serde_json does not do).
//! [`NodeListStream`] and [`PodListStream`] let the HTTP shell flush a list in chunks.

use std::collections::BTreeMap;

use kubepulse_model::{Timestamp, Usage};

use crate::api::{ApiStatus, ApiVersion, NodeMetrics, PodMetrics};
use crate::quantity::{push_u64, write_cpu, write_memory};
use crate::timefmt::{write_duration, write_time};

/// Builds a `NodeMetricsList` one item at a time, so a long list can be sent in chunks with
/// bounded memory: [`take`](Self::take) hands over the bytes written so far,
/// [`finish`](Self::finish) the rest. The concatenation of every chunk is exactly
/// [`node_list`](super::node_list)'s JSON body.
pub struct NodeListStream {
    list: ListWriter,
}

/// Builds a `PodMetricsList` one item at a time; see [`NodeListStream`].
pub struct PodListStream {
    list: ListWriter,
}

impl NodeListStream {
    /// Starts a list of API version `v`, built at `now` (each item's `creationTimestamp`).
    pub fn new(v: ApiVersion, now: Timestamp) -> Self {
        Self {
            list: ListWriter::new("NodeMetricsList", v, now),
        }
    }

    /// Like [`new`](Self::new), with room for `n_items` typical items before reallocating.
    pub(crate) fn sized(v: ApiVersion, now: Timestamp, n_items: usize) -> Self {
        Self {
            list: ListWriter::with_capacity("NodeMetricsList", v, now, 128 + n_items * 400),
        }
    }

    /// Appends one item.
    pub fn push(&mut self, node: &NodeMetrics) {
        self.list.begin_item();
        write_node_fields(
            &mut self.list.out,
            node,
            &self.list.creation,
            &mut self.list.times,
        );
        self.list.out.push(b'}');
    }

    /// Bytes written and not yet taken.
    pub fn buffered(&self) -> usize {
        self.list.out.len()
    }

    /// Hands over the bytes written so far.
    pub fn take(&mut self) -> Vec<u8> {
        self.list.take()
    }

    /// Closes the list and hands over the remaining bytes.
    pub fn finish(self) -> Vec<u8> {
        self.list.finish()
    }
}

impl PodListStream {
    /// Starts a list of API version `v`, built at `now` (each item's `creationTimestamp`).
    pub fn new(v: ApiVersion, now: Timestamp) -> Self {
        Self {
            list: ListWriter::new("PodMetricsList", v, now),
        }
    }

    /// Like [`new`](Self::new), with room for `n_items` typical items before reallocating.
    pub(crate) fn sized(v: ApiVersion, now: Timestamp, n_items: usize) -> Self {
        Self {
            list: ListWriter::with_capacity("PodMetricsList", v, now, 128 + n_items * 480),
        }
    }

    /// Appends one item.
    pub fn push(&mut self, pod: &PodMetrics) {
        self.list.begin_item();
        write_pod_fields(
            &mut self.list.out,
            pod,
            &self.list.creation,
            &mut self.list.times,
        );
        self.list.out.push(b'}');
    }

    /// Bytes written and not yet taken.
    pub fn buffered(&self) -> usize {
        self.list.out.len()
    }

    /// Hands over the bytes written so far.
    pub fn take(&mut self) -> Vec<u8> {
        self.list.take()
    }

    /// Closes the list and hands over the remaining bytes.
    pub fn finish(self) -> Vec<u8> {
        self.list.finish()
    }
}

// === crate-internal writers, shared with table.rs ===

/// A single `NodeMetrics` document (with kind and apiVersion).
pub(crate) fn write_node(out: &mut Vec<u8>, m: &NodeMetrics, v: ApiVersion, now: Timestamp) {
    let creation = TimeText::new(now);
    write_type_meta(out, "NodeMetrics", v.group_version());
    write_node_fields(out, m, &creation, &mut TextCache::default());
    out.push(b'}');
}

/// A single `PodMetrics` document (with kind and apiVersion).
pub(crate) fn write_pod(out: &mut Vec<u8>, m: &PodMetrics, v: ApiVersion, now: Timestamp) {
    let creation = TimeText::new(now);
    write_type_meta(out, "PodMetrics", v.group_version());
    write_pod_fields(out, m, &creation, &mut TextCache::default());
    out.push(b'}');
}

/// `{"kind":"…","apiVersion":"…",` — the caller continues with the next key.
pub(crate) fn write_type_meta(out: &mut Vec<u8>, kind: &str, api_version: &str) {
    out.extend_from_slice(b"{\"kind\":");
    push_str(out, kind);
    out.extend_from_slice(b",\"apiVersion\":");
    push_str(out, api_version);
    out.push(b',');
}

/// The `metadata` object of an item: name, namespace, creationTimestamp, labels (omitted
/// when empty), in `ObjectMeta` field order.
pub(crate) fn write_object_meta(
    out: &mut Vec<u8>,
    name: &str,
    namespace: Option<&str>,
    creation: &TimeText,
    labels: &BTreeMap<String, String>,
) {
    out.extend_from_slice(b"{\"name\":");
    push_str(out, name);
    if let Some(namespace) = namespace {
        out.extend_from_slice(b",\"namespace\":");
        push_str(out, namespace);
    }
    out.extend_from_slice(b",\"creationTimestamp\":\"");
    out.extend_from_slice(creation.as_bytes());
    out.push(b'"');
    if !labels.is_empty() {
        out.extend_from_slice(b",\"labels\":{");
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_str(out, key);
            out.push(b':');
            push_str(out, value);
        }
        out.push(b'}');
    }
    out.push(b'}');
}

/// A Status document, newline-terminated (`kind`, `apiVersion`, `metadata`, `status`,
/// `message`, `reason`, `details`, `code`; empty strings omitted as Go's `omitempty` does).
pub(crate) fn write_status(out: &mut Vec<u8>, s: &ApiStatus) {
    write_type_meta(out, "Status", "v1");
    out.extend_from_slice(b"\"metadata\":{},\"status\":\"Failure\"");
    if !s.message.is_empty() {
        out.extend_from_slice(b",\"message\":");
        push_str(out, &s.message);
    }
    if !s.reason.is_empty() {
        out.extend_from_slice(b",\"reason\":");
        push_str(out, s.reason);
    }
    if let Some(details) = &s.details {
        out.extend_from_slice(b",\"details\":{");
        let mut first = true;
        for (key, value) in [
            ("name", &details.name),
            ("group", &details.group),
            ("kind", &details.kind),
        ] {
            if value.is_empty() {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            push_str(out, key);
            out.push(b':');
            push_str(out, value);
        }
        out.push(b'}');
    }
    if s.code != 0 {
        out.extend_from_slice(b",\"code\":");
        push_u64(out, u64::from(s.code));
    }
    out.extend_from_slice(b"}\n");
}

/// Appends `s` as a JSON string, escaped exactly as Go's `encoding/json` does with HTML
/// escaping on (the `json.Encoder` default Kubernetes uses).
pub(crate) fn push_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut run_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !NEEDS_ESCAPE[b as usize] {
            i += 1;
            continue;
        }
        if b == 0xE2 {
            // U+2028 / U+2029 are E2 80 A8 / E2 80 A9; other E2 sequences pass through.
            if bytes.get(i + 1) == Some(&0x80) && matches!(bytes.get(i + 2), Some(0xA8 | 0xA9)) {
                out.extend_from_slice(&bytes[run_start..i]);
                out.extend_from_slice(if bytes[i + 2] == 0xA8 {
                    b"\\u2028"
                } else {
                    b"\\u2029"
                });
                i += 3;
                run_start = i;
            } else {
                i += 1;
            }
            continue;
        }
        out.extend_from_slice(&bytes[run_start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0C => out.extend_from_slice(b"\\f"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xF) as usize]);
            }
        }
        i += 1;
        run_start = i;
    }
    out.extend_from_slice(&bytes[run_start..]);
    out.push(b'"');
}

/// Re-indents compact JSON the way Go's `json.MarshalIndent(v, "", "  ")` lays it out (what
/// Kubernetes serves for `?pretty=true` and for Status bodies written with `WriteRawJSON`):
/// one member per line, two spaces per level, `": "` after keys, empty `{}`/`[]` kept
/// together, no trailing newline.
pub fn indent(compact: &[u8]) -> Vec<u8> {
    let compact = compact.strip_suffix(b"\n").unwrap_or(compact);
    let mut out = Vec::with_capacity(compact.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut i = 0;
    let newline = |out: &mut Vec<u8>, depth: usize| {
        out.push(b'\n');
        out.extend(std::iter::repeat_n(b' ', depth * 2));
    };
    while i < compact.len() {
        let b = compact[i];
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                out.push(b);
            }
            b'{' | b'[' => {
                out.push(b);
                let close = if b == b'{' { b'}' } else { b']' };
                if compact.get(i + 1) == Some(&close) {
                    out.push(close);
                    i += 1;
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(b);
            }
            b',' => {
                out.push(b);
                newline(&mut out, depth);
            }
            b':' => out.extend_from_slice(b": "),
            b' ' | b'\t' | b'\r' | b'\n' => {}
            _ => out.push(b),
        }
        i += 1;
    }
    out
}

/// A formatted `metav1.Time` (20 bytes), computed once and copied into every item.
pub(crate) struct TimeText {
    text: [u8; 20],
    len: usize,
}

impl TimeText {
    pub(crate) fn new(ts: Timestamp) -> Self {
        let mut buf = Vec::with_capacity(20);
        write_time(&mut buf, ts);
        let mut text = [0u8; 20];
        let len = buf.len().min(20);
        text[..len].copy_from_slice(&buf[..len]);
        Self { text, len }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.text[..self.len]
    }
}

/// Remembers the last timestamp and window formatted: items of one list mostly share them
/// (every pod of a node carries that node's scrape time), and formatting dominates otherwise.
#[derive(Default)]
pub(crate) struct TextCache {
    time_secs: Option<i64>,
    time: Vec<u8>,
    window_nanos: Option<u64>,
    window: Vec<u8>,
}

impl TextCache {
    pub(crate) fn push_time(&mut self, out: &mut Vec<u8>, ts: Timestamp) {
        if self.time_secs != Some(ts.as_secs()) {
            self.time.clear();
            write_time(&mut self.time, ts);
            self.time_secs = Some(ts.as_secs());
        }
        out.extend_from_slice(&self.time);
    }

    pub(crate) fn push_window(&mut self, out: &mut Vec<u8>, nanos: u64) {
        if self.window_nanos != Some(nanos) {
            self.window.clear();
            write_duration(&mut self.window, nanos);
            self.window_nanos = Some(nanos);
        }
        out.extend_from_slice(&self.window);
    }
}

// === private helpers ===

/// Bytes Go escapes (control characters, `"`, `\`, `<`, `>`, `&`) plus 0xE2, the first byte
/// of U+2028/U+2029, which is checked further.
const NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table[b'<' as usize] = true;
    table[b'>' as usize] = true;
    table[b'&' as usize] = true;
    table[0xE2] = true;
    table
};

struct ListWriter {
    out: Vec<u8>,
    items: usize,
    creation: TimeText,
    times: TextCache,
}

impl ListWriter {
    fn new(kind: &str, v: ApiVersion, now: Timestamp) -> Self {
        Self::with_capacity(kind, v, now, 4096)
    }

    fn with_capacity(kind: &str, v: ApiVersion, now: Timestamp, capacity: usize) -> Self {
        let mut out = Vec::with_capacity(capacity);
        write_type_meta(&mut out, kind, v.group_version());
        out.extend_from_slice(b"\"metadata\":{},\"items\":[");
        Self {
            out,
            items: 0,
            creation: TimeText::new(now),
            times: TextCache::default(),
        }
    }

    fn begin_item(&mut self) {
        if self.items > 0 {
            self.out.push(b',');
        }
        self.items += 1;
        self.out.push(b'{');
    }

    fn take(&mut self) -> Vec<u8> {
        std::mem::replace(&mut self.out, Vec::with_capacity(4096))
    }

    fn finish(mut self) -> Vec<u8> {
        self.out.extend_from_slice(b"]}\n");
        self.out
    }
}

/// The fields of a NodeMetrics after `{` (or after its type meta): metadata, timestamp,
/// window, usage.
pub(crate) fn write_node_fields(
    out: &mut Vec<u8>,
    m: &NodeMetrics,
    creation: &TimeText,
    times: &mut TextCache,
) {
    out.extend_from_slice(b"\"metadata\":");
    write_object_meta(out, m.name.as_str(), None, creation, &m.labels);
    write_sample_time(out, m.sample.timestamp, m.sample.window.as_nanos(), times);
    out.extend_from_slice(b",\"usage\":");
    write_usage(out, m.sample.usage);
}

/// The fields of a PodMetrics after `{` (or after its type meta): metadata, timestamp,
/// window, containers.
pub(crate) fn write_pod_fields(
    out: &mut Vec<u8>,
    m: &PodMetrics,
    creation: &TimeText,
    times: &mut TextCache,
) {
    out.extend_from_slice(b"\"metadata\":");
    write_object_meta(
        out,
        m.key.name.as_str(),
        Some(m.key.namespace.as_str()),
        creation,
        &m.labels,
    );
    write_sample_time(out, m.timestamp, m.window.as_nanos(), times);
    out.extend_from_slice(b",\"containers\":[");
    for (i, container) in m.containers.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"name\":");
        push_str(out, container.name.as_str());
        out.extend_from_slice(b",\"usage\":");
        write_usage(out, container.usage);
        out.push(b'}');
    }
    out.push(b']');
}

fn write_sample_time(out: &mut Vec<u8>, ts: Timestamp, window: u64, times: &mut TextCache) {
    out.extend_from_slice(b",\"timestamp\":\"");
    times.push_time(out, ts);
    out.extend_from_slice(b"\",\"window\":\"");
    times.push_window(out, window);
    out.push(b'"');
}

/// `{"cpu":"…","memory":"…"}` (map keys sorted, as Go writes maps).
fn write_usage(out: &mut Vec<u8>, usage: Usage) {
    out.extend_from_slice(b"{\"cpu\":\"");
    write_cpu(out, usage.cpu_nanocores);
    out.extend_from_slice(b"\",\"memory\":\"");
    write_memory(out, usage.memory_bytes);
    out.extend_from_slice(b"\"}");
}
