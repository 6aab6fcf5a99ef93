//! The binary's contract with its caller: a bad configuration lists every problem and exits
//! with 64 (EX_USAGE) before anything starts; `--help` groups the flags by purpose.

use std::process::Command;

fn relay() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kubepulse-relay"))
}

#[test]
fn a_bad_configuration_exits_64_naming_every_problem() {
    let out = relay()
        .args([
            "--grpc-plaintext",
            "--aggregator-endpoints=nowhere",
            "--batch-interval=0s",
            "--health-address=127.0.0.1:0",
        ])
        .env_clear()
        .output()
        .expect("run kubepulse-relay");
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for problem in ["\"nowhere\" is not host:port", "--batch-interval"] {
        assert!(
            stderr.contains("kubepulse-relay: invalid configuration: ") && stderr.contains(problem),
            "{stderr}"
        );
    }
}

#[test]
fn help_groups_the_flags() {
    let out = relay().arg("--help").env_clear().output().expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for heading in ["Agents:", "Aggregators:", "Batching:", "Operations:"] {
        assert!(help.contains(heading), "{help}");
    }
}
