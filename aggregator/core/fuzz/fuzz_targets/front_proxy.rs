//! Fuzz target: the front-proxy identity headers and request attributes (`authz::user_from_headers`, `is_identity_header`, `request_attributes`, `ExtensionAuth::from_configmap`) on arbitrary bytes. The checks live in `src/lib.rs`, shared with the
//! stable corpus replay (`aggregator/core/tests/fuzz_corpus.rs`). Run with
//! `cargo +nightly fuzz run front_proxy` from `aggregator/core/`, or `scripts/fuzz.sh`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kubepulse_aggregator_core_fuzz::front_proxy(data));
