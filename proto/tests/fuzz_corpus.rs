//! The fuzz corpus of `proto/fuzz` replayed on stable: every file under
//! `fuzz/corpus/<target>/` is fed to the same function the fuzz target calls (the fuzz
//! crate's `src/lib.rs`, included here), so `cargo test` keeps every input fuzzing ever saved
//! (crashes included, once fixed) passing. The seed files must equal what
//! `seeds()` generates; `UPDATE_SEEDS=1 cargo test -p kubepulse-proto --test fuzz_corpus`
//! rewrites them.

#[path = "../fuzz/src/lib.rs"]
mod fuzz_checks;

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    files.sort();
    files
}

#[test]
fn stream_corpus_replays_cleanly() {
    let files = corpus("stream");
    assert!(
        files.len() >= 6,
        "stream corpus has only {} files",
        files.len()
    );
    for path in files {
        let data = std::fs::read(&path).expect("corpus file");
        let outcome = std::panic::catch_unwind(|| fuzz_checks::stream(&data));
        assert!(
            outcome.is_ok(),
            "{} fails the stream checks",
            path.display()
        );
    }
}

#[test]
fn stream_seeds_are_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/stream");
    let update = std::env::var_os("UPDATE_SEEDS").is_some();
    for (name, bytes) in fuzz_checks::seeds() {
        let path = dir.join(name);
        if update {
            std::fs::write(&path, &bytes).expect("write seed");
        }
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(
            committed == bytes,
            "{} is stale: run UPDATE_SEEDS=1 cargo test -p kubepulse-proto --test fuzz_corpus",
            path.display()
        );
    }
}

// === regressions: one per crash fuzzing found (its input is also in the corpus) ===

/// `stream`: a usage whose base plus offset is exactly `i64::MIN` overflowed the range check
/// (`abs()`): a panic in debug builds and, in release builds, a wrap past the check into a
/// nonsense timestamp.
#[test]
fn timestamp_of_i64_min_is_refused() {
    use kubepulse_proto::v1;
    use kubepulse_proto::{Limits, StreamDecoder, WireError};
    let mut decoder = StreamDecoder::new(Limits::default());
    for (base, offset) in [(i64::MIN, 0), (i64::MIN + 1, -1), (0, i64::MIN)] {
        let snapshot = v1::Snapshot {
            base_timestamp_ms: base,
            node: Some(v1::Usage {
                window_ns: 1,
                timestamp_offset_ms: offset,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            decoder.snapshot(&snapshot),
            Err(WireError::Usage("timestamp out of range"))
        );
    }
}
