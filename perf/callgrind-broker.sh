#!/usr/bin/env bash
# Instructions per broker message on the hot path, counted by callgrind: the release broker
# (`--cores 1`, default configuration: storage on, unused by these clean sessions) runs under
# `valgrind --tool=callgrind` while ringmq-bench drives a fixed number of messages through it.
# Each scenario runs twice on a fresh broker, with N and with 2N messages; everything else
# (start-up, connects, subscribes, disconnects, shutdown) is the same in both, so
#
#     instructions per message = (instructions with 2N - instructions with N) / N
#
# and the same difference per function (inclusive, from callgrind_annotate) gives the top
# functions per message. Counts are instructions, independent of the machine's load, but they
# still move a little between runs: how many messages one read or one write carries depends on
# timing. Run it twice and compare.
#
#   perf/callgrind-broker.sh                  both scenarios
#   perf/callgrind-broker.sh fanin            fan-in QoS 0: 100 publishers -> 1 subscriber,
#                                             paced at RINGMQ_CALLGRIND_RATE msgs/s (5000)
#   perf/callgrind-broker.sh p2p1             p2p QoS 1: 10 pairs (publisher i -> subscriber i),
#                                             flat out, 32 unacknowledged per publisher
#
# Fan-in is paced because a QoS 0 publisher that is not is open loop: it writes all N messages
# into its socket at once, the slowed-down broker then reads hundreds of kilobytes per turn and
# drops QoS 0 messages for the subscriber past `write_buffer_high_water_bytes` (its policy).
# The script refuses a run that lost anything. The paced run includes the broker's idle
# wake-ups over its longer duration (N / rate seconds more for 2N): part of the per-message
# cost at that rate.
#
# Needs valgrind (`apt-get install -y valgrind`). Output in perf/out/callgrind-broker-<time>/:
# the callgrind files, the annotations and summary.txt. Environment: RINGMQ_CALLGRIND_MESSAGES
# (N, default 50000), RINGMQ_CALLGRIND_RATE, RINGMQ_CALLGRIND_PORT (18890),
# RINGMQ_CALLGRIND_TOP (25).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install -y valgrind" >&2; exit 2; }
command -v python3 >/dev/null || { echo "python3 is missing" >&2; exit 2; }
n="${RINGMQ_CALLGRIND_MESSAGES:-50000}"
port="${RINGMQ_CALLGRIND_PORT:-18890}"
top="${RINGMQ_CALLGRIND_TOP:-25}"
rate="${RINGMQ_CALLGRIND_RATE:-5000}"
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(fanin p2p1)
out="perf/out/callgrind-broker-$(date +%H%M%S)"
mkdir -p "$out"
ulimit -n "$(ulimit -Hn)"

cargo build --release -q -p ringmq -p ringmq-bench
BENCH=target/release/ringmq-bench

broker=
cleanup() {
    [ -n "$broker" ] && kill -KILL "$broker" 2>/dev/null || true
    jobs -p | xargs -r kill 2>/dev/null || true
}
trap cleanup EXIT

# One broker under callgrind, `count` messages through it; prints the total instructions.
run() { # scenario count
    local scen=$1 count=$2 tag="$1-$2"
    local data="$out/data-$tag" cg="$out/callgrind.$tag"
    rm -rf "$data"
    valgrind --tool=callgrind --callgrind-out-file="$cg" \
        target/release/ringmq --listen "127.0.0.1:$port" --cores 1 --admin-listen 127.0.0.1:0 \
        --data-dir "$data" --log-level error >"$out/broker-$tag.log" 2>&1 &
    broker=$!
    timeout 120 bash -c "until ss -Hltn 'sport = :$port' | grep -q .; do sleep 0.2; done" || {
        echo "the broker under valgrind did not start listening; its log:" >&2
        cat "$out/broker-$tag.log" >&2
        exit 1
    }
    local subs=() pubs k
    local common=(--port "$port" --drain-idle-ms 30000 --duration-secs 600)
    case $scen in
        fanin)
            "$BENCH" sub --qos 0 --subscribers 1 --topic 'bench/fanin/+' --count "$count" \
                "${common[@]}" >"$out/sub-$tag.txt" 2>&1 &
            subs+=($!)
            sleep 3
            "$BENCH" pub --qos 0 --publishers 100 --topic 'bench/fanin/{i}' --count $((count / 100)) \
                --rate "$rate" "${common[@]}" >"$out/pub-$tag.txt" 2>&1
            ;;
        p2p1)
            for k in $(seq 0 9); do
                "$BENCH" sub --qos 1 --subscribers 1 --topic "bench/p2p/$k" --count $((count / 10)) \
                    "${common[@]}" >"$out/sub-$tag-$k.txt" 2>&1 &
                subs+=($!)
            done
            sleep 3
            "$BENCH" pub --qos 1 --publishers 10 --topic 'bench/p2p/{i}' --count $((count / 10)) \
                "${common[@]}" >"$out/pub-$tag.txt" 2>&1
            ;;
        *) echo "unknown scenario $scen (fanin, p2p1)" >&2; exit 2 ;;
    esac
    for k in "${subs[@]}"; do wait "$k"; done
    sleep 1
    # glommio does not stop on SIGTERM under valgrind: dump, then kill.
    callgrind_control -d "$broker" >/dev/null
    sleep 1
    kill -KILL "$broker" 2>/dev/null || true
    wait "$broker" 2>/dev/null || true
    broker=
    local dump
    dump=$(ls "$cg".* 2>/dev/null | head -1)
    [ -n "$dump" ] || { echo "no callgrind dump for $tag" >&2; exit 1; }
    mv "$dump" "$cg"
    local received
    received=$(cat "$out"/sub-"$tag"*.txt | sed -n 's/^{.*"received":\([0-9]*\).*/\1/p' \
        | awk '{ s += $1 } END { print s + 0 }')
    if [ "$received" -lt "$count" ]; then
        echo "$tag: only $received of $count messages delivered; see $out" >&2
        exit 1
    fi
    callgrind_annotate --inclusive=yes --threshold=100 --auto=no "$cg" >"$out/inclusive-$tag.txt"
    callgrind_annotate --threshold=100 --auto=no "$cg" >"$out/self-$tag.txt"
    sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$cg" | head -1
}

for scen in "${scenarios[@]}"; do
    i1=$(run "$scen" "$n")
    i2=$(run "$scen" $((2 * n)))
    python3 - "$scen" "$n" "$i1" "$i2" "$out" "$top" <<'EOF' | tee -a "$out/summary.txt"
import re, sys
scen, n, i1, i2, out, top = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
line = re.compile(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*?)\s*$")
def parse(path):
    costs, started = {}, False
    for l in open(path):
        if l.startswith("-----") and costs == {} and not started:
            continue
        m = line.match(l)
        if m and ":" in m.group(2):
            name = re.sub(r"\s*\[[^\]]*\]$", "", m.group(2))
            name = name.split(":", 1)[1] if not name.startswith("0x") else name
            costs[name] = costs.get(name, 0) + int(m.group(1).replace(",", ""))
    return costs
what = {"fanin": "fan-in QoS 0, 100 publishers -> 1 subscriber, 64 B",
        "p2p1": "p2p QoS 1, 10 pairs, 64 B"}.get(scen, scen)
print(f"{what}: {i1:,} instructions with N = {n:,} messages, {i2:,} with 2N")
per_msg = (i2 - i1) / n
print(f"  instructions per message: {per_msg:,.0f}")
# Thread entry points and recursion copies (name'2) say nothing about the broker.
skip = re.compile(r"^(std::sys|core::ops::function|start_thread|<std::sys|__clone)|'\d+$")
for kind, title in (("self", "self cost (where the instructions are executed)"),
                    ("inclusive", "inclusive cost (with everything they call; recursion counts twice)")):
    c1 = parse(f"{out}/{kind}-{scen}-{n}.txt")
    c2 = parse(f"{out}/{kind}-{scen}-{2 * n}.txt")
    diff = sorted(((c2.get(k, 0) - c1.get(k, 0)) / n, k) for k in c2 if not skip.search(k))
    diff.reverse()
    print(f"  top functions by {title}, instructions per message and share of all:")
    for per, name in diff[:top]:
        print(f"  {per:10,.0f}  {100 * per / per_msg:5.1f}%  {name[:150]}")
print()
EOF
done
echo "callgrind files and annotations in $out"
