#!/usr/bin/env bash
# Profiles ringmq under a named ringmq-bench scenario with `perf record -e cpu-clock -g` (hardware
# counters are not available on these machines) and writes a report and an SVG flame graph
# (`perf script`, folded by `inferno-collapse-perf`, drawn by `inferno-flamegraph`; inferno is
# installed with `cargo install inferno --locked` when it is missing).
#
#   perf/profile-broker.sh SCENARIO [extra ringmq-bench args...]
#   perf/profile-broker.sh fanin --qos 0 --publishers 100
#   perf/profile-broker.sh p2p --qos 1 --pairs 100 --rate 30000
#   RINGMQ_PERF_CORES=1 perf/profile-broker.sh fanout --subscribers 1000 --window 20000
#
# Output in perf/out/<scenario>-<time>/: perf.data, report.txt (top symbols, self time),
# folded.txt (one line per distinct stack), flame.svg. Environment: RINGMQ_PERF_PORT (18830),
# RINGMQ_PERF_SECS (10), RINGMQ_PERF_CORES (2).
set -euo pipefail
cd "$(dirname "$0")/.."
scenario="${1:?usage: perf/profile-broker.sh fanin|fanout|p2p [ringmq-bench args...]}"
shift
command -v perf >/dev/null || { echo "perf is missing: apt-get install -y linux-perf" >&2; exit 2; }
if ! command -v inferno-flamegraph >/dev/null; then
  export PATH="$HOME/.cargo/bin:$PATH"
  command -v inferno-flamegraph >/dev/null || cargo install inferno --locked
fi
port="${RINGMQ_PERF_PORT:-18830}"
secs="${RINGMQ_PERF_SECS:-10}"
out="perf/out/${scenario}-$(date +%H%M%S)"
mkdir -p "$out"

cargo build --release -p ringmq -p ringmq-bench
target/release/ringmq --listen "127.0.0.1:$port" --cores "${RINGMQ_PERF_CORES:-2}" \
  --admin-listen 127.0.0.1:0 --data-dir "$out/ringmq-data" >"$out/broker.log" 2>&1 &
broker=$!
trap 'kill "$broker" 2>/dev/null || true' EXIT
sleep 0.5

perf record -e cpu-clock -g -p "$broker" -o "$out/perf.data" -- sleep "$((secs + 2))" &
recorder=$!
timeout "$((secs * 3 + 30))" target/release/ringmq-bench "$scenario" --port "$port" \
  --duration-secs "$secs" --broker-pid "$broker" --label ringmq "$@" | tee "$out/bench.txt"
wait "$recorder" || true

# (Not piped into head: with pipefail, perf report's SIGPIPE would end the script here.)
perf report -i "$out/perf.data" --no-children --stdio --percent-limit 0.5 >"$out/report-full.txt" 2>/dev/null
head -120 "$out/report-full.txt" >"$out/report.txt"
perf script -i "$out/perf.data" 2>/dev/null | inferno-collapse-perf >"$out/folded.txt"
inferno-flamegraph --title "ringmq: $scenario $*" <"$out/folded.txt" >"$out/flame.svg"
echo "profile in $out: report.txt, folded.txt, flame.svg"
