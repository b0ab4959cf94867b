#!/usr/bin/env bash
# Side-by-side benchmark: runs ../shared/bench/peers.sh with Outrider as the "project" row, beside
# nginx, HAProxy, h2o and Caddy in the same run, and prints Outrider's ratios to nginx.
#   scripts/bench.sh [peers.sh options, e.g. --runs 1 --duration 5 --only nginx,haproxy,project]
# Set ACCESS_LOG=json to measure with the access log on (the peers run with theirs off).
# Afterwards the auth'd case runs (scripts/bench-auth.sh: Outrider with an API-key filter
# against nginx's plain proxying); AUTH_CASE=0 skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS="${PEERS_SH:-../shared/bench/peers.sh}"
[ -f "$PEERS" ] || { echo "bench.sh: $PEERS not found (set PEERS_SH)" >&2; exit 1; }
scripts/install-deps.sh --apt-only
swift build -c release --product outrider
BIN="$(swift build -c release --show-bin-path)/outrider"
CONFIG="$PWD/Benchmarks/peers-sidecar.yaml"
if [ "${ACCESS_LOG:-off}" != off ]; then
  CONFIG="$(mktemp --suffix=.yaml)"
  sed "s/format: off/format: ${ACCESS_LOG}, path: \/dev\/null/" Benchmarks/peers-sidecar.yaml > "$CONFIG"
fi
OUT="$(mktemp)"
bash "$PEERS" --proxy-cmd "exec $BIN --config $CONFIG" "$@" | tee "$OUT"
echo
echo "Outrider / nginx (lower CPU and latency are better; higher req/s and MB/s are better):"
python3 - "$OUT" <<'PY'
import re, sys
rows = {}
for line in open(sys.argv[1]):
    if line.startswith("| ") and not line.startswith("| proxy"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells
def num(s):
    m = re.match(r"[\d,.]+", s or "")
    return float(m.group(0).replace(",", "")) if m else None
p, n = rows.get("project"), rows.get("nginx")
if not p or not n:
    print("  (no project or nginx row)"); sys.exit()
for label, i in [("(a) keep-alive CPU us/req", 4), ("(b) conn-close CPU us/req", 8), ("(c) 1 MiB CPU us/MB", 11),
                 ("(a) keep-alive req/s", 1), ("(b) conn-close req/s", 5), ("(c) 1 MiB MB/s", 9),
                 ("(d) h2c req/s", 12), ("(e) bytes per idle conn", 15)]:
    a, b = num(p[i]), num(n[i])
    print(f"  {label:28s} outrider {p[i]:>18s}   nginx {n[i]:>18s}   ratio {a / b:.2f}" if a and b else f"  {label:28s} outrider {p[i]}  nginx {n[i]}")
for label, i in [("(a) p50/p99 ms", 3), ("(b) p50/p99 ms", 7)]:
    print(f"  {label:28s} outrider {p[i]:>18s}   nginx {n[i]:>18s}")
PY
if [ "${AUTH_CASE:-1}" != 0 ]; then
  echo
  echo "Auth'd case (API key), same pinning:"
  scripts/bench-auth.sh 10 3
fi
