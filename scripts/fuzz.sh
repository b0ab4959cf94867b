#!/usr/bin/env bash
# Usage: scripts/fuzz.sh TARGET SECONDS
#        scripts/fuzz.sh --list
#
# Builds the libFuzzer product for TARGET with -sanitize=fuzzer,address into .build-fuzz, runs
# it for SECONDS on a copy of Tests/fuzz/TARGET/corpus (plus regressions/) with the target's
# dictionary (the one *.dict in Tests/fuzz/TARGET/, if any), and prints a summary. Crash, leak,
# timeout and OOM inputs are kept under fuzz-artifacts/TARGET/ (gitignored); copy a real
# finding to Tests/fuzz/TARGET/regressions/. Exits non-zero when the build fails or the fuzzer
# finds anything. FUZZ_BUILD_JOBS=N passes -j N to swift build (a shared machine).
#
# Targets (TARGET → product fuzz-TARGET, sources in Sources/fuzz-TARGET/):
#   http1-parser     HTTP/1 request heads, then chunked bodies, targets, pipelining
#   http1-response   HTTP/1 response heads as an upstream sends them, chunked bodies, 1xx, reuse
#   chunked          ChunkedDecoder fed in random pieces into a compacting buffer
#   path-normalizer  PathNormalizer.normalize against a reference, idempotence
#   http2-server     HTTP2Session(role: .server) fed raw client frames, answering every request
#   config-loader    ConfigLoader.load(yaml:) on any text; print-config output loads back equal
#   jwt              JWK sets, JWT verification, strict base64 and JSON (OutriderFilters/JOSE)
#   tls13-records    TLS13RecordLayer (server end after the hand-off) fed sealed, corrupted and raw records
# Replay without the sanitizer build: swift build --product fuzz-TARGET, then run the binary on
# files or directories (CFuzzerShim's fallback driver runs each input once).
set -euo pipefail
cd "$(dirname "$0")/.."

targets=(http1-parser http1-response chunked path-normalizer http2-server config-loader jwt tls13-records)
if [ $# -eq 1 ] && [ "$1" = "--list" ]; then
  printf '%s\n' "${targets[@]}"
  exit 0
fi
if [ $# -ne 2 ] || ! [[ "$2" =~ ^[0-9]+$ ]]; then
  echo "usage: scripts/fuzz.sh TARGET SECONDS   (TARGET: ${targets[*]})" >&2
  echo "       scripts/fuzz.sh --list" >&2
  exit 2
fi
target="$1"
seconds="$2"
product=""
for known in "${targets[@]}"; do
  if [ "$known" = "$target" ]; then product="fuzz-$target"; fi
done
if [ -z "$product" ]; then
  echo "fuzz.sh: unknown target '$target' (known: ${targets[*]})" >&2
  exit 2
fi

fuzz_dir="Tests/fuzz/$target"
scratch=.build-fuzz
build=(swift build -c debug --scratch-path "$scratch" -Xswiftc -sanitize=fuzzer,address --product "$product"
       --explicit-target-dependency-import-check error)
if [ -n "${FUZZ_BUILD_JOBS:-}" ]; then build+=(-j "$FUZZ_BUILD_JOBS"); fi

echo "fuzz.sh: building $product (${build[*]})"
build_log="$(mktemp)"
if ! "${build[@]}" >"$build_log" 2>&1; then
  grep -v "Cannot export local symbol" "$build_log" | tail -40 >&2
  rm -f "$build_log"
  echo "fuzz.sh: build of $product failed" >&2
  exit 1
fi
grep -v "Cannot export local symbol" "$build_log" | tail -2
rm -f "$build_log"
binary="$(swift build -c debug --scratch-path "$scratch" -Xswiftc -sanitize=fuzzer,address --show-bin-path)/$product"

work="$(mktemp -d "${TMPDIR:-/tmp}/outrider-fuzz-$target.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus" "$work/artifacts"
cp -R "$fuzz_dir/corpus/." "$work/corpus/"
seed_dirs=("$work/corpus")
if [ -d "$fuzz_dir/regressions" ]; then
  mkdir -p "$work/regressions"
  cp -R "$fuzz_dir/regressions/." "$work/regressions/"
  seed_dirs+=("$work/regressions")
fi
seeds=$(find "${seed_dirs[@]}" -type f ! -name .gitkeep | wc -l)
dict_args=()
dicts=("$fuzz_dir"/*.dict)
if [ -e "${dicts[0]}" ]; then dict_args=(-dict="${dicts[0]}"); fi

artifacts="fuzz-artifacts/$target"
mkdir -p "$artifacts"
log="$artifacts/fuzz.log"

echo "fuzz.sh: running $product for ${seconds}s on $seeds seed input(s); log in $log"
set +e
SWIFT_BACKTRACE=enable=no "$binary" \
  -max_total_time="$seconds" \
  "${dict_args[@]}" \
  -max_len=16384 \
  -timeout=30 \
  -rss_limit_mb=4096 \
  -print_final_stats=1 \
  -artifact_prefix="$work/artifacts/" \
  "${seed_dirs[@]}" >"$log" 2>&1
rc=$?
set -e

found=()
for file in "$work"/artifacts/*; do
  [ -e "$file" ] || continue
  cp "$file" "$artifacts/"
  found+=("$artifacts/$(basename "$file")")
done

final_stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
last_status="$(grep -E '^#[0-9]+' "$log" | tail -1 || true)"
cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last_status")"
ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last_status")"
corp="$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<<"$last_status")"
echo "fuzz.sh: $target: execs=$(final_stat number_of_executed_units) exec/s=$(final_stat average_exec_per_sec)" \
     "cov=${cov:-?} ft=${ft:-?} corpus=${corp:-?} new_units=$(final_stat new_units_added)" \
     "peak_rss_mb=$(final_stat peak_rss_mb) crashes=${#found[@]} exit=$rc"

if [ "$rc" -ne 0 ] || [ "${#found[@]}" -gt 0 ]; then
  echo "fuzz.sh: $target FAILED (libFuzzer exit $rc)" >&2
  grep -E "==ERROR|SUMMARY|Fatal error|Precondition failed|precondition|deadly signal|Test unit written|Base64" "$log" | head -20 >&2 || true
  for file in "${found[@]}"; do echo "fuzz.sh: finding: $file" >&2; done
  echo "fuzz.sh: keep a real finding as a regression: cp ARTIFACT $fuzz_dir/regressions/NAME" >&2
  exit 1
fi
echo "fuzz.sh: $target passed"
