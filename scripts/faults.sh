#!/usr/bin/env bash
# Process faults under load, full size (issue #9), and their figures:
#   1. the app SIGKILLed mid-load and restarted on its port, 5 times (2 s down, 3 s up)
#   2. 100 SIGHUP reloads under steady outrider-bench load
#   3. the listener's certificate files rewritten 100 times under TLS load (new handshakes
#      from Python clients, keep-alive requests from outrider-bench)
# The same tests run small in the integration suite (Tests/integration/test_faults.py, ~15 s
# each); here OUTRIDER_FAULTS_FULL=1 sizes them up. Everything stays on 127.0.0.1.
#
#   scripts/faults.sh                 # binaries from .build/release
#   OUTRIDER_BIN=... OUTRIDER_BENCH_BIN=... scripts/faults.sh
#   scripts/faults.sh -k storm        # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
export OUTRIDER_BIN="${OUTRIDER_BIN:-$PWD/.build/release/outrider}"
export OUTRIDER_BENCH_BIN="${OUTRIDER_BENCH_BIN:-$PWD/.build/release/outrider-bench}"
PYTHON="${PYTHON:-$PWD/.venv-test/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
for b in "$OUTRIDER_BIN" "$OUTRIDER_BENCH_BIN"; do
    [ -x "$b" ] || { echo "missing $b (build it, or set OUTRIDER_BIN / OUTRIDER_BENCH_BIN)" >&2; exit 1; }
done

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
OUTRIDER_FAULTS_FULL=1 "$PYTHON" -m pytest -q -s -o timeout=300 -p no:cacheprovider \
    Tests/integration/test_faults.py "$@" 2>&1 | tee "$log" | grep -E "^FAULTS-FIGURES|passed|failed|^E " || true
grep -qE "[0-9]+ failed|[0-9]+ error" "$log" && status=1

echo
echo "== figures"
grep '^FAULTS-FIGURES ' "$log" | sed 's/^FAULTS-FIGURES //' | "$PYTHON" -c '
import json, sys
for line in sys.stdin:
    f = json.loads(line)
    t = f.pop("test"); f.pop("full", None)
    print(f"-- {t}")
    for k, v in f.items():
        print(f"   {k:32} {v}")
'
exit $status
