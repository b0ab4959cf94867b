#!/usr/bin/env bash
# Micro benchmarks of the data path (package-benchmark, Benchmarks/): wall time and mallocs per
# operation, with the malloc thresholds in Benchmarks/Thresholds checked.
#
#   scripts/microbench.sh                       run all, print the table, check thresholds
#                                               (non-zero exit: "WORSE" = more mallocs, "BETTER" = fewer)
#   scripts/microbench.sh run --filter 'Proxy.*'          any `swift package benchmark` arguments
#   scripts/microbench.sh run --filter 'Proxy.*' --allocation-stacks   where the mallocs come from
#   scripts/microbench.sh thresholds update     record new p90 malloc counts (mallocCountTotal
#                                               only: wall time is not a threshold here)
#
# Every number in the table is per operation (`*`); the thresholds are per measured iteration
# (1,000 operations). OUTRIDER_BENCH_WARMUP_SECONDS=0 skips the proxy warm-up (cold timer wheel).
set -euo pipefail
cd "$(dirname "$0")/../Benchmarks"

benchmark() { swift package --allow-writing-to-package-directory benchmark "$@"; }

if [ $# -eq 0 ]; then
    benchmark baseline update microbench
    benchmark baseline read microbench
    benchmark thresholds check microbench
    exit 0
fi

if [ "$1" = thresholds ] && [ "${2:-}" = update ]; then
    benchmark "$@"
    # `thresholds update` writes every metric's p90; keep the malloc count only.
    for file in Thresholds/*.p90.json; do
        python3 - "$file" <<'PY'
import json, sys
path = sys.argv[1]
with open(path) as f:
    values = json.load(f)
with open(path, "w") as f:
    f.write(json.dumps({"mallocCountTotal": values.get("mallocCountTotal", 0)}, indent=2, sort_keys=True) + "\n")
PY
    done
    git --no-pager diff --stat -- Thresholds 2>/dev/null || true
    exit 0
fi

exec swift package --allow-writing-to-package-directory benchmark "$@"
