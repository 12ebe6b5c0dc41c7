#!/usr/bin/env bash
# Instructions per decode/encode of the codec's hot packets, counted by callgrind: repeatable on
# a noisy machine, so a change to the hot path can be compared before/after exactly.
#
#   perf/callgrind-codec.sh            # every case, 100,000 calls each
#   perf/callgrind-codec.sh decode-v311-qos0-64
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install -y valgrind" >&2; exit 2; }
n="${RINGMQ_CALLGRIND_CALLS:-100000}"
cargo build --release -p ringmq-codec --example codec_loop >/dev/null 2>&1
cases=("$@")
if [ ${#cases[@]} -eq 0 ]; then
  cases=(decode-v311-qos0-64 encode-v311-qos0-64 decode-v311-qos1-64 encode-v311-qos1-64
    decode-v5-props-64 encode-v5-props-64)
fi
printf '%-32s %s\n' case instructions/call
for c in "${cases[@]}"; do
  total=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null \
    --toggle-collect='codec_loop::decode_one' --toggle-collect='codec_loop::encode_one' \
    target/release/examples/codec_loop "$c" "$n" 2>&1 | sed -n 's/.*Collected : \([0-9]*\).*/\1/p')
  printf '%-32s %s\n' "$c" "$((total / n))"
done
