#!/usr/bin/env bash
# The auth'd case of scripts/bench.sh: Outrider with an API-key auth filter
# (Benchmarks/auth-sidecar.yaml) against nginx proxying plainly, in the same run and pinned
# as ../shared/bench/peers.sh does it (proxy on CPU 0, app and wrk on CPU 1), keep-alive small
# GET with wrk -t1 -c50. Prints req/s, p50/p99 and proxy CPU microseconds per request (user +
# system time of all the proxy's processes, from /proc/PID/stat) for both, and their ratios.
#   scripts/bench-auth.sh [DURATION_SECONDS] [RUNS] [--no-pin] [--tsv FILE]
#   --tsv  also write the raw results there (read by scripts/bench_report.py)
# Environment: BUILD=0 (no swift build: use .build/release as it is), OUTRIDER_BIN,
# APP_PORT (8080); the proxies listen on 127.0.0.1:15001 as the config says.
set -u -o pipefail
cd "$(dirname "$0")/.."
DURATION=10
RUNS=3
TSV=""
PIN=1
pos=()
while [ $# -gt 0 ]; do
    case "$1" in
        --tsv)     [ $# -ge 2 ] || { echo "--tsv needs a value" >&2; exit 2; }; TSV="$2"; shift 2 ;;
        --no-pin)  PIN=0; shift ;;
        -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *)         pos+=("$1"); shift ;;
    esac
done
[ "${#pos[@]}" -ge 1 ] && DURATION="${pos[0]}"
[ "${#pos[@]}" -ge 2 ] && RUNS="${pos[1]}"
for v in "$DURATION" "$RUNS"; do
    case "$v" in ''|*[!0-9]*|0) echo "DURATION and RUNS are whole numbers >= 1" >&2; exit 2 ;; esac
done
APP_PORT="${APP_PORT:-8080}"
PROXY_PORT=15001
KEY="example-key-ci-bot-6f1d2c0a"

scripts/install-deps.sh --apt-only >&2
command -v nginx >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null; }

T="$(mktemp -d -t bench-auth.XXXXXX)"
chmod 755 "$T"
# shellcheck source=scripts/bench-common.sh
. scripts/bench-common.sh
RAW="$T/results.tsv"; : > "$RAW"
cleanup() {
    stop_all_servers
    if [ -n "$TSV" ] && [ -s "$RAW" ]; then cp "$RAW" "$TSV"; fi
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ulimit -n 65536 2>/dev/null || true
port_free "$APP_PORT" "$PROXY_PORT" || exit 1
BIN=$(outrider_bin outrider) || { echo "bench-auth.sh: building outrider failed" >&2; exit 1; }
[ -x "$BIN" ] || { echo "bench-auth.sh: $BIN not found" >&2; exit 1; }
CONFIG="$PWD/Benchmarks/auth-sidecar.yaml"
if [ "$APP_PORT" != 8080 ]; then
    sed "s/127.0.0.1:8080/127.0.0.1:$APP_PORT/; s#keys_file: \.\./#keys_file: $PWD/#" "$CONFIG" > "$T/auth-sidecar.yaml"
    CONFIG="$T/auth-sidecar.yaml"
fi
write_wrk_report_lua

start_server app load nginx -e stderr -p "$T/app" -c "$(conf_app "$APP_PORT")" -g 'daemon off;'
APP_PID=$LAST_PID
wait_listen "$APP_PID" "$APP_PORT" app || exit 1
NGINX_CONF=$(conf_nginx_proxy nginx-proxy "$PROXY_PORT" "$APP_PORT")

# run row case value p50_us p99_us errors non2xx requests proxy_ticks foreign% note
record() { local IFS=$'\t'; echo "$*" >> "$RAW"; }

measure() {   # measure RUN ROW PID [wrk args...]
    local run="$1" row="$2" pid="$3"; shift 3
    local out="$T/wrk-$row-$run.txt" r
    "${PIN_LOAD[@]}" wrk -t1 -c50 -d1s "$@" "http://127.0.0.1:$PROXY_PORT/" >/dev/null 2>&1
    snap_begin "$pid"
    "${PIN_LOAD[@]}" timeout -k 5 $((DURATION + 30)) \
        wrk -t1 -c50 -d"${DURATION}s" --timeout 5s --latency -s "$T/report.lua" "$@" \
        "http://127.0.0.1:$PROXY_PORT/" > "$out" 2>&1
    snap_end
    r=$(grep '^RESULT' "$out") || { log "  wrk failed for $row:"; tail -n 5 "$out" >&2; record "$run" "$row" auth NA - - - - - - - "wrk-failed"; return 1; }
    local requests=0 duration_us=1 bytes=0 p50_us=- p99_us=- errors=- non2xx=- rps
    eval "$(echo "${r#RESULT }" | tr ' ' '\n' | grep -E '^[a-z0-9_]+=[0-9.]+$')"
    rps=$(awk -v n="$requests" -v d="$duration_us" 'BEGIN {printf "%.0f", n / (d / 1e6)}')
    record "$run" "$row" auth "$rps" "$p50_us" "$p99_us" "$errors" "$non2xx" "$requests" "$PROXY_TICKS" "$FOREIGN" "-"
    log "$(printf '  run %s %-8s %8s req/s  p50 %6s p99 %6s us  %6.2f us/req  err %s/%s  other %s%%' "$run" "$row" "$rps" \
        "$p50_us" "$p99_us" "$(awk -v t="$PROXY_TICKS" -v h="$HZ" -v n="$requests" 'BEGIN {print (n > 0) ? t / h * 1e6 / n : 0}')" \
        "$errors" "$non2xx" "$FOREIGN")"
}

for run in $(seq "$RUNS"); do
    log "auth run $run/$RUNS"
    start_server nginx-proxy proxy nginx -e stderr -p "$T/nginx-proxy" -c "$NGINX_CONF" -g 'daemon off;'
    NP=$LAST_PID
    if wait_listen "$NP" "$PROXY_PORT" nginx-proxy; then measure "$run" nginx "$NP"; fi
    stop_server "$NP"
    start_server outrider proxy "$BIN" --config "$CONFIG"
    OP=$LAST_PID
    if wait_listen "$OP" "$PROXY_PORT" outrider; then measure "$run" outrider "$OP" -H "x-api-key: $KEY"; fi
    stop_server "$OP"
done
stop_server "$APP_PID"

echo "auth'd route, $DURATION s per load, $RUNS run(s): $("$BIN" --version 2>&1 | head -n 1) with an API-key filter vs $(nginx -v 2>&1 | sed 's/^nginx version: //') plain proxy"
/usr/bin/python3 scripts/bench_report.py auth "$RAW" "$HZ"
