#!/usr/bin/env bash
# Same-run speed comparison of edgeray against llama.cpp on the real models.
#
#   scripts/bench-vs-llama.sh [rounds]        (default 2 rounds)
#
# For each model in models/ and each thread count in $THREADS (default "1 2"), runs
# `llama-bench` and `edgeray bench` alternately, `rounds` times each (alternating spreads the
# noise of a shared machine over both), and prints one markdown row per model and thread count:
# the median tokens/s of each and edgeray's ratio to llama.cpp, for prompt processing (pp) and
# generation (tg).
#
# Needs a llama.cpp build: $LLAMA_BENCH (default: `llama-bench` on PATH). Prompt and generation
# lengths: $PP (default 128) and $TG (default 32). Extra `edgeray bench` flags: $EDGERAY_BENCH_ARGS;
# the binary measured: $EDGERAY_BIN (default: a fresh release build of this tree).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds="${1:-2}"
llama="${LLAMA_BENCH:-$(command -v llama-bench || true)}"
if [ -z "$llama" ] || [ ! -x "$llama" ]; then
  echo "bench-vs-llama: no llama-bench (set LLAMA_BENCH=/path/to/llama-bench)" >&2
  exit 2
fi
pp="${PP:-128}"
tg="${TG:-32}"
threads="${THREADS:-1 2}"

# The release build, as scripts/setup.sh builds it for users: the dev profile keeps overflow
# checks and debug assertions in the model crate (for the tests), which halve kernel speed.
# $EDGERAY_BIN names another (release) binary to measure instead, e.g. a saved earlier build.
if [ -n "${EDGERAY_BIN:-}" ]; then
  edgeray=$EDGERAY_BIN
else
  cargo build -q --release -p edgeray --bins
  edgeray=target/release/edgeray
fi

median() { sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

echo "| model | threads | llama.cpp pp$pp / tg$tg | edgeray pp$pp / tg$tg | ratio pp / tg | edgeray peak RSS / budget (MiB) |"
echo "|---|---|---|---|---|---|"
for model in models/*.gguf; do
  for t in $threads; do
    lpp=(); ltg=(); epp=(); etg=()
    for ((r = 0; r < rounds; r++)); do
      csv=$("$llama" -m "$model" -t "$t" -p "$pp" -n "$tg" -r 3 -o csv 2>/dev/null)
      # avg_ts is the second-to-last column; the pp row has n_gen = 0.
      lpp+=("$(echo "$csv" | awk -F'","' -v pp="$pp" 'NR > 1 && $(NF-7) == pp && $(NF-6) == 0 {gsub(/"/, "", $(NF-1)); print $(NF-1)}')")
      ltg+=("$(echo "$csv" | awk -F'","' -v tg="$tg" 'NR > 1 && $(NF-6) == tg {gsub(/"/, "", $(NF-1)); print $(NF-1)}')")
      # shellcheck disable=SC2086
      json=$("$edgeray" bench --model "$model" --threads "$t" --reps 3 --prompt-tokens "$pp" \
        --gen-tokens "$tg" --json ${EDGERAY_BENCH_ARGS:-} 2>/dev/null)
      epp+=("$(echo "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pp_tokens_per_s"])')")
      etg+=("$(echo "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tg_tokens_per_s"])')")
      # The memory target: 1.1 x GGUF + KV cache + 64 MiB (`edgeray bench` computes it).
      rss=$(echo "$json" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.0f / %.0f" % (d["peak_rss_bytes"] / 2**20, d["rss_budget_bytes"] / 2**20))')
    done
    mlpp=$(printf '%s\n' "${lpp[@]}" | median); mltg=$(printf '%s\n' "${ltg[@]}" | median)
    mepp=$(printf '%s\n' "${epp[@]}" | median); metg=$(printf '%s\n' "${etg[@]}" | median)
    awk -v m="$(basename "$model" .gguf)" -v t="$t" -v a="$mlpp" -v b="$mltg" -v c="$mepp" -v d="$metg" -v r="$rss" \
      'BEGIN {printf "| %s | %s | %.1f / %.1f | %.1f / %.1f | %.2f× / %.2f× | %s |\n", m, t, a, b, c, d, c/a, d/b, r}'
  done
done
