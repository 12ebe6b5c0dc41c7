#!/usr/bin/env bash
# Durable sessions, measured: QoS 1 messages into offline persistent sessions (ringmq with group
# commit, side by side with Mosquitto), one fsync per message, recovery of 1,000,000 messages in
# 100,000 sessions after kill -9, and the disk cost of a fan-out to 1,000 offline sessions.
#
#   bench/durable.sh            every part: a b c d (about 10 minutes)
#   bench/durable.sh a d        only some parts
#
#   a  1,000 offline sessions (own topic each), 10 publishers, 1,000,000 QoS 1 messages of 64 B,
#      window A_INFLIGHT (256) per publisher: group commit turns concurrency into throughput, so
#      the window sets how many appends share one fsync (A_INFLIGHT=32 for a smaller one): ringmq (fsync = "always", group commit), Mosquitto (in memory,
#      persistence false) and, for reference, ringmq with fsync = "never"; REPS runs each,
#      alternating the order, each on a fresh broker and data directory; then every session
#      drains and every acknowledged message is checked off.
#   b  the same with 1 publisher and a window of 1: each message waits for its own fsync.
#   c  100,000 sessions, 1,000,000 messages (10 each), kill -9, restart on the same data directory
#      (twice), recovery time, then drain and check all 1,000,000.
#   d  --cores 1, 1,000 sessions on bench/off/+, one 1 KiB message for all of them: bytes the
#      data directory grew by.
#
# Writes target/bench-durable/{results.jsonl, summary.md, machine.txt, *.log}. Every broker and
# every generator run is bounded by `timeout`. Data directories are fresh directories under /tmp
# (TMPDIR to change), removed after each run. Environment: REPS (3), A_MESSAGES (1000000),
# A_PUBLISHERS (10), A_INFLIGHT (256),
# B_MESSAGES (5000), C_SESSIONS (100000), C_MESSAGES (1000000), RINGMQ_PORT (18851),
# MOSQUITTO_PORT (18850), PROFILE=1 (perf record -e cpu-clock -g on ringmq during the publish
# phase of the first part-a run; needs perf).
set -euo pipefail

cd "$(dirname "$0")/.."
PARTS=("$@")
[ ${#PARTS[@]} -gt 0 ] || PARTS=(a b c d)
for p in "${PARTS[@]}"; do
    case $p in a | b | c | d) ;; *)
        echo "usage: bench/durable.sh [a] [b] [c] [d]" >&2
        exit 2
        ;;
    esac
done
want() { [[ " ${PARTS[*]} " == *" $1 "* ]]; }

REPS=${REPS:-3}
A_MESSAGES=${A_MESSAGES:-1000000}
A_PUBLISHERS=${A_PUBLISHERS:-10}
A_INFLIGHT=${A_INFLIGHT:-256}
B_MESSAGES=${B_MESSAGES:-5000}
C_SESSIONS=${C_SESSIONS:-100000}
C_MESSAGES=${C_MESSAGES:-1000000}
RINGMQ_PORT=${RINGMQ_PORT:-18851}
MOSQUITTO_PORT=${MOSQUITTO_PORT:-18850}
TMP=${TMPDIR:-/tmp}
OUT=target/bench-durable
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"
SUMMARY="$OUT/summary.md"
: > "$SUMMARY"

log() { echo "[durable $(date +%T)] $*" >&2; }

command -v python3 > /dev/null || { echo "python3 is needed for the tables" >&2; exit 1; }
if want a && ! command -v mosquitto > /dev/null; then
    echo "mosquitto is missing, and part a compares with it: apt-get install -y mosquitto" >&2
    echo "(or run only the other parts: bench/durable.sh b c d)" >&2
    exit 1
fi
if [ "${PROFILE:-0}" = 1 ] && ! command -v perf > /dev/null; then
    echo "PROFILE=1 needs perf: apt-get install -y linux-perf" >&2
    exit 1
fi

log "building ringmq and ringmq-bench (release)"
timeout 900 cargo build --release -q -p ringmq -p ringmq-bench
RINGMQ=target/release/ringmq
BENCH=target/release/ringmq-bench

# ringmq's configuration for every part: fsync after every write batch (group commit), queues
# large enough that nothing is dropped, the same in-flight window as Mosquitto below.
conf_ringmq() { # fsync
    cat << EOF
[limits]
max_inflight_messages = 32
max_queued_messages = 1000000
max_queued_bytes = 268435456

[storage]
fsync = "$1"
EOF
}
conf_ringmq always > "$OUT/ringmq-always.toml"
conf_ringmq never > "$OUT/ringmq-never.toml"
cat > "$OUT/mosquitto.conf" << EOF
listener $MOSQUITTO_PORT 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 1000000
max_inflight_messages 32
set_tcp_nodelay true
EOF

machine() {
    echo "date: $(date -u +%FT%TZ)"
    echo "kernel: $(uname -sr), $(uname -m), $(nproc) cores"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "data dirs on: $(df -T "$TMP" | awk 'NR == 2 {print $2 " (" $1 ")"}')"
    echo "mosquitto: $({ mosquitto -h 2> /dev/null || true; } | head -1)"
    echo "ringmq: $(git rev-parse --short HEAD 2> /dev/null)$(git diff --quiet HEAD -- engine codec storage 2> /dev/null || echo ' (engine/codec/storage with uncommitted changes)')"
    echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
}
machine > "$OUT/machine.txt"

port_listening() { ss -Hltn "sport = :$1" 2> /dev/null | grep -q .; }

BROKER_PID=
DATA=
START_MS=
PORT_FREE_MS=0
# start_ringmq CONFIG CORES DATA_DIR LOG: waits for "ringmq listening on"; sets START_MS to the
# wall time from spawn to that line.
start_ringmq() {
    local conf=$1 cores=$2 data=$3 logf=$4
    if port_listening "$RINGMQ_PORT"; then
        echo "port $RINGMQ_PORT is already in use" >&2
        exit 1
    fi
    local t0 t1 before recovered
    # The log may hold earlier starts: wait for one more of each line.
    before=$(grep -c '^ringmq listening on' "$logf" 2> /dev/null || true)
    recovered=$(grep -c 'durable state recovered' "$logf" 2> /dev/null || true)
    t0=$(date +%s%N)
    "$RINGMQ" --listen "127.0.0.1:$RINGMQ_PORT" --cores "$cores" --data-dir "$data" \
        --config "$conf" --log-level info >> "$logf" 2>&1 &
    BROKER_PID=$!
    local i
    for i in $(seq 12000); do
        if [ "$(grep -c '^ringmq listening on' "$logf" 2> /dev/null || true)" -gt "${before:-0}" ]; then
            t1=$(date +%s%N)
            START_MS=$(((t1 - t0) / 1000000))
            # The log lines are written by a background writer: wait for the recovery line too.
            timeout 10 bash -c "until [ \$(grep -c 'durable state recovered' '$logf') -gt ${recovered:-0} ]; do sleep 0.01; done" || {
                echo "no 'durable state recovered' line in $logf" >&2
                exit 1
            }
            return 0
        fi
        if ! kill -0 "$BROKER_PID" 2> /dev/null; then break; fi
        sleep 0.01
    done
    echo "ringmq did not start listening within 120 s; its log:" >&2
    tail -20 "$logf" >&2
    exit 1
}

start_mosquitto() { # log
    if port_listening "$MOSQUITTO_PORT"; then
        echo "port $MOSQUITTO_PORT is already in use" >&2
        exit 1
    fi
    mosquitto -c "$OUT/mosquitto.conf" > "$1" 2>&1 &
    BROKER_PID=$!
    timeout 10 bash -c "until ss -Hltn 'sport = :$MOSQUITTO_PORT' | grep -q .; do sleep 0.05; done" || {
        echo "mosquitto did not start listening on $MOSQUITTO_PORT; its log:" >&2
        cat "$1" >&2
        exit 1
    }
}

stop_broker() { # [KILL]
    [ -n "$BROKER_PID" ] || return 0
    if [ "${1:-}" = KILL ]; then
        kill -KILL "$BROKER_PID" 2> /dev/null || true
    else
        kill -TERM "$BROKER_PID" 2> /dev/null || true
        local i
        for i in $(seq 200); do
            kill -0 "$BROKER_PID" 2> /dev/null || break
            sleep 0.05
        done
        kill -KILL "$BROKER_PID" 2> /dev/null || true
    fi
    wait "$BROKER_PID" 2> /dev/null || true
    BROKER_PID=
    # After kill -9 the kernel closes io_uring-held sockets asynchronously: wait until nothing
    # listens on the ports any more (a restart with SO_REUSEPORT would otherwise share them).
    local t0 t1
    t0=$(date +%s%N)
    timeout 30 bash -c "while ss -Hltn 'sport = :$RINGMQ_PORT or sport = :$MOSQUITTO_PORT' | grep -q .; do sleep 0.01; done" || {
        echo "the broker's port is still open 30 s after it ended" >&2
        exit 1
    }
    t1=$(date +%s%N)
    PORT_FREE_MS=$(((t1 - t0) / 1000000))
}

new_data() { DATA=$(mktemp -d "$TMP/ringmq-durable.XXXXXX"); }
drop_data() {
    [ -n "$DATA" ] && rm -rf "$DATA"
    DATA=
}
cleanup() {
    stop_broker
    drop_data
}
trap cleanup EXIT

# bench NAME SECONDS args...: runs ringmq-bench offline, keeps its output, appends its JSON line
# (with the run's name) to the results.
bench() {
    local name=$1 secs=$2
    shift 2
    local txt="$OUT/$name.txt"
    if ! timeout "$secs" "$BENCH" offline "$@" > "$txt" 2>&1; then
        echo "ringmq-bench failed or timed out ($name); output:" >&2
        cat "$txt" >&2
        exit 1
    fi
    grep -v '^{' "$txt" | sed 's/^/    /' >&2
    grep '^{' "$txt" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
r["run"] = sys.argv[1]
print(json.dumps(r))' "$name" >> "$RESULTS"
}

recovered_ms() { # log: the ms= of the last "durable state recovered" line
    sed 's/\x1b\[[0-9;]*m//g' "$1" | grep 'durable state recovered' | tail -1 \
        | grep -o 'ms=[0-9]*' | cut -d= -f2
}

size_of() { # dir: "apparent-bytes allocated-bytes"
    echo "$(du -sb "$1" | cut -f1) $(($(du -sk "$1" | cut -f1) * 1024))"
}

# ---- a: offline QoS 1, group commit, against Mosquitto -------------------------------------
A_ARGS=(--sessions 1000 --publishers "$A_PUBLISHERS" --messages "$A_MESSAGES" --inflight "$A_INFLIGHT" --payload-bytes 64)
run_a() { # broker rep
    local broker=$1 rep=$2 name="a-$1-$2" port args
    : > "$OUT/$name.log"
    if [ "$broker" = mosquitto ]; then
        start_mosquitto "$OUT/$name.log"
        port=$MOSQUITTO_PORT
    else
        new_data
        start_ringmq "$OUT/ringmq-${broker#ringmq-}.toml" 2 "$DATA" "$OUT/$name.log"
        port=$RINGMQ_PORT
    fi
    args=(--port "$port" --broker-pid "$BROKER_PID" --label "$broker" "${A_ARGS[@]}"
        --client-prefix "$name" --state-file "$OUT/$name.state.json")
    bench "$name-setup" 120 "${args[@]}" --phase setup
    local recorder=
    if [ "${PROFILE:-0}" = 1 ] && [ "$broker" = ringmq-always ] && [ "$rep" = 1 ]; then
        perf record -e cpu-clock -g -p "$BROKER_PID" -o "$OUT/a-publish.perf.data" 2> /dev/null &
        recorder=$!
        sleep 0.5
    fi
    bench "$name-publish" 300 "${args[@]}" --phase publish --no-setup
    if [ -n "$recorder" ]; then
        kill -INT "$recorder"
        wait "$recorder" || true
        {
            for sort in comm dso sym; do
                echo "== by $sort"
                perf report -i "$OUT/a-publish.perf.data" --no-children --stdio -g none \
                    --sort "$sort" --percent-limit 0.3 2> /dev/null | grep -v '^#' | grep . | head -60
            done
        } > "$OUT/a-publish.perf.txt" || true
        perf report -i "$OUT/a-publish.perf.data" --no-children --stdio --percent-limit 2 \
            2> /dev/null | head -400 > "$OUT/a-publish.perf-callers.txt" || true
        log "profile: $OUT/a-publish.perf.txt"
    fi
    # Batches of 100: Mosquitto listens with a backlog of 100, and a batch of 1,000 connections
    # at once costs it SYN retransmissions (1 s, 2 s) that have nothing to do with draining.
    bench "$name-drain" 600 "${args[@]}" --phase drain --drain-batch 100
    stop_broker
    drop_data
}

if want a; then
    log "part a: offline QoS 1 into 1,000 sessions, ringmq (fsync always / never) and mosquitto, $REPS runs each"
    for rep in $(seq 1 "$REPS"); do
        if [ $((rep % 2)) -eq 1 ]; then
            order="ringmq-always mosquitto ringmq-never"
        else
            order="mosquitto ringmq-always ringmq-never"
        fi
        for broker in $order; do
            log "a: $broker, run $rep of $REPS"
            run_a "$broker" "$rep"
        done
    done
fi

# ---- b: one fsync per message ---------------------------------------------------------------
if want b; then
    log "part b: 1 publisher, window 1, fsync always: one fsync per message, $REPS runs"
    for rep in $(seq 1 "$REPS"); do
        name="b-ringmq-$rep"
        new_data
        : > "$OUT/$name.log"
        start_ringmq "$OUT/ringmq-always.toml" 2 "$DATA" "$OUT/$name.log"
        bench "$name" 300 --port "$RINGMQ_PORT" --broker-pid "$BROKER_PID" --label ringmq-always \
            --sessions 1000 --publishers 1 --messages "$B_MESSAGES" --inflight 1 --payload-bytes 64 \
            --client-prefix "$name" --publish-max-secs 120
        stop_broker
        drop_data
    done
fi

# ---- c: recovery of 1,000,000 messages in 100,000 sessions ----------------------------------
if want c; then
    log "part c: 100,000 sessions, 1,000,000 messages, kill -9, restart twice, drain"
    name=c-ringmq
    new_data
    : > "$OUT/$name.log"
    start_ringmq "$OUT/ringmq-always.toml" 2 "$DATA" "$OUT/$name.log"
    bench "$name-publish" 600 --port "$RINGMQ_PORT" --broker-pid "$BROKER_PID" --label ringmq \
        --sessions "$C_SESSIONS" --publishers 10 --messages "$C_MESSAGES" --inflight 32 --payload-bytes 64 \
        --connect-concurrency 64 --client-prefix "$name" --phase publish \
        --state-file "$OUT/$name.state.json"
    read -r c_apparent c_alloc < <(size_of "$DATA")
    c_rss=$(grep VmRSS "/proc/$BROKER_PID/status" | awk '{print $2}')
    stop_broker KILL
    log "c: killed -9 (data dir: $c_apparent bytes, broker RSS $c_rss KiB; port free after $PORT_FREE_MS ms); restarting"
    c_recoveries=()
    for restart in 1 2; do
        echo "---- restart $restart after kill -9" >> "$OUT/$name.log"
        start_ringmq "$OUT/ringmq-always.toml" 2 "$DATA" "$OUT/$name.log"
        ms=$(recovered_ms "$OUT/$name.log")
        sleep 1
        rss=$(grep VmRSS "/proc/$BROKER_PID/status" | awk '{print $2}')
        log "c: restart $restart: recovered ms=$ms, listening after $START_MS ms, RSS $rss KiB after 1 s"
        c_recoveries+=("$ms $START_MS $rss")
        if [ "$restart" = 1 ]; then
            stop_broker KILL
            log "c: killed -9 again (port free after $PORT_FREE_MS ms)"
        fi
    done
    bench "$name-drain" 900 --port "$RINGMQ_PORT" --broker-pid "$BROKER_PID" --label ringmq \
        --phase drain --state-file "$OUT/$name.state.json" --drain-batch 1000 --drain-idle-ms 3000
    stop_broker
    drop_data
    python3 - "$c_apparent" "$c_alloc" "$c_rss" "${c_recoveries[@]}" >> "$RESULTS" << 'EOF'
import json, sys
apparent, alloc, rss = (int(x) for x in sys.argv[1:4])
rec = [dict(zip(("recovered_ms", "listening_ms", "rss_kib_after_1s"), map(int, r.split())))
       for r in sys.argv[4:]]
print(json.dumps({"run": "c-recovery", "data_apparent_bytes": apparent,
                  "data_allocated_bytes": alloc, "rss_kib_before_kill": rss, "restarts": rec}))
EOF
fi

# ---- d: one 1 KiB message for 1,000 offline sessions on one core ----------------------------
if want d; then
    log "part d: --cores 1, 1,000 sessions on bench/off/+, one 1 KiB QoS 1 message"
    name=d-ringmq
    new_data
    : > "$OUT/$name.log"
    start_ringmq "$OUT/ringmq-always.toml" 1 "$DATA" "$OUT/$name.log"
    d_args=(--port "$RINGMQ_PORT" --broker-pid "$BROKER_PID" --label ringmq --sessions 1000
        --match all --publishers 1 --payload-bytes 1024 --client-prefix "$name"
        --state-file "$OUT/$name.state.json")
    bench "$name-setup" 120 "${d_args[@]}" --phase setup
    sleep 1
    read -r d_a0 d_k0 < <(size_of "$DATA")
    bench "$name-publish" 120 "${d_args[@]}" --phase publish --no-setup --messages 1
    sleep 1
    read -r d_a1 d_k1 < <(size_of "$DATA")
    bench "$name-drain" 120 "${d_args[@]}" --phase drain
    stop_broker
    drop_data
    python3 - "$d_a0" "$d_k0" "$d_a1" "$d_k1" >> "$RESULTS" << 'EOF'
import json, sys
a0, k0, a1, k1 = map(int, sys.argv[1:])
print(json.dumps({"run": "d-size", "apparent_before": a0, "allocated_before": k0,
                  "apparent_after": a1, "allocated_after": k1}))
EOF
fi

echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/machine.txt"

python3 - "$RESULTS" "$REPS" >> "$SUMMARY" << 'EOF'
import json, statistics, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
reps = int(sys.argv[2])
by = {r["run"]: r for r in rows}

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def fmt(x, d=0):
    return "n/a" if x is None else f"{x:,.{d}f}"

def runs(prefix):
    return [by[k] for k in sorted(by) if k.startswith(prefix)]

if any(k.startswith("a-") for k in by):
    a0 = next(r for r in rows if r["run"].startswith("a-") and r["phase"] == "publish")
    print(f"### a. QoS 1 into {a0['sessions']:,} offline sessions: {a0['publishers']} publishers, "
          f"{a0['messages']:,} messages of {a0['payload_bytes']} B, window {a0['inflight']}")
    print()
    print("| broker | acknowledged msgs/s (runs) | broker CPU-s | **msgs per broker CPU-second** (runs) | ratio | broker RSS after publishing (MiB) | sessions/s created | drain deliveries/s | lost / dup / reordered | drain stalls: batches / sessions complete on retry | longest drain silence (ms) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    percpu = {}
    for b in ("ringmq-always", "mosquitto", "ringmq-never"):
        pubs = [r["publish"] for r in runs(f"a-{b}-") if r["phase"] == "publish"]
        if not pubs:
            continue
        drains = [r["drain"] for r in runs(f"a-{b}-") if r["phase"] == "drain"]
        setups = [r["setup"] for r in runs(f"a-{b}-") if r["phase"] == "setup"]
        percpu[b] = med([p["broker_msgs_per_cpu_s"] for p in pubs])
        print(f"| {b} | {fmt(med([p['msgs_per_s'] for p in pubs]))} ({' / '.join(fmt(p['msgs_per_s']) for p in pubs)}) "
              f"| {fmt(med([p['broker_cpu_s'] for p in pubs]), 2)} "
              f"| **{fmt(percpu[b])}** ({' / '.join(fmt(p['broker_msgs_per_cpu_s']) for p in pubs)}) "
              f"| RATIO-{b} "
              f"| {fmt(med([p['broker_rss_kib'] for p in pubs]) / 1024, 1)} "
              f"| {fmt(med([s['sessions_per_s'] for s in setups]))} "
              f"| {fmt(med([d['deliveries_per_s'] for d in drains]))} "
              f"| {sum(d['lost'] for d in drains)} / {sum(d['duplicated'] for d in drains)} / {sum(d['reordered'] for d in drains)} "
              f"| {sum(d.get('stalled_batches', 0) for d in drains)} / {sum(d.get('completed_on_retry', 0) for d in drains)} "
              f"| {fmt(max((d.get('longest_silence_ms') or 0) for d in drains))} |")
    print()
    msgs = {b: med([r["publish"]["msgs_per_s"] for r in runs(f"a-{b}-") if r["phase"] == "publish"])
            for b in percpu}
    if "mosquitto" in percpu:
        for b in ("ringmq-always", "ringmq-never"):
            if b in percpu:
                print(f"ratio {b} / mosquitto: msgs/s {msgs[b] / msgs['mosquitto']:.2f}, "
                      f"msgs per broker CPU-second {percpu[b] / percpu['mosquitto']:.2f}")
    print()

b = runs("b-ringmq-")
if b:
    pubs = [r["publish"] for r in b]
    print("### b. one fsync per message: 1 publisher, window 1, fsync = \"always\"")
    print()
    m = med([p["msgs_per_s"] for p in pubs])
    print(f"acknowledged msgs/s: median **{fmt(m)}** (runs {' / '.join(fmt(p['msgs_per_s']) for p in pubs)}), "
          f"i.e. {1000 / m:.2f} ms per message; lost {sum(r['drain']['lost'] for r in b)}")
    print()

if "c-recovery" in by:
    c = by["c-recovery"]
    pub = by["c-ringmq-publish"]["publish"]
    setup = by["c-ringmq-publish"]["setup"]
    d = by["c-ringmq-drain"]["drain"]
    print(f"### c. {setup['sessions']:,} sessions, {pub['acked']:,} messages, kill -9, restart")
    print()
    print(f"set-up {setup['sessions']:,} sessions in {setup['secs']:.1f} s ({fmt(setup['sessions_per_s'])}/s); "
          f"publish {pub['acked']:,} acknowledged of {pub['published']:,} in {pub['secs']:.1f} s ({fmt(pub['msgs_per_s'])} msgs/s); "
          f"data directory {c['data_apparent_bytes'] / 2**20:.1f} MiB; broker RSS before kill {c['rss_kib_before_kill'] / 1024:.1f} MiB")
    for i, r in enumerate(c["restarts"], 1):
        print(f"- restart {i}: durable state recovered ms={r['recovered_ms']}, "
              f"`ringmq listening on` after {r['listening_ms']} ms, RSS {r['rss_kib_after_1s'] / 1024:.1f} MiB")
    print(f"- drain: {d['received']:,} delivered of {d['expected']:,} acknowledged in {d['secs']:.1f} s "
          f"({fmt(d['deliveries_per_s'])}/s); lost {d['lost']}, duplicated {d['duplicated']}, reordered {d['reordered']}, "
          f"unexpected {d['unexpected']}, sessions not present {d['sessions_not_present']}, complete {d['complete']}; "
          f"stalled batches {d.get('stalled_batches', 0)}, sessions complete only on retry {d.get('completed_on_retry', 0)}, "
          f"longest silence {d.get('longest_silence_ms', 'n/a')} ms")
    print()

if "d-size" in by:
    s = by["d-size"]
    d = by["d-ringmq-drain"]["drain"]
    grew = s["apparent_after"] - s["apparent_before"]
    print("### d. one 1 KiB QoS 1 message for 1,000 offline sessions, --cores 1")
    print()
    print(f"data directory: {s['apparent_before']:,} → {s['apparent_after']:,} bytes (apparent), "
          f"grew by **{grew:,} bytes** = 1,024 payload + {(grew - 1024) / 1000:.1f} bytes per session; "
          f"allocated {s['allocated_before']:,} → {s['allocated_after']:,}. "
          f"1,000 copies would be ≥ {1000 * 1024:,} bytes. Drain: {d['received']} of {d['expected']} delivered, lost {d['lost']}.")
EOF

# Fill in the ratio column.
python3 - "$SUMMARY" "$RESULTS" << 'EOF'
import json, re, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
def percpu(b):
    xs = [r["publish"]["broker_msgs_per_cpu_s"] for r in rows
          if r["run"].startswith(f"a-{b}-") and r.get("phase") == "publish"]
    return statistics.median(xs) if xs else None
text = open(sys.argv[1]).read()
m = percpu("mosquitto")
for b in ("ringmq-always", "mosquitto", "ringmq-never"):
    x = percpu(b)
    val = "" if b == "mosquitto" or not (x and m) else f"**{x / m:.2f}**"
    text = text.replace(f"RATIO-{b}", val)
open(sys.argv[1], "w").write(text)
EOF

echo
cat "$OUT/machine.txt"
echo
cat "$SUMMARY"
