//! The fuzz corpora of `aggregator/core/fuzz` replayed on stable: every file under
//! `fuzz/corpus/<target>/` is fed to the same function the fuzz target calls (the fuzz
//! crate's `src/lib.rs`, included here), so `cargo test` keeps every input fuzzing ever saved
//! (crashes included, once fixed) passing. The seed files must equal what `seeds()`
//! generates; `UPDATE_SEEDS=1 cargo test -p kubepulse-aggregator-core --test fuzz_corpus`
//! rewrites them.

#[path = "../fuzz/src/lib.rs"]
mod fuzz_checks;

use std::path::{Path, PathBuf};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn replay(target: &str, check: fn(&[u8])) {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 4,
        "{target} corpus has only {} files",
        files.len()
    );
    for path in files {
        let data = std::fs::read(&path).expect("corpus file");
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(
            outcome.is_ok(),
            "{} fails the {target} checks",
            path.display()
        );
    }
}

#[test]
fn label_selector_corpus_replays_cleanly() {
    replay("label_selector", fuzz_checks::label_selector);
}

#[test]
fn field_selector_corpus_replays_cleanly() {
    replay("field_selector", fuzz_checks::field_selector);
}

#[test]
fn accept_corpus_replays_cleanly() {
    replay("accept", fuzz_checks::accept);
}

#[test]
fn front_proxy_corpus_replays_cleanly() {
    replay("front_proxy", fuzz_checks::front_proxy);
}

#[test]
fn agent_token_corpus_replays_cleanly() {
    replay("agent_token", fuzz_checks::agent_token);
}

/// The `agent_token` seed is a token its key set verifies, so fuzzing starts from the path
/// that accepts, and an expired copy of it is refused.
#[test]
fn agent_token_seed_verifies() {
    use kubepulse_aggregator_core::identity::jwt::{KeySet, verify};
    let (jwks, token) = fuzz_checks::AGENT_TOKEN_SEED;
    let keys = KeySet::parse(jwks.as_bytes()).expect("seed JWKS");
    let issuer = fuzz_checks::AGENT_TOKEN_ISSUER;
    let reviewed = verify(token, &keys, issuer, fuzz_checks::AGENT_TOKEN_NOW).expect("seed token");
    assert_eq!(
        reviewed.username,
        "system:serviceaccount:kube-system:kubepulse-agent"
    );
    assert!(verify(token, &keys, issuer, 1_900_000_000).is_err());
}

#[test]
fn seeds_are_current() {
    let update = std::env::var_os("UPDATE_SEEDS").is_some();
    for (target, name, text) in fuzz_checks::seeds() {
        let path = corpus_dir(target).join(name);
        if update {
            std::fs::write(&path, &text).expect("write seed");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == text,
            "{} is stale: run UPDATE_SEEDS=1 cargo test -p kubepulse-aggregator-core --test fuzz_corpus",
            path.display()
        );
    }
}

// === regressions: one per crash fuzzing found (its input is also in the corpus) ===

/// `front_proxy`: a header name with a multi-byte character across the end of the
/// `X-Remote-Extra-` prefix panicked `is_identity_header` (it sliced the name by byte
/// length). Header names reaching it from the HTTP layer are ASCII, but the function takes
/// any `&str`.
#[test]
fn identity_header_with_a_multibyte_character_at_the_prefix_end() {
    use kubepulse_aggregator_core::authz::{RequestHeaderConfig, is_identity_header};
    let config = RequestHeaderConfig {
        extra_prefixes: vec!["X-Remote-Extra-".to_owned()],
        ..RequestHeaderConfig::default()
    };
    assert!(!is_identity_header("x-remote-extra\u{19a}", &config));
    assert!(is_identity_header("x-remote-extra-scopes", &config));
    fuzz_checks::front_proxy("GET /\nx-remote-extra\u{19a}: v\n".as_bytes());
}
