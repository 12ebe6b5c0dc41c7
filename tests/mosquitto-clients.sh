#!/usr/bin/env bash
# Interoperability check with the Eclipse Mosquitto command-line clients (mosquitto_pub and
# mosquitto_sub, Debian package `mosquitto-clients`): starts the broker (release build, two
# cores) on a loopback port and checks, in MQTT 3.1.1 and MQTT 5, delivery at QoS 0, 1 and 2,
# retained messages (set, delivered flagged, cleared) and the will (published when the client
# dies or, in MQTT 5, disconnects with reason 0x04; not after a normal DISCONNECT); then, against
# a second broker with a password file made by `ringmq passwd` (and `mosquitto_passwd` when
# installed), `-u`/`-P` logins accepted, wrong passwords and anonymous clients refused; then,
# against a third broker with TLS listeners and certificates made with openssl: `--cafile`
# delivery, a client trusting another CA refusing the server, client certificates accepted
# from the CA with their CN as the ACL's user, refused when missing or from another CA.
# Every client runs under `timeout` or is killed. Exits non-zero on the first failure.
#
#   tests/mosquitto-clients.sh            # port 18830, or RINGMQ_PORT
set -euo pipefail
cd "$(dirname "$0")/.."

PORT="${RINGMQ_PORT:-18830}"
HOST=127.0.0.1
WORK="$(mktemp -d)"
BROKER_PID=""

cleanup() {
  # Only what this script started: the broker and any client still running in the background.
  if [[ -n "$BROKER_PID" ]]; then kill "$BROKER_PID" 2>/dev/null || true; fi
  local jobs_left
  jobs_left="$(jobs -p)"
  if [[ -n "$jobs_left" ]]; then kill $jobs_left 2>/dev/null || true; fi
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  if [[ -f "$WORK/broker.log" ]]; then
    echo "--- broker log (last lines)" >&2
    tail -n 20 "$WORK/broker.log" >&2
  fi
  exit 1
}
pass() { echo "ok: $*"; }

for tool in mosquitto_pub mosquitto_sub timeout; do
  command -v "$tool" >/dev/null || fail "$tool not found (apt-get install -y mosquitto-clients)"
done

echo "building the broker (release)"
timeout 900 cargo build --release -q -p ringmq --bin ringmq

timeout 300 cargo run --release -q -p ringmq --bin ringmq -- \
  --listen "$HOST:$PORT" --cores 2 --log-level warn --data-dir "$WORK/data" >"$WORK/broker.log" 2>&1 &
BROKER_PID=$!
for _ in $(seq 1 100); do
  grep -q "ringmq listening on" "$WORK/broker.log" 2>/dev/null && break
  kill -0 "$BROKER_PID" 2>/dev/null || fail "broker exited at start"
  sleep 0.1
done
grep -q "ringmq listening on $HOST:$PORT" "$WORK/broker.log" || fail "broker did not listen on $PORT"
pass "broker listening on $HOST:$PORT"

pub() { timeout 10 mosquitto_pub -h "$HOST" -p "$PORT" "$@"; }
sub() { timeout 10 mosquitto_sub -h "$HOST" -p "$PORT" "$@"; }

# Starts a subscriber for one message in the background, then publishes (repeating while the
# subscriber has not got it yet, which also covers the time it takes to subscribe) and checks
# the line it printed.
#   deliver VERSION QOS_SUB QOS_PUB TOPIC PAYLOAD EXPECTED_LINE
deliver() {
  local v=$1 qsub=$2 qpub=$3 topic=$4 payload=$5 expected=$6
  local out="$WORK/deliver.out"
  : >"$out"
  sub -V "$v" -i "mc-sub-$v-$qsub-$qpub" -q "$qsub" -t "$topic" -C 1 -F '%q %r %t %p' >"$out" &
  local sub_pid=$!
  for _ in $(seq 1 50); do
    kill -0 "$sub_pid" 2>/dev/null || break
    pub -V "$v" -i "mc-pub-$v" -q "$qpub" -t "$topic" -m "$payload" || fail "$v: mosquitto_pub failed"
    sleep 0.1
  done
  wait "$sub_pid" || fail "$v: subscriber (QoS $qsub) did not get a message on $topic"
  [[ "$(cat "$out")" == "$expected" ]] ||
    fail "$v: QoS $qpub to a QoS $qsub subscription: got '$(cat "$out")', expected '$expected'"
  pass "$v: published at QoS $qpub, received '$expected'"
}

for V in mqttv311 mqttv5; do
  # QoS 0, 1, 2 both ways; a QoS 1 subscription receives a QoS 2 message at QoS 1.
  for Q in 0 1 2; do
    deliver "$V" "$Q" "$Q" "mc/$V/q$Q" "payload-$Q" "$Q 0 mc/$V/q$Q payload-$Q"
  done
  deliver "$V" 1 2 "mc/$V/down" "down" "1 0 mc/$V/down down"

  # Retained: set, replace, delivered flagged to a new subscriber, cleared.
  pub -V "$V" -q 1 -r -t "mc/$V/ret" -m first || fail "$V: retained publish"
  pub -V "$V" -q 1 -r -t "mc/$V/ret" -m second || fail "$V: retained publish"
  got="$(sub -V "$V" -q 1 -t "mc/$V/ret" -C 1 -W 5 -F '%r %p')" || fail "$V: no retained message"
  [[ "$got" == "1 second" ]] || fail "$V: retained: got '$got', expected '1 second'"
  pass "$V: retained message replaced and delivered with RETAIN set"
  pub -V "$V" -q 1 -r -t "mc/$V/ret" -n || fail "$V: clearing publish"
  got="$(sub -V "$V" -q 1 -t "mc/$V/ret" -C 1 -W 1 -F '%r %p' 2>/dev/null || true)"
  [[ -z "$got" ]] || fail "$V: retained message not cleared: '$got'"
  pass "$V: retained message cleared by an empty payload"

  # Will: published when the client dies (SIGKILL: no DISCONNECT), not after a normal
  # DISCONNECT (mosquitto_sub -C 1 exits normally after its message). The watcher takes the
  # first message on the will topic: "polite" would come before "rude".
  sub -V "$V" -q 1 -t "mc/$V/will" -C 1 -W 8 -F '%t %p' >"$WORK/will.out" &
  watcher=$!
  sleep 0.5 # the watcher has subscribed
  timeout 10 mosquitto_sub -h "$HOST" -p "$PORT" -V "$V" -i "mc-polite-$V" -t "mc/$V/polite" \
    -C 1 --will-topic "mc/$V/will" --will-payload polite --will-qos 1 >/dev/null &
  polite=$!
  for _ in $(seq 1 50); do
    kill -0 "$polite" 2>/dev/null || break
    pub -V "$V" -t "mc/$V/polite" -m bye
    sleep 0.1
  done
  wait "$polite" || fail "$V: the polite client did not exit normally"
  sleep 0.5
  # Not under `timeout`: SIGKILL must reach mosquitto_sub itself (it is killed right away).
  mosquitto_sub -h "$HOST" -p "$PORT" -V "$V" -i "mc-rude-$V" -t "mc/$V/idle" \
    --will-topic "mc/$V/will" --will-payload rude --will-qos 1 &
  rude=$!
  sleep 0.5
  kill -KILL "$rude"
  wait "$rude" 2>/dev/null || true
  wait "$watcher" || fail "$V: will not published after the client was killed"
  [[ "$(cat "$WORK/will.out")" == "mc/$V/will rude" ]] ||
    fail "$V: will: got '$(cat "$WORK/will.out")', expected 'mc/$V/will rude'"
  pass "$V: will published when the client died, not after a normal DISCONNECT"

  # SIGINT: mosquitto_sub sends DISCONNECT; in MQTT 5 with reason 0x04 (Disconnect with Will
  # Message), so the will is published; in 3.1.1 a plain DISCONNECT, so it is not.
  sub -V "$V" -q 1 -t "mc/$V/will2" -C 1 -W 3 -F '%p' >"$WORK/will2.out" 2>/dev/null &
  watcher=$!
  sleep 0.5
  timeout 10 mosquitto_sub -h "$HOST" -p "$PORT" -V "$V" -i "mc-int-$V" -t "mc/$V/idle" \
    --will-topic "mc/$V/will2" --will-payload interrupted --will-qos 1 &
  interrupted=$!
  sleep 0.5
  kill -INT "$interrupted"
  wait "$interrupted" 2>/dev/null || true
  wait "$watcher" 2>/dev/null || true
  got="$(cat "$WORK/will2.out")"
  if [[ "$V" == mqttv5 ]]; then
    [[ "$got" == interrupted ]] || fail "$V: DISCONNECT 0x04 did not publish the will ('$got')"
    pass "$V: DISCONNECT with reason 0x04 published the will"
  else
    [[ -z "$got" ]] || fail "$V: will published after a normal DISCONNECT ('$got')"
    pass "$V: no will after DISCONNECT"
  fi
done

kill -0 "$BROKER_PID" 2>/dev/null || fail "the broker died"
pass "broker still running"

# Authentication: a second broker with allow_anonymous = false and a password file written by
# `ringmq passwd` (one user) and by `mosquitto_passwd` (another, when it is installed).
AUTH_PORT=$((PORT + 1))
RINGMQ=target/release/ringmq
"$RINGMQ" passwd -c -b "$WORK/passwd" ringuser 'ring pw' 2>/dev/null || fail "ringmq passwd -c"
if command -v mosquitto_passwd >/dev/null; then
  mosquitto_passwd -b "$WORK/passwd" mosquser 'mosq pw' || fail "mosquitto_passwd on our file"
fi
printf 'allow_anonymous = false\n[auth]\npassword_file = "%s"\n' "$WORK/passwd" >"$WORK/auth.toml"
timeout 300 "$RINGMQ" --config "$WORK/auth.toml" --listen "$HOST:$AUTH_PORT" --cores 2 --data-dir "$WORK/data-auth" \
  --log-level warn >"$WORK/auth-broker.log" 2>&1 &
AUTH_PID=$!
for _ in $(seq 1 100); do
  grep -q "ringmq listening on" "$WORK/auth-broker.log" 2>/dev/null && break
  kill -0 "$AUTH_PID" 2>/dev/null || fail "the auth broker exited at start"
  sleep 0.1
done
auth_deliver() { # VERSION USER PASSWORD
  local v=$1 user=$2 password=$3 out="$WORK/auth.out"
  : >"$out"
  timeout 10 mosquitto_sub -h "$HOST" -p "$AUTH_PORT" -V "$v" -u "$user" -P "$password" \
    -t "auth/$v" -C 1 -W 8 >"$out" &
  local sub_pid=$!
  for _ in $(seq 1 50); do
    kill -0 "$sub_pid" 2>/dev/null || break
    timeout 10 mosquitto_pub -h "$HOST" -p "$AUTH_PORT" -V "$v" -u "$user" -P "$password" \
      -t "auth/$v" -m "hello $user" || { kill "$AUTH_PID"; fail "$v: $user refused"; }
    sleep 0.1
  done
  wait "$sub_pid" || { kill "$AUTH_PID"; fail "$v: $user's subscriber got nothing"; }
  [[ "$(cat "$out")" == "hello $user" ]] || { kill "$AUTH_PID"; fail "$v: got '$(cat "$out")'"; }
  pass "$v: -u $user -P ... accepted (password file by ${4})"
}
for V in mqttv311 mqttv5; do
  auth_deliver "$V" ringuser 'ring pw' "ringmq passwd"
  if grep -q '^mosquser:' "$WORK/passwd"; then
    auth_deliver "$V" mosquser 'mosq pw' "mosquitto_passwd"
  fi
  if timeout 10 mosquitto_pub -h "$HOST" -p "$AUTH_PORT" -V "$V" -u ringuser -P wrong \
    -t "auth/$V" -m x 2>"$WORK/refused.err"; then
    kill "$AUTH_PID"
    fail "$V: a wrong password was accepted"
  fi
  grep -qi "not authori\|bad user name or password\|refused" "$WORK/refused.err" ||
    { kill "$AUTH_PID"; fail "$V: unexpected error for a wrong password: $(cat "$WORK/refused.err")"; }
  pass "$V: a wrong password is refused ($(head -n 1 "$WORK/refused.err"))"
  if timeout 10 mosquitto_pub -h "$HOST" -p "$AUTH_PORT" -V "$V" -t "auth/$V" -m x 2>/dev/null; then
    kill "$AUTH_PID"
    fail "$V: an anonymous client was accepted"
  fi
  pass "$V: an anonymous client is refused"
done
kill "$AUTH_PID"

# TLS: a CA, a server certificate for 127.0.0.1 and a client certificate made with openssl; a
# third broker with a TLS listener (server certificate only) and a TLS listener that requires
# client certificates from the CA and takes their CN as the username (an ACL grants a topic
# to that CN only).
TLS_PORT=$((PORT + 2))
MTLS_PORT=$((PORT + 3))
command -v openssl >/dev/null || fail "openssl not found (apt-get install -y openssl)"
PKI="$WORK/pki"
mkdir -p "$PKI"
ossl() { openssl "$@" >>"$PKI/openssl.log" 2>&1 || fail "openssl $1 failed: $(tail -n 3 "$PKI/openssl.log")"; }
make_ca() { # NAME: a self-signed CA in $PKI/NAME.crt and .key
  ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout "$PKI/$1.key" -out "$PKI/$1.crt" -subj "/CN=ringmq test $1" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
}
make_leaf() { # NAME CN CA EXTENSIONS: a certificate signed by CA
  ossl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$PKI/$1.key" -out "$PKI/$1.csr" -subj "/CN=$2"
  printf '%b' "$4" >"$PKI/$1.ext"
  ossl x509 -req -in "$PKI/$1.csr" -CA "$PKI/$3.crt" -CAkey "$PKI/$3.key" -CAcreateserial \
    -days 2 -out "$PKI/$1.crt" -extfile "$PKI/$1.ext"
}
make_ca ca
make_ca other-ca
make_leaf server localhost ca 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n'
make_leaf client mc-device ca 'extendedKeyUsage=clientAuth\n'
make_leaf stranger mc-device other-ca 'extendedKeyUsage=clientAuth\n'
printf 'user mc-device\ntopic readwrite devices/mc-device/#\n' >"$WORK/tls.acl"
{
  printf '[auth]\nacl_file = "%s"\n\n' "$WORK/tls.acl"
  printf '[[listeners]]\nbind = "%s:%s"\n[listeners.tls]\ncert_file = "%s"\nkey_file = "%s"\n\n' \
    "$HOST" "$TLS_PORT" "$PKI/server.crt" "$PKI/server.key"
  printf '[[listeners]]\nbind = "%s:%s"\n[listeners.tls]\ncert_file = "%s"\nkey_file = "%s"\n' \
    "$HOST" "$MTLS_PORT" "$PKI/server.crt" "$PKI/server.key"
  printf 'ca_file = "%s"\nuse_identity_as_username = true\n' "$PKI/ca.crt"
} >"$WORK/tls.toml"
timeout 60 "$RINGMQ" check-config --config "$WORK/tls.toml" >/dev/null 2>"$WORK/tls-check.log" ||
  fail "check-config refused the TLS configuration: $(cat "$WORK/tls-check.log")"
timeout 300 "$RINGMQ" --config "$WORK/tls.toml" --cores 2 --data-dir "$WORK/data-tls" \
  --log-level warn >"$WORK/tls-broker.log" 2>&1 &
TLS_PID=$!
for _ in $(seq 1 100); do
  grep -q "ringmq listening on $HOST:$MTLS_PORT" "$WORK/tls-broker.log" 2>/dev/null && break
  kill -0 "$TLS_PID" 2>/dev/null || fail "the TLS broker exited at start: $(cat "$WORK/tls-broker.log")"
  sleep 0.1
done
tls_fail() { kill "$TLS_PID" 2>/dev/null; fail "$@"; }
# Delivery through a subscriber and a publisher with the same TLS options.
#   tls_deliver VERSION PORT TOPIC CLIENT-OPTIONS...
tls_deliver() {
  local v=$1 port=$2 topic=$3 out="$WORK/tls.out"
  shift 3
  : >"$out"
  timeout 10 mosquitto_sub -h "$HOST" -p "$port" -V "$v" "$@" -t "$topic" -C 1 -W 8 >"$out" &
  local sub_pid=$!
  for _ in $(seq 1 50); do
    kill -0 "$sub_pid" 2>/dev/null || break
    timeout 10 mosquitto_pub -h "$HOST" -p "$port" -V "$v" "$@" -t "$topic" -m "over tls $v" ||
      tls_fail "$v: mosquitto_pub over TLS to port $port failed"
    sleep 0.1
  done
  wait "$sub_pid" || tls_fail "$v: the TLS subscriber on port $port got nothing"
  [[ "$(cat "$out")" == "over tls $v" ]] || tls_fail "$v: over TLS got '$(cat "$out")'"
}
for V in mqttv311 mqttv5; do
  # The ACL grants the topic to mc-device only; on the first listener the client names itself
  # (no password file: user names are not checked).
  tls_deliver "$V" "$TLS_PORT" "devices/mc-device/t" --cafile "$PKI/ca.crt" -u mc-device
  pass "$V: mosquitto_pub/sub --cafile over TLS"
  if timeout 10 mosquitto_pub -h "$HOST" -p "$TLS_PORT" -V "$V" --cafile "$PKI/other-ca.crt" \
    -t x -m x 2>/dev/null; then
    tls_fail "$V: a client trusting another CA connected"
  fi
  pass "$V: a client that does not trust the server's CA refuses it"
  tls_deliver "$V" "$MTLS_PORT" "devices/mc-device/t" --cafile "$PKI/ca.crt" \
    --cert "$PKI/client.crt" --key "$PKI/client.key"
  pass "$V: client certificate accepted; its CN (mc-device) is the user the ACL grants"
  if timeout 10 mosquitto_pub -h "$HOST" -p "$MTLS_PORT" -V "$V" --cafile "$PKI/ca.crt" \
    -q 1 -t devices/mc-device/t -m x 2>/dev/null; then
    tls_fail "$V: a client without a certificate was accepted"
  fi
  if timeout 10 mosquitto_pub -h "$HOST" -p "$MTLS_PORT" -V "$V" --cafile "$PKI/ca.crt" \
    --cert "$PKI/stranger.crt" --key "$PKI/stranger.key" -q 1 -t devices/mc-device/t -m x 2>/dev/null; then
    tls_fail "$V: a client with a certificate of another CA was accepted"
  fi
  pass "$V: clients without a certificate, or with one from another CA, are refused"
done
kill -0 "$TLS_PID" 2>/dev/null || fail "the TLS broker died"
kill "$TLS_PID"
echo "all mosquitto client checks passed"
