//! Decoder tests: real kubelet captures against file snapshots, and hand-made quirks against
//! inline expectations. Each quirk is one `check(body, expected)` call.

use std::path::Path;

use kubepulse_model::Timestamp;
use proptest::prelude::*;

use super::*;
use crate::render::render;
use crate::snapshot::{assert_snapshot, assert_text, dump_batch};

/// The scrape time every check passes; lines without a timestamp get it.
const SCRAPE_MS: i64 = 1_700_000_000_000;

#[track_caller]
fn check(body: &str, expected: &str) {
    let (batch, issues) = decode(body.as_bytes(), Timestamp::from_millis(SCRAPE_MS));
    assert_text(&dump_batch(&batch, &issues), expected);
}

fn fixture_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kubelet")
}

// === real kubelet captures ===

#[test]
fn real_kubelet_fixtures_match_their_snapshots() {
    let mut names: Vec<String> = std::fs::read_dir(fixture_dir())
        .expect("fixture directory")
        .map(|entry| {
            entry
                .expect("fixture entry")
                .file_name()
                .into_string()
                .unwrap()
        })
        .filter(|name| name.ends_with(".txt"))
        .collect();
    names.sort();
    assert!(names.len() >= 8, "fixtures missing: {names:?}");
    for name in names {
        let body = std::fs::read(fixture_dir().join(&name)).unwrap();
        let (batch, issues) = decode(&body, Timestamp::from_millis(SCRAPE_MS));
        let snapshot = format!(
            "tests/snapshots/decode/{}.snap",
            name.trim_end_matches(".txt")
        );
        assert_snapshot(&snapshot, &dump_batch(&batch, &issues));
    }
}

#[test]
fn real_captures_decode_without_issues_and_keep_every_series() {
    for (name, pods, containers, node) in [
        ("01-kind-alpha-2024-complete.txt", 9, 12, true),
        ("02-eks-stable-2025-no-start-ts-complete.txt", 9, 12, true),
        (
            "03-minikube-docker-whole-second-start-complete.txt",
            10,
            10,
            true,
        ),
        (
            "05-kind-1.21-metrics-server-bench-fixture-complete.txt",
            70,
            70,
            true,
        ),
        ("06-v1.28-pod-swap-only-node-a-complete.txt", 2, 2, true),
        ("07-v1.28-pod-swap-only-node-b-complete.txt", 3, 3, true),
        (
            "14-swap-test-1.28-node-swap-uint64-wrap-grep.txt",
            0,
            0,
            false,
        ),
        ("19-stable-ga-pr-sample-empty-family.txt", 1, 1, false),
    ] {
        let body = std::fs::read(fixture_dir().join(name)).unwrap();
        let (batch, issues) = decode(&body, Timestamp::from_millis(SCRAPE_MS));
        assert_eq!(issues, [], "{name}");
        assert_eq!(batch.pods.len(), pods, "{name}");
        let n_containers: usize = batch.pods.values().map(|c| c.len()).sum();
        assert_eq!(n_containers, containers, "{name}");
        assert_eq!(batch.node.cpu.is_some(), node, "{name}");
        assert!(!batch.resource_scrape_error, "{name}");
    }
}

/// What any decode result must satisfy, whatever the input.
fn check_invariants(body: &[u8], batch: &ScrapeBatch, issues: &[DecodeIssue]) {
    let n_lines = body.split(|&b| b == b'\n').count();
    assert!(issues.windows(2).all(|pair| pair[0].line <= pair[1].line));
    assert!(
        issues
            .iter()
            .all(|issue| issue.line >= 1 && issue.line <= n_lines)
    );
    for containers in batch.pods.values() {
        assert!(!containers.is_empty());
        for raw in containers.values() {
            assert!(raw.cpu.is_some() || raw.memory.is_some() || raw.start_time.is_some());
        }
    }
}

#[test]
fn fuzz_corpus_replays_cleanly() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode");
    let mut n_files = 0;
    for entry in std::fs::read_dir(&corpus).expect("fuzz corpus directory") {
        let path = entry.expect("corpus entry").path();
        let body = std::fs::read(&path).unwrap();
        let (batch, issues) = decode(&body, Timestamp::from_millis(SCRAPE_MS));
        check_invariants(&body, &batch, &issues);
        n_files += 1;
    }
    assert!(n_files >= 8, "fuzz corpus has only {n_files} files");
}

// === hand-made quirks ===

#[test]
fn reference_example_and_exponent_notation() {
    check(
        r#"
# HELP container_cpu_usage_seconds_total [STABLE] cumulative container CPU, core-seconds
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="web",namespace="prod",pod="shop-7d9f8c6b5-x2kqp"} 812.44712 1717243195318
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container="web",namespace="prod",pod="shop-7d9f8c6b5-x2kqp"} 2.4707072e+08 1717243195318
container_start_time_seconds{container="web",namespace="prod",pod="shop-7d9f8c6b5-x2kqp"} 1.7172380021193202e+09
node_cpu_usage_seconds_total 4.8211903177E+04 1717243193004
node_memory_working_set_bytes 3.21937408e+09 1717243193004
"#,
        "
        node: cpu 48211903177000ns @1717243193004ms mem 3219374080B @1717243193004ms
        prod/shop-7d9f8c6b5-x2kqp
          web: cpu 812447120000ns @1717243195318ms mem 247070720B @1717243195318ms start 1717238002119320064ns
        ",
    );
}

#[test]
fn go_float_syntax_variants() {
    // Integers, fractions without a leading digit, exponents in both cases and signs.
    check(
        r#"
container_cpu_usage_seconds_total{container="a",namespace="n",pod="p"} 3 1000
container_memory_working_set_bytes{container="a",namespace="n",pod="p"} 1e3 1000
container_cpu_usage_seconds_total{container="b",namespace="n",pod="p"} .5 1000
container_memory_working_set_bytes{container="b",namespace="n",pod="p"} +1.5E+2 1000
container_cpu_usage_seconds_total{container="c",namespace="n",pod="p"} 1.253376e-07 1000
container_memory_working_set_bytes{container="c",namespace="n",pod="p"} 0x10 1000
"#,
        "
        n/p
          a: cpu 3000000000ns @1000ms mem 1000B @1000ms
          b: cpu 500000000ns @1000ms mem 150B @1000ms
          c: cpu 125ns @1000ms
        line 7: value is not a number
        ",
    );
}

#[test]
fn help_and_type_variants_are_skipped() {
    check(
        r#"
# HELP container_cpu_usage_seconds_total [ALPHA] Cumulative cpu time consumed by the container in core-seconds
# HELP scrape_error [ALPHA] (Deprecated since 1.29.0) 1 if there was an error while getting container metrics, 0 otherwise
#TYPE node_cpu_usage_seconds_total counter
#   indented free comment with container_cpu_usage_seconds_total{container="x"} 1
   # comment after spaces
	# comment after a tab
# EOF
node_cpu_usage_seconds_total 1 2000
"#,
        "
        node: cpu 1000000000ns @2000ms
        ",
    );
}

#[test]
fn missing_timestamps_take_the_scrape_time() {
    check(
        r#"
container_cpu_usage_seconds_total{container="a",namespace="n",pod="p"} 1
container_memory_working_set_bytes{container="a",namespace="n",pod="p"} 100 1699999990000
node_cpu_usage_seconds_total 7
node_memory_working_set_bytes 8 
"#,
        "
        node: cpu 7000000000ns @1700000000000ms mem 8B @1700000000000ms
        n/p
          a: cpu 1000000000ns @1700000000000ms mem 100B @1699999990000ms
        ",
    );
}

#[test]
fn start_time_sample_timestamp_is_ignored() {
    // 1.22–1.28 stamp the start-time sample with the start time itself; 1.29+ print none.
    check(
        r#"
container_start_time_seconds{container="a",namespace="n",pod="p"} 1.70012594e+09 1700125940000
container_start_time_seconds{container="b",namespace="n",pod="p"} 1.710211558868e+09
"#,
        "
        n/p
          a: start 1700125940000000000ns
          b: start 1710211558868000000ns
        ",
    );
}

#[test]
fn zero_values_are_decoded_not_judged() {
    check(
        r#"
container_cpu_usage_seconds_total{container="idle",namespace="n",pod="p"} 0 1000
container_memory_working_set_bytes{container="idle",namespace="n",pod="p"} 0 1000
node_cpu_usage_seconds_total -0 1000
node_memory_working_set_bytes 0 1000
"#,
        "
        node: cpu 0ns @1000ms mem 0B @1000ms
        n/p
          idle: cpu 0ns @1000ms mem 0B @1000ms
        ",
    );
}

#[test]
fn negative_timestamps_drop_only_their_line() {
    check(
        r#"
container_cpu_usage_seconds_total{container="a",namespace="n",pod="p"} 1 -62135596800000
container_memory_working_set_bytes{container="a",namespace="n",pod="p"} 100 1000
container_start_time_seconds{container="a",namespace="n",pod="p"} -6.21355968e+10 -62135596800000
container_start_time_seconds{container="b",namespace="n",pod="p"} -1
node_cpu_usage_seconds_total 5 1000
"#,
        "
        node: cpu 5000000000ns @1000ms
        n/p
          a: mem 100B @1000ms
        line 2: timestamp is negative
        line 4: timestamp is negative
        line 5: value is negative
        ",
    );
}

#[test]
fn nan_inf_and_negative_values_are_refused() {
    check(
        r#"
container_cpu_usage_seconds_total{container="a",namespace="n",pod="p"} NaN 1000
container_cpu_usage_seconds_total{container="b",namespace="n",pod="p"} +Inf 1000
container_cpu_usage_seconds_total{container="c",namespace="n",pod="p"} -Inf 1000
container_memory_working_set_bytes{container="a",namespace="n",pod="p"} -1 1000
container_memory_working_set_bytes{container="b",namespace="n",pod="p"} 1e400 1000
container_start_time_seconds{container="c",namespace="n",pod="p"} nan
node_cpu_usage_seconds_total 2e10 1000
node_memory_working_set_bytes 1.8446744073709552e+19 1000
container_memory_working_set_bytes{container="c",namespace="n",pod="p"} 1.8446743709127774e+19 1000
resource_scrape_error NaN
"#,
        "
        n/p
          c: mem 18446743709127774208B @1000ms
        line 2: value is not finite
        line 3: value is not finite
        line 4: value is not finite
        line 5: value is negative
        line 6: value is not finite
        line 7: value is not finite
        line 8: value is out of range
        line 9: value is out of range
        line 11: value is not finite
        ",
    );
}

#[test]
fn escaped_label_values_are_unescaped_then_validated() {
    check(
        r#"
container_cpu_usage_seconds_total{container="a",namespace="n",pod="p",image="reg/x\"y\\z\nw"} 1 1000
container_cpu_usage_seconds_total{container="b",namespace="n",pod="p",note="pod=\"evil\",container=\"x\""} 2 1000
container_cpu_usage_seconds_total{container="q\"uote",namespace="n",pod="p"} 3 1000
container_cpu_usage_seconds_total{container="back\\slash",namespace="n",pod="p"} 4 1000
container_cpu_usage_seconds_total{container="c",namespace="n",pod="new\nline"} 5 1000
container_cpu_usage_seconds_total{container="c",namespace="n",pod="p",bad="\t"} 6 1000
container_cpu_usage_seconds_total{container="curly}brace,comma",namespace="n",pod="p"} 7 1000
"#,
        r#"
        n/p
          a: cpu 1000000000ns @1000ms
          b: cpu 2000000000ns @1000ms
          curly}brace,comma: cpu 7000000000ns @1000ms
        line 4: invalid label value: container name "q\"uote" contains an invalid character
        line 5: invalid label value: container name "back\\slash" contains an invalid character
        line 6: invalid label value: pod name "new\nline" contains an invalid character
        line 7: malformed line: invalid escape in label value
        "#,
    );
}

#[test]
fn an_invalid_name_is_reported_once_per_series() {
    check(
        r#"
container_cpu_usage_seconds_total{container="a b",namespace="n",pod="p"} 1 1000
container_memory_working_set_bytes{container="a b",namespace="n",pod="p"} 2 1000
container_cpu_usage_seconds_total{container="ok",namespace="bad/ns",pod="p"} 3 1000
container_memory_working_set_bytes{container="ok",namespace="bad/ns",pod="p"} 4 1000
container_cpu_usage_seconds_total{container="ok",namespace="n",pod="p"} 5 1000
"#,
        r#"
        n/p
          ok: cpu 5000000000ns @1000ms
        line 2: invalid label value: container name "a b" contains an invalid character
        line 4: invalid label value: namespace name "bad/ns" contains an invalid character
        "#,
    );
}

#[test]
fn labels_in_any_order_with_spacing_and_trailing_comma() {
    check(
        r#"
container_cpu_usage_seconds_total{pod="p",container="a",namespace="n"} 1 1000
container_memory_working_set_bytes{ namespace = "n" , pod="p", container="a", } 2 1000
container_start_time_seconds{id="/kubepods/x",container="a",namespace="n",pod="p",zone=""} 3
node_cpu_usage_seconds_total{} 4 1000
node_memory_working_set_bytes{instance="ignored"}	5	1000
"#,
        "
        node: cpu 4000000000ns @1000ms mem 5B @1000ms
        n/p
          a: cpu 1000000000ns @1000ms mem 2B @1000ms start 3000000000ns
        ",
    );
}

#[test]
fn missing_labels_and_empty_names() {
    check(
        r#"
container_cpu_usage_seconds_total{container="a",pod="p"} 1 1000
container_cpu_usage_seconds_total{container="a",namespace="n"} 1 1000
container_cpu_usage_seconds_total{namespace="n",pod="p"} 1 1000
container_cpu_usage_seconds_total 1 1000
container_cpu_usage_seconds_total{container="",namespace="n",pod="p"} 1 1000
container_cpu_usage_seconds_total{container="a",container="b",namespace="n",pod="p"} 1 1000
"#,
        r#"
        line 2: missing label "namespace"
        line 3: missing label "pod"
        line 4: missing label "container"
        line 5: missing label "namespace"
        line 6: invalid label value: container name is empty
        line 7: malformed line: duplicate label name
        "#,
    );
}

#[test]
fn garbage_lines_are_issues_and_the_rest_is_kept() {
    check(
        r#"
<html><body>502 Bad Gateway</body></html>
node_cpu_usage_seconds_total 1 1000
garbage!!!
9metric 1
container_cpu_usage_seconds_total{container="a" 1 1000
container_cpu_usage_seconds_total{container="a",namespace="n",pod="p" 1 1000
container_cpu_usage_seconds_total{container="a",namespace="n",pod="p} 1 1000
container_cpu_usage_seconds_total{container="a"namespace="n"} 1 1000
container_cpu_usage_seconds_total{container=a} 1 1000
container_cpu_usage_seconds_total{="a"} 1 1000
container_cpu_usage_seconds_total{container="a",namespace="n",pod="p"}
container_cpu_usage_seconds_total{container="a",namespace="n",pod="p"} abc 1000
container_cpu_usage_seconds_total{container="a",namespace="n",pod="p"} 1 1.5
container_cpu_usage_seconds_total{container="a",namespace="n",pod="p"} 1 1000 extra
container_cpu_usage_seconds_total{container="a",namespace="n",pod="p"} 1 99999999999999999999
container_cpu_usage_seconds_total{container="a",namespace="n",pod="p"} 1 9223372036855
node_memory_working_set_bytes 2 1000
this line is an unknown family and ignored
"#,
        r#"
        node: cpu 1000000000ns @1000ms mem 2B @1000ms
        line 2: malformed line: invalid metric name
        line 4: malformed line: invalid metric name
        line 5: malformed line: invalid metric name
        line 6: malformed line: expected ',' or '}' after label
        line 7: malformed line: expected ',' or '}' after label
        line 8: malformed line: unterminated label value
        line 9: malformed line: expected ',' or '}' after label
        line 10: malformed line: expected '"' before label value
        line 11: malformed line: invalid label name
        line 12: malformed line: missing value
        line 13: value is not a number
        line 14: timestamp is not an integer
        line 15: malformed line: unexpected text after the timestamp
        line 16: timestamp is out of range
        line 17: timestamp is out of range
        "#,
    );
}

#[test]
fn truncated_body_drops_the_cut_line_only() {
    check(
        "node_cpu_usage_seconds_total 1 1000\nnode_memory_working_set_bytes 2.5e+0",
        "
        node: cpu 1000000000ns @1000ms
        line 2: body ends without a line feed: truncated sample
        ",
    );
    // A body cut inside a comment or after the last line feed loses nothing.
    check(
        "node_cpu_usage_seconds_total 1 1000\n# HELP node_memory_wor",
        "
        node: cpu 1000000000ns @1000ms
        ",
    );
    check("", "");
    check("\n\n  \n\t\n", "");
}

#[test]
fn crlf_line_ends_are_accepted() {
    check(
        "# HELP node_cpu_usage_seconds_total [STABLE] x\r\n\
         node_cpu_usage_seconds_total 1 1000\r\n\
         \r\n\
         container_cpu_usage_seconds_total{container=\"a\",namespace=\"n\",pod=\"p\"} 2\r\n\
         node_memory_working_set_bytes 3 1000\r\n",
        "
        node: cpu 1000000000ns @1000ms mem 3B @1000ms
        n/p
          a: cpu 2000000000ns @1700000000000ms
        ",
    );
}

#[test]
fn names_match_exactly() {
    // Lookalikes (longer, shorter, prefixed) and the 1.18.0 gauge names are other families.
    check(
        r#"
container_cpu_usage_seconds_total_x{container="a",namespace="n",pod="p"} 1 1000
container_cpu_usage_seconds_totalx{container="a",namespace="n",pod="p"} 1 1000
container_cpu_usage_seconds{container="a",namespace="n",pod="p"} 1 1000
xcontainer_cpu_usage_seconds_total{container="a",namespace="n",pod="p"} 1 1000
node_cpu_usage_seconds 1 1000
node_cpu_usage_seconds_total:rate 1 1000
node_cpu_usage_seconds_total-x 1 1000
pod_cpu_usage_seconds_total{namespace="n",pod="p"} NaN 1000
node_swap_usage_bytes 1.8446743709127774e+19 1000
container_swap_usage_bytes{container="a",namespace="n",pod="p"} 3.4400333824e+10 1000
node_memory_commit_bytes 5 1000
"#,
        "
        line 8: malformed line: invalid metric name
        ",
    );
}

#[test]
fn duplicate_samples_keep_the_first() {
    check(
        r#"
container_cpu_usage_seconds_total{container="a",namespace="n",pod="p"} 1 1000
container_cpu_usage_seconds_total{pod="p",namespace="n",container="a"} 2 2000
node_cpu_usage_seconds_total 3 1000
node_cpu_usage_seconds_total 4 2000
container_start_time_seconds{container="a",namespace="n",pod="p"} 5
container_start_time_seconds{container="a",namespace="n",pod="p"} 6
"#,
        "
        node: cpu 3000000000ns @1000ms
        n/p
          a: cpu 1000000000ns @1000ms start 5000000000ns
        line 3: duplicate sample for the same series
        line 5: duplicate sample for the same series
        line 7: duplicate sample for the same series
        ",
    );
}

#[test]
fn scrape_error_flags() {
    check("resource_scrape_error 0\nscrape_error 0\n", "");
    check("resource_scrape_error 1\n", "resource_scrape_error");
    check("scrape_error 1\n", "resource_scrape_error");
    check(
        "scrape_error 1 1000\nresource_scrape_error 0\n",
        "resource_scrape_error",
    );
}

#[test]
fn overlong_lines_are_skipped() {
    let long = format!(
        "container_cpu_usage_seconds_total{{container=\"a\",namespace=\"n\",pod=\"p\",x=\"{}\"}} 1 1000\n",
        "y".repeat(MAX_LINE_LEN)
    );
    let comment = format!("# {}\n", "z".repeat(MAX_LINE_LEN + 10));
    check(
        &format!("{long}{comment}node_cpu_usage_seconds_total 1 1000\n"),
        "
        node: cpu 1000000000ns @1000ms
        line 1: line is 65618 bytes long, more than 65536
        line 2: line is 65548 bytes long, more than 65536
        ",
    );
}

#[test]
fn label_text_shortcut_agrees_with_parsing() {
    // Lines 5-8 start with the label text of the series the cursor expects but are not the
    // same label set; line 9 repeats line 2 exactly in a later family position.
    check(
        r#"
container_cpu_usage_seconds_total{container="a",namespace="n",pod="p"} 1 1000
container_cpu_usage_seconds_total{container="a",namespace="n",pod="pp"} 2 1000
container_memory_working_set_bytes{container="a",namespace="n",pod="p"} 3 1000
container_memory_working_set_bytes{container="a",namespace="n",pod="pp",extra="x"} 4 1000
container_start_time_seconds{container="a",namespace="n",pod="p",pod="q"} 5
container_start_time_seconds{container="a",namespace="n",pod="p"}} 5
container_start_time_seconds{container="a",namespace="n",pod="p" } 6
container_start_time_seconds{container="a",namespace="n",pod="pp"} 7
container_cpu_usage_seconds_total{container="a",namespace="n",pod="pp"} 8 1000
"#,
        r#"
        n/p
          a: cpu 1000000000ns @1000ms mem 3B @1000ms start 6000000000ns
        n/pp
          a: cpu 2000000000ns @1000ms mem 4B @1000ms start 7000000000ns
        line 6: malformed line: duplicate label name
        line 7: value is not a number
        line 10: duplicate sample for the same series
        "#,
    );
}

#[test]
fn containers_with_partial_families() {
    // Any subset of {cpu, memory, start} can appear; an exited container may have start only.
    check(
        r#"
container_cpu_usage_seconds_total{container="cpu-only",namespace="n",pod="p"} 1 1000
container_memory_working_set_bytes{container="mem-only",namespace="n",pod="p"} 2 1000
container_start_time_seconds{container="exited",namespace="n",pod="p"} 3
"#,
        "
        n/p
          cpu-only: cpu 1000000000ns @1000ms
          exited: start 3000000000ns
          mem-only: mem 2B @1000ms
        ",
    );
}

#[test]
fn series_order_does_not_matter() {
    // Families and series shuffled relative to the kubelet's order give the same batch.
    let sorted = r#"
container_cpu_usage_seconds_total{container="a",namespace="n",pod="p"} 1 1000
container_cpu_usage_seconds_total{container="b",namespace="n",pod="q"} 2 1000
container_memory_working_set_bytes{container="a",namespace="n",pod="p"} 3 1000
container_memory_working_set_bytes{container="b",namespace="n",pod="q"} 4 1000
"#;
    let shuffled = r#"
container_memory_working_set_bytes{container="b",namespace="n",pod="q"} 4 1000
container_cpu_usage_seconds_total{container="a",namespace="n",pod="p"} 1 1000
container_memory_working_set_bytes{container="a",namespace="n",pod="p"} 3 1000
container_cpu_usage_seconds_total{container="b",namespace="n",pod="q"} 2 1000
"#;
    let scrape = Timestamp::from_millis(SCRAPE_MS);
    assert_eq!(
        decode(sorted.as_bytes(), scrape),
        decode(shuffled.as_bytes(), scrape)
    );
}

// === properties ===

fn arb_name() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9.-]{0,20}"
}

fn arb_batch() -> impl Strategy<Value = ScrapeBatch> {
    let millis = 1_600_000_000_000i64..1_800_000_000_000;
    let cpu = (0u64..(1 << 52), millis.clone()).prop_map(|(ns, ms)| CpuPoint {
        cumulative_ns: ns,
        timestamp: Timestamp::from_millis(ms),
    });
    let memory = (0u64..(1 << 53), millis).prop_map(|(bytes, ms)| MemoryPoint {
        bytes,
        timestamp: Timestamp::from_millis(ms),
    });
    // Start times as the decoder makes them: trunc(seconds × 1e9) of a float.
    let start = (1.0e9f64..2.0e9).prop_map(|seconds| Timestamp((seconds * 1e9) as i64));
    let container = (
        proptest::option::of(cpu.clone()),
        proptest::option::of(memory.clone()),
        proptest::option::of(start),
    )
        .prop_filter("a reported container has a sample", |(c, m, s)| {
            c.is_some() || m.is_some() || s.is_some()
        })
        .prop_map(|(cpu, memory, start_time)| RawContainer {
            cpu,
            memory,
            start_time,
        });
    let pod = proptest::collection::btree_map(arb_name(), container, 1..4);
    let pods = proptest::collection::btree_map((arb_name(), arb_name()), pod, 0..6);
    (
        proptest::option::of(cpu),
        proptest::option::of(memory),
        pods,
        any::<bool>(),
    )
        .prop_map(|(node_cpu, node_memory, pods, scrape_error)| ScrapeBatch {
            node: RawNode {
                cpu: node_cpu,
                memory: node_memory,
            },
            pods: pods
                .into_iter()
                .map(|((namespace, pod), containers)| {
                    (
                        PodKey::new(&namespace, &pod).unwrap(),
                        containers
                            .into_iter()
                            .map(|(name, raw)| (ContainerName::new(&name).unwrap(), raw))
                            .collect(),
                    )
                })
                .collect(),
            resource_scrape_error: scrape_error,
        })
}

proptest! {
    #[test]
    fn decode_never_panics(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let (batch, issues) = decode(&body, Timestamp::from_millis(SCRAPE_MS));
        check_invariants(&body, &batch, &issues);
    }

    #[test]
    fn decode_never_panics_on_near_valid_text(
        lines in proptest::collection::vec(
            "(container_cpu_usage_seconds_total|node_memory_working_set_bytes|container_start_time_seconds)?\
             (\\{((container|pod|namespace|x)=\"[a-z\\\\\"n]{0,4}\",?){0,4}\\}?)? ?\
             (-?[0-9.eE+]{0,8}|NaN|\\+Inf)? ?(-?[0-9]{0,16})?\r?",
            0..20,
        )
    ) {
        let body = lines.join("\n");
        let (batch, issues) = decode(body.as_bytes(), Timestamp::from_millis(SCRAPE_MS));
        check_invariants(body.as_bytes(), &batch, &issues);
    }

    #[test]
    fn plain_decimal_fast_path_is_exact(
        text in "[0-9]{0,17}(\\.[0-9]{0,17})?([eE][+-]?[0-9]{1,4})?",
        bits in any::<u64>(),
    ) {
        if let Some((value, len)) = parse_plain_decimal(text.as_bytes()) {
            prop_assert_eq!(len, text.len());
            prop_assert_eq!(value.to_bits(), text.parse::<f64>().unwrap().to_bits());
        }
        // Any double as the kubelet would print it.
        let double = f64::from_bits(bits);
        let mut printed = String::new();
        crate::render::go_float(&mut printed, double.abs());
        if let Some((value, _)) = parse_plain_decimal(printed.as_bytes()) {
            prop_assert_eq!(value.to_bits(), printed.parse::<f64>().unwrap().to_bits());
        }
    }

    #[test]
    fn decode_of_a_rendered_batch_round_trips(batch in arb_batch()) {
        let text = render(&batch);
        let (decoded, issues) = decode(text.as_bytes(), Timestamp::from_millis(SCRAPE_MS));
        prop_assert_eq!(issues, []);
        prop_assert_eq!(decoded, batch);
    }
}
