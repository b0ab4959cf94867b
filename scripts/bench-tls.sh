#!/usr/bin/env bash
# bench-tls.sh - the TLS case of scripts/bench.sh: Outrider against nginx, each terminating TLS
# with the example certificate (config/examples/tls/server.crt, EC P-256) in front of the same
# upstream, in the sidecar position of ../shared/bench/peers.sh:
#
#     load generator -https-> proxy 127.0.0.1:15443 -http-> app (nginx) 127.0.0.1:8080
#
# One worker each, no access log; proxy pinned on CPU 0, app and load generator on CPU 1.
# Cases (per run, per proxy):
#   tls-ka     keep-alive small GET           wrk -t1 -c50 over https
#   tls-ka-ob  the same, outrider-bench       outrider-bench -t1 -c50 --json --insecure
#   tls-close  a new TLS connection per request  wrk -t1 -c50 -H 'Connection: close'
#              (wrk resumes TLS sessions: after each slot's first, these are resumed
#              handshakes, with a fresh ECDHE key exchange but no certificate signature)
#   tls-close-ob  the same with outrider-bench, which never resumes: full handshakes
#   tls-idle   RSS growth of the proxy per idle TLS keep-alive connection: a Python client
#              opens N connections (handshake verified against the example CA), sends one
#              GET on each, reads the answer and keeps them open (fresh proxy, after warm-up)
# Figures: req/s, p50/p99, proxy CPU µs per request (utime + stime of all the proxy's
# processes, from /proc/PID/stat), bytes per idle connection.
#
# Usage:  bench-tls.sh [--duration S] [--runs N] [--idle-conns N] [--no-pin]
#                      [--tsv FILE] [--keep]
#   --duration   seconds per load (default 10)
#   --runs       runs of every load (default 3; the summary shows medians)
#   --idle-conns TLS connections for tls-idle (default 1000)
#   --tsv        also write the raw results there (read by scripts/bench_report.py)
#   --keep       keep the temp dir (configs, logs, raw output)
# Environment: BUILD=0 (no swift build: use .build/release as it is), OUTRIDER_BIN,
# OUTRIDER_BENCH_BIN, APP_PORT (8080), TLS_PORT (15443).
#
# Loopback only; servers are started in their own sessions and stopped by PID.

set -u -o pipefail
cd "$(dirname "$0")/.."

DURATION=10
RUNS=3
IDLE_CONNS=1000
TSV=""
KEEP=0
PIN=1
APP_PORT="${APP_PORT:-8080}"
TLS_PORT="${TLS_PORT:-15443}"

usage() { sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --duration|--runs|--idle-conns|--tsv) [ $# -ge 2 ] || { echo "$1 needs a value" >&2; exit 2; } ;;
    esac
    case "$1" in
        --duration)   DURATION="$2"; shift 2 ;;
        --runs)       RUNS="$2"; shift 2 ;;
        --idle-conns) IDLE_CONNS="$2"; shift 2 ;;
        --tsv)        TSV="$2"; shift 2 ;;
        --no-pin)     PIN=0; shift ;;
        --keep)       KEEP=1; shift ;;
        -h|--help)    usage 0 ;;
        *) echo "unknown argument: $1" >&2; usage 2 ;;
    esac
done
for v in "$DURATION" "$RUNS" "$IDLE_CONNS"; do
    case "$v" in ''|*[!0-9]*|0) echo "--duration, --runs and --idle-conns take whole numbers >= 1" >&2; exit 2 ;; esac
done

T=$(mktemp -d -t bench-tls.XXXXXX)
chmod 755 "$T"
# shellcheck source=scripts/bench-common.sh
. scripts/bench-common.sh
RAW="$T/results.tsv"; : > "$RAW"
HOLDER_PID=""
cleanup() {
    [ -n "$HOLDER_PID" ] && kill -TERM "$HOLDER_PID" 2>/dev/null
    stop_all_servers
    if [ -n "$TSV" ] && [ -s "$RAW" ]; then cp "$RAW" "$TSV"; fi
    if [ "$KEEP" = 1 ]; then log "kept configs, logs and raw results in $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for c in nginx wrk taskset ss ps openssl; do
    command -v "$c" >/dev/null || { echo "bench-tls.sh: $c is missing (scripts/install-deps.sh --apt-only; apt-get install nginx-light)" >&2; exit 1; }
done
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)
if [ "$PIN" = 1 ] && [ "$(nproc --all)" -lt 2 ]; then
    echo "pinning needs 2 CPUs (proxy on 0, load on 1); use --no-pin" >&2; exit 1
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null
port_free "$APP_PORT" "$TLS_PORT" || exit 1

BIN=$(outrider_bin outrider) || { echo "bench-tls.sh: building outrider failed" >&2; exit 1; }
BENCH_BIN=$(outrider_bin outrider-bench) || { echo "bench-tls.sh: building outrider-bench failed" >&2; exit 1; }
for b in "$BIN" "$BENCH_BIN"; do [ -x "$b" ] || { echo "bench-tls.sh: $b not found" >&2; exit 1; }; done

CERTS="$PWD/config/examples/tls"
write_wrk_report_lua

# Outrider: the sidecar config of Benchmarks/peers-sidecar.yaml with a TLS listener.
cat > "$T/outrider-tls.yaml" <<EOF
workers: 1
access_log: { format: off }
drain: { delay: 0s, timeout: 5s }
listeners:
  - name: bench-tls
    address: 127.0.0.1:$TLS_PORT
    protocols: [http1]
    timeouts: { header_read: 10s, idle: 300s }
    tls:
      certificate: $CERTS/server.crt
      private_key: $CERTS/server.key
    routes:
      - name: default
        cluster: app
clusters:
  - name: app
    endpoints: [127.0.0.1:$APP_PORT]
    pool: { max_idle_per_endpoint: 64, idle_timeout: 300s }
EOF
"$BIN" validate --config "$T/outrider-tls.yaml" >&2 || exit 1
# nginx: peers.sh's proxy config with `listen ... ssl` and the same certificate. TLS 1.2 and
# 1.3 as Outrider offers them (nginx before 1.23.4 offers no TLS 1.3 unless told); nginx's
# defaults otherwise (session tickets on, no session cache, its cipher list).
NGINX_CONF=$(conf_nginx_proxy nginx-tls "$TLS_PORT" "$APP_PORT" " ssl" \
    "ssl_certificate $CERTS/server.crt; ssl_certificate_key $CERTS/server.key; ssl_protocols TLSv1.2 TLSv1.3;")

start_row() {               # start_row outrider|nginx: sets SRV_PID
    case "$1" in
        outrider) start_server outrider proxy "$BIN" --config "$T/outrider-tls.yaml" ;;
        nginx)    start_server nginx proxy nginx -e stderr -p "$T/nginx-tls" -c "$NGINX_CONF" -g 'daemon off;' ;;
    esac
    SRV_PID=$LAST_PID
    wait_listen "$SRV_PID" "$TLS_PORT" "$1" || return 1
    RESUMPTION=$(check_https) || { log "$1: GET https://127.0.0.1:$TLS_PORT/ failed"; return 1; }
}
# GET / over TLS, verified against the example CA, twice: the second connection offers the
# first one's session. Prints "resumed" or "not resumed"; fails unless both answer 200.
check_https() {
    "$PY" - "$TLS_PORT" "$CERTS/ca.crt" <<'EOF'
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
def get(session=None):
    with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                d = s.recv(65536)
                if not d: break
                data += d
            if not data.startswith(b"HTTP/1.1 200"):
                sys.exit(1)
            return s.session, s.session_reused
session, _ = get()
_, reused = get(session)
print("resumed" if reused else "not resumed")
EOF
}
# What the handshake negotiates (protocol, cipher suite, key exchange), for the record.
tls_params() {
    timeout 10 openssl s_client -connect "127.0.0.1:$TLS_PORT" -servername localhost -brief \
        -CAfile "$CERTS/ca.crt" < /dev/null 2>&1 \
        | awk -F': ' '/^Protocol version/ {p = $2} /^Ciphersuite/ {c = $2} /[Tt]emp [Kk]ey:/ {k = $2}
                     END {printf "%s %s %s", p, c, k}'
}
warm_up() { "${PIN_LOAD[@]}" timeout 20 wrk -t1 -c50 -d1s "https://127.0.0.1:$TLS_PORT/" > /dev/null 2>&1; }

# Raw results, tab-separated:
# run row case value p50_us p99_us errors non2xx requests proxy_ticks foreign% note
record() { local IFS=$'\t'; echo "$*" >> "$RAW"; }
cpu_us() { awk -v t="$1" -v h="$HZ" -v n="$2" 'BEGIN {if (n > 0) printf "%.1f", t / h * 1e6 / n; else print "-"}'; }

wrk_case() {                # wrk_case RUN ROW CASE [wrk args...]
    local run="$1" row="$2" cs="$3"; shift 3
    local out="$T/wrk-$row-$cs-$run.txt" r
    snap_begin "$SRV_PID"
    "${PIN_LOAD[@]}" timeout -k 5 $((DURATION + 30)) \
        wrk -t1 -c50 -d"${DURATION}s" --timeout 5s --latency -s "$T/report.lua" "$@" \
        "https://127.0.0.1:$TLS_PORT/" > "$out" 2>&1
    snap_end
    r=$(grep '^RESULT' "$out") || { log "  wrk failed for $row ($cs):"; tail -n 5 "$out" >&2; record "$run" "$row" "$cs" NA - - - - - - - "wrk-failed"; return 1; }
    local requests=0 duration_us=1 bytes=0 p50_us=- p99_us=- errors=- non2xx=- rps
    eval "$(echo "${r#RESULT }" | tr ' ' '\n' | grep -E '^[a-z0-9_]+=[0-9.]+$')"
    rps=$(awk -v n="$requests" -v d="$duration_us" 'BEGIN {printf "%.0f", n / (d / 1e6)}')
    record "$run" "$row" "$cs" "$rps" "$p50_us" "$p99_us" "$errors" "$non2xx" "$requests" "$PROXY_TICKS" "$FOREIGN" "-"
    log "$(printf '  run %s %-8s %-9s %8s req/s  p50 %6s p99 %6s us  err %s/%s  proxy %3s%% of a core, %s us/req  other %s%%' \
        "$run" "$row" "$cs" "$rps" "$p50_us" "$p99_us" "$errors" "$non2xx" "$PROXY_PCT" "$(cpu_us "$PROXY_TICKS" "$requests")" "$FOREIGN")"
}

ob_case() {                 # ob_case RUN ROW CASE [outrider-bench args...]: outrider-bench as the load generator
    local run="$1" row="$2" cs="$3" out="$T/ob-$2-$3-$1.json" vals; shift 3
    snap_begin "$SRV_PID"
    "${PIN_LOAD[@]}" timeout -k 5 $((DURATION + 30)) \
        "$BENCH_BIN" -t1 -c50 -d"${DURATION}s" --json --insecure "$@" "https://127.0.0.1:$TLS_PORT/" > "$out" 2> "$out.err"
    snap_end
    vals=$("$PY" - "$out" <<'EOF'
import json, sys
try:
    j = json.load(open(sys.argv[1]))
except Exception:
    sys.exit(1)
st = j.get("status", {})
non2xx = sum(v for k, v in st.items() if not str(k).startswith("2"))
print("%.0f %.0f %.0f %d %d %d" % (j["rps"], j["latency_ms"]["p50"] * 1000, j["latency_ms"]["p99"] * 1000,
      sum(j.get("errors", {}).values()), non2xx, j["requests"]))
EOF
) || { log "  outrider-bench failed for $row:"; tail -n 5 "$out" "$out.err" >&2; record "$run" "$row" "$cs" NA - - - - - - - "ob-failed"; return 1; }
    local rps p50 p99 err non2xx n
    read -r rps p50 p99 err non2xx n <<< "$vals"
    record "$run" "$row" "$cs" "$rps" "$p50" "$p99" "$err" "$non2xx" "$n" "$PROXY_TICKS" "$FOREIGN" "-"
    log "$(printf '  run %s %-8s %-9s %8s req/s  p50 %6s p99 %6s us  err %s/%s  proxy %3s%% of a core, %s us/req  other %s%%' \
        "$run" "$row" "$cs" "$rps" "$p50" "$p99" "$err" "$non2xx" "$PROXY_PCT" "$(cpu_us "$PROXY_TICKS" "$n")" "$FOREIGN")"
}

# Idle TLS client: N connections one after the other, a verified handshake, one GET each with
# the whole answer read, then kept open. Prints "ready HELD FAILED" and sleeps until killed.
cat > "$T/idle_tls.py" <<'EOF'
import resource, socket, ssl, sys, time
port, n, hold, ca = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
ctx = ssl.create_default_context(cafile=ca)
req = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"

def more(s, buf):
    d = s.recv(65536)
    if not d:
        raise OSError("closed by server")
    return buf + d

held, failed, deadline = [], 0, time.time() + 120
for i in range(n):
    if time.time() > deadline:
        failed += n - i
        break
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        s = ctx.wrap_socket(raw, server_hostname="localhost")
        s.sendall(req)
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf = more(s, buf)
        head, body = buf.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 200"):
            raise OSError("status")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        while len(body) < length:
            body = more(s, body)
        held.append(s)
    except OSError:
        failed += 1
print("ready", len(held), failed, flush=True)
time.sleep(hold)
EOF

idle_case() {               # idle_case ROW (fresh server, warmed up)
    local row="$1" base after held=0 failed="$IDLE_CONNS" open i per=NA
    sleep 0.5
    base=$(rss_kb "$SRV_PID")
    "${PIN_LOAD[@]}" "$PY" "$T/idle_tls.py" "$TLS_PORT" "$IDLE_CONNS" 150 "$CERTS/ca.crt" > "$T/idle-$row.txt" 2>&1 &
    HOLDER_PID=$!
    for i in $(seq 1500); do
        grep -q '^ready' "$T/idle-$row.txt" && break
        kill -0 "$HOLDER_PID" 2>/dev/null || break
        sleep 0.1
    done
    sleep 1
    after=$(rss_kb "$SRV_PID")
    open=$(ss -Htn state established "( sport = :$TLS_PORT )" | wc -l)
    kill -TERM "$HOLDER_PID" 2>/dev/null; wait "$HOLDER_PID" 2>/dev/null; HOLDER_PID=""
    read -r _ held failed < <(grep '^ready' "$T/idle-$row.txt")
    [ "${held:-0}" -gt 0 ] && per=$(awk -v a="$after" -v b="$base" -v n="$held" 'BEGIN {printf "%.0f", (a - b) * 1024 / n}')
    record 1 "$row" tls-idle "$per" - - "${failed:-$IDLE_CONNS}" - "${held:-0}" - - "base_kb=$base,after_kb=$after,open=$open"
    log "$(printf '  %-8s tls-idle  %s bytes/idle TLS conn  (RSS %s -> %s KiB; %s held, %s failed, %s established at the proxy)' \
        "$row" "$per" "$base" "$after" "${held:-0}" "${failed:-?}" "$open")"
}

# ------------------------------------------------------------------- main ---

echo "# TLS termination: Outrider vs nginx, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "outrider: $("$BIN" --version 2>&1 | head -n 1) ($BIN)"
echo "nginx:    $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(nginx -V 2>&1 | sed -n 's/^built with //p' | head -n 1)"
echo "load:     $(wrk -v 2>&1 | head -n 1 | awk '{print "wrk " $2}'), outrider-bench ($BENCH_BIN)"
echo "cert:     $CERTS/server.crt ($(openssl x509 -in "$CERTS/server.crt" -noout -text | sed -n 's/^ *Public Key Algorithm: //p' | head -n 1), $(openssl x509 -in "$CERTS/server.crt" -noout -text | sed -n 's/^ *ASN1 OID: //p' | head -n 1))"
if [ "$PIN" = 1 ]; then echo "pinning:  proxy on CPU $PROXY_CPU; app and load generator on CPU $LOAD_CPU"; else echo "pinning:  none"; fi
echo "settings: $DURATION s per load, $RUNS run(s); $IDLE_CONNS idle TLS connections"

start_server app load nginx -e stderr -p "$T/app" -c "$(conf_app "$APP_PORT")" -g 'daemon off;'
APP_PID=$LAST_PID
wait_listen "$APP_PID" "$APP_PORT" app || exit 1

ROWS="nginx outrider"
for row in $ROWS; do
    if start_row "$row"; then
        echo "tls ($row): $(tls_params); a second connection offering the first one's session: $RESUMPTION"
    fi
    stop_server "$SRV_PID"; SRV_PID=""
done

for run in $(seq "$RUNS"); do
    log "TLS run $run/$RUNS"
    for row in $ROWS; do
        if start_row "$row"; then
            warm_up
            wrk_case "$run" "$row" tls-ka
            ob_case "$run" "$row" tls-ka-ob
            wrk_case "$run" "$row" tls-close -H 'Connection: close'
            ob_case "$run" "$row" tls-close-ob -H 'Connection: close'
        else
            record "$run" "$row" tls-ka NA - - - - - - - "start-failed"
        fi
        stop_server "$SRV_PID"; SRV_PID=""
    done
done

log "idle TLS connections: a fresh proxy per row"
for row in $ROWS; do
    if start_row "$row"; then
        warm_up
        idle_case "$row"
    fi
    stop_server "$SRV_PID"; SRV_PID=""
done
stop_server "$APP_PID"

echo
"$PY" scripts/bench_report.py tls "$RAW" "$HZ"
