//! Stage 1 of the agent: kubelet `/metrics/resource` text (Prometheus exposition 0.0.4) into a
//! [`ScrapeBatch`] of raw cumulative points. Pure: the caller passes the bytes and the time the
//! scrape started.
//!
//! A hand-written scanner over borrowed bytes: it allocates only for the names it keeps (one
//! [`PodKey`] per pod, one [`ContainerName`] per container) and the output maps, never per
//! line. Partial input is not a failure: every line that cannot be used becomes a
//! [`DecodeIssue`] and the rest of the body is kept.
//!
//! Rules (reference §1.4 and §2.2):
//! - `#` lines and blank lines are skipped; `[STABLE]`/`[ALPHA]` live in HELP text and are
//!   never looked at.
//! - Metric names match exactly: a name runs to `{`, a space or a tab, so
//!   `container_cpu_usage_seconds_total_x` is an unknown family. Unknown families (`pod_*`,
//!   swap, commit bytes, anything new) are ignored without reading past their name. The 1.18.0
//!   gauge names `node_cpu_usage_seconds`/`container_cpu_usage_seconds` are ignored too: that
//!   layout lived for one patch release and metrics-server never read it either.
//! - Labels are parsed for real, in any order, honouring the `\\`, `\"` and `\n` escapes;
//!   `namespace`, `pod` and `container` are required on container families. Their values are
//!   checked against the model's name rules once per series: an invalid name is one issue, at
//!   the series' first line, and drops every line of that series.
//! - Values take any float syntax Go's `strconv.ParseFloat` prints (`2.4707072e+08`, `0`,
//!   `NaN`, `+Inf`); NaN, infinities and negative values are issues for CPU, memory and start
//!   time. CPU seconds become `trunc(v × 1e9)` nanoseconds, memory `trunc(v)` bytes, start time
//!   `trunc(v × 1e9)` nanoseconds since the epoch.
//! - The timestamp is optional integer milliseconds; a missing one means `scrape_time`. A
//!   negative timestamp (Go's zero time, `-62135596800000`, from 1.22–1.28 kubelets) is an issue
//!   that drops its line only, where metrics-server drops the whole node scrape.
//! - `container_start_time_seconds` contributes its value; its own timestamp is ignored.
//! - `resource_scrape_error` or `scrape_error` with a non-zero value sets
//!   [`ScrapeBatch::resource_scrape_error`].
//! - A second sample for the same series is an issue; the first one is kept.
//! - CRLF line ends are accepted. Lines longer than [`MAX_LINE_LEN`] are an issue and skipped.
//!   A final sample line without its `\n` is a truncated body: an issue, and the line is
//!   dropped, because a cut value or timestamp would read as a valid, wrong number.

use std::borrow::Cow;
use std::collections::BTreeMap;

use kubepulse_model::{ContainerName, KeyError, PodKey, Timestamp};

/// The longest line the decoder reads, in bytes (without its line end). Real lines are under
/// 400 bytes; longer ones are skipped with [`DecodeIssueKind::LineTooLong`].
pub const MAX_LINE_LEN: usize = 64 * 1024;

/// Everything usable in one kubelet response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScrapeBatch {
    /// The node's own samples.
    pub node: RawNode,
    /// Per pod, per container, the samples found. Every pod has at least one container and
    /// every container at least one of its fields set.
    pub pods: BTreeMap<PodKey, BTreeMap<ContainerName, RawContainer>>,
    /// The kubelet said it failed to gather stats (`resource_scrape_error 1`, or
    /// `scrape_error 1` on kubelets up to 1.29). Such a response normally holds nothing else.
    pub resource_scrape_error: bool,
}

/// The node's samples in one response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawNode {
    /// `node_cpu_usage_seconds_total`.
    pub cpu: Option<CpuPoint>,
    /// `node_memory_working_set_bytes`.
    pub memory: Option<MemoryPoint>,
}

/// One container's samples in one response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawContainer {
    /// `container_cpu_usage_seconds_total`.
    pub cpu: Option<CpuPoint>,
    /// `container_memory_working_set_bytes`.
    pub memory: Option<MemoryPoint>,
    /// `container_start_time_seconds` (the value; the sample's own timestamp is ignored).
    pub start_time: Option<Timestamp>,
}

/// A cumulative CPU sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuPoint {
    /// CPU time used since the container (or node) started, in nanoseconds.
    pub cumulative_ns: u64,
    /// The kubelet's sample time, or the scrape time when the line had none.
    pub timestamp: Timestamp,
}

/// A working-set sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryPoint {
    /// Working set in bytes.
    pub bytes: u64,
    /// The kubelet's sample time, or the scrape time when the line had none.
    pub timestamp: Timestamp,
}

/// One line the decoder could not use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct DecodeIssue {
    /// 1-based line number in the body.
    pub line: usize,
    /// What was wrong with it.
    pub kind: DecodeIssueKind,
}

/// What was wrong with a line. Every kind drops the line it is found on, and only that line,
/// except [`InvalidName`](Self::InvalidName), which drops the whole series.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeIssueKind {
    /// The line breaks the exposition grammar; the text says where.
    #[error("malformed line: {0}")]
    Malformed(&'static str),
    /// The line is longer than [`MAX_LINE_LEN`].
    #[error("line is {0} bytes long, more than {MAX_LINE_LEN}")]
    LineTooLong(usize),
    /// The body ends in the middle of a sample line.
    #[error("body ends without a line feed: truncated sample")]
    Truncated,
    /// The value is not a float.
    #[error("value is not a number")]
    BadValue,
    /// The value is NaN or infinite.
    #[error("value is not finite")]
    NotFinite,
    /// The value is negative.
    #[error("value is negative")]
    Negative,
    /// The value does not fit the integer it is stored as.
    #[error("value is out of range")]
    OutOfRange,
    /// The timestamp is not an integer.
    #[error("timestamp is not an integer")]
    BadTimestamp,
    /// The timestamp is negative (Go's zero time, from 1.22–1.28 kubelets).
    #[error("timestamp is negative")]
    NegativeTimestamp,
    /// The timestamp does not fit 64-bit nanoseconds (after year 2262).
    #[error("timestamp is out of range")]
    TimestampOutOfRange,
    /// A label this family needs is absent.
    #[error("missing label {0:?}")]
    MissingLabel(&'static str),
    /// A `namespace`, `pod` or `container` label is not a valid name. Reported once per series,
    /// at its first line.
    #[error("invalid label value: {0}")]
    InvalidName(KeyError),
    /// This series already had a sample for this metric in the body; the first one is kept.
    #[error("duplicate sample for the same series")]
    Duplicate,
}

/// Decodes one kubelet response. `scrape_time` stands in for missing sample timestamps. Never
/// fails as a whole: unusable lines come back as issues, in line order.
pub fn decode(body: &[u8], scrape_time: Timestamp) -> (ScrapeBatch, Vec<DecodeIssue>) {
    let decoded = decode_body(body, scrape_time);
    (decoded.batch, decoded.issues)
}

/// What [`decode_body`] found in one kubelet response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    /// Everything usable.
    pub batch: ScrapeBatch,
    /// The lines that could not be used, in line order.
    pub issues: Vec<DecodeIssue>,
    /// A CPU or memory sample line had no timestamp, so `scrape_time` stands in for it: the
    /// same bytes decoded at another time give another batch. (Start times and the
    /// scrape-error flag, which real kubelets send without one, do not count: their
    /// timestamps are never used.)
    pub uses_scrape_time: bool,
}

/// [`decode`], also saying whether the result depends on `scrape_time`.
pub fn decode_body(body: &[u8], scrape_time: Timestamp) -> Decoded {
    let mut decoder = Decoder {
        scrape_time,
        uses_scrape_time: false,
        node: RawNode::default(),
        series: SeriesTable::with_capacity(body.len() / SERIES_BYTES_ESTIMATE),
        resource_scrape_error: false,
        issues: Vec::new(),
    };
    let mut rest = body;
    let mut line_no = 0;
    while !rest.is_empty() {
        line_no += 1;
        let (mut line, terminated) = match memchr::memchr(b'\n', rest) {
            Some(end) => {
                let line = &rest[..end];
                rest = &rest[end + 1..];
                (line, true)
            }
            None => (std::mem::take(&mut rest), false),
        };
        if let [head @ .., b'\r'] = line {
            line = head;
        }
        if line.len() > MAX_LINE_LEN {
            decoder.issue(line_no, DecodeIssueKind::LineTooLong(line.len()));
            continue;
        }
        let line = trim_start(line);
        if line.is_empty() || line[0] == b'#' {
            continue;
        }
        if !terminated {
            decoder.issue(line_no, DecodeIssueKind::Truncated);
            continue;
        }
        if let Err(kind) = decoder.sample_line(line, line_no) {
            decoder.issue(line_no, kind);
        }
    }
    let uses_scrape_time = decoder.uses_scrape_time;
    let (batch, issues) = decoder.finish();
    Decoded {
        batch,
        issues,
        uses_scrape_time,
    }
}

// === the scanner ===

/// The metric families the decoder reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    NodeCpu,
    NodeMemory,
    ContainerCpu,
    ContainerMemory,
    ContainerStartTime,
    ScrapeError,
}

impl Family {
    fn from_name(name: &[u8]) -> Option<Family> {
        Some(match name {
            b"container_cpu_usage_seconds_total" => Family::ContainerCpu,
            b"container_memory_working_set_bytes" => Family::ContainerMemory,
            b"container_start_time_seconds" => Family::ContainerStartTime,
            b"node_cpu_usage_seconds_total" => Family::NodeCpu,
            b"node_memory_working_set_bytes" => Family::NodeMemory,
            b"resource_scrape_error" | b"scrape_error" => Family::ScrapeError,
            _ => return None,
        })
    }
}

/// The labels the decoder cares about, borrowed from the line unless they hold an escape.
/// Bytes until the end: UTF-8 and name rules are checked once per series, in `finish`.
#[derive(Default)]
struct Labels<'a> {
    namespace: Option<Cow<'a, [u8]>>,
    pod: Option<Cow<'a, [u8]>>,
    container: Option<Cow<'a, [u8]>>,
}

/// A container series as written in the body. The field order makes the derived `Ord` the
/// kubelet's series order: by label values in label-name order.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SeriesKey<'a> {
    container: Cow<'a, [u8]>,
    namespace: Cow<'a, [u8]>,
    pod: Cow<'a, [u8]>,
}

impl SeriesKey<'_> {
    fn same_pod(&self, other: &Self) -> bool {
        self.namespace == other.namespace && self.pod == other.pod
    }

    /// The output order: by pod, then container.
    fn cmp_by_pod(&self, other: &Self) -> std::cmp::Ordering {
        (&self.namespace, &self.pod, &self.container).cmp(&(
            &other.namespace,
            &other.pod,
            &other.container,
        ))
    }
}

/// Container series seen so far, in first-seen order.
///
/// The kubelet prints every container family in the same sorted series order. So while series
/// arrive in that order, a new series is one greater than the last and an old one is found by
/// binary search; and after the first family each line usually names the series right after
/// the previous line's (`cursor`), which a compare of the raw label text confirms without
/// parsing the labels again. Input in any other order switches to a map index.
struct SeriesTable<'a> {
    entries: Vec<SeriesEntry<'a>>,
    /// Entries are sorted by key (every new key so far was greater than the last).
    sorted: bool,
    /// Key → entry, built only once `sorted` is false.
    index: BTreeMap<SeriesKey<'a>, usize>,
    cursor: usize,
}

/// Body bytes per container series in kubelet output (three families of ~140-byte lines plus
/// pod-level families), to size the series table once.
const SERIES_BYTES_ESTIMATE: usize = 512;

impl SeriesTable<'_> {
    fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: Vec::with_capacity(capacity),
            sorted: true,
            index: BTreeMap::new(),
            cursor: 0,
        }
    }
}

struct SeriesEntry<'a> {
    key: SeriesKey<'a>,
    /// The text between the braces of the line that created the entry.
    label_text: &'a [u8],
    /// Where the series first appears, for issues about its names.
    first_line: usize,
    raw: RawContainer,
}

/// Which container series a line names: found by its label text, or parsed.
enum LineSeries<'a> {
    Known(usize),
    Parsed(Labels<'a>, &'a [u8]),
}

struct Decoder<'a> {
    scrape_time: Timestamp,
    /// A CPU or memory sample line took `scrape_time` for its missing timestamp.
    uses_scrape_time: bool,
    node: RawNode,
    series: SeriesTable<'a>,
    resource_scrape_error: bool,
    issues: Vec<DecodeIssue>,
}

impl<'a> Decoder<'a> {
    fn issue(&mut self, line: usize, kind: DecodeIssueKind) {
        self.issues.push(DecodeIssue { line, kind });
    }

    /// One non-comment line, already trimmed at the start and without its line end.
    fn sample_line(&mut self, line: &'a [u8], line_no: usize) -> Result<(), DecodeIssueKind> {
        let name_end = memchr::memchr3(b'{', b' ', b'\t', line).unwrap_or(line.len());
        let (name, rest) = line.split_at(name_end);
        let Some(family) = Family::from_name(name) else {
            let valid = name.first().is_some_and(|b| !b.is_ascii_digit())
                && name.iter().all(|&b| is_name_byte(b));
            return if valid {
                Ok(()) // a family we do not read
            } else {
                Err(DecodeIssueKind::Malformed("invalid metric name"))
            };
        };
        let (series, rest) = match rest.first() {
            Some(b'{') => {
                let inner = &rest[1..];
                let guessed = match family {
                    Family::ContainerCpu | Family::ContainerMemory | Family::ContainerStartTime => {
                        self.series.guess_by_text(inner)
                    }
                    _ => None,
                };
                match guessed {
                    Some((entry_idx, rest)) => (LineSeries::Known(entry_idx), rest),
                    None => {
                        let (labels, label_text, rest) = parse_labels(inner)?;
                        (LineSeries::Parsed(labels, label_text), rest)
                    }
                }
            }
            _ => (LineSeries::Parsed(Labels::default(), b""), rest),
        };
        // Numbers are parsed while scanning when they are plain; the slow paths re-scan the
        // token to say what is wrong with it. Syntax issues come before value issues.
        let rest = trim_start(rest);
        let (value, rest) = match parse_plain_decimal(rest) {
            Some((value, len)) => (Ok(value), &rest[len..]),
            None => {
                let (token, rest) = split_token(rest);
                if token.is_empty() {
                    return Err(DecodeIssueKind::Malformed("missing value"));
                }
                (parse_value(token), rest)
            }
        };
        let rest = trim_start(rest);
        let mut missing_timestamp = false;
        let (timestamp, rest) = match parse_plain_timestamp(rest) {
            Some((timestamp, len)) => (Ok(timestamp), &rest[len..]),
            None if rest.is_empty() => {
                missing_timestamp = true;
                (Ok(self.scrape_time), rest)
            }
            None => {
                let (token, rest) = split_token(rest);
                (parse_timestamp(token), rest)
            }
        };
        if !trim_start(rest).is_empty() {
            return Err(DecodeIssueKind::Malformed(
                "unexpected text after the timestamp",
            ));
        }
        let value = value?;
        let timestamp = timestamp?;
        // start times and the scrape-error flag never use their timestamp
        if missing_timestamp
            && matches!(
                family,
                Family::NodeCpu
                    | Family::NodeMemory
                    | Family::ContainerCpu
                    | Family::ContainerMemory
            )
        {
            self.uses_scrape_time = true;
        }
        match family {
            Family::NodeCpu => {
                let point = CpuPoint {
                    cumulative_ns: to_u64(value, 1e9)?,
                    timestamp,
                };
                set_once(&mut self.node.cpu, point)
            }
            Family::NodeMemory => {
                let point = MemoryPoint {
                    bytes: to_u64(value, 1.0)?,
                    timestamp,
                };
                set_once(&mut self.node.memory, point)
            }
            Family::ContainerCpu => {
                let point = CpuPoint {
                    cumulative_ns: to_u64(value, 1e9)?,
                    timestamp,
                };
                let raw = self.series.lookup(series, line_no)?;
                set_once(&mut raw.cpu, point)
            }
            Family::ContainerMemory => {
                let point = MemoryPoint {
                    bytes: to_u64(value, 1.0)?,
                    timestamp,
                };
                let raw = self.series.lookup(series, line_no)?;
                set_once(&mut raw.memory, point)
            }
            Family::ContainerStartTime => {
                let start = Timestamp(to_i64_nanos(value)?);
                let raw = self.series.lookup(series, line_no)?;
                set_once(&mut raw.start_time, start)
            }
            Family::ScrapeError => {
                if !value.is_finite() {
                    return Err(DecodeIssueKind::NotFinite);
                }
                self.resource_scrape_error |= value != 0.0;
                Ok(())
            }
        }
    }

    /// Validates the names of every series once, groups series by pod and builds the batch.
    fn finish(self) -> (ScrapeBatch, Vec<DecodeIssue>) {
        let Decoder {
            node,
            series,
            resource_scrape_error,
            mut issues,
            ..
        } = self;
        let entries = series.entries;
        let n_issues = issues.len();
        let mut order: Vec<usize> = (0..entries.len()).collect();
        // Stable sort: merges the runs the kubelet order leaves (one per container name).
        order.sort_by(|&a, &b| entries[a].key.cmp_by_pod(&entries[b].key));

        let mut pods = Vec::new();
        let mut remaining = &order[..];
        while let Some(&first) = remaining.first() {
            let first = &entries[first];
            let group_len = remaining
                .iter()
                .take_while(|&&entry_idx| entries[entry_idx].key.same_pod(&first.key))
                .count();
            let (group, rest) = remaining.split_at(group_len);
            remaining = rest;
            let pod_key = utf8(&first.key.namespace).and_then(|namespace| {
                let name = utf8(&first.key.pod)?;
                PodKey::new(namespace, name).map_err(DecodeIssueKind::InvalidName)
            });
            let pod_key = match pod_key {
                Ok(pod_key) => pod_key,
                Err(kind) => {
                    for &entry_idx in group {
                        issues.push(DecodeIssue {
                            line: entries[entry_idx].first_line,
                            kind: kind.clone(),
                        });
                    }
                    continue;
                }
            };
            // Inserted in order into a map of a few entries: cheaper than collecting.
            let mut containers = BTreeMap::new();
            for &entry_idx in group {
                let entry = &entries[entry_idx];
                let container = utf8(&entry.key.container).and_then(|name| {
                    ContainerName::new(name).map_err(DecodeIssueKind::InvalidName)
                });
                match container {
                    Ok(container) => {
                        containers.insert(container, entry.raw);
                    }
                    Err(kind) => issues.push(DecodeIssue {
                        line: entry.first_line,
                        kind,
                    }),
                }
            }
            if !containers.is_empty() {
                pods.push((pod_key, containers));
            }
        }
        if issues.len() > n_issues {
            // Stable: issues of one line keep their order.
            issues.sort_by_key(|issue| issue.line);
        }
        let batch = ScrapeBatch {
            node,
            pods: pods.into_iter().collect(),
            resource_scrape_error,
        };
        (batch, issues)
    }
}

impl<'a> SeriesTable<'a> {
    /// The series after the previous line's, when this line's label text (after `{`) starts
    /// with that series' own label text and a `}`. Parsing would read the same bytes the same
    /// way, so the line names the same series: one compare instead of parsing three labels.
    fn guess_by_text(&self, inner: &'a [u8]) -> Option<(usize, &'a [u8])> {
        let guess = self.entries.get(self.cursor)?;
        let after = inner.strip_prefix(guess.label_text)?.strip_prefix(b"}")?;
        Some((self.cursor, after))
    }

    /// The container series a line names, created on first sight.
    fn lookup(
        &mut self,
        series: LineSeries<'a>,
        line_no: usize,
    ) -> Result<&mut RawContainer, DecodeIssueKind> {
        let (key, label_text) = match series {
            LineSeries::Known(entry_idx) => {
                self.cursor = entry_idx + 1;
                return Ok(&mut self.entries[entry_idx].raw);
            }
            LineSeries::Parsed(labels, label_text) => (series_key(labels)?, label_text),
        };
        let entry_idx = match self.entries.get(self.cursor) {
            Some(guess) if guess.key == key => self.cursor,
            _ if self.sorted => match self.entries.last() {
                None => self.push(key, label_text, line_no),
                Some(last) if last.key < key => self.push(key, label_text, line_no),
                Some(_) => match self.entries.binary_search_by(|entry| entry.key.cmp(&key)) {
                    Ok(found) => found,
                    Err(_) => {
                        // Out of kubelet order: from now on, use a map.
                        self.sorted = false;
                        self.index = (self.entries.iter().enumerate())
                            .map(|(entry_idx, entry)| (entry.key.clone(), entry_idx))
                            .collect();
                        self.push_indexed(key, label_text, line_no)
                    }
                },
            },
            _ => match self.index.get(&key) {
                Some(&found) => found,
                None => self.push_indexed(key, label_text, line_no),
            },
        };
        self.cursor = entry_idx + 1;
        Ok(&mut self.entries[entry_idx].raw)
    }

    fn push(&mut self, key: SeriesKey<'a>, label_text: &'a [u8], first_line: usize) -> usize {
        self.entries.push(SeriesEntry {
            key,
            label_text,
            first_line,
            raw: RawContainer::default(),
        });
        self.entries.len() - 1
    }

    fn push_indexed(
        &mut self,
        key: SeriesKey<'a>,
        label_text: &'a [u8],
        first_line: usize,
    ) -> usize {
        self.index.insert(key.clone(), self.entries.len());
        self.push(key, label_text, first_line)
    }
}

fn series_key(labels: Labels<'_>) -> Result<SeriesKey<'_>, DecodeIssueKind> {
    Ok(SeriesKey {
        namespace: labels
            .namespace
            .ok_or(DecodeIssueKind::MissingLabel("namespace"))?,
        pod: labels.pod.ok_or(DecodeIssueKind::MissingLabel("pod"))?,
        container: labels
            .container
            .ok_or(DecodeIssueKind::MissingLabel("container"))?,
    })
}

fn utf8(bytes: &[u8]) -> Result<&str, DecodeIssueKind> {
    std::str::from_utf8(bytes).map_err(|_| DecodeIssueKind::Malformed("label value is not utf-8"))
}

fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), DecodeIssueKind> {
    if slot.is_some() {
        return Err(DecodeIssueKind::Duplicate);
    }
    *slot = Some(value);
    Ok(())
}

/// Parses `name="value",...}` (the part after `{`) and returns the labels, the text before
/// the closing `}` and what follows it.
fn parse_labels(inner: &[u8]) -> Result<(Labels<'_>, &[u8], &[u8]), DecodeIssueKind> {
    let mut labels = Labels::default();
    let mut rest = inner;
    loop {
        rest = trim_start(rest);
        match rest.first() {
            Some(b'}') => {
                let text_len = inner.len() - rest.len();
                return Ok((labels, &inner[..text_len], &rest[1..]));
            }
            None => return Err(DecodeIssueKind::Malformed("unterminated label set")),
            Some(_) => {}
        }
        let (name, quoted) = split_label_name(rest)?;
        let (value, after_value) = parse_label_value(quoted)?;
        let slot = match name {
            b"namespace" => Some(&mut labels.namespace),
            b"pod" => Some(&mut labels.pod),
            b"container" => Some(&mut labels.container),
            _ => None,
        };
        if let Some(slot) = slot {
            if slot.is_some() {
                return Err(DecodeIssueKind::Malformed("duplicate label name"));
            }
            *slot = Some(value);
        }
        rest = trim_start(after_value);
        match rest.first() {
            Some(b',') => rest = &rest[1..],
            Some(b'}') => {}
            _ => {
                return Err(DecodeIssueKind::Malformed(
                    "expected ',' or '}' after label",
                ));
            }
        }
    }
}

/// Splits `name="...` into the label name and what follows the opening quote.
fn split_label_name(rest: &[u8]) -> Result<(&[u8], &[u8]), DecodeIssueKind> {
    // The kubelet's own labels, written without spaces: no scan needed.
    let known: &[u8] = match rest.first() {
        Some(b'c') => b"container",
        Some(b'n') => b"namespace",
        Some(b'p') => b"pod",
        _ => b"",
    };
    if !known.is_empty()
        && let Some(quoted) = rest
            .strip_prefix(known)
            .and_then(|after| after.strip_prefix(b"=\""))
    {
        return Ok((known, quoted));
    }
    let name_len = rest
        .iter()
        .position(|&b| !is_label_name_byte(b))
        .unwrap_or(rest.len());
    let (name, after_name) = rest.split_at(name_len);
    if name.is_empty() || name[0].is_ascii_digit() {
        return Err(DecodeIssueKind::Malformed("invalid label name"));
    }
    let after_name = trim_start(after_name);
    let Some((b'=', after_eq)) = after_name.split_first() else {
        return Err(DecodeIssueKind::Malformed("expected '=' after label name"));
    };
    let after_eq = trim_start(after_eq);
    let Some((b'"', quoted)) = after_eq.split_first() else {
        return Err(DecodeIssueKind::Malformed(
            "expected '\"' before label value",
        ));
    };
    Ok((name, quoted))
}

/// Parses a label value up to its closing quote (the opening one is already consumed).
/// Borrows the bytes unless the value holds an escape.
fn parse_label_value(quoted: &[u8]) -> Result<(Cow<'_, [u8]>, &[u8]), DecodeIssueKind> {
    match memchr::memchr2(b'"', b'\\', quoted) {
        None => Err(DecodeIssueKind::Malformed("unterminated label value")),
        Some(end) if quoted[end] == b'"' => Ok((Cow::Borrowed(&quoted[..end]), &quoted[end + 1..])),
        Some(first_escape) => {
            let mut text = quoted[..first_escape].to_vec();
            let mut pos = first_escape;
            loop {
                match quoted.get(pos) {
                    None => return Err(DecodeIssueKind::Malformed("unterminated label value")),
                    Some(b'"') => break,
                    Some(b'\\') => {
                        match quoted.get(pos + 1) {
                            Some(b'\\') => text.push(b'\\'),
                            Some(b'"') => text.push(b'"'),
                            Some(b'n') => text.push(b'\n'),
                            _ => {
                                return Err(DecodeIssueKind::Malformed(
                                    "invalid escape in label value",
                                ));
                            }
                        }
                        pos += 2;
                    }
                    Some(&other) => {
                        text.push(other);
                        pos += 1;
                    }
                }
            }
            Ok((Cow::Owned(text), &quoted[pos + 1..]))
        }
    }
}

/// Parses a value in Go float syntax. Rust's `f64` grammar covers what Go prints (digits,
/// exponents, `NaN`, `+Inf`, `-Inf`); Go's hexadecimal floats are refused, and no Prometheus
/// client prints them.
fn parse_value(token: &[u8]) -> Result<f64, DecodeIssueKind> {
    let text = std::str::from_utf8(token).map_err(|_| DecodeIssueKind::BadValue)?;
    text.parse::<f64>().map_err(|_| DecodeIssueKind::BadValue)
}

/// Exact fast path for what the kubelet prints most (`812.44712`, `2.4707072e+08`): at most
/// 15 significant digits and a decimal exponent within ±22, so the digits and the power of ten
/// are exact doubles and one IEEE multiplication or division rounds correctly, giving the same
/// double as a full parse (Clinger's fast path). Parses a prefix of `bytes` that must end at a
/// space, a tab or the end, and returns the value and its length; anything else is `None`.
fn parse_plain_decimal(token: &[u8]) -> Option<(f64, usize)> {
    const POW10: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ];
    let mut pos = 0;
    let mut mantissa: u64 = 0;
    let mut n_digits = 0;
    let mut exponent: i32 = 0;
    while let Some(&digit @ b'0'..=b'9') = token.get(pos) {
        mantissa = mantissa * 10 + u64::from(digit - b'0');
        n_digits += 1;
        pos += 1;
        if n_digits > 15 {
            return None;
        }
    }
    if token.get(pos) == Some(&b'.') {
        pos += 1;
        while let Some(&digit @ b'0'..=b'9') = token.get(pos) {
            mantissa = mantissa * 10 + u64::from(digit - b'0');
            n_digits += 1;
            exponent -= 1;
            pos += 1;
            if n_digits > 15 {
                return None;
            }
        }
    }
    if n_digits == 0 {
        return None;
    }
    if let Some(b'e' | b'E') = token.get(pos) {
        pos += 1;
        let negative = match token.get(pos) {
            Some(b'-') => {
                pos += 1;
                true
            }
            Some(b'+') => {
                pos += 1;
                false
            }
            _ => false,
        };
        let digits_start = pos;
        let mut written: i32 = 0;
        while let Some(&digit @ b'0'..=b'9') = token.get(pos) {
            written = written * 10 + i32::from(digit - b'0');
            pos += 1;
            if pos - digits_start > 3 {
                return None;
            }
        }
        if pos == digits_start {
            return None;
        }
        exponent += if negative { -written } else { written };
    }
    if !matches!(token.get(pos), None | Some(b' ' | b'\t')) {
        return None;
    }
    let mantissa = mantissa as f64; // exact: below 10^15 < 2^53
    let value = match exponent {
        0..=22 => mantissa * POW10[exponent as usize],
        -22..=-1 => mantissa / POW10[(-exponent) as usize],
        _ => return None,
    };
    Some((value, pos))
}

/// Fast path for a plain millisecond timestamp (up to 18 digits, so no overflow while
/// reading) ending at a space, a tab or the end: the timestamp and its length, else `None`.
fn parse_plain_timestamp(bytes: &[u8]) -> Option<(Timestamp, usize)> {
    let mut millis: i64 = 0;
    let mut pos = 0;
    while let Some(&digit @ b'0'..=b'9') = bytes.get(pos) {
        if pos == 18 {
            return None;
        }
        millis = millis * 10 + i64::from(digit - b'0');
        pos += 1;
    }
    if pos == 0 || !matches!(bytes.get(pos), None | Some(b' ' | b'\t')) {
        return None;
    }
    Some((Timestamp(millis.checked_mul(1_000_000)?), pos))
}

/// Parses an integer millisecond timestamp into nanoseconds.
fn parse_timestamp(token: &[u8]) -> Result<Timestamp, DecodeIssueKind> {
    let (negative, digits) = match token {
        [b'-', digits @ ..] => (true, digits),
        [b'+', digits @ ..] => (false, digits),
        digits => (false, digits),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(DecodeIssueKind::BadTimestamp);
    }
    if negative {
        return Err(DecodeIssueKind::NegativeTimestamp);
    }
    // 18 digits cannot overflow an i64; longer ones are refused unless they are leading zeros.
    let significant = &digits[digits.iter().take_while(|&&b| b == b'0').count()..];
    if significant.len() > 18 {
        return Err(DecodeIssueKind::TimestampOutOfRange);
    }
    let millis = significant
        .iter()
        .fold(0i64, |millis, &digit| millis * 10 + i64::from(digit - b'0'));
    millis
        .checked_mul(1_000_000)
        .map(Timestamp)
        .ok_or(DecodeIssueKind::TimestampOutOfRange)
}

/// `trunc(value × scale)` as an unsigned integer, refusing NaN, infinities, negative values and
/// values of 2^64 or more.
fn to_u64(value: f64, scale: f64) -> Result<u64, DecodeIssueKind> {
    check_sign(value)?;
    let scaled = value * scale;
    // 2^64 is exactly representable; anything below it truncates into range.
    if scaled >= 18_446_744_073_709_551_616.0 {
        return Err(DecodeIssueKind::OutOfRange);
    }
    Ok(scaled as u64)
}

/// Seconds since the epoch into nanoseconds, `trunc(value × 1e9)`, refusing what does not fit
/// an `i64`.
fn to_i64_nanos(value: f64) -> Result<i64, DecodeIssueKind> {
    check_sign(value)?;
    let scaled = value * 1e9;
    if scaled >= 9_223_372_036_854_775_808.0 {
        return Err(DecodeIssueKind::OutOfRange);
    }
    Ok(scaled as i64)
}

fn check_sign(value: f64) -> Result<(), DecodeIssueKind> {
    if !value.is_finite() {
        return Err(DecodeIssueKind::NotFinite);
    }
    if value < 0.0 {
        return Err(DecodeIssueKind::Negative);
    }
    Ok(())
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

fn is_label_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(bytes.len());
    &bytes[start..]
}

/// Splits at the first space or tab.
fn split_token(bytes: &[u8]) -> (&[u8], &[u8]) {
    let end = bytes
        .iter()
        .position(|&b| b == b' ' || b == b'\t')
        .unwrap_or(bytes.len());
    bytes.split_at(end)
}

#[cfg(test)]
mod tests;
