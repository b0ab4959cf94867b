#!/usr/bin/env bash
# bench.sh - the whole performance table: Outrider side by side with nginx, HAProxy, h2o and
# Caddy, every figure also as a ratio to nginx measured in the same invocation.
#
#   scripts/bench.sh [peers.sh options, e.g. --runs 1 --duration 5 --only nginx,haproxy,project]
#
# 1. ../shared/bench/peers.sh with Outrider as its "project" row (Benchmarks/peers-sidecar.yaml):
#    (a) keep-alive small GET, (b) new connection per request, (c) 1 MiB responses,
#    (d) h2c with h2load -c10 -m10, (e) bytes per idle keep-alive connection.
#    Arguments are passed to peers.sh as they are; --duration, --runs and --no-pin also apply
#    to steps 2 and 3.
# 2. TLS (scripts/bench-tls.sh; TLS_CASE=0 skips it): Outrider vs nginx terminating TLS with
#    the example certificate: keep-alive with wrk and with outrider-bench, a new connection
#    per request, bytes per idle TLS connection (TLS_IDLE_CONNS of them, default 1000).
# 3. The auth'd route (scripts/bench-auth.sh; AUTH_CASE=0 skips it): Outrider with an API-key
#    filter vs nginx proxying plainly.
# Then the table goes to stdout and, with the date, machine, versions and this command line,
# to Benchmarks/results/latest.md; the chart of ratios to nginx to Benchmarks/results/latest.png
# (matplotlib in .venv-bench/, pinned by Benchmarks/bench-requirements.txt; without it the
# chart is skipped and said so). The complete output is kept in Benchmarks/results/latest.log,
# the report's inputs in Benchmarks/results/raw/ (raw/redraw.sh draws the table and chart again).
#
# Environment: BUILD=0 uses .build/release/outrider and outrider-bench as they are (no
# `swift build`); ACCESS_LOG=json measures (a)-(e) with the access log on (the peers run with
# theirs off); APP_PORT=N puts the app on 127.0.0.1:N instead of 8080 (when 8080 is taken);
# PEERS_SH=path of peers.sh; RESULTS_DIR (default Benchmarks/results).
# Proxy on CPU 0, app and load generator on CPU 1 throughout (peers.sh's pinning).
set -uo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac

# The command line, for the record (the environment switches that change what is measured first).
shq() { case "$1" in '' | *[!A-Za-z0-9_./:=,@%+-]*) printf "'%s'" "${1//\'/\'\\\'\'}" ;; *) printf '%s' "$1" ;; esac; }
CMDLINE=""
for v in BUILD ACCESS_LOG TLS_CASE AUTH_CASE TLS_IDLE_CONNS APP_PORT PEERS_SH; do
    [ -n "${!v:-}" ] && CMDLINE+="$v=$(shq "${!v}") "
done
CMDLINE+="scripts/bench.sh"
for a in "$@"; do CMDLINE+=" $(shq "$a")"; done

# Settings shared with the TLS and auth'd steps.
DURATION=10; RUNS=3; SUB_OPTS=()
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[$i]}" in
        --duration) DURATION="${args[$((i + 1))]:-10}" ;;
        --runs)     RUNS="${args[$((i + 1))]:-3}" ;;
        --no-pin)   SUB_OPTS+=(--no-pin) ;;
    esac
done

PEERS="${PEERS_SH:-../shared/bench/peers.sh}"
[ -f "$PEERS" ] || { echo "bench.sh: $PEERS not found (set PEERS_SH)" >&2; exit 1; }
RESULTS="${RESULTS_DIR:-Benchmarks/results}"
mkdir -p "$RESULTS"
scripts/install-deps.sh --apt-only

# Build once; the steps below use these binaries as they are.
if [ "${BUILD:-1}" != 0 ]; then
    swift build -c release --product outrider || exit 1
    swift build -c release --product outrider-bench || exit 1
    BIN_DIR="$(swift build -c release --show-bin-path)"
else
    BIN_DIR="$PWD/.build/release"
fi
export BUILD=0
export OUTRIDER_BIN="${OUTRIDER_BIN:-$BIN_DIR/outrider}"
export OUTRIDER_BENCH_BIN="${OUTRIDER_BENCH_BIN:-$BIN_DIR/outrider-bench}"
[ -x "$OUTRIDER_BIN" ] || { echo "bench.sh: $OUTRIDER_BIN not found" >&2; exit 1; }

W="$(mktemp -d -t bench.XXXXXX)"
cleanup() { rm -rf "$W"; }
trap cleanup EXIT
LOG="$W/all.log"
DATE="$(date -u '+%Y-%m-%d %H:%M UTC')"
FAILED=""

# ------------------------------------------------------------------ 1. peers ---
CONFIG="$PWD/Benchmarks/peers-sidecar.yaml"
if [ "${ACCESS_LOG:-off}" != off ] || [ "${APP_PORT:-8080}" != 8080 ]; then
    CONFIG="$W/peers-sidecar.yaml"
    sed "s/format: off/format: ${ACCESS_LOG:-off}, path: \/dev\/null/; s/format: off, path: \/dev\/null/format: off/
         s/127\.0\.0\.1:8080/127.0.0.1:${APP_PORT:-8080}/" Benchmarks/peers-sidecar.yaml > "$CONFIG"
fi
if [ "${APP_PORT:-8080}" != 8080 ]; then
    # peers.sh has no option for the app's port: run a copy with its APP_PORT changed.
    export APP_PORT
    sed "s/^APP_PORT=8080\$/APP_PORT=$APP_PORT/" "$PEERS" > "$W/peers.sh"
    grep -q "^APP_PORT=$APP_PORT\$" "$W/peers.sh" || { echo "bench.sh: could not set APP_PORT in a copy of $PEERS" >&2; exit 1; }
    PEERS="$W/peers.sh"
fi
bash "$PEERS" --proxy-cmd "exec $OUTRIDER_BIN --config $CONFIG" "$@" 2>&1 | tee "$W/peers.out" | tee -a "$LOG"
[ "${PIPESTATUS[0]}" = 0 ] || FAILED+=" peers.sh"

# -------------------------------------------------------------------- 2. TLS ---
if [ "${TLS_CASE:-1}" != 0 ]; then
    echo | tee -a "$LOG"
    scripts/bench-tls.sh --duration "$DURATION" --runs "$RUNS" --idle-conns "${TLS_IDLE_CONNS:-1000}" \
        "${SUB_OPTS[@]}" --tsv "$W/tls.tsv" 2>&1 | tee "$W/tls.out" | tee -a "$LOG"
    [ "${PIPESTATUS[0]}" = 0 ] || FAILED+=" bench-tls.sh"
fi

# --------------------------------------------------------------- 3. auth'd ---
if [ "${AUTH_CASE:-1}" != 0 ]; then
    echo | tee -a "$LOG"
    scripts/bench-auth.sh "$DURATION" "$RUNS" "${SUB_OPTS[@]}" --tsv "$W/auth.tsv" 2>&1 | tee -a "$LOG"
    [ "${PIPESTATUS[0]}" = 0 ] || FAILED+=" bench-auth.sh"
fi

# ---------------------------------------------------------------- 4. report ---
CPU_MODEL="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
MACHINE="$(nproc) CPUs (nproc; $(nproc --all) online), ${CPU_MODEL:-unknown CPU} (/proc/cpuinfo), Linux $(uname -r), $(awk '/MemTotal/ {printf "%.0f GiB RAM", $2 / 1048576}' /proc/meminfo)"
VERSIONS="$("$OUTRIDER_BIN" --version 2>&1 | head -n 1) and outrider-bench from $BIN_DIR"
VERSIONS+=", $(grep -m1 '^peers:' "$W/peers.out" 2>/dev/null | sed 's/^peers: *//; s/ *$//' | sed 's/  */, /g')"
VERSIONS+=", $(wrk -v 2>&1 | head -n 1 | awk '{print "wrk " $2}'), $(h2load --version 2>/dev/null | head -n 1)"
VERSIONS+=", $(openssl version | awk '{print $1 " " $2}'), $(/usr/bin/python3 --version 2>&1)"

# The chart needs matplotlib: a venv pinned by Benchmarks/bench-requirements.txt.
REQ=Benchmarks/bench-requirements.txt
VENV=.venv-bench
PYREPORT=/usr/bin/python3
if [ ! -x "$VENV/bin/python" ] || ! cmp -s "$REQ" "$VENV/.requirements"; then
    echo "bench.sh: setting up $VENV for the chart ($REQ)" >&2
    if /usr/bin/python3 -m venv "$VENV" >"$W/venv.log" 2>&1 \
        && "$VENV/bin/pip" install --disable-pip-version-check -q -r "$REQ" >>"$W/venv.log" 2>&1; then
        cp "$REQ" "$VENV/.requirements"
    else
        echo "bench.sh: could not install the chart's packages (last lines of the log below); the chart is skipped" >&2
        tail -n 5 "$W/venv.log" >&2
    fi
fi
[ -x "$VENV/bin/python" ] && [ -f "$VENV/.requirements" ] && PYREPORT="$VENV/bin/python"
MPL="$("$PYREPORT" -c 'import matplotlib; print("matplotlib " + matplotlib.__version__)' 2>/dev/null || echo "no matplotlib")"

SKIPPED=""
[ "${TLS_CASE:-1}" = 0 ] && SKIPPED+="TLS,"
[ "${AUTH_CASE:-1}" = 0 ] && SKIPPED+="auth'd route,"
"$PYREPORT" - "$W/meta.json" "$DATE" "$CMDLINE" "$MACHINE" "$VERSIONS, $MPL" "$FAILED" "$SKIPPED" <<'PY'
import json, sys
path, date, cmd, machine, versions, failed, skipped = sys.argv[1:8]
extra = ["failed steps:%s (see Benchmarks/results/latest.log)" % failed] if failed.strip() else []
json.dump({"date": date, "command": cmd, "machine": machine, "versions": versions, "extra": extra,
           "skipped": [x for x in skipped.split(",") if x]}, open(path, "w"))
PY

{
    echo
    echo "================================================================================"
    echo "Outrider side by side, $DATE"
    echo "command: $CMDLINE"
    echo "machine: $MACHINE"
    echo
} | tee -a "$LOG"
# The report's inputs are kept in $RESULTS/raw/ (the table and chart can be drawn again from them:
# see redraw.sh there).
RAWD="$RESULTS/raw"
rm -rf "$RAWD" "$RESULTS/latest.png"
mkdir -p "$RAWD"
cp "$W/meta.json" "$W/peers.out" "$RAWD/"
REPORT_ARGS=(full --meta "$RAWD/meta.json" --peers "$RAWD/peers.out" --hz "$(getconf CLK_TCK)"
             --md "$RESULTS/latest.md" --png "$RESULTS/latest.png")
if [ -f "$W/tls.out" ]; then
    cp "$W/tls.out" "$RAWD/"; [ -f "$W/tls.tsv" ] && cp "$W/tls.tsv" "$RAWD/"
    REPORT_ARGS+=(--tls-out "$RAWD/tls.out" --tls "$RAWD/tls.tsv")
fi
[ -f "$W/auth.tsv" ] && { cp "$W/auth.tsv" "$RAWD/"; REPORT_ARGS+=(--auth "$RAWD/auth.tsv"); }
printf '#!/bin/sh\n# Draw %s/latest.md and latest.png again from these inputs (run from the repository root).\nexec "${PYTHON:-.venv-bench/bin/python}" scripts/bench_report.py' "$RESULTS" > "$RAWD/redraw.sh"
for a in "${REPORT_ARGS[@]}"; do printf ' %s' "$(shq "$a")" >> "$RAWD/redraw.sh"; done
echo >> "$RAWD/redraw.sh"
chmod +x "$RAWD/redraw.sh"
"$PYREPORT" scripts/bench_report.py "${REPORT_ARGS[@]}" | tee -a "$LOG"
cp "$LOG" "$RESULTS/latest.log"
if [ -n "$FAILED" ]; then echo "bench.sh: failed:$FAILED" >&2; exit 1; fi
