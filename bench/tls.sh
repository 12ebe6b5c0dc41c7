#!/usr/bin/env bash
# The cost of TLS, side by side: ringmq and Mosquitto, each over plain TCP and over TLS, in the
# same run.
#
#   bench/tls.sh            about 8 minutes (one ringmq core count)
#
# A throw-away CA and server certificate (KEY=ec: ECDSA P-256, the default; KEY=rsa: RSA 2048)
# are made with openssl in a temporary directory. Each broker listens on 127.0.0.1:TCP_PORT
# (plain) and 127.0.0.1:TLS_PORT (TLS, the same certificate), one broker at a time. For each
# broker, REPS times (default 3), alternating which broker goes first, each run on a freshly
# started broker, over TCP and over TLS (TCP first in odd runs, TLS first in even ones):
#   - conn: N (5,000) connections flat out, at most 100 handshakes in flight, 2 generator
#     worker processes, held 1 s: CONNACKs/s, CONNACK p99 (connect() to CONNACK, the TLS
#     handshake included), broker CPU per connection;
#   - p2p QoS 1, 100 pairs, and fanin QoS 0, 100 publishers -> 1 subscriber, 64 B payloads,
#     DURATION (10) s flat out (closed loop): deliveries per broker CPU-second.
# ringmq runs with --cores RINGMQ_CORES (1: one core, as Mosquitto; "default": all cores).
# Every TLS connection is a full handshake (the generator does not resume sessions).
#
# Writes target/bench-tls/{results.jsonl, table.md, machine.txt, run outputs, broker logs}.
# Every step is bounded by `timeout`. Environment: REPS, N, DURATION, KEY, RINGMQ_CORES,
# TCP_PORT (18884), TLS_PORT (8883), OUT (target/bench-tls).
set -euo pipefail

cd "$(dirname "$0")/.."
REPS=${REPS:-3}
N=${N:-5000}
DURATION=${DURATION:-10}
KEY=${KEY:-ec}
RINGMQ_CORES=${RINGMQ_CORES:-1}
TCP_PORT=${TCP_PORT:-18884}
TLS_PORT=${TLS_PORT:-8883}
OUT=${OUT:-target/bench-tls}
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"

log() { echo "[tls $(date +%T)] $*" >&2; }

command -v python3 > /dev/null || { echo "python3 is needed for the table" >&2; exit 1; }
command -v openssl > /dev/null || { echo "openssl is missing: apt-get install -y openssl" >&2; exit 1; }
if ! command -v mosquitto > /dev/null; then
    echo "mosquitto is missing: apt-get install -y mosquitto" >&2
    exit 1
fi
case "$KEY" in
    ec | rsa) ;;
    *) echo "KEY must be ec or rsa" >&2; exit 2 ;;
esac
ulimit -n "$(ulimit -Hn)"

log "building ringmq and ringmq-bench (release)"
timeout 1800 cargo build --release -q -p ringmq -p ringmq-bench
RINGMQ=target/release/ringmq
BENCH=target/release/ringmq-bench

TMP=$(mktemp -d "${TMPDIR:-/tmp}/ringmq-bench-tls.XXXXXX")
PKI="$TMP/pki"
mkdir -p "$PKI"

# A CA and a server certificate for 127.0.0.1 and localhost, valid two days.
keyopts() {
    if [ "$KEY" = ec ]; then
        echo "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1"
    else
        echo "-newkey rsa:2048"
    fi
}
# shellcheck disable=SC2046
{
    openssl req -x509 $(keyopts) -nodes -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -days 2 \
        -subj "/CN=ringmq-bench CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    openssl req $(keyopts) -nodes -keyout "$PKI/server.key" -out "$PKI/server.csr" -subj "/CN=127.0.0.1"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' > "$PKI/ext.cnf"
    openssl x509 -req -in "$PKI/server.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
        -CAcreateserial -out "$PKI/server.crt" -days 2 -extfile "$PKI/ext.cnf"
} > "$OUT/pki.log" 2>&1 || { cat "$OUT/pki.log" >&2; exit 1; }
# Mosquitto runs as another user when started as root: let it read the key.
chmod 755 "$TMP" "$PKI"
chmod 644 "$PKI"/*

cat > "$TMP/ringmq.toml" << EOF
[[listeners]]
bind = "127.0.0.1:$TCP_PORT"

[[listeners]]
bind = "127.0.0.1:$TLS_PORT"
[listeners.tls]
cert_file = "$PKI/server.crt"
key_file = "$PKI/server.key"

[admin]
enabled = false
EOF

cat > "$TMP/mosquitto.conf" << EOF
per_listener_settings false
allow_anonymous true
persistence false
max_connections -1
max_queued_messages 100000
set_tcp_nodelay true
listener $TCP_PORT 127.0.0.1
listener $TLS_PORT 127.0.0.1
cafile $PKI/ca.crt
certfile $PKI/server.crt
keyfile $PKI/server.key
EOF
cp "$TMP/ringmq.toml" "$TMP/mosquitto.conf" "$OUT/"

if [ "$RINGMQ_CORES" = default ]; then CORES_ARGS=(); else CORES_ARGS=(--cores "$RINGMQ_CORES"); fi

{
    echo "date: $(date -u +%FT%TZ)"
    echo "kernel: $(uname -sr), $(uname -m), $(nproc) cores"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "openssl: $(openssl version)"
    echo "mosquitto: $({ mosquitto -h 2> /dev/null || true; } | head -1)"
    echo "ringmq: $(git rev-parse --short HEAD 2> /dev/null)$(git diff --quiet HEAD -- engine codec storage 2> /dev/null || echo ' (engine/codec/storage with uncommitted changes)'), cores: $RINGMQ_CORES"
    echo "server key: $KEY"
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$OUT/machine.txt"

port_listening() { ss -Hltn "sport = :$1" 2> /dev/null | grep -q .; }

BROKER_PID=
DATA=
start_broker() { # name logfile
    local name=$1 logf=$2 port
    for port in "$TCP_PORT" "$TLS_PORT"; do
        if port_listening "$port"; then
            echo "port $port is already in use" >&2
            exit 1
        fi
    done
    if [ "$name" = ringmq ]; then
        DATA=$(mktemp -d "$TMP/ringmq-data.XXXXXX")
        RUST_LOG=warn "$RINGMQ" --config "$TMP/ringmq.toml" "${CORES_ARGS[@]}" --data-dir "$DATA" > "$logf" 2>&1 &
    else
        mosquitto -c "$TMP/mosquitto.conf" > "$logf" 2>&1 &
    fi
    BROKER_PID=$!
    timeout 10 bash -c "until ss -Hltn 'sport = :$TCP_PORT' | grep -q . && ss -Hltn 'sport = :$TLS_PORT' | grep -q .; do sleep 0.05; done" || {
        echo "$name did not start listening on $TCP_PORT and $TLS_PORT; its log:" >&2
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
    timeout 30 bash -c "while ss -Hltn 'sport = :$TCP_PORT or sport = :$TLS_PORT' | grep -q .; do sleep 0.05; done" || true
}

cleanup() {
    stop_broker
    rm -rf "$TMP"
}
trap cleanup EXIT

# Nanoseconds all threads of process $1 have run, and waited runnable for a CPU.
sched() { cat /proc/"$1"/task/*/schedstat 2> /dev/null | awk '{r += $1; w += $2} END {printf "%.0f %.0f\n", r, w}'; }

# run NAME BROKER TRANSPORT BENCH-ARGS...: a fresh broker, one ringmq-bench run over TCP or
# TLS, its JSON line kept with the run's name and transport, and how long the broker ran and
# waited for a CPU (runnable, not running) during the run: on this shared machine the second
# says how much the other load held the broker back.
run() {
    local name=$1 broker=$2 transport=$3
    shift 3
    local net=(--port "$TCP_PORT")
    if [ "$transport" = tls ]; then
        net=(--port "$TLS_PORT" --tls --cafile "$PKI/ca.crt")
    fi
    start_broker "$broker" "$OUT/$name.log"
    local txt="$OUT/$name.txt" s0 s1
    s0=$(sched "$BROKER_PID")
    if ! timeout 300 "$BENCH" "$@" "${net[@]}" --broker-pid "$BROKER_PID" --label "$broker" \
        > "$txt" 2> "$OUT/$name.progress"; then
        echo "ringmq-bench failed against $broker ($name); output:" >&2
        cat "$txt" "$OUT/$name.progress" >&2
        exit 1
    fi
    s1=$(sched "$BROKER_PID")
    stop_broker
    grep -v '^{' "$txt" | sed 's/^/    /' >&2
    grep '^{' "$txt" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
r["run"], r["transport"], r["case"] = sys.argv[1:4]
(r0, w0), (r1, w1) = (map(int, x.split()) for x in sys.argv[4:6])
r["broker_sched_run_s"], r["broker_sched_wait_s"] = (r1 - r0) / 1e9, (w1 - w0) / 1e9
print(json.dumps(r))' "$name" "$transport" "${name%%-*}" "$s0" "$s1" >> "$RESULTS"
}

MSG_ARGS=(--payload-bytes 64 --duration-secs "$DURATION" --drain-idle-ms 500 --drain-max-secs 5)
for rep in $(seq 1 "$REPS"); do
    if [ $((rep % 2)) -eq 1 ]; then
        order="ringmq mosquitto" transports="tcp tls"
    else
        order="mosquitto ringmq" transports="tls tcp"
    fi
    for broker in $order; do
        for transport in $transports; do
            log "run $rep of $REPS: $broker over $transport, $N connections"
            run "conn-$broker-$transport-$rep" "$broker" "$transport" \
                conn --connections "$N" --hold-secs 1 --workers 2
            log "run $rep of $REPS: $broker over $transport, p2p QoS 1"
            run "p2p-$broker-$transport-$rep" "$broker" "$transport" \
                p2p --qos 1 --pairs 100 "${MSG_ARGS[@]}"
            log "run $rep of $REPS: $broker over $transport, fanin QoS 0"
            run "fanin-$broker-$transport-$rep" "$broker" "$transport" \
                fanin --qos 0 --publishers 100 "${MSG_ARGS[@]}"
        done
    done
done

echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/machine.txt"

python3 - "$RESULTS" "$N" "$RINGMQ_CORES" "$KEY" > "$OUT/table.md" << 'EOF'
import json, statistics, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
n, cores, key = int(sys.argv[2]), sys.argv[3], sys.argv[4]
brokers = ("ringmq", "mosquitto")
name = {"ringmq": "ringmq", "mosquitto": "Mosquitto"}

def runs(case, broker, transport):
    return [r for r in rows if r["case"] == case and r["broker"] == broker and r["transport"] == transport]

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def fmt(x, d=0):
    return "n/a" if x is None else f"{x:,.{d}f}"

def ratio(a, b):
    return "n/a" if not a or not b else f"{a / b:.2f}"

# (label, case, value of one run, digits, higher is better)
measures = [
    ("CONNACKs/s", "conn", lambda r: r["connects_per_s"], 0),
    ("CONNACK p99 (ms)", "conn", lambda r: r["connack_latency_us"]["p99"] / 1000, 1),
    ("broker CPU per connection (µs)", "conn", lambda r: r["broker_cpu_us_per_connect"], 1),
    ("broker RSS per connection, held (bytes)", "conn", lambda r: r["broker_rss_per_conn_bytes"], 0),
    ("p2p QoS 1, 100 pairs: deliveries/s", "p2p", lambda r: r["deliveries_per_s"], 0),
    ("p2p QoS 1: **deliveries per broker CPU-second**", "p2p", lambda r: r["broker_deliveries_per_cpu_s"], 0),
    ("fanin QoS 0, 100 → 1: deliveries/s", "fanin", lambda r: r["deliveries_per_s"], 0),
    ("fanin QoS 0: **deliveries per broker CPU-second**", "fanin", lambda r: r["broker_deliveries_per_cpu_s"], 0),
]
# Share of the broker's runnable time spent waiting for a CPU (other load), per case.
def waited(r):
    if "broker_sched_wait_s" not in r:
        return None
    total = r.get("broker_sched_run_s", 0) + r.get("broker_sched_wait_s", 0)
    return 100 * r["broker_sched_wait_s"] / total if total > 0 else None
for case in ("conn", "p2p", "fanin"):
    measures.append((f"{case}: broker waiting for a CPU (% of its runnable time)", case, waited, 0))

print(f"| measure | ringmq TCP | ringmq TLS | ringmq TLS / TCP | Mosquitto TCP | Mosquitto TLS | Mosquitto TLS / TCP | ringmq / Mosquitto, TCP | ringmq / Mosquitto, TLS |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for label, case, f, d in measures:
    m = {}
    cells = []
    for b in brokers:
        for t in ("tcp", "tls"):
            vals = [f(r) for r in runs(case, b, t)]
            m[b, t] = med(vals)
            each = " / ".join(fmt(v, d) for v in vals)
            cells.append(f"{fmt(m[b, t], d)} ({each})")
        cells.append(ratio(m[b, "tls"], m[b, "tcp"]) if f is not waited else "")
    line = [cells[0], cells[1], cells[2], cells[3], cells[4], cells[5]]
    if f is waited:
        line += ["", ""]
    else:
        line.append(ratio(m["ringmq", "tcp"], m["mosquitto", "tcp"]))
        line.append(ratio(m["ringmq", "tls"], m["mosquitto", "tls"]))
    print(f"| {label} | " + " | ".join(line) + " |")

bad = []
for r in rows:
    if r["case"] == "conn":
        if r["failed"] or sum(r["closed_while_held"].values()):
            bad.append(f"{r['run']}: {r['failed']} failed ({r['failures']}), closed while held {r['closed_while_held']}")
    elif r["lost"] or r["duplicated"] or r["reordered"] or r["errors"]:
        bad.append(f"{r['run']}: lost {r['lost']}, duplicated {r['duplicated']}, reordered {r['reordered']}, errors {r['errors']}")
reps = max(len(runs("conn", b, t)) for b in brokers for t in ("tcp", "tls"))
print()
print(f"Medians of {reps} runs per broker and transport (individual runs in parentheses), each on a "
      "fresh broker, alternating which broker goes first. ringmq "
      + ("with all cores" if cores == "default" else f"with --cores {cores}")
      + f"; Mosquitto single-threaded. TLS: {'ECDSA P-256' if key == 'ec' else 'RSA 2048'} server "
      "certificate from a throw-away CA, the generator verifies it; a full handshake per connection "
      f"(no resumption). conn: {n:,} connections, 100 handshakes in flight, 2 generator processes; "
      "CONNACK latency from connect() to CONNACK, the TLS handshake included. Deliveries per broker "
      "CPU-second: deliveries / broker user+system CPU time over the measured window. Ratio columns: "
      "TLS / TCP is the cost of TLS for one broker (below 1: fewer per second or per CPU-second; "
      "above 1 for latency and CPU per connection: more). Waiting for a CPU: the broker's threads' "
      "run-queue wait over the whole run (/proc/PID/task/*/schedstat), as a share of their "
      "running + waiting time: what other load on the machine took from the broker.")
print()
print("Loss, duplicates, reordering, failed or dropped connections: " + ("none." if not bad else "; ".join(bad)))
EOF

echo
cat "$OUT/machine.txt"
echo
cat "$OUT/table.md"
