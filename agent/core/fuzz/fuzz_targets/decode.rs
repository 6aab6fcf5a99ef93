//! Fuzz target: the kubelet decoder on arbitrary bytes. It must never panic, and what it
//! returns must keep the batch invariants. Run with `cargo +nightly fuzz run decode` from
//! `agent/core`; the crate's tests replay `corpus/decode/` on stable.
#![no_main]

use kubepulse_agent_core::decode;
use kubepulse_model::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let (batch, issues) = decode(body, Timestamp::from_millis(1_700_000_000_000));
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
});
