#!/usr/bin/env bash
# Usage: scripts/fuzz.sh TARGET SECONDS
#
# Builds the libFuzzer product for TARGET with -sanitize=fuzzer,address into .build-fuzz, runs
# it for SECONDS on a copy of Tests/fuzz/TARGET/corpus (plus regressions/) with the target's
# dictionary, and prints a summary. Crash, leak, timeout and OOM inputs are kept under
# fuzz-artifacts/TARGET/ (gitignored); copy a real finding to Tests/fuzz/TARGET/regressions/.
# Exits non-zero when the build fails or the fuzzer finds anything.
#
# Targets: http1-parser → product fuzz-http1-parser.
# Replay without the sanitizer build: swift build --product fuzz-http1-parser, then run the
# binary on files or directories (CFuzzerShim's fallback driver runs each input once).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -ne 2 ] || ! [[ "$2" =~ ^[0-9]+$ ]]; then
  echo "usage: scripts/fuzz.sh TARGET SECONDS   (TARGET: http1-parser)" >&2
  exit 2
fi
target="$1"
seconds="$2"
case "$target" in
  http1-parser) product=fuzz-http1-parser ;;
  *) echo "fuzz.sh: unknown target '$target' (known: http1-parser)" >&2; exit 2 ;;
esac

fuzz_dir="Tests/fuzz/$target"
scratch=.build-fuzz
build=(swift build -c debug --scratch-path "$scratch" -Xswiftc -sanitize=fuzzer,address --product "$product")

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
seeds=$(find "${seed_dirs[@]}" -type f | wc -l)

artifacts="fuzz-artifacts/$target"
mkdir -p "$artifacts"
log="$artifacts/fuzz.log"

echo "fuzz.sh: running $product for ${seconds}s on $seeds seed input(s); log in $log"
set +e
SWIFT_BACKTRACE=enable=no "$binary" \
  -max_total_time="$seconds" \
  -dict="$fuzz_dir/http.dict" \
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
