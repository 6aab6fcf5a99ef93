//! Fuzz target: `Accept` negotiation (`encode::negotiate`, `wants_aggregated_discovery`) on arbitrary bytes. The checks live in `src/lib.rs`, shared with the
//! stable corpus replay (`aggregator/core/tests/fuzz_corpus.rs`). Run with
//! `cargo +nightly fuzz run accept` from `aggregator/core/`, or `scripts/fuzz.sh`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kubepulse_aggregator_core_fuzz::accept(data));
