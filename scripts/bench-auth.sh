#!/usr/bin/env bash
# The auth'd case: Outrider with an API-key auth filter against nginx proxying plainly, in the
# same run and pinned the same way as ../shared/bench/peers.sh (proxy on CPU 0, app and wrk on
# CPU 1). Prints proxy CPU microseconds per request for both and their ratio.
#   scripts/bench-auth.sh [DURATION_SECONDS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
RUNS="${2:-3}"
scripts/install-deps.sh --apt-only
command -v nginx >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null; }
swift build -c release --product outrider
BIN="$(swift build -c release --show-bin-path)/outrider"
KEY="example-key-ci-bot-6f1d2c0a"
T="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$T"; }
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || true

nginx_conf() {   # nginx_conf DIR BODY
    mkdir -p "$1"
    cat > "$1/nginx.conf" <<CONF
worker_processes 1; daemon off; error_log stderr error; pid $1/nginx.pid;
events { worker_connections 20000; }
http { access_log off; client_body_temp_path $1; proxy_temp_path $1; fastcgi_temp_path $1; uwsgi_temp_path $1; scgi_temp_path $1;
  keepalive_timeout 300s; keepalive_requests 1000000;
  $2 }
CONF
}
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
worker_of() { local kids; kids=$(pgrep -P "$1" || true); echo "${kids:-$1}" | head -n 1; }

nginx_conf "$T/app" "server { listen 127.0.0.1:8080; location / { return 200 'hello from the app\n'; } }"
taskset -c 1 nginx -c "$T/app/nginx.conf" & PIDS+=($!); wait_port 8080

measure() {   # measure NAME PID HEADER...
    local name="$1" pid="$2"; shift 2
    taskset -c 1 wrk -t1 -c50 -d1s "$@" http://127.0.0.1:15001/ >/dev/null 2>&1
    local t0 t1 out n
    t0=$(ticks "$pid")
    out=$(taskset -c 1 wrk -t1 -c50 -d"${DURATION}s" "$@" http://127.0.0.1:15001/)
    t1=$(ticks "$pid")
    n=$(echo "$out" | awk '/requests in/ {print $1}')
    non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
    python3 -c "import os; print('%-22s %9d req  %6.2f us/req  non-2xx %s' % ('$name', $n, ($t1 - $t0) * 1e6 / os.sysconf('SC_CLK_TCK') / $n, '${non2xx:-0}'))" | tee -a "$T/results"
}

for run in $(seq "$RUNS"); do
    nginx_conf "$T/proxy" "upstream app { server 127.0.0.1:8080; keepalive 64; keepalive_requests 1000000; keepalive_timeout 300s; }
      server { listen 127.0.0.1:15001 backlog=4096; location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
    taskset -c 0 nginx -c "$T/proxy/nginx.conf" & NP=$!; wait_port 15001
    measure "nginx (plain proxy)" "$(worker_of $NP)"
    kill $NP; wait $NP 2>/dev/null || true; sleep 0.3
    taskset -c 0 "$BIN" --config Benchmarks/auth-sidecar.yaml 2>/dev/null & OP=$!; wait_port 15001
    measure "outrider (API key)" "$OP" -H "x-api-key: $KEY"
    kill $OP; wait $OP 2>/dev/null || true; sleep 0.3
done

python3 - "$T/results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, rest = line[:22].strip(), line[22:].split()
    rows.setdefault(name, []).append(float(rest[2]))
n, o = statistics.median(rows["nginx (plain proxy)"]), statistics.median(rows["outrider (API key)"])
print(f"median proxy CPU per request: nginx plain {n:.2f} us, outrider with API key auth {o:.2f} us, ratio {o / n:.2f}")
PY
