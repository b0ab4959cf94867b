#!/usr/bin/env bash
# Build Outrider, run the Swift unit tests, the integration suite against the release binary,
# and a short run of every libFuzzer target when scripts/fuzz.sh exists. Exit non-zero when
# anything fails. Extra arguments are passed to pytest (e.g. scripts/test.sh -k smuggling).
set -euo pipefail
cd "$(dirname "$0")/.."

status=0
failed_stages=()
stage() { echo; echo "==== $* ===="; }

stage "dependencies"
scripts/install-deps.sh

stage "swift build -c release --product outrider (with the import check)"
if ! swift build -c release --product outrider --explicit-target-dependency-import-check error; then
  echo "test.sh: release build failed" >&2
  echo "integration: not run (build failed)"
  exit 1
fi
stage "swift build -c release --product outrider-bench (with the import check)"
if ! swift build -c release --product outrider-bench --explicit-target-dependency-import-check error; then
  echo "test.sh: release build of outrider-bench failed" >&2
  echo "integration: not run (build failed)"
  exit 1
fi
BIN_DIR="$(swift build -c release --show-bin-path)"
export OUTRIDER_BIN="$BIN_DIR/outrider"
export OUTRIDER_BENCH_BIN="$BIN_DIR/outrider-bench"

stage "swift test"
if ! swift test; then
  status=1; failed_stages+=("swift test")
fi

stage "integration (pytest, OUTRIDER_BIN=$OUTRIDER_BIN, OUTRIDER_BENCH_BIN=$OUTRIDER_BENCH_BIN)"
junit="$BIN_DIR/../integration-junit.xml"
rm -f "$junit"
set +e
.venv-test/bin/python -m pytest -q Tests/integration --junitxml="$junit" "$@"
py_rc=$?
set -e
if [ "$py_rc" -ne 0 ]; then
  status=1; failed_stages+=("integration (pytest exit $py_rc)")
fi
summary="$(.venv-test/bin/python - "$junit" <<'PY'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print("0 0 0"); sys.exit()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
t = f = s = 0
for su in suites:
    t += int(su.get("tests", 0)); s += int(su.get("skipped", 0))
    f += int(su.get("failures", 0)) + int(su.get("errors", 0))
print(t - f - s, f, s)
PY
)"
read -r n_pass n_fail n_skip <<<"$summary"
if [ "$py_rc" -ne 0 ] && [ "$n_fail" -eq 0 ]; then n_fail=1; fi  # e.g. collection error, no tests

if [ -x scripts/fuzz.sh ]; then
  # Each target briefly (its build included): the HTTP/1 request parser 30 s, the others 10 s.
  fuzz_started=$SECONDS
  for target in $(scripts/fuzz.sh --list); do
    seconds=10
    if [ "$target" = http1-parser ]; then seconds=30; fi
    stage "fuzz $target ${seconds}s"
    if ! scripts/fuzz.sh "$target" "$seconds"; then
      status=1; failed_stages+=("fuzz $target")
    fi
  done
  echo "fuzz: every target run in $((SECONDS - fuzz_started)) s, builds included"
fi

echo
if [ "$status" -ne 0 ]; then
  echo "test.sh: FAILED: ${failed_stages[*]}" >&2
fi
if [ "$n_skip" -gt 0 ]; then
  echo "integration: $n_pass passed, $n_fail failed, $n_skip skipped"
else
  echo "integration: $n_pass passed, $n_fail failed"
fi
exit "$status"
