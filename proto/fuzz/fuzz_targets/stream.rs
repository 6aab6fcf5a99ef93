//! Fuzz target: the aggregator's side of an ingest stream on arbitrary bytes, read as
//! length-delimited `AgentMessage`s: `StreamDecoder::{snapshot, delta}` then
//! `kubepulse_model::apply`, beside `NodeDecoder` and the node's table as the aggregator's
//! ingest and store run them (both must agree). The checks live in
//! `src/lib.rs` (shared with the stable corpus replay, `proto/tests/fuzz_corpus.rs`). Run with
//! `cargo +nightly fuzz run stream` from `proto/`, or `scripts/fuzz.sh`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kubepulse_proto_fuzz::stream(data));
