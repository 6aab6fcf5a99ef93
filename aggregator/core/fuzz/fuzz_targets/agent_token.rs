//! Fuzz target: agent-token verification (`identity::jwt`: JWKS, discovery document, compact
//! JWS and claims) on arbitrary bytes. The checks live in `src/lib.rs`, shared with the
//! stable corpus replay (`aggregator/core/tests/fuzz_corpus.rs`). Run with
//! `cargo +nightly fuzz run agent_token` from `aggregator/core/`, or `scripts/fuzz.sh`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kubepulse_aggregator_core_fuzz::agent_token(data));
