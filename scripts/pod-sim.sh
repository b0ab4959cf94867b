#!/usr/bin/env bash
# A Kubernetes pod with Outrider as its transparent sidecar, simulated on one Linux machine
# (root: network namespaces, veth, iptables). Nothing outside the two namespaces is touched.
#
#   client namespace orcli-ID  10.77.0.1/24  ──veth──  10.77.0.2/24  pod namespace orpod-ID
#     "external service"  10.77.0.1:9090               app        127.0.0.1:8080 (root)
#                                                      outrider   uid 65534 (nobody)
#                                                        inbound  0.0.0.0:15006   -> 127.0.0.1:8080
#                                                        outbound 127.0.0.1:15001 -> original destination
#                                                        admin    0.0.0.0:15000
#                                                      `outrider iptables --uid 65534 --apply`
#
# A client in orcli-ID calling 10.77.0.2:8080 (the app's port) is redirected to the inbound
# listener; the app's own call to 10.77.0.1:9090 (GET /call-out) is redirected to the outbound
# listener, which forwards it to 10.77.0.1:9090; Outrider's own connections are not redirected.
#
#   scripts/pod-sim.sh up [ID]     start it (ID: 4 hex digits, random by default); prints what to try
#   scripts/pod-sim.sh down [ID]   stop what `up ID` started and delete its namespaces
#                                  (no ID: every simulation `up` left running)
#   scripts/pod-sim.sh run-demo    up, a few curls from the client namespace, the access log, down
#
# State (config, logs, pids) lives in /tmp/outrider-pod-sim.ID. Env: OUTRIDER_BIN (default
# .build/release/outrider), PYTHON (default python3).
# Tests/integration/test_pod.py builds the same pod from Python and asserts on it.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"

BIN="${OUTRIDER_BIN:-$REPO/.build/release/outrider}"
PY="${PYTHON:-python3}"
NOBODY=65534
POD_IP=10.77.0.2
CLI_IP=10.77.0.1
EXT_PORT=9090
APP_PORT=8080
STATE_PREFIX=/tmp/outrider-pod-sim.

die() { echo "pod-sim: $*" >&2; exit 1; }
say() { echo "pod-sim: $*" >&2; }

need_root() {
  [ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, veth, iptables)"
  for t in ip iptables-restore setpriv curl "$PY"; do
    command -v "$t" >/dev/null 2>&1 || die "'$t' not found (scripts/install-deps.sh --apt-only installs iproute2, iptables, curl)"
  done
  [ -x "$BIN" ] || die "no outrider binary at $BIN (set OUTRIDER_BIN)"
}

names() {  # ID -> namespace, veth and state names
  ID="$1"
  [[ "$ID" =~ ^[0-9a-f]{4}$ ]] || die "ID must be 4 hex digits, got '$ID'"
  POD_NS="orpod-$ID"; CLI_NS="orcli-$ID"
  POD_IF="orp-$ID"; CLI_IF="orc-$ID"
  STATE="$STATE_PREFIX$ID"
}

write_servers() {  # the app (pod) and the external service (client namespace); as in test_pod.py
  cat >"$STATE/app.py" <<'EOF'
"""The pod's app on 127.0.0.1:PORT: /call-out[?sleep=MS] calls http://EXT/ext (the app's own
outbound call, which iptables sends to the outbound listener); /slow?ms=MS; anything else echoes."""
import http.client, json, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

PORT, EXT, LOG = int(sys.argv[1]), sys.argv[2], sys.argv[3]
lock = threading.Lock()

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 65536  # head and body in one write (flushed after each request)

    def do_GET(self):
        u = urlsplit(self.path)
        q = parse_qs(u.query)
        out = {"app": "pod-app", "path": self.path, "headers": dict(self.headers.items())}
        if u.path == "/call-out":
            time.sleep(int(q.get("sleep", ["0"])[0]) / 1000)
            host, port = EXT.rsplit(":", 1)
            try:
                c = http.client.HTTPConnection(host, int(port), timeout=5)
                c.request("GET", "/ext" + ("?" + u.query if u.query else ""), headers={"x-from": "pod-app"})
                r = c.getresponse()
                data = r.read()
                c.close()
                out["ext_status"] = r.status
                out["ext"] = json.loads(data) if r.status == 200 else data.decode(errors="replace")
            except Exception as e:
                out["ext_status"] = 0
                out["ext"] = repr(e)
        elif u.path == "/slow":
            time.sleep(int(q.get("ms", ["500"])[0]) / 1000)
        with lock, open(LOG, "a") as f:
            f.write(json.dumps({"path": self.path, "peer": self.client_address[0],
                                "xff": self.headers.get("x-forwarded-for")}) + "\n")
        body = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass

class S(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

S(("127.0.0.1", PORT), H).serve_forever()
EOF
  cat >"$STATE/ext.py" <<'EOF'
"""The "external service" outside the pod: answers JSON with what it received, logs each request."""
import json, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST, PORT, LOG = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lock = threading.Lock()

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 65536

    def do_GET(self):
        rec = {"ext": True, "path": self.path, "peer": self.client_address[0],
               "headers": dict(self.headers.items())}
        with lock, open(LOG, "a") as f:
            f.write(json.dumps(rec) + "\n")
        body = json.dumps(rec).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass

class S(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

S((HOST, PORT), H).serve_forever()
EOF
}

write_config() {
  cat >"$STATE/outrider.yaml" <<EOF
# pod-sim: Outrider as a transparent sidecar (runs as uid $NOBODY; iptables --uid $NOBODY)
workers: 1
log_level: info
admin: { address: 0.0.0.0:15000 }
access_log: { format: json, path: $STATE/access.log }
drain: { delay: 1s, timeout: 10s }
listeners:
  - name: inbound
    address: 0.0.0.0:15006
    direction: inbound
    protocols: [http1]
    routes:
      - name: app
        match: { path_prefix: / }
        cluster: app
  - name: outbound
    address: 127.0.0.1:15001
    direction: outbound
    protocols: [http1]
    original_destination: true
    routes:
      - name: passthrough
        match: { path_prefix: / }
        cluster: passthrough
clusters:
  - name: app
    endpoints: [127.0.0.1:$APP_PORT]
    connect_timeout: 1s
  - name: passthrough            # the original destination replaces this endpoint
    endpoints: [127.0.0.1:9]
    connect_timeout: 1s
EOF
}

start_bg() {  # NAME CMD...: start detached, remember the pid
  local name="$1"; shift
  setsid "$@" >"$STATE/$name.stdout" 2>"$STATE/$name.stderr" </dev/null &
  echo $! >"$STATE/$name.pid"
}

wait_http() {  # NS URL: until it answers (any status)
  local ns="$1" url="$2"
  for _ in $(seq 1 100); do
    if ip netns exec "$ns" curl -s --noproxy '*' -o /dev/null -m 1 "$url"; then return 0; fi
    sleep 0.05
  done
  return 1
}

cmd_up() {
  need_root
  local id="${1:-$(od -An -N2 -tx2 /dev/urandom | tr -d ' \n')}"
  names "$id"
  [ ! -e "$STATE" ] || die "$STATE exists: scripts/pod-sim.sh down $ID first"
  ip netns list | grep -qE "^($POD_NS|$CLI_NS)( |$)" && die "namespace $POD_NS or $CLI_NS already exists"
  mkdir -m 0755 "$STATE"
  trap 'rc=$?; if [ "$rc" -ne 0 ]; then say "up failed; cleaning up"; cmd_down_one "$ID"; fi' EXIT

  ip netns add "$POD_NS"
  ip netns add "$CLI_NS"
  ip link add "$POD_IF" type veth peer name "$CLI_IF"
  ip link set "$POD_IF" netns "$POD_NS"
  ip link set "$CLI_IF" netns "$CLI_NS"
  ip -n "$POD_NS" addr add "$POD_IP/24" dev "$POD_IF"
  ip -n "$CLI_NS" addr add "$CLI_IP/24" dev "$CLI_IF"
  for ns in "$POD_NS" "$CLI_NS"; do ip -n "$ns" link set lo up; done
  ip -n "$POD_NS" link set "$POD_IF" up
  ip -n "$CLI_NS" link set "$CLI_IF" up

  write_servers
  write_config
  : >"$STATE/access.log"; : >"$STATE/app.log"; : >"$STATE/ext.log"
  chown "$NOBODY:$NOBODY" "$STATE/access.log"
  chmod 0644 "$STATE/outrider.yaml"
  setpriv --reuid=$NOBODY --regid=$NOBODY --clear-groups -- "$BIN" version >/dev/null 2>&1 \
    || die "$BIN cannot be run by uid $NOBODY (copy it somewhere world-readable and set OUTRIDER_BIN)"
  "$BIN" validate --config "$STATE/outrider.yaml" >/dev/null

  # the init container's job first, as in a pod
  ip netns exec "$POD_NS" "$BIN" iptables --inbound-port 15006 --outbound-port 15001 --uid $NOBODY --apply \
    >"$STATE/iptables.rules"
  start_bg ext ip netns exec "$CLI_NS" "$PY" "$STATE/ext.py" "$CLI_IP" "$EXT_PORT" "$STATE/ext.log"
  start_bg app ip netns exec "$POD_NS" "$PY" "$STATE/app.py" "$APP_PORT" "$CLI_IP:$EXT_PORT" "$STATE/app.log"
  # `ip netns exec` and setpriv exec: the pid recorded is outrider's own
  start_bg outrider ip netns exec "$POD_NS" setpriv --reuid=$NOBODY --regid=$NOBODY --clear-groups -- \
    "$BIN" run --config "$STATE/outrider.yaml"
  wait_http "$CLI_NS" "http://$CLI_IP:$EXT_PORT/" || die "external service did not start: $(cat "$STATE/ext.stderr")"
  wait_http "$POD_NS" "http://127.0.0.1:$APP_PORT/" || die "app did not start: $(cat "$STATE/app.stderr")"
  wait_http "$POD_NS" "http://127.0.0.1:15000/ready" || die "outrider did not start: $(tail -5 "$STATE/outrider.stderr")"
  : >"$STATE/app.log"; : >"$STATE/ext.log"   # forget the start-up probes
  trap - EXIT

  cat >&2 <<EOF
pod-sim: up, id $ID (state in $STATE)
  inbound through the sidecar:   ip netns exec $CLI_NS curl -s http://$POD_IP:$APP_PORT/hello
  the app's own outbound call:   ip netns exec $CLI_NS curl -s http://$POD_IP:$APP_PORT/call-out
  admin:                         ip netns exec $CLI_NS curl -s http://$POD_IP:15000/ready
  access log / logs:             $STATE/access.log, $STATE/outrider.stderr, app.log, ext.log
  rules:                         ip netns exec $POD_NS iptables-save -t nat
  drain:                         kill -TERM \$(cat $STATE/outrider.pid)
  stop:                          scripts/pod-sim.sh down $ID
EOF
  echo "$ID"
}

kill_recorded() {  # NAME: stop the process `up` started, if it is still that process
  local pidf="$STATE/$1.pid" pid
  [ -f "$pidf" ] || return 0
  pid="$(cat "$pidf")"
  if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] \
     && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF "$STATE/"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidf"
}

cmd_down_one() {
  names "$1"
  kill_recorded outrider
  kill_recorded app
  kill_recorded ext
  # deleting the pod namespace removes its veth end, which removes the peer too
  ip netns delete "$POD_NS" 2>/dev/null || true
  ip netns delete "$CLI_NS" 2>/dev/null || true
  rm -rf "$STATE"
  say "down: $POD_NS, $CLI_NS removed"
}

cmd_down() {
  [ "$(id -u)" -eq 0 ] || die "needs root"
  if [ $# -ge 1 ]; then cmd_down_one "$1"; return; fi
  local found=0 d
  for d in "$STATE_PREFIX"????; do
    [ -d "$d" ] || continue
    found=1
    cmd_down_one "${d#"$STATE_PREFIX"}"
  done
  [ "$found" -eq 1 ] || say "down: nothing to stop"
}

cmd_run_demo() {
  local id
  id="$(od -An -N2 -tx2 /dev/urandom | tr -d ' \n')"
  cmd_up "$id" >/dev/null
  names "$id"
  trap 'cmd_down_one "$ID"' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  local c=(ip netns exec "$CLI_NS" curl -sS --noproxy '*' -m 5)
  echo "== inbound: client -> $POD_IP:$APP_PORT/hello (redirected to :15006)"
  "${c[@]}" "http://$POD_IP:$APP_PORT/hello"; echo
  echo "== outbound: client -> /call-out; the app calls $CLI_IP:$EXT_PORT/ext (redirected to :15001)"
  "${c[@]}" "http://$POD_IP:$APP_PORT/call-out"; echo
  echo "== admin /ready from the client namespace"
  "${c[@]}" -w ' %{http_code}\n' "http://$POD_IP:15000/ready"
  sleep 0.3
  echo "== access log"
  cat "$STATE/access.log"
  echo "== external service saw"
  cat "$STATE/ext.log"
  echo "== drain: SIGTERM"
  local pid; pid="$(cat "$STATE/outrider.pid")"
  kill -TERM "$pid"
  "${c[@]}" -w ' %{http_code}\n' "http://$POD_IP:15000/ready" || true
  for _ in $(seq 1 240); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  if kill -0 "$pid" 2>/dev/null; then echo "outrider still running 12 s after SIGTERM"; else echo "outrider exited"; fi
  tail -3 "$STATE/outrider.stderr"
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;          # stdout: the ID
  down) shift; cmd_down "$@" ;;
  run-demo) need_root; cmd_run_demo ;;
  *) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
