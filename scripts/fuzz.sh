#!/usr/bin/env bash
# Runs every cargo-fuzz target in the repository for SECONDS each (default 60) and prints
# executions and crashes per target. Needs a nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz --locked`).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      e.g. scripts/fuzz.sh 300 stream accept
#
# Fuzz crates (each outside the workspace, with its own [workspace]): agent/core/fuzz,
# proto/fuzz, aggregator/core/fuzz. The committed seeds under fuzz/corpus/<target>/ are only
# read; what the fuzzer learns goes to a scratch directory, or to FUZZ_KEEP/<target> to carry
# it over to the next run (it grows to thousands of files: keep it out of the repository).
# A crash leaves its input in <crate>/fuzz/artifacts/<target>/ and makes the script exit 1:
# fix it, then copy the input into fuzz/corpus/<target>/regression-<what> (the stable replay
# in `cargo test` runs it from then on) and add a named regression test.
#
# FUZZ_SANITIZER (default none: the fuzzed crates forbid unsafe code, so AddressSanitizer
# adds build time and little else; pass address to use it), FUZZ_TOOLCHAIN (default
# nightly), FUZZ_RSS_MB (default 1024), FUZZ_MAX_LEN (default 65536 bytes).
set -euo pipefail

seconds=${1:-60}
shift || true
wanted=("$@")
root=$(cd "$(dirname "$0")/.." && pwd)
toolchain=${FUZZ_TOOLCHAIN:-nightly}
sanitizer=${FUZZ_SANITIZER:-none}
crates=(agent/core proto aggregator/core)

if ! cargo "+$toolchain" fuzz --version >/dev/null 2>&1; then
  echo "fuzz: needs cargo-fuzz on the $toolchain toolchain: rustup toolchain install $toolchain && cargo install cargo-fuzz --locked" >&2
  exit 2
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
summary=()
failed=0
for crate in "${crates[@]}"; do
  cd "$root/$crate"
  for target in $(cargo "+$toolchain" fuzz list); do
    if [[ ${#wanted[@]} -gt 0 && ! " ${wanted[*]} " =~ " $target " ]]; then
      continue
    fi
    corpus="fuzz/corpus/$target"
    fresh="${FUZZ_KEEP:-$scratch}/$target"
    log="$scratch/$target.log"
    mkdir -p "$fresh" "$corpus"
    touch "$scratch/$target.start"
    echo "fuzz: $crate $target for ${seconds}s (log: $log)" >&2
    status=ok
    if ! cargo "+$toolchain" fuzz run --sanitizer "$sanitizer" "$target" "$fresh" "$corpus" -- \
      -max_total_time="$seconds" -rss_limit_mb="${FUZZ_RSS_MB:-1024}" \
      -max_len="${FUZZ_MAX_LEN:-65536}" -print_final_stats=1 >"$log" 2>&1; then
      status=CRASH
      failed=1
      tail -n 40 "$log" >&2
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n 1 || true)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*' || true)
    crashes=$(find "fuzz/artifacts/$target" -type f -newer "$scratch/$target.start" 2>/dev/null | wc -l || true)
    summary+=("$(printf '%-16s %-16s %12s %8s %8s %s' "$crate" "$target" "${runs:-?}" "${cov:-?}" "$crashes" "$status")")
  done
done

printf '%-16s %-16s %12s %8s %8s %s\n' crate target executions coverage crashes status
printf '%s\n' "${summary[@]}"
exit "$failed"
