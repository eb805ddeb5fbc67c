#!/usr/bin/env bash
# Builds the cargo-fuzz targets in fuzz/ (gguf, wire, http, member) and runs each for a bounded time,
# starting from the seed corpus kept in fuzz/corpus/<target>/. Fails on the first crash, panic,
# timeout or out-of-memory, printing the input that caused it (kept under fuzz/artifacts/).
#
#   scripts/fuzz.sh [seconds]     # seconds per target, default 60
#   scripts/fuzz.sh 0             # build only (and replay the seed corpus once)
#   EDGERAY_FUZZ_ARGS="-jobs=2"   # extra libFuzzer arguments, after the script's own
#
# Works on the stable toolchain: RUSTC_BOOTSTRAP=1 lets it take the sanitizer-coverage flags
# cargo-fuzz passes, and `-s none` skips AddressSanitizer (the parsers are safe Rust; the
# coverage-guided fuzzing and debug assertions are what finds their bugs). Needs cargo-fuzz
# (scripts/setup.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-60}"
case "$secs" in ''|*[!0-9]*) echo "usage: $0 [seconds]" >&2; exit 2 ;; esac
targets=(gguf wire http member)
export RUSTC_BOOTSTRAP=1
# The same flags for build and run, so `run` does not rebuild.
flags=(-s none --codegen-units 16)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "error: cargo-fuzz is not installed: cargo install cargo-fuzz --locked (scripts/setup.sh does)" >&2
  exit 1
fi

start=$(date +%s)
cargo fuzz build "${flags[@]}"
echo "fuzz: targets built in $(( $(date +%s) - start )) s"

failed=0
for t in "${targets[@]}"; do
  # New inputs found in CI go to a scratch folder, not into the committed seed corpus.
  work="fuzz/target/corpus/$t"
  mkdir -p "$work" "fuzz/artifacts/$t"
  if [ "$secs" = 0 ]; then
    limit=(-runs=0)
  else
    limit=(-max_total_time="$secs")
  fi
  dict=()
  if [ -f "fuzz/dicts/$t.dict" ]; then dict=(-dict="fuzz/dicts/$t.dict"); fi
  echo "fuzz: $t for ${secs} s"
  touch "fuzz/target/$t.start"
  if ! cargo fuzz run "${flags[@]}" "$t" "$work" "fuzz/corpus/$t" -- \
       "${limit[@]}" "${dict[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 ${EDGERAY_FUZZ_ARGS:-} >"fuzz/target/$t.log" 2>&1; then
    failed=1
    tail -n 60 "fuzz/target/$t.log" >&2
    echo "fuzz: target $t FAILED; crashing input(s):" >&2
    for f in $(find "fuzz/artifacts/$t" -type f -newer "fuzz/target/$t.start"); do
      echo "  $f ($(stat -c %s "$f") bytes): replay with: RUSTC_BOOTSTRAP=1 cargo fuzz run ${flags[*]} $t $f" >&2
      xxd "$f" | head -n 8 >&2 || true
    done
  else
    grep -E "stat::number_of_executed_units|stat::new_units_added|Done [0-9]+ runs" "fuzz/target/$t.log" | tr '\n' ' '
    echo
  fi
done
exit "$failed"
