#!/usr/bin/env bash
# ringmq and Mosquitto side by side, end to end, with ringmq-bench.
#
#   bench/compare.sh            the fixed set, flat out (closed loop); about 4-5 minutes
#   bench/compare.sh --paced    the same scenarios at a fixed offered rate (same work for both)
#
# Each scenario runs against each broker REPS times (default 3), alternating which broker goes
# first, each run on a freshly started broker. Writes target/bench-compare/{results.jsonl,
# table-*.md, machine.txt} and prints the markdown table of medians. Every step is bounded by
# `timeout`. Environment: REPS, DURATION (seconds, default 10), RINGMQ_PORT, MOSQUITTO_PORT.
set -euo pipefail

cd "$(dirname "$0")/.."
SET=flat
case "${1:-}" in
    "") ;;
    --paced) SET=paced ;;
    *) echo "usage: bench/compare.sh [--paced]" >&2; exit 2 ;;
esac
REPS=${REPS:-3}
DURATION=${DURATION:-10}
RINGMQ_PORT=${RINGMQ_PORT:-18831}
MOSQUITTO_PORT=${MOSQUITTO_PORT:-18830}
OUT=target/bench-compare
mkdir -p "$OUT"
RESULTS="$OUT/results-$SET.jsonl"
: > "$RESULTS"

log() { echo "[compare $(date +%T)] $*" >&2; }

if ! command -v mosquitto > /dev/null; then
    log "installing mosquitto"
    timeout 300 apt-get update -qq
    timeout 300 apt-get install -y -qq mosquitto > /dev/null
fi
command -v python3 > /dev/null || { echo "python3 is needed for the table" >&2; exit 1; }

log "building ringmq and ringmq-bench (release)"
timeout 900 cargo build --release -q -p ringmq -p ringmq-bench
RINGMQ=target/release/ringmq
BENCH=target/release/ringmq-bench

MOSQ_CONF="$OUT/mosquitto.conf"
cat > "$MOSQ_CONF" << EOF
listener $MOSQUITTO_PORT 127.0.0.1
allow_anonymous true
max_queued_messages 100000
set_tcp_nodelay true
EOF

{
    echo "date: $(date -u +%FT%TZ)"
    echo "kernel: $(uname -sr), $(uname -m), $(nproc) cores"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "mosquitto: $(mosquitto -h 2> /dev/null | head -1)"
    echo "ringmq: $(git rev-parse --short HEAD 2> /dev/null)$(git diff --quiet HEAD -- engine codec 2> /dev/null || echo ' (engine/codec with uncommitted changes)')"
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "busiest other processes before:"
    top -bn1 -c -w 250 -o %CPU | sed -n '8,10p' \
        | awk '{printf "  %s%% CPU:", $9; for (i = 12; i <= NF; i++) printf " %s", $i; print ""}' \
        | cut -c1-140
} > "$OUT/machine.txt"

port_listening() { ss -Hltn "sport = :$1" 2> /dev/null | grep -q .; }

BROKER_PID=
start_broker() { # name port
    local name=$1 port=$2
    if port_listening "$port"; then
        echo "port $port is already in use" >&2
        exit 1
    fi
    if [ "$name" = ringmq ]; then
        rm -rf "$OUT/ringmq-data"
        RUST_LOG=error "$RINGMQ" --listen "127.0.0.1:$port" --cores 2 --data-dir "$OUT/ringmq-data" > "$OUT/$name.log" 2>&1 &
    else
        mosquitto -c "$MOSQ_CONF" > "$OUT/$name.log" 2>&1 &
    fi
    BROKER_PID=$!
    timeout 10 bash -c "until ss -Hltn 'sport = :$port' | grep -q .; do sleep 0.05; done" || {
        echo "$name did not start listening on $port; its log:" >&2
        cat "$OUT/$name.log" >&2
        exit 1
    }
}

stop_broker() {
    [ -n "$BROKER_PID" ] || return 0
    kill -TERM "$BROKER_PID" 2> /dev/null || true
    local i
    for i in $(seq 200); do
        kill -0 "$BROKER_PID" 2> /dev/null || break
        sleep 0.05
    done
    kill -KILL "$BROKER_PID" 2> /dev/null || true
    wait "$BROKER_PID" 2> /dev/null || true
    BROKER_PID=
}
trap stop_broker EXIT

# name|ringmq-bench arguments. sharedsub: a window of 400 (40 per publisher, counted over the
# whole group) keeps every member's queue below ringmq's default max_queued_messages (1,000),
# so that a loss is a loss and not the configured drop of an overfull queue.
if [ "$SET" = flat ]; then
    SCENARIOS=(
        "fanin QoS 0, 100 → 1|fanin --qos 0 --publishers 100"
        "fanout QoS 0, 1 → 100|fanout --qos 0 --subscribers 100"
        "p2p QoS 1, 100 pairs|p2p --qos 1 --pairs 100"
        "sharedsub QoS 1, 10 → 4 members|sharedsub --qos 1 --publishers 10 --subscribers 4 --window 400"
    )
else
    SCENARIOS=(
        "fanin QoS 0, 100 → 1, 100k msgs/s|fanin --qos 0 --publishers 100 --rate 100000"
        "fanout QoS 0, 1 → 100, 1k msgs/s|fanout --qos 0 --subscribers 100 --rate 1000"
        "p2p QoS 1, 100 pairs, 30k msgs/s|p2p --qos 1 --pairs 100 --rate 30000"
        "sharedsub QoS 1, 10 → 4 members, 20k msgs/s|sharedsub --qos 1 --publishers 10 --subscribers 4 --rate 20000"
    )
fi

run_one() { # scenario-name args broker rep
    local scen=$1 args=$2 broker=$3 rep=$4 port
    if [ "$broker" = ringmq ]; then port=$RINGMQ_PORT; else port=$MOSQUITTO_PORT; fi
    start_broker "$broker" "$port"
    local txt="$OUT/run-$SET-$(echo "$scen" | cut -d' ' -f1)-$broker-$rep.txt"
    # shellcheck disable=SC2086
    if ! timeout $((DURATION + 90)) "$BENCH" $args --payload-bytes 64 \
        --duration-secs "$DURATION" --port "$port" --broker-pid "$BROKER_PID" \
        --label "$broker" --drain-idle-ms 500 --drain-max-secs 5 > "$txt" 2>&1; then
        echo "ringmq-bench failed against $broker ($scen); output:" >&2
        cat "$txt" >&2
        stop_broker
        exit 1
    fi
    stop_broker
    grep '^{' "$txt" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
r["scenario_name"] = sys.argv[1]
r["rep"] = int(sys.argv[2])
print(json.dumps(r))' "$scen" "$rep" >> "$RESULTS"
    log "$(grep -E 'delivered|lost|broker .*CPU-s' "$txt" | sed 's/^ */  /')"
}

for entry in "${SCENARIOS[@]}"; do
    scen=${entry%%|*}
    args=${entry#*|}
    for rep in $(seq 1 "$REPS"); do
        if [ $((rep % 2)) -eq 1 ]; then order="ringmq mosquitto"; else order="mosquitto ringmq"; fi
        for broker in $order; do
            log "$scen: $broker, run $rep of $REPS"
            run_one "$scen" "$args" "$broker" "$rep"
        done
    done
done

{
    echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "busiest other processes after:"
    top -bn1 -c -w 250 -o %CPU | sed -n '8,10p' \
        | awk '{printf "  %s%% CPU:", $9; for (i = 12; i <= NF; i++) printf " %s", $i; print ""}' \
        | cut -c1-140
} >> "$OUT/machine.txt"

python3 - "$RESULTS" "$SET" > "$OUT/table-$SET.md" << 'EOF'
import json, statistics, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
order = []
for r in rows:
    if r["scenario_name"] not in order:
        order.append(r["scenario_name"])

def med(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None

def lat(runs, q):
    return statistics.median(r["latency_us"][q] for r in runs) / 1000

def fmt(x, digits=0):
    return "n/a" if x is None else f"{x:,.{digits}f}"

print("| scenario | broker | deliveries/s | broker CPU (cores) | **deliveries per broker CPU-second** (runs) | ringmq / Mosquitto | broker RSS (MiB) | latency p50 / p99 / p99.9 (ms) | lost | duplicated | reordered |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for scen in order:
    per = {}
    for broker in ("ringmq", "mosquitto"):
        runs = [r for r in rows if r["scenario_name"] == scen and r["broker"] == broker]
        if runs:
            per[broker] = runs
    ratio = None
    if len(per) == 2:
        a = med(per["ringmq"], "broker_deliveries_per_cpu_s")
        b = med(per["mosquitto"], "broker_deliveries_per_cpu_s")
        if a and b:
            ratio = a / b
    for broker, runs in per.items():
        each = " / ".join(fmt(r["broker_deliveries_per_cpu_s"]) for r in runs)
        cores = statistics.median(r["broker_cpu_s"] / r["measured_s"] for r in runs)
        rss = med(runs, "broker_rss_kib")
        print(
            f"| {scen} | {broker} | {fmt(med(runs, 'deliveries_per_s'))} | {cores:.2f} "
            f"| **{fmt(med(runs, 'broker_deliveries_per_cpu_s'))}** ({each}) "
            f"| {'**%.2f**' % ratio if broker == 'ringmq' and ratio else ''} "
            f"| {fmt(rss / 1024 if rss else None, 1)} "
            f"| {lat(runs, 'p50'):.2f} / {lat(runs, 'p99'):.2f} / {lat(runs, 'p999'):.2f} "
            f"| {sum(r['lost'] for r in runs)} | {sum(r['duplicated'] for r in runs)} "
            f"| {sum(r['reordered'] for r in runs)} |"
        )
n = max(r["rep"] for r in rows)
print()
print(f"Medians of {n} runs per broker (each on a fresh broker, alternating order); the "
      "individual runs of the headline are in parentheses; lost, duplicated and reordered are "
      f"totals over the {n} runs. Broker CPU is user + system time of the broker process over "
      "the measured window (start of publishing to end of drain), in cores.")
EOF

echo
cat "$OUT/machine.txt"
echo
cat "$OUT/table-$SET.md"
