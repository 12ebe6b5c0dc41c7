#!/usr/bin/env bash
# A real browser speaks MQTT over WebSocket to the broker: headless Chromium opens a local
# page (file://) that loads the MQTT.js browser bundle (npm package `mqtt`), connects to
# ws://127.0.0.1:PORT/mqtt, subscribes, publishes, receives its own message, writes the
# result into the page and publishes it on `browser/result`. An observer (MQTT.js under
# node, over plain TCP, subscribed before the browser starts) waits for that result: more
# reliable than reading the DOM back (`--dump-dom` returns before the WebSocket is done). Installs what is missing: Debian's `chromium`
# and `nodejs`/`npm` with apt-get, `mqtt` with npm into a temporary directory.
#
# Exits non-zero on failure; bounded in time; cleans up what it started.
#
#   tests/browser-websocket.sh            # ports 18840 (TCP) and 18841 (WebSocket), or RINGMQ_PORT
set -euo pipefail
cd "$(dirname "$0")/.."

PORT="${RINGMQ_PORT:-18840}"
WS_PORT=$((PORT + 1))
HOST=127.0.0.1
WORK="$(mktemp -d)"
BROKER_PID=""
BROWSER_PID=""
OBSERVER_PID=""
MQTT_VERSION="5"

cleanup() {
  if [[ -n "$BROWSER_PID" ]]; then kill -- "-$BROWSER_PID" 2>/dev/null || kill "$BROWSER_PID" 2>/dev/null || true; fi
  if [[ -n "$OBSERVER_PID" ]]; then kill "$OBSERVER_PID" 2>/dev/null || true; fi
  if [[ -n "$BROKER_PID" ]]; then kill "$BROKER_PID" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  for log in broker.log browser.log observer.log; do
    if [[ -s "$WORK/$log" ]]; then
      echo "--- $log (last lines)" >&2
      tail -n 20 "$WORK/$log" >&2
    fi
  done
  exit 1
}
pass() { echo "ok: $*"; }

apt_install() {
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@") >/dev/null 2>&1 ||
    (sleep 5 && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@") >/dev/null ||
    fail "apt-get install $* failed"
}

started=$(date +%s)
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "installing nodejs and npm (apt-get)"
  apt_install nodejs npm
fi
BROWSER="$(command -v chromium || command -v chromium-browser || true)"
if [[ -z "$BROWSER" ]]; then
  echo "installing chromium (apt-get)"
  apt_install chromium
  BROWSER="$(command -v chromium || command -v chromium-browser || true)"
  [[ -n "$BROWSER" ]] || fail "chromium not found after installing it"
fi
echo "installing the mqtt npm package (MQTT.js $MQTT_VERSION) into a temporary directory"
(cd "$WORK" && timeout 300 npm install --no-audit --no-fund --silent --no-package-lock "mqtt@$MQTT_VERSION" >npm.log 2>&1) ||
  fail "npm install mqtt failed: $(tail -n 5 "$WORK/npm.log")"
BUNDLE="$WORK/node_modules/mqtt/dist/mqtt.min.js"
[[ -f "$BUNDLE" ]] || fail "no browser bundle at node_modules/mqtt/dist/mqtt.min.js"
pass "tools ready in $(($(date +%s) - started)) s: node $(node --version), $("$BROWSER" --version 2>/dev/null | head -n 1)"

echo "building the broker (release)"
timeout 900 cargo build --release -q -p ringmq --bin ringmq
cat >"$WORK/ringmq.toml" <<EOF
[[listeners]]
bind = "$HOST:$PORT"

[[listeners]]
bind = "$HOST:$WS_PORT"
[listeners.websocket]
path = "/mqtt"
EOF
timeout 300 target/release/ringmq --config "$WORK/ringmq.toml" --cores 2 --log-level info \
  --data-dir "$WORK/data" >"$WORK/broker.log" 2>&1 &
BROKER_PID=$!
for _ in $(seq 1 100); do
  grep -q "ringmq listening on $HOST:$WS_PORT" "$WORK/broker.log" 2>/dev/null && break
  kill -0 "$BROKER_PID" 2>/dev/null || fail "broker exited at start"
  sleep 0.1
done
grep -q "ringmq listening on $HOST:$WS_PORT (ws /mqtt)" "$WORK/broker.log" ||
  fail "broker did not listen on ws://$HOST:$WS_PORT/mqtt"
pass "broker listening on mqtt://$HOST:$PORT and ws://$HOST:$WS_PORT/mqtt"

# The observer: subscribes to browser/result over TCP before the browser starts.
cat >"$WORK/observer.js" <<'EOF'
const mqtt = require('mqtt');
const [url] = process.argv.slice(2);
const client = mqtt.connect(url, { clientId: 'browser-test-observer', reconnectPeriod: 0 });
const give_up = setTimeout(() => { console.log('observer: no result within the time limit'); process.exit(3); }, 60000);
client.on('error', (e) => { console.log('observer: ' + e.message); process.exit(4); });
client.on('connect', () => {
  client.subscribe('browser/result', { qos: 1 }, (err) => {
    if (err) { console.log('observer: subscribe failed: ' + err.message); process.exit(5); }
    console.log('observer: subscribed');
  });
});
client.on('message', (topic, payload) => {
  clearTimeout(give_up);
  const text = payload.toString();
  console.log('observer: ' + topic + ' ' + text);
  client.end(false, () => process.exit(JSON.parse(text).ok === true ? 0 : 6));
});
EOF
(cd "$WORK" && exec node observer.js "mqtt://$HOST:$PORT" >observer.log 2>&1) &
OBSERVER_PID=$!
for _ in $(seq 1 100); do
  grep -q "observer: subscribed" "$WORK/observer.log" 2>/dev/null && break
  kill -0 "$OBSERVER_PID" 2>/dev/null || fail "the observer exited"
  sleep 0.1
done
grep -q "observer: subscribed" "$WORK/observer.log" || fail "the observer did not subscribe"

# The page: MQTT.js in the browser over WebSocket.
cat >"$WORK/page.html" <<EOF
<!doctype html>
<html><head><meta charset="utf-8"><title>ringmq browser test</title>
<script src="node_modules/mqtt/dist/mqtt.min.js"></script></head>
<body><pre id="result">pending</pre>
<script>
const show = (text) => { document.getElementById('result').textContent = text; };
const done = (client, result) => {
  show(JSON.stringify(result));
  client.publish('browser/result', JSON.stringify(result), { qos: 1 }, () => client.end());
};
const client = mqtt.connect('ws://$HOST:$WS_PORT/mqtt', {
  clientId: 'browser-' + Math.random().toString(16).slice(2), protocolVersion: 5, reconnectPeriod: 0,
});
const sent = 'hello from ' + navigator.userAgent.split(' ').pop();
client.on('error', (e) => show('error: ' + e.message));
client.on('connect', () => {
  client.subscribe('browser/echo', { qos: 1 }, (err) => {
    if (err) { done(client, { ok: false, error: 'subscribe: ' + err.message }); return; }
    client.publish('browser/echo', sent, { qos: 1 });
  });
});
client.on('message', (topic, payload) => {
  if (topic !== 'browser/echo') return;
  const got = new TextDecoder().decode(payload);
  done(client, { ok: got === sent, received: got, userAgent: navigator.userAgent });
});
</script></body></html>
EOF

echo "starting headless chromium on file://$WORK/page.html"
setsid "$BROWSER" --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run \
  --no-default-browser-check --user-data-dir="$WORK/profile" --remote-debugging-port=0 \
  "file://$WORK/page.html" >"$WORK/browser.log" 2>&1 &
BROWSER_PID=$!
browser_started=$(date +%s)

if wait "$OBSERVER_PID"; then
  pass "the browser connected over WebSocket, subscribed, published and received ($(($(date +%s) - browser_started)) s)"
  grep "observer: browser/result" "$WORK/observer.log"
else
  fail "no successful result from the browser: $(tail -n 3 "$WORK/observer.log")"
fi

kill -0 "$BROKER_PID" 2>/dev/null || fail "the broker died"
grep -q "panicked" "$WORK/broker.log" && fail "the broker panicked"
echo "browser WebSocket check passed in $(($(date +%s) - started)) s"
