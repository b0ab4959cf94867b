#!/usr/bin/env bash
# flood.sh - attacks against a real outrider in front of nginx, next to legitimate clients whose
# latency is compared with a baseline measured in the same run just before (ratios only: the
# machine may be shared). Exits 1 when a check fails.
#
#   scripts/flood.sh slowloris [--conns 5000] [--trickle 1] [--header-read 10]
#   scripts/flood.sh fd        [--flood-conns 200] [--window 8]
#   scripts/flood.sh h2        [--kinds rapid-reset,continuation,settings,ping,zero-window]
#                              [--zw-conns 8] [--zw-streams 100]
#   common: [--rate 2000] [--legit-conns 10] [--legit-streams 4] [--window 8] [--workers 1]
#           [--proxy-cpu 0] [--load-cpu 1] [--attack-cpu C] [--no-pin] [--json FILE]
#
# slowloris  N connections send a request head one byte every ~1 s (reconnecting when cut);
#            legit HTTP/1.1 keep-alive clients (outrider-bench, open loop at --rate) must keep
#            p99 under 2x their baseline; the slow ones must be cut at header_read (408 or
#            close). Prints baseline/under-attack p50 and p99, the ratio, the proxy's RSS, how
#            the slow connections ended and when.
# fd         the proxy's RLIMIT_NOFILE is lowered with prlimit to what it holds + 4 while
#            clients queue up: CPU used and wake-ups while exhausted (the accept back-off), a
#            keep-alive client that was there before is still served, time to recover once
#            the limit is back.
# h2         each flood in turn against the h2c listener, legit h2c clients (outrider-bench
#            --h2c, open loop) measured before and during: rapid reset, CONTINUATION flood,
#            SETTINGS and PING floods (ACKs never read), zero-window (streams held with
#            INITIAL_WINDOW_SIZE 0). Prints the ratio, the proxy's peak RSS, the connections
#            closed by reason (outrider_http2_connections_closed_total).
#
# Pinning: the proxy (1 worker) on CPU 0; nginx, legit clients and attackers on CPU 1, the
# attackers at nice 19 (h2: --attack-cpu moves them). h2 and slowloris also measure a control:
# legit HTTP/1.1 clients talking to the app directly, not through the proxy, before and during
# each attack: what the attackers' own work on the shared CPUs does to any client. Environment: OUTRIDER_BIN, OUTRIDER_BENCH_BIN (default
# .build/release/, built first unless BUILD=0); the h2 attackers need hyper-h2: the python of
# .venv-test (this checkout's or the main worktree's; scripts/install-deps.sh makes it).
# Everything is on 127.0.0.1; servers are started here and stopped by PID.
set -uo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in ''|-h|--help) sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac

for tool in nginx prlimit taskset; do
    command -v "$tool" >/dev/null || { scripts/install-deps.sh --apt-only || exit 1; break; }
done
command -v nginx >/dev/null || { echo "flood.sh: nginx is needed (apt-get install nginx)" >&2; exit 1; }

for product in outrider outrider-bench; do
    var=OUTRIDER_BIN; [ "$product" = outrider-bench ] && var=OUTRIDER_BENCH_BIN
    if [ -z "${!var:-}" ]; then
        if [ "${BUILD:-1}" != 0 ]; then swift build -c release --product "$product" >&2 || exit 1; fi
        export "$var=$PWD/.build/release/$product"
    fi
    [ -x "${!var}" ] || { echo "flood.sh: ${!var} not found" >&2; exit 1; }
    export "${var?}"
done

PY=""
main="$(git worktree list --porcelain 2>/dev/null | sed -n '1s/^worktree //p')"
for venv in "$PWD/.venv-test" "${main:+$main/.venv-test}"; do
    [ -n "$venv" ] && [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import h2, hpack' 2>/dev/null \
        && { PY="$venv/bin/python"; break; }
done
if [ -z "$PY" ]; then
    scripts/install-deps.sh >&2 || exit 1
    PY="$PWD/.venv-test/bin/python"
fi
exec "$PY" scripts/flood.py "$@"
