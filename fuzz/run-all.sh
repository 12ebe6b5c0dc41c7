#!/usr/bin/env bash
# Runs every fuzz target of fuzz/Cargo.toml (`cargo fuzz list`: decode, roundtrip, topic_match,
# log_recovery) for SECONDS seconds each, on the stable toolchain
# (`-s none`: libFuzzer without a sanitizer), from the committed seed corpus. Works from a fresh
# clone: it builds the targets first. Exits non-zero if a target does not build or finds a
# crash; the input that crashed is left in fuzz/artifacts/<target>/.
#
#   bash fuzz/run-all.sh 30
set -euo pipefail

seconds="${1:?usage: fuzz/run-all.sh SECONDS}"
case "$seconds" in
  '' | *[!0-9]*) echo "SECONDS must be a whole number, not '$seconds'" >&2; exit 2 ;;
esac
cd "$(dirname "$0")"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked --version 0.13.2" >&2
  exit 2
fi

# A cached rustc probe from another toolchain can make the first stable build fail: drop it
# and try once more.
if ! cargo fuzz build -s none; then
  echo "build failed; retrying without target/.rustc_info.json" >&2
  rm -f target/.rustc_info.json
  cargo fuzz build -s none
fi

# New inputs go to a scratch corpus (the first directory), the seeds are only read.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

targets="$(cargo fuzz list)"
failed=()
for target in $targets; do
  echo "=== fuzz $target for ${seconds}s"
  mkdir -p "$work/$target"
  if cargo fuzz run -s none "$target" "$work/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
    >"$work/$target.log" 2>&1; then
    grep -E '^Done|stat::number_of_executed_units' "$work/$target.log" || true
  else
    grep -E -A6 'panicked|ERROR: libFuzzer' "$work/$target.log" || true
    tail -n 12 "$work/$target.log"
    failed+=("$target")
  fi
done

if ((${#failed[@]} > 0)); then
  echo "FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "all fuzz targets ran ${seconds}s without a crash: $(echo $targets)"
