#!/usr/bin/env bash
# Connections, measured: ringmq and Mosquitto side by side with many idle connections and a
# reconnect storm.
#
#   bench/connections.sh        about 5 minutes
#
# For each broker, REPS times (default 3), alternating which broker goes first, each run on a
# freshly started broker:
#   - conn N (19,000) idle connections, flat out with 100 handshakes in flight, held HOLD (5) s:
#     broker RSS per connection ((RSS after holding - RSS before) / N), CONNACKs/s, CONNACK
#     latency percentiles;
#   - conn SLOPE_N (5,000) connections the same way, so that the memory per connection can be
#     read as a slope (fixed costs out);
#   - storm: STORM_N (10,000) persistent sessions connect, then all send DISCONNECT and
#     reconnect at once: reconnects/s, CONNACK latency, session present on every reconnect.
# The generator runs as 2 worker processes (--workers 2), each under this machine's descriptor
# limit, with source addresses spread over 127.0.0.2-127.0.0.50.
# PROFILE=1 (default when perf exists): perf record -e cpu-clock -g on ringmq during the first
# 19,000-connection run (the connect phase; the hold is idle).
#
# Writes target/bench-connections/{results.jsonl, table.md, machine.txt, run outputs, broker
# logs}. Every step is bounded by `timeout`. Environment: REPS, N, SLOPE_N, STORM_N, HOLD,
# RINGMQ_PORT (18871), MOSQUITTO_PORT (18870), PROFILE.
set -euo pipefail

cd "$(dirname "$0")/.."
REPS=${REPS:-3}
N=${N:-19000}
SLOPE_N=${SLOPE_N:-5000}
STORM_N=${STORM_N:-10000}
HOLD=${HOLD:-5}
RINGMQ_PORT=${RINGMQ_PORT:-18871}
MOSQUITTO_PORT=${MOSQUITTO_PORT:-18870}
SOURCES=127.0.0.2-127.0.0.50
TMP=${TMPDIR:-/tmp}
OUT=target/bench-connections
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"

log() { echo "[connections $(date +%T)] $*" >&2; }

command -v python3 > /dev/null || { echo "python3 is needed for the table" >&2; exit 1; }
if ! command -v mosquitto > /dev/null; then
    echo "mosquitto is missing: apt-get install -y mosquitto" >&2
    exit 1
fi
if [ -z "${PROFILE:-}" ]; then
    if command -v perf > /dev/null; then PROFILE=1; else PROFILE=0; fi
fi

# Both brokers and the generator inherit the highest descriptor limit allowed.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((N + 100)) ]; then
    echo "the open-files limit ($(ulimit -n)) is below N + 100 = $((N + 100)): the broker cannot hold N connections" >&2
    exit 1
fi

log "building ringmq and ringmq-bench (release)"
timeout 900 cargo build --release -q -p ringmq -p ringmq-bench
RINGMQ=target/release/ringmq
BENCH=target/release/ringmq-bench

cat > "$OUT/mosquitto.conf" << EOF
listener $MOSQUITTO_PORT 127.0.0.1
allow_anonymous true
max_connections -1
set_tcp_nodelay true
EOF

{
    echo "date: $(date -u +%FT%TZ)"
    echo "kernel: $(uname -sr), $(uname -m), $(nproc) cores"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "open files: $(ulimit -n) per process; local ports $(tr '\t' - < /proc/sys/net/ipv4/ip_local_port_range)"
    echo "mosquitto: $({ mosquitto -h 2> /dev/null || true; } | head -1)"
    echo "ringmq: $(git rev-parse --short HEAD 2> /dev/null)$(git diff --quiet HEAD -- engine codec storage 2> /dev/null || echo ' (engine/codec/storage with uncommitted changes)')"
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$OUT/machine.txt"

port_listening() { ss -Hltn "sport = :$1" 2> /dev/null | grep -q .; }

BROKER_PID=
DATA=
start_broker() { # name logfile
    local name=$1 logf=$2 port
    if [ "$name" = ringmq ]; then port=$RINGMQ_PORT; else port=$MOSQUITTO_PORT; fi
    if port_listening "$port"; then
        echo "port $port is already in use" >&2
        exit 1
    fi
    if [ "$name" = ringmq ]; then
        DATA=$(mktemp -d "$TMP/ringmq-connections.XXXXXX")
        RUST_LOG=warn "$RINGMQ" --listen "127.0.0.1:$port" --cores 2 --data-dir "$DATA" > "$logf" 2>&1 &
    else
        mosquitto -c "$OUT/mosquitto.conf" > "$logf" 2>&1 &
    fi
    BROKER_PID=$!
    timeout 10 bash -c "until ss -Hltn 'sport = :$port' | grep -q .; do sleep 0.05; done" || {
        echo "$name did not start listening on $port; its log:" >&2
        cat "$logf" >&2
        exit 1
    }
    sleep 0.3
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
    [ -n "$DATA" ] && rm -rf "$DATA"
    DATA=
    timeout 30 bash -c "while ss -Hltn 'sport = :$RINGMQ_PORT or sport = :$MOSQUITTO_PORT' | grep -q .; do sleep 0.05; done" || true
}

RECORDER=
cleanup() {
    if [ -n "$RECORDER" ]; then
        kill -INT "$RECORDER" 2> /dev/null || true
        wait "$RECORDER" 2> /dev/null || true
    fi
    stop_broker
}
trap cleanup EXIT

# run NAME BROKER BENCH-ARGS...: a fresh broker, one ringmq-bench run, its JSON line kept.
run() {
    local name=$1 broker=$2 port
    shift 2
    if [ "$broker" = ringmq ]; then port=$RINGMQ_PORT; else port=$MOSQUITTO_PORT; fi
    start_broker "$broker" "$OUT/$name.log"
    local profile=0
    if [ "$PROFILE" = 1 ] && [ "$name" = "conn-$N-ringmq-1" ]; then
        profile=1
        perf record -e cpu-clock -g -p "$BROKER_PID" -o "$OUT/connect.perf.data" 2> /dev/null &
        RECORDER=$!
        sleep 0.5
    fi
    local txt="$OUT/$name.txt"
    if ! timeout 300 "$BENCH" "$@" --port "$port" --broker-pid "$BROKER_PID" --label "$broker" \
        --workers 2 --source-addrs "$SOURCES" > "$txt" 2> "$OUT/$name.progress"; then
        echo "ringmq-bench failed against $broker ($name); output:" >&2
        cat "$txt" "$OUT/$name.progress" >&2
        exit 1
    fi
    if [ "$profile" = 1 ]; then
        kill -INT "$RECORDER"
        wait "$RECORDER" || true
        RECORDER=
        {
            for sort in dso sym; do
                echo "== by $sort"
                perf report -i "$OUT/connect.perf.data" --no-children --stdio -g none \
                    --sort "$sort" --percent-limit 0.5 2> /dev/null | grep -v '^#' | grep . | head -50
            done
        } > "$OUT/connect.perf.txt" || true
        perf report -i "$OUT/connect.perf.data" --no-children --stdio --percent-limit 3 \
            2> /dev/null | head -300 > "$OUT/connect.perf-callers.txt" || true
        log "profile of the connect phase: $OUT/connect.perf.txt"
    fi
    stop_broker
    grep -v '^{' "$txt" | sed 's/^/    /' >&2
    grep '^{' "$txt" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
r["run"] = sys.argv[1]
print(json.dumps(r))' "$name" >> "$RESULTS"
}

for rep in $(seq 1 "$REPS"); do
    if [ $((rep % 2)) -eq 1 ]; then order="ringmq mosquitto"; else order="mosquitto ringmq"; fi
    for broker in $order; do
        log "run $rep of $REPS: $broker, $N idle connections"
        run "conn-$N-$broker-$rep" "$broker" conn --connections "$N" --hold-secs "$HOLD"
        log "run $rep of $REPS: $broker, $SLOPE_N idle connections"
        run "conn-$SLOPE_N-$broker-$rep" "$broker" conn --connections "$SLOPE_N" --hold-secs "$HOLD"
        log "run $rep of $REPS: $broker, storm of $STORM_N persistent sessions"
        run "storm-$STORM_N-$broker-$rep" "$broker" storm --connections "$STORM_N" --persistent --hold-secs 2
    done
done

echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/machine.txt"

python3 - "$RESULTS" "$N" "$SLOPE_N" "$STORM_N" > "$OUT/table.md" << 'EOF'
import json, statistics, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
n, slope_n, storm_n = (int(x) for x in sys.argv[2:5])

def runs(kind, count, broker):
    return [r for r in rows if r["scenario"] == kind and r["connections"] == count and r["broker"] == broker]

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def fmt(x, d=0):
    return "n/a" if x is None else f"{x:,.{d}f}"

def each(xs, d=0):
    return " / ".join(fmt(x, d) for x in xs)

def delta_kib(r):
    return r["broker_rss_after_kib"] - r["broker_rss_before_kib"]

brokers = ("ringmq", "mosquitto")
m = {}
for b in brokers:
    big, small, storm = runs("conn", n, b), runs("conn", slope_n, b), runs("storm", storm_n, b)
    m[b] = {
        "rss_per_conn": med([r["broker_rss_per_conn_bytes"] for r in big]),
        "rss_per_conn_runs": [r["broker_rss_per_conn_bytes"] for r in big],
        "rss_per_conn_small": med([r["broker_rss_per_conn_bytes"] for r in small]),
        "slope": (med([delta_kib(r) for r in big]) - med([delta_kib(r) for r in small])) * 1024 / (n - slope_n)
                 if big and small else None,
        "rss_before": med([r["broker_rss_before_kib"] for r in big]),
        "rss_after": med([r["broker_rss_after_kib"] for r in big]),
        "cps": med([r["connects_per_s"] for r in big]),
        "cps_runs": [r["connects_per_s"] for r in big],
        "p50": med([r["connack_latency_us"]["p50"] for r in big]),
        "p99": med([r["connack_latency_us"]["p99"] for r in big]),
        "p99_runs": [r["connack_latency_us"]["p99"] for r in big],
        "p999": med([r["connack_latency_us"]["p999"] for r in big]),
        "cpu_us": med([r["broker_cpu_us_per_connect"] for r in big]),
        "failed": sum(r["failed"] for r in big) + sum(r["failed"] for r in small),
        "closed": sum(sum(r["closed_while_held"].values()) for r in big + small),
        "rps": med([r["reconnects_per_s"] for r in storm]),
        "rps_runs": [r["reconnects_per_s"] for r in storm],
        "rp50": med([r["reconnect_latency_us"]["p50"] for r in storm]),
        "rp99": med([r["reconnect_latency_us"]["p99"] for r in storm]),
        "rp999": med([r["reconnect_latency_us"]["p999"] for r in storm]),
        "storm_cps": med([r["connects_per_s"] for r in storm]),
        "storm_cpu_us": med([r["broker_cpu_storm_s"] * 1e6 / max(r["reconnected"], 1) for r in storm]),
        "wrong": sum(r["session_present_wrong"] for r in storm),
        "reconnected": sum(r["reconnected"] for r in storm),
        "storm_failed": sum(r["reconnect_failed"] + r["failed"] for r in storm),
        "reps": len(big),
    }

def ratio(key):
    a, b = m["ringmq"][key], m["mosquitto"][key]
    return f"**{a / b:.2f}**" if a and b else "n/a"

print(f"#### {n:,} idle connections (MQTT 3.1.1, clean sessions, keep-alive 60 s)")
print()
print(f"| broker | **broker RSS per connection** (bytes; runs) | per connection at {slope_n:,} (bytes) | slope {slope_n:,} → {n:,} (bytes per connection) | RSS before → after (MiB) | **CONNACKs/s** (runs) | CONNACK p50 / **p99** / p99.9 (ms) | p99 runs (ms) | broker CPU per connect (µs) | failed / closed while held |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for b in brokers:
    x = m[b]
    print(f"| {b} | **{fmt(x['rss_per_conn'])}** ({each(x['rss_per_conn_runs'])}) | {fmt(x['rss_per_conn_small'])} "
          f"| {fmt(x['slope'])} | {fmt(x['rss_before'] / 1024, 1)} → {fmt(x['rss_after'] / 1024, 1)} "
          f"| **{fmt(x['cps'])}** ({each(x['cps_runs'])}) "
          f"| {x['p50'] / 1000:.1f} / **{x['p99'] / 1000:.1f}** / {x['p999'] / 1000:.1f} | {each([v / 1000 for v in x['p99_runs']], 1)} "
          f"| {fmt(x['cpu_us'], 1)} | {x['failed']} / {x['closed']} |")
print(f"| ringmq / Mosquitto | {ratio('rss_per_conn')} | {ratio('rss_per_conn_small')} | {ratio('slope')} | | {ratio('cps')} | p99 {ratio('p99')} | | {ratio('cpu_us')} | |")
print()
print(f"#### Storm: {storm_n:,} persistent sessions (clean session 0) send DISCONNECT and reconnect at once")
print()
print("| broker | **reconnects/s** (runs) | reconnect CONNACK p50 / **p99** / p99.9 (ms) | broker CPU per reconnect (µs) | first connects/s (persistent) | session present wrong (of reconnects) | failed |")
print("|---|---:|---:|---:|---:|---:|---:|")
for b in brokers:
    x = m[b]
    print(f"| {b} | **{fmt(x['rps'])}** ({each(x['rps_runs'])}) | {x['rp50'] / 1000:.1f} / **{x['rp99'] / 1000:.1f}** / {x['rp999'] / 1000:.1f} "
          f"| {fmt(x['storm_cpu_us'], 1)} | {fmt(x['storm_cps'])} | {x['wrong']} (of {x['reconnected']:,}) | {x['storm_failed']} |")
print(f"| ringmq / Mosquitto | {ratio('rps')} | p99 {ratio('rp99')} | {ratio('storm_cpu_us')} | {ratio('storm_cps')} | | |")
print()
print(f"Medians of {m['ringmq']['reps']} runs per broker, each on a fresh broker, alternating which broker "
      "goes first; individual runs in parentheses. RSS per connection = (VmRSS after holding − VmRSS "
      "before the first connect) / connections. Slope = difference of the median RSS growths of the "
      f"{n:,}- and {slope_n:,}-connection runs over {n - slope_n:,}. Reconnect rate: reconnects / time "
      "from the storm to the last CONNACK (the disconnects included).")
EOF

echo
cat "$OUT/machine.txt"
echo
cat "$OUT/table.md"
