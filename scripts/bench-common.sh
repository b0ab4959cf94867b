# shellcheck shell=bash
# Shared by scripts/bench-tls.sh and scripts/bench-auth.sh (sourced, not run): the binaries,
# servers in their own sessions stopped by PID, and the accounting ../shared/bench/peers.sh
# does (CPU time of all of a server's processes from /proc/PID/stat, RSS of all of them, and
# an estimate of what other processes on the machine used during a load).
#
# The caller sets T (its temp dir) and may set PIN=0 (no taskset), PROXY_CPU, LOAD_CPU.
# Environment: BUILD=0 uses the binaries in .build/release as they are (no `swift build`);
# OUTRIDER_BIN / OUTRIDER_BENCH_BIN name other binaries (and imply no build of that one).

PIN="${PIN:-1}"
PROXY_CPU="${PROXY_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
HZ=$(getconf CLK_TCK)
STARTED=""                  # session leaders started with start_server
BUSY_PCT=3                  # a load during which other processes used more is flagged "~"

log() { printf '%s\n' "$*" >&2; }

# outrider_bin PRODUCT: path of a release binary, built first unless BUILD=0 or given by env.
outrider_bin() {
    local product="$1" given=""
    case "$product" in
        outrider)       given="${OUTRIDER_BIN:-}" ;;
        outrider-bench) given="${OUTRIDER_BENCH_BIN:-}" ;;
    esac
    if [ -n "$given" ]; then echo "$given"; return; fi
    if [ "${BUILD:-1}" != 0 ]; then
        swift build -c release --product "$product" >&2 || return 1
        echo "$(swift build -c release --show-bin-path)/$product"
    else
        echo "$PWD/.build/release/$product"
    fi
}

PIN_PROXY=(); PIN_LOAD=()
[ "$PIN" = 1 ] && { PIN_PROXY=(taskset -c "$PROXY_CPU"); PIN_LOAD=(taskset -c "$LOAD_CPU"); }

# start_server NAME proxy|load CMD...: runs CMD in its own session; sets LAST_PID (= its session id).
start_server() {
    local name="$1" pin="$2"; shift 2
    if [ "$pin" = proxy ]; then setsid "${PIN_PROXY[@]}" "$@" > "$T/$name.out" 2>&1 < /dev/null &
    else                        setsid "${PIN_LOAD[@]}"  "$@" > "$T/$name.out" 2>&1 < /dev/null &
    fi
    LAST_PID=$!
    STARTED="$STARTED $LAST_PID"
}

# Live (non-zombie) processes in one of our sessions.
session_pids() { ps -o pid=,stat= --sid "$1" 2>/dev/null | awk '$2 !~ /^Z/ {print $1}'; }

# TERM the leader, wait up to 10 s, then KILL what is left of its session, by PID.
stop_server() {
    local pid="$1" i p
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 100); do
        [ -z "$(session_pids "$pid")" ] && break
        sleep 0.1
    done
    for p in $(session_pids "$pid"); do kill -KILL "$p" 2>/dev/null; done
    wait "$pid" 2>/dev/null
    STARTED=$(echo " $STARTED " | sed "s/ $pid / /; s/^ *//; s/ *$//")
}
stop_all_servers() { local pid; for pid in $STARTED; do stop_server "$pid"; done; }

wait_listen() {             # wait_listen PID PORT NAME: up to 15 s
    local i
    for i in $(seq 150); do
        if [ -z "$(session_pids "$1")" ]; then
            log "$3 exited during start-up:"; tail -n 20 "$T/$3.out" >&2; return 1
        fi
        ss -Htln "sport = :$2" | grep -q . && return 0
        sleep 0.1
    done
    log "$3 did not listen on port $2 within 15 s"; return 1
}

port_free() {               # port_free PORT...: fails (with a message) when one is in use
    local p
    for p in "$@"; do
        if ss -Htln "sport = :$p" | grep -q .; then
            log "port $p is already in use; stop that listener first"; return 1
        fi
    done
}

rss_kb() { ps -o rss= --sid "$1" | awk '{s += $1} END {print s + 0}'; }   # all processes of a server

# CPU time (ticks, user + system, all threads) used so far by all processes of a server.
cpu_ticks() {
    [ -z "$1" ] && { echo 0; return; }
    local p
    for p in $(session_pids "$1"); do cat "/proc/$p/stat" 2>/dev/null; done \
        | awk '{sub(/^.*\) /, ""); t += $12 + $13} END {print t + 0}'
}

# Other work on this machine during a load, as peers.sh estimates it: CPU time of every
# user-space process outside our sessions and this script, alive at both ends (% of a core).
proc_snapshot() {           # "pid session ticks" per user-space process
    cat /proc/[0-9]*/stat 2>/dev/null \
        | awk '{p = $1; sub(/^.*\) /, ""); if ($4 != 0) print p, $4, $12 + $13}' > "$1"
}
MY_SID=$(ps -o sid= -p $$ | tr -d ' ')

# snap_begin SERVER_PID / snap_end: sets SNAP_SECS, PROXY_TICKS, PROXY_PCT, FOREIGN (% of a core).
snap_begin() {
    S_PID="$1"; S_T0=$(cpu_ticks "$1"); S_W0=$(date +%s%N); proc_snapshot "$T/snap0"
}
snap_end() {
    local t1
    proc_snapshot "$T/snap1"
    t1=$(cpu_ticks "$S_PID")
    SNAP_SECS=$(awk -v a="$S_W0" -v b="$(date +%s%N)" 'BEGIN {print (b - a) / 1e9}')
    PROXY_TICKS=$((t1 - S_T0))
    PROXY_PCT=$(awk -v t="$PROXY_TICKS" -v h="$HZ" -v s="$SNAP_SECS" 'BEGIN {printf "%.0f", 100 * t / h / s}')
    FOREIGN=$(awk -v ours=" $MY_SID $STARTED " -v h="$HZ" -v s="$SNAP_SECS" '
        NR == FNR {t0[$1] = $3; next}
        index(ours, " " $2 " ") == 0 {d = $3 - (($1 in t0) ? t0[$1] : 0); if (d > 0) g += d}
        END {printf "%.0f", 100 * g / h / s}' "$T/snap0" "$T/snap1")
}

# wrk's end-of-run line, machine-readable (as peers.sh prints it).
write_wrk_report_lua() {
    cat > "$T/report.lua" <<'EOF'
done = function(s, lat, req)
  local e = s.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d bytes=%d p50_us=%.0f p99_us=%.0f errors=%d non2xx=%d\n",
    s.requests, s.duration, s.bytes, lat:percentile(50), lat:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
EOF
}

# nginx config preamble and temp paths; $1 = instance dir.
nginx_main() {
    cat <<EOF
worker_processes 1;
worker_rlimit_nofile $(ulimit -n);
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 16384; }
EOF
}
nginx_temps() { echo "client_body_temp_path $1/body; proxy_temp_path $1/proxy; fastcgi_temp_path $1/fcgi; uwsgi_temp_path $1/uwsgi; scgi_temp_path $1/scgi;"; }

# The app, as in peers.sh: nginx, 1 worker, keep-alive, a small fixed body on /.
conf_app() {                # conf_app PORT -> path of nginx.conf
    local d="$T/app"; mkdir -p "$d"
    { nginx_main "$d"; cat <<EOF
http {
    $(nginx_temps "$d")
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$1 backlog=4096;
        location = / { default_type text/plain; return 200 "hello, world\n"; }
    }
}
EOF
    } > "$d/nginx.conf"
    echo "$d/nginx.conf"
}

# nginx as the proxy, as peers.sh sets it up (upstream keep-alive pool of 64, HTTP/1.1 to
# the app, buffers in memory only); $3 is extra text for the listen line (e.g. " ssl"),
# $4 extra server-level directives.
conf_nginx_proxy() {        # conf_nginx_proxy NAME LISTEN_PORT APP_PORT [LISTEN_EXTRA] [SERVER_EXTRA]
    local d="$T/$1"; mkdir -p "$d"
    { nginx_main "$d"; cat <<EOF
http {
    $(nginx_temps "$d")
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 1000000;
    upstream app {
        server 127.0.0.1:$3;
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }
    server {
        listen 127.0.0.1:$2${4:-} backlog=4096;
        ${5:-}
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffer_size 16k;
            proxy_buffers 8 16k;
            proxy_max_temp_file_size 0;
        }
    }
}
EOF
    } > "$d/nginx.conf"
    echo "$d/nginx.conf"
}
