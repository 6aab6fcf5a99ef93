//! Test-only text snapshots: stable, line-oriented dumps of batches, issues and views, compared
//! against inline strings or files under `tests/snapshots/`. Set `UPDATE_SNAPSHOTS=1` to
//! rewrite the files from the current output.

use std::fmt::Write as _;
use std::path::Path;

use kubepulse_model::{NodeView, Sample, Timestamp};

use crate::decode::{CpuPoint, DecodeIssue, MemoryPoint, ScrapeBatch};

/// One line per node, pod and container, then `resource_scrape_error` when set, then the
/// issues.
pub(crate) fn dump_batch(batch: &ScrapeBatch, issues: &[DecodeIssue]) -> String {
    let mut out = String::new();
    if batch.node.cpu.is_some() || batch.node.memory.is_some() {
        out.push_str("node:");
        cpu(&mut out, batch.node.cpu);
        memory(&mut out, batch.node.memory);
        out.push('\n');
    }
    for (pod, containers) in &batch.pods {
        let _ = writeln!(out, "{pod}");
        for (container, raw) in containers {
            let _ = write!(out, "  {container}:");
            cpu(&mut out, raw.cpu);
            memory(&mut out, raw.memory);
            if let Some(start) = raw.start_time {
                let _ = write!(out, " start {}ns", start.as_nanos());
            }
            out.push('\n');
        }
    }
    if batch.resource_scrape_error {
        out.push_str("resource_scrape_error\n");
    }
    for issue in issues {
        let _ = writeln!(out, "{issue}");
    }
    out
}

/// The served view: node, then pods and containers, each as `cpu/memory @timestamp window`.
pub(crate) fn dump_view(view: &NodeView) -> String {
    let mut out = String::new();
    if let Some(node) = &view.node {
        let _ = writeln!(out, "node: {}", sample(node));
    }
    for (pod, pod_view) in &view.pods {
        let _ = writeln!(out, "{pod}");
        for (container, s) in &pod_view.containers {
            let _ = writeln!(out, "  {container}: {}", sample(s));
        }
    }
    out
}

fn sample(s: &Sample) -> String {
    format!(
        "{}n {}B @{} window {}",
        s.usage.cpu_nanocores,
        s.usage.memory_bytes,
        time(s.timestamp),
        window_text(s.window.as_nanos())
    )
}

fn window_text(nanos: u64) -> String {
    if nanos.is_multiple_of(1_000_000) {
        let millis = nanos / 1_000_000;
        format!("{}.{:03}s", millis / 1000, millis % 1000)
    } else {
        format!("{nanos}ns")
    }
}

fn cpu(out: &mut String, point: Option<CpuPoint>) {
    if let Some(point) = point {
        let _ = write!(
            out,
            " cpu {}ns @{}",
            point.cumulative_ns,
            time(point.timestamp)
        );
    }
}

fn memory(out: &mut String, point: Option<MemoryPoint>) {
    if let Some(point) = point {
        let _ = write!(out, " mem {}B @{}", point.bytes, time(point.timestamp));
    }
}

/// Milliseconds when the time is whole milliseconds (kubelet sample times), else nanoseconds.
fn time(t: Timestamp) -> String {
    if t.as_nanos() % 1_000_000 == 0 {
        format!("{}ms", t.as_millis())
    } else {
        format!("{}ns", t.as_nanos())
    }
}

/// Compares `actual` with `expected` written as an indented raw string: common indentation
/// and the surrounding blank lines are ignored.
#[track_caller]
pub(crate) fn assert_text(actual: &str, expected: &str) {
    let expected = dedent(expected);
    if actual.trim_end() != expected.trim_end() {
        panic!(
            "text differs\n--- expected\n{}\n--- actual\n{}\n--- first difference\n{}",
            expected.trim_end(),
            actual.trim_end(),
            first_difference(&expected, actual)
        );
    }
}

/// Compares `actual` with the file at `path` (relative to the crate), or writes it when
/// `UPDATE_SNAPSHOTS` is set.
#[track_caller]
pub(crate) fn assert_snapshot(path: &str, actual: &str) {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(full.parent().expect("snapshot path has a parent"))
            .expect("create snapshot directory");
        std::fs::write(&full, actual).expect("write snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&full).unwrap_or_else(|err| {
        panic!("read snapshot {path}: {err}; run with UPDATE_SNAPSHOTS=1 to create it\n{actual}")
    });
    if expected != actual {
        panic!(
            "snapshot {path} differs (UPDATE_SNAPSHOTS=1 rewrites it)\n{}",
            first_difference(&expected, actual)
        );
    }
}

fn dedent(text: &str) -> String {
    let text = text.trim_start_matches('\n');
    let indent = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.len() - line.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(line.get(indent..).unwrap_or("").trim_end());
        out.push('\n');
    }
    out
}

fn first_difference(expected: &str, actual: &str) -> String {
    let mut expected_lines = expected.lines();
    let mut actual_lines = actual.lines();
    for line_no in 1.. {
        match (expected_lines.next(), actual_lines.next()) {
            (None, None) => return "(only trailing whitespace differs)".to_owned(),
            (e, a) if e == a => {}
            (e, a) => {
                return format!(
                    "line {line_no}:\n  expected: {}\n  actual:   {}",
                    e.unwrap_or("<end>"),
                    a.unwrap_or("<end>")
                );
            }
        }
    }
    unreachable!()
}
