#!/usr/bin/env bash
# soak.sh - millions of mixed requests through a real outrider in front of nginx; the proxy's
# RSS and open fds must stay flat. Exits 1 when they do not, or when any answer was wrong.
#
#   scripts/soak.sh [--requests N | --duration S] [soak.py options]
#
#   --requests N      stop once the proxy has counted N requests (default 10,000,000)
#   --duration S      stop after S seconds instead (--requests 0 --duration 600)
#   --conns K=C,...   wrk connections per kind (default ka=32,close=6,chunked=8,notfound=4,
#                     dead=3,toolarge=2,bighead=2)
#   --abort-rate R    client aborts per second (default 200; 0 = none)
#   --workers N       proxy workers (default 2)
#   --sample-every S  seconds between samples of RSS, fds, request count (default 2)
#   --warmup F        fraction of the requests (or seconds) in the warm-up phase (default 0.1)
#   --quiet-growth KIB  allowed growth of the quiet RSS (no load, connections closed, pools
#                     trimmed) from after the warm-up phase to after the run (default 1024)
#   --quiet S         seconds of quiet after each phase, once its connections closed (default 12)
#   --fd-settle S     seconds for the fds to come back to idle after the load (default 20)
#   --load-cpu C / --proxy-cpu C / --no-pin   pinning (default: load generators and nginx on
#                     CPU 1, proxy anywhere)
#   --csv/--png/--md  outputs (default Benchmarks/results/soak.csv, soak.png, soak.md)
#
# The mix (all at once, see scripts/soak.lua and scripts/soak.py): keep-alive GETs, a new
# connection per request, chunked request bodies, the app's 404, 502 from a cluster on a
# dead port, 413 (body over max_request_body) and 431 (head over max_header_bytes), one wrk
# per kind checking every answer; plus connections closed mid-head, mid-body (content-length
# and chunked) and while waiting for a slow app's answer. Two phases of that load, the
# warm-up and the rest, each followed by quiet: the quiet RSS after each is compared. Figures and the pass/fail line go
# to stdout and soak.md; the samples to soak.csv; the chart (RSS, fds, requests over time)
# to soak.png.
#
# Environment: OUTRIDER_BIN (default .build/release/outrider, built first unless BUILD=0);
# CHART_PYTHON (a python with matplotlib; default .venv-bench/bin/python of this checkout or
# of the main worktree, set up as scripts/bench.sh does from Benchmarks/bench-requirements.txt
# when neither exists; without it the chart is skipped and said so).
# Everything is on 127.0.0.1; servers are started here and stopped by PID.
set -uo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in -h|--help) sed -n '2,36p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac

for tool in wrk nginx taskset; do
    command -v "$tool" >/dev/null || { scripts/install-deps.sh --apt-only || exit 1; break; }
done
command -v nginx >/dev/null || { echo "soak.sh: nginx is needed (apt-get install nginx)" >&2; exit 1; }

if [ -z "${OUTRIDER_BIN:-}" ]; then
    if [ "${BUILD:-1}" != 0 ]; then
        swift build -c release --product outrider >&2 || exit 1
    fi
    OUTRIDER_BIN="$PWD/.build/release/outrider"
fi
[ -x "$OUTRIDER_BIN" ] || { echo "soak.sh: $OUTRIDER_BIN not found" >&2; exit 1; }
export OUTRIDER_BIN

# A python with matplotlib for the chart (the numbers need only the standard library).
chart_python() {
    local main venv req=Benchmarks/bench-requirements.txt
    [ -n "${CHART_PYTHON:-}" ] && { echo "$CHART_PYTHON"; return; }
    main="$(git worktree list --porcelain 2>/dev/null | sed -n '1s/^worktree //p')"
    for venv in "$PWD/.venv-bench" "${main:+$main/.venv-bench}"; do
        [ -n "$venv" ] && [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import matplotlib' 2>/dev/null \
            && { echo "$venv/bin/python"; return; }
    done
    echo "soak.sh: setting up .venv-bench for the chart ($req)" >&2
    if /usr/bin/python3 -m venv .venv-bench >/dev/null 2>&1 \
        && .venv-bench/bin/pip install --disable-pip-version-check -q -r "$req" >/dev/null 2>&1; then
        cp "$req" .venv-bench/.requirements
        echo "$PWD/.venv-bench/bin/python"
    else
        echo "soak.sh: could not install matplotlib; the chart will be skipped" >&2
        echo /usr/bin/python3
    fi
}
PY="$(chart_python)"
exec "$PY" scripts/soak.py "$@"
