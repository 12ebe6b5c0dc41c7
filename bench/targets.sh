#!/usr/bin/env bash
# The figures the performance targets ask for, ringmq and Mosquitto side by side in one run.
#
#   bench/targets.sh            every part (a b c d e); about 15-20 minutes
#   bench/targets.sh b c        some parts
#
#   a  fan-in QoS 0, 100 publishers -> 1 subscriber, 64 B: flat out (closed loop), and then a
#      slow subscriber (reads at most SLOW_BPS bytes/s) under 100,000 msgs/s offered for
#      SLOW_SECS seconds, with the broker's RSS sampled every second
#   b  fan-out QoS 0, 1 publisher -> 1,000 subscribers, flat out
#   c  p2p QoS 1, 1,000 pairs, flat out
#   d  p2p QoS 0, 100 pairs, 20,000 msgs/s offered (paced): latency
#   e  ringmq alone, --cores 1 against --cores 2: p2p QoS 0 and QoS 1, same offered load, broker
#      CPU per message, and the share of pairs whose two clients live on different cores
#   g  fan-in QoS 1, 100 publishers -> 1 slow subscriber (reads at most SLOW_BPS bytes/s) under
#      100,000 msgs/s offered for G_SECS seconds: messages lost (none, for QoS 1) and the
#      broker's RSS sampled every second (bounded by the queue limits), each broker with its
#      own queue limit (ringmq's default, Mosquitto's max_queued_messages below)
#
# Each measurement runs REPS times (default 3) per broker, alternating which goes first, each on
# a freshly started broker: `ringmq --listen 127.0.0.1:RINGMQ_PORT --cores N --admin-listen
# 127.0.0.1:0 --data-dir FRESH` (default configuration otherwise; N = 2 except in e) and
# `mosquitto -c OUT/mosquitto.conf` (the configuration of bench/compare.sh). Installs Mosquitto
# if it is missing (apt-get). Writes target/bench-targets/: results.jsonl (every run),
# rss-*.txt (the RSS samples of part a), table.md, machine.txt and every run's output.
# Environment: REPS, DURATION (s, 10), SLOW_SECS (s, 45), G_SECS (s, 30), SLOW_BPS (bytes/s, 1000000),
# RINGMQ_PORT (18841), MOSQUITTO_PORT (18840), RINGMQ_CORES (ringmq's --cores against Mosquitto
# in parts a-d, 2), OUT (the output directory).
set -euo pipefail

cd "$(dirname "$0")/.."
PARTS=("$@")
[ ${#PARTS[@]} -gt 0 ] || PARTS=(a b c d e)
for p in "${PARTS[@]}"; do
    case "$p" in a | b | c | d | e | g) ;; *) echo "usage: bench/targets.sh [a] [b] [c] [d] [e] [g]" >&2; exit 2 ;; esac
done
REPS=${REPS:-3}
DURATION=${DURATION:-10}
SLOW_SECS=${SLOW_SECS:-45}
G_SECS=${G_SECS:-30}
SLOW_BPS=${SLOW_BPS:-1000000}
RINGMQ_PORT=${RINGMQ_PORT:-18841}
MOSQUITTO_PORT=${MOSQUITTO_PORT:-18840}
OUT=${OUT:-target/bench-targets}
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"
ulimit -n "$(ulimit -Hn)"

log() { echo "[targets $(date +%T)] $*" >&2; }

if ! command -v mosquitto > /dev/null; then
    log "installing mosquitto"
    timeout 300 apt-get update -qq
    timeout 300 apt-get install -y -qq mosquitto > /dev/null
fi
command -v python3 > /dev/null || { echo "python3 is needed for the tables" >&2; exit 1; }

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

machine() {
    echo "load $1: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "busiest other processes $1:"
    top -bn1 -c -w 250 -o %CPU | sed -n '8,10p' \
        | awk '{printf "  %s%% CPU:", $9; for (i = 12; i <= NF; i++) printf " %s", $i; print ""}' \
        | cut -c1-140
}
{
    echo "date: $(date -u +%FT%TZ)"
    echo "kernel: $(uname -sr), $(uname -m), $(nproc) cores"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "mosquitto: $(mosquitto -h 2> /dev/null | head -1)"
    echo "ringmq: $(git rev-parse --short HEAD 2> /dev/null)$(git diff --quiet HEAD -- engine codec storage 2> /dev/null || echo ' (engine/codec/storage with uncommitted changes)')"
    machine before
} > "$OUT/machine.txt"

port_listening() { ss -Hltn "sport = :$1" 2> /dev/null | grep -q .; }

BROKER_PID=
start_broker() { # broker (ringmq | mosquitto) cores
    local name=$1 cores=$2 port
    if [ "$name" = ringmq ]; then port=$RINGMQ_PORT; else port=$MOSQUITTO_PORT; fi
    if port_listening "$port"; then
        echo "port $port is already in use" >&2
        exit 1
    fi
    if [ "$name" = ringmq ]; then
        rm -rf "$OUT/ringmq-data"
        RUST_LOG=error "$RINGMQ" --listen "127.0.0.1:$port" --cores "$cores" \
            --admin-listen 127.0.0.1:0 --data-dir "$OUT/ringmq-data" > "$OUT/$name.log" 2>&1 &
    else
        mosquitto -c "$MOSQ_CONF" > "$OUT/$name.log" 2>&1 &
    fi
    BROKER_PID=$!
    BROKER_PORT=$port
    timeout 10 bash -c "until ss -Hltn 'sport = :$port' | grep -q .; do sleep 0.05; done" || {
        echo "$name did not start listening on $port; its log:" >&2
        cat "$OUT/$name.log" >&2
        exit 1
    }
}

SAMPLER_PID=
stop_broker() {
    if [ -n "$SAMPLER_PID" ]; then
        kill "$SAMPLER_PID" 2> /dev/null || true
        wait "$SAMPLER_PID" 2> /dev/null || true
        SAMPLER_PID=
    fi
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

# The broker's VmRSS (KiB) once a second, with seconds since the sampler started.
sample_rss() { # pid file
    local pid=$1 file=$2 t0
    t0=$(date +%s.%N)
    while kill -0 "$pid" 2> /dev/null; do
        awk -v t0="$t0" -v now="$(date +%s.%N)" '/^VmRSS/ { printf "%.1f %d\n", now - t0, $2 }' \
            "/proc/$pid/status" 2> /dev/null || true
        sleep 1
    done > "$file"
}

# One run: a fresh broker, ringmq-bench against it, its JSON line appended to the results.
run_one() { # name broker cores rep secs bench-args...
    local name=$1 broker=$2 cores=$3 rep=$4 secs=$5
    shift 5
    local label=$broker
    [ "$broker" = ringmq ] && label="ringmq-${cores}c"
    start_broker "$broker" "$cores"
    local tag
    tag="$(echo "$name" | tr -c 'A-Za-z0-9\n' '-' | tr -s '-')-$label-$rep"
    local txt="$OUT/run-$tag.txt" rss=
    if [ "$name" = "${name#slow}" ]; then :; else
        rss="$OUT/rss-$tag.txt"
        sample_rss "$BROKER_PID" "$rss" &
        SAMPLER_PID=$!
    fi
    # The generator's pid names its clients (rmqb{pid}-p{i}, -s{i}): keep it for part e.
    if ! timeout $((secs + 120)) bash -c 'echo $$ > "$0"; exec "$@"' "$OUT/bench.pid" \
        "$BENCH" "$@" --payload-bytes 64 --duration-secs "$secs" --port "$BROKER_PORT" \
        --broker-pid "$BROKER_PID" --label "$label" > "$txt" 2>&1; then
        echo "ringmq-bench failed against $label ($name); output:" >&2
        cat "$txt" >&2
        stop_broker
        exit 1
    fi
    stop_broker
    grep '^{' "$txt" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
r["scenario_name"], r["rep"], r["cores"] = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r["bench_pid"] = int(sys.argv[4])
if sys.argv[5]:
    r["rss_file"] = sys.argv[5]
print(json.dumps(r))' "$name" "$rep" "$cores" "$(cat "$OUT/bench.pid")" "$rss" >> "$RESULTS"
    log "  $(grep -E '^ +delivered' "$txt" | sed 's/^ *//')"
    log "  $(grep -E '^ +(broker .*CPU-s|latency)' "$txt" | sed 's/^ *//' | tr '\n' ' ')"
}

# Every measurement REPS times per broker (or per core count), alternating the order.
measure() { # name secs "broker:cores broker:cores" bench-args...
    local name=$1 secs=$2 pair=$3
    shift 3
    local a b rep order
    read -r a b <<< "$pair"
    for rep in $(seq 1 "$REPS"); do
        if [ $((rep % 2)) -eq 1 ]; then order="$a $b"; else order="$b $a"; fi
        for bc in $order; do
            log "$name: ${bc%%:*} (${bc#*:} cores), run $rep of $REPS"
            run_one "$name" "${bc%%:*}" "${bc#*:}" "$rep" "$secs" "$@"
        done
    done
}

VS="ringmq:${RINGMQ_CORES:-2} mosquitto:1"
for part in "${PARTS[@]}"; do
    case $part in
        a)
            measure "a fanin QoS 0, 100 → 1, flat out" "$DURATION" "$VS" \
                fanin --qos 0 --publishers 100 --drain-idle-ms 500 --drain-max-secs 5
            measure "slow subscriber: fanin QoS 0, 100 → 1, 100k msgs/s offered, subscriber reads $SLOW_BPS B/s" \
                "$SLOW_SECS" "$VS" fanin --qos 0 --publishers 100 --rate 100000 \
                --sub-read-bytes-per-sec "$SLOW_BPS" --drain-idle-ms 500 --drain-max-secs 3
            ;;
        b)
            measure "b fanout QoS 0, 1 → 1,000, flat out, window 20,000" "$DURATION" "$VS" \
                fanout --qos 0 --subscribers 1000 --window 20000 --drain-idle-ms 500 --drain-max-secs 5
            ;;
        c)
            measure "c p2p QoS 1, 1,000 pairs, flat out, window 20,000" "$DURATION" "$VS" \
                p2p --qos 1 --pairs 1000 --window 20000 --drain-idle-ms 500 --drain-max-secs 5
            ;;
        d)
            measure "d p2p QoS 0, 100 pairs, 20k msgs/s offered" "$DURATION" "$VS" \
                p2p --qos 0 --pairs 100 --rate 20000 --drain-idle-ms 500 --drain-max-secs 5
            ;;
        g)
            measure "slow subscriber g: fanin QoS 1, 100 → 1, 100k msgs/s offered, subscriber reads $SLOW_BPS B/s" \
                "$G_SECS" "$VS" fanin --qos 1 --publishers 100 --rate 100000 \
                --sub-read-bytes-per-sec "$SLOW_BPS" --drain-idle-ms 2000 --drain-max-secs 30
            ;;
        e)
            measure "e p2p QoS 0, 100 pairs, 50k msgs/s offered" "$DURATION" "ringmq:1 ringmq:2" \
                p2p --qos 0 --pairs 100 --rate 50000 --drain-idle-ms 500 --drain-max-secs 5
            measure "e p2p QoS 1, 100 pairs, 30k msgs/s offered" "$DURATION" "ringmq:1 ringmq:2" \
                p2p --qos 1 --pairs 100 --rate 30000 --drain-idle-ms 500 --drain-max-secs 5
            measure "e p2p QoS 1, 100 pairs, flat out" "$DURATION" "ringmq:1 ringmq:2" \
                p2p --qos 1 --pairs 100 --drain-idle-ms 500 --drain-max-secs 5
            ;;
    esac
done

machine after >> "$OUT/machine.txt"

python3 - "$RESULTS" > "$OUT/table.md" << 'EOF'
import json, statistics, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
order = []
for r in rows:
    if r["scenario_name"] not in order:
        order.append(r["scenario_name"])

def med(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None

def fmt(x, digits=0):
    return "n/a" if x is None else f"{x:,.{digits}f}"

def home_core(client_id, cores):
    # The broker's home core of a client id, as in engine/src/mesh.rs: FNV-1a, MurmurHash3's
    # fmix64, then the high bits.
    m = 0xFFFFFFFFFFFFFFFF
    h = 0xCBF29CE484222325
    for b in client_id.encode():
        h = ((h ^ b) * 0x100000001B3) & m
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & m
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & m
    h ^= h >> 33
    return (h * cores) >> 64

def crossed(r):
    # p2p: pairs whose publisher and subscriber live on different cores.
    if r["scenario"] != "p2p" or r["cores"] < 2:
        return None
    pre = f"rmqb{r['bench_pid']}"
    n = r["publishers"]
    return sum(home_core(f"{pre}-p{i}", r["cores"]) != home_core(f"{pre}-s{i}", r["cores"])
               for i in range(n)) / n

print("| scenario | broker | deliveries/s | broker CPU (cores) | **deliveries per broker CPU-second** (runs) | ratio | broker µs per delivery | broker RSS at end (MiB) | latency p50 / p99 / p99.9 / max (ms) | lost | dup | reord | pairs across cores |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for scen in order:
    per = {}
    for r in rows:
        if r["scenario_name"] == scen:
            per.setdefault(r["broker"], []).append(r)
    labels = list(per)
    base = "mosquitto" if "mosquitto" in per else ("ringmq-1c" if "ringmq-1c" in per else None)
    for label in labels:
        runs = per[label]
        pc = med(runs, "broker_deliveries_per_cpu_s")
        ratio = ""
        if base and label != base:
            b = med(per[base], "broker_deliveries_per_cpu_s")
            if pc and b:
                ratio = f"**{pc / b:.2f}**" if base == "mosquitto" else f"{pc / b:.2f} (CPU per msg {b / pc - 1:+.0%})"
        each = " / ".join(fmt(r["broker_deliveries_per_cpu_s"]) for r in runs)
        cores = statistics.median(r["broker_cpu_s"] / r["measured_s"] for r in runs)
        us = statistics.median(1e6 * r["broker_cpu_s"] / max(r["received"], 1) for r in runs)
        rss = med(runs, "broker_rss_kib")
        lat = lambda q: statistics.median(r["latency_us"][q] for r in runs) / 1000
        cr = [c for c in (crossed(r) for r in runs) if c is not None]
        print(
            f"| {scen} | {label} | {fmt(med(runs, 'deliveries_per_s'))} | {cores:.2f} "
            f"| **{fmt(pc)}** ({each}) | {ratio} | {us:.2f} "
            f"| {fmt(rss / 1024 if rss else None, 1)} "
            f"| {lat('p50'):.2f} / {lat('p99'):.2f} / {lat('p999'):.2f} / {lat('max'):.2f} "
            f"| {sum(r['lost'] for r in runs)} | {sum(r['duplicated'] for r in runs)} "
            f"| {sum(r['reordered'] for r in runs)} "
            f"| {' / '.join(f'{c:.0%}' for c in cr)} |"
        )
print()
print("Medians over the runs of each broker (fresh broker each run, alternating order); the "
      "individual runs of the headline in parentheses; lost, dup(licated) and reord(ered) are "
      "totals over the runs. Broker CPU: user + system time of the broker process over the "
      "measured window (start of publishing to end of the drain). ringmq-Nc: ringmq --cores N. "
      "Ratio: against Mosquitto, or in part e against ringmq --cores 1.")

rss_runs = [r for r in rows if r.get("rss_file")]
if rss_runs:
    print()
    print("Broker RSS (MiB) while the subscriber is slow, sampled every second from the broker's "
          "start (set-up, then publishing for the run's duration, then a short drain):")
    print()
    marks = [5, 10, 20, 30, 40, 50, 60]
    print("| broker | run | " + " | ".join(f"{m} s" for m in marks) + " | max | delivered / sent |")
    print("|---|---:|" + "---:|" * (len(marks) + 2))
    for r in rss_runs:
        samples = []
        for line in open(r["rss_file"]):
            t, kib = line.split()
            samples.append((float(t), int(kib)))
        cells = []
        for m in marks:
            at = [kib for t, kib in samples if t <= m]
            cells.append(fmt(at[-1] / 1024, 1) if at and samples[-1][0] >= m else "")
        mx = max(kib for _, kib in samples) / 1024 if samples else None
        print(f"| {r['broker']} | {r['rep']} | " + " | ".join(cells)
              + f" | {fmt(mx, 1)} | {r['received']:,} / {r['sent']:,} |")
EOF

echo
cat "$OUT/machine.txt"
echo
cat "$OUT/table.md"
