#!/usr/bin/env bash
# bench-h2c-tools.sh - the HTTP/2 load generators side by side (SPEC §11: outrider-bench reports
# at least what h2load reports on the same target): h2load and `outrider-bench --h2c` against one
# h2c target, nghttpd (one thread, prior knowledge, serving a 12-byte file), pinned as peers.sh
# pins: the target on CPU 0, the tool on CPU 1. The tools alternate, run by run.
#
# Usage:  bench-h2c-tools.sh [--duration S] [--runs N] [-c CONNECTIONS] [-m STREAMS] [--no-pin] [--keep]
#   defaults: 10 s, 3 runs, -c 10 -m 10 (the h2c case of peers.sh), one thread per tool
# Prints per run and tool: req/s, the tool's CPU µs per request (utime + stime), the target's CPU
# (% of a core), other processes' CPU during the load (% of a core) and the time the hypervisor
# took from CPUs 0 and 1 (steal, % of a core): a busy or stolen-from machine skews a run.
# Environment: BUILD=0 (no swift build: .build/release as it is), OUTRIDER_BENCH_BIN, H2C_PORT (18080).
#
# Loopback only; nghttpd runs in its own session and is stopped by PID.

set -u -o pipefail
cd "$(dirname "$0")/.."

DURATION=10
RUNS=3
CONNS=10
STREAMS=10
KEEP=0
PIN=1
PORT="${H2C_PORT:-18080}"

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --duration|--runs|-c|-m) [ $# -ge 2 ] || { echo "$1 needs a value" >&2; exit 2; } ;;
    esac
    case "$1" in
        --duration) DURATION="$2"; shift 2 ;;
        --runs)     RUNS="$2"; shift 2 ;;
        -c)         CONNS="$2"; shift 2 ;;
        -m)         STREAMS="$2"; shift 2 ;;
        --no-pin)   PIN=0; shift ;;
        --keep)     KEEP=1; shift ;;
        -h|--help)  usage 0 ;;
        *) echo "unknown argument: $1" >&2; usage 2 ;;
    esac
done
for v in "$DURATION" "$RUNS" "$CONNS" "$STREAMS"; do
    case "$v" in ''|*[!0-9]*|0) echo "--duration, --runs, -c and -m take whole numbers >= 1" >&2; exit 2 ;; esac
done

for tool in nghttpd h2load taskset ss; do
    command -v "$tool" >/dev/null || { echo "bench-h2c-tools.sh: $tool is missing (scripts/install-deps.sh --apt-only)" >&2; exit 1; }
done

T="$(mktemp -d -t h2c-tools.XXXXXX)"
# shellcheck source=scripts/bench-common.sh
. scripts/bench-common.sh
cleanup() { stop_all_servers; if [ "$KEEP" = 1 ]; then log "kept $T"; else rm -rf "$T"; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM

BENCH_BIN=$(outrider_bin outrider-bench) || { echo "bench-h2c-tools.sh: building outrider-bench failed" >&2; exit 1; }
port_free "$PORT" || exit 1

mkdir -p "$T/www"
printf 'hello world\n' > "$T/www/index.html"
start_server nghttpd proxy nghttpd --no-tls -d "$T/www" "$PORT"
TARGET=$LAST_PID
wait_listen "$TARGET" "$PORT" nghttpd || exit 1
URL="http://127.0.0.1:$PORT/index.html"

# Steal ticks of CPUs 0 and 1 so far (/proc/stat, 8th value of each cpuN line).
steal_ticks() { awk '$1 == "cpu0" || $1 == "cpu1" {s += $9} END {print s + 0}' /proc/stat; }

# One load: run_tool TOOL RUN. Appends "tool run rps cpu_us_per_req target_pct foreign_pct steal_pct"
# to $T/results.
run_tool() {
    local tool="$1" run="$2" out="$T/$1-$2"
    local -a cmd
    case "$tool" in
        h2load)         cmd=(h2load -t1 -c"$CONNS" -m"$STREAMS" -D "$DURATION" "$URL") ;;
        outrider-bench) cmd=("$BENCH_BIN" --h2c --json -t1 -c"$CONNS" -m"$STREAMS" -d "${DURATION}s" "$URL") ;;
    esac
    local steal0; steal0=$(steal_ticks)
    snap_begin "$TARGET"
    { TIMEFORMAT='%U %S'; time "${PIN_LOAD[@]}" "${cmd[@]}" > "$out" 2> "$out.err"; } 2> "$out.time"
    snap_end
    local steal; steal=$(awk -v a="$steal0" -v b="$(steal_ticks)" -v h="$HZ" -v s="$SNAP_SECS" 'BEGIN {printf "%.0f", 100 * (b - a) / h / s}')
    local rps
    case "$tool" in
        h2load)
            rps=$(sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p' "$out")
            grep -q ' 0 failed, 0 errored' "$out" || log "  h2load reported failures: $(grep '^requests:' "$out")" ;;
        outrider-bench)
            rps=$(/usr/bin/python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(r["rps"]); \
                  sum(r["errors"].values()) and print("errors", r["errors"], file=sys.stderr)' "$out") ;;
    esac
    [ -n "$rps" ] || { log "  $tool failed:"; tail -n 5 "$out" "$out.err" >&2; return 1; }
    awk -v tool="$tool" -v run="$run" -v rps="$rps" -v d="$DURATION" -v tp="$PROXY_PCT" -v f="$FOREIGN" -v st="$steal" \
        '{cpu = $1 + $2; printf "%s %s %.0f %.2f %s %s %s\n", tool, run, rps, 1e6 * cpu / (rps * d), tp, f, st}' \
        "$out.time" >> "$T/results"
}

log "nghttpd $(nghttpd --version | awk '{print $2}') on CPU ${PROXY_CPU}, the tools on CPU ${LOAD_CPU}$([ "$PIN" = 1 ] || echo ' (not pinned)'): -t1 -c$CONNS -m$STREAMS, $DURATION s x $RUNS runs"
# Warm the target up (and check it answers).
"${PIN_LOAD[@]}" h2load -n 2000 -c 2 -m 10 "$URL" > "$T/warmup" 2>&1 || { log "nghttpd does not answer:"; tail "$T/warmup" >&2; exit 1; }
: > "$T/results"
for run in $(seq "$RUNS"); do
    for tool in h2load outrider-bench; do
        run_tool "$tool" "$run" || exit 1
        tail -n 1 "$T/results" | awk '{printf "  run %s  %-15s %9s req/s  %6s us CPU/req  target %s%%  other %s%%  steal %s%%\n", $2, $1, $3, $4, $5, $6, $7}' >&2
    done
done

echo
printf '%-15s %s\n' tool "req/s per run (mean)   tool CPU us/req (mean)"
for tool in h2load outrider-bench; do
    awk -v tool="$tool" '$1 == tool {rps = rps (n ? ", " : "") $3; s += $3; c += $4; n++}
        END {printf "%-15s %s (%.0f)   %.2f\n", tool, rps, s / n, c / n}' "$T/results"
done
awk '$1 == "h2load" {h += $3} $1 == "outrider-bench" {o += $3} END {printf "outrider-bench / h2load: %.3f\n", o / h}' "$T/results"
