#!/usr/bin/env bash
# Build Outrider (release) and run it. With no arguments it is the zero-config sidecar
# (listener 0.0.0.0:15006 -> 127.0.0.1:8080, admin 127.0.0.1:15000). When nothing listens on
# 127.0.0.1:8080, scripts/demo-app.py is started there so there is something to proxy to.
# Arguments are passed to outrider, e.g.: scripts/run.sh run --config config/sidecar-proxy.yaml
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh --apt-only
swift build -c release --product outrider
BIN="$(swift build -c release --show-bin-path)/outrider"

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

DEMO_PID=""
cleanup() {
  if [ -n "$DEMO_PID" ]; then kill "$DEMO_PID" 2>/dev/null || true; wait "$DEMO_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! listening 8080; then
  python3 scripts/demo-app.py --host 127.0.0.1 --port 8080 &
  DEMO_PID=$!
  for _ in $(seq 1 50); do listening 8080 && break; sleep 0.1; done
  echo "run.sh: started demo app on 127.0.0.1:8080 (pid $DEMO_PID)"
fi

echo "try: curl -i http://127.0.0.1:15006/"
# not exec: the trap must stop the demo app when outrider exits
"$BIN" "$@" &
OUT_PID=$!
trap 'kill -TERM "$OUT_PID" 2>/dev/null || true' INT TERM
set +e
wait "$OUT_PID"; rc=$?
# wait returns early when a trapped signal arrives: wait for the real exit
while kill -0 "$OUT_PID" 2>/dev/null; do wait "$OUT_PID"; rc=$?; done
set -e
exit "$rc"
