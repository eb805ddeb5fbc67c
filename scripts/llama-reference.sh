#!/usr/bin/env bash
# Regenerates the llama.cpp references of model/tests/exactness_real.rs (compact fixtures in
# model/tests/fixtures/llama/): for each model in models/ and each text of tests/fixtures/text/,
# llama-perplexity scores the text through its prompt path (batch = context, the reference) and
# through its one-token path (the noise floor), and scripts/llama-reference.py keeps the top
# $TOP (default 10) log-probabilities of every scored position.
#
# llama-perplexity comes from the sources of scripts/build-llama-bench.sh (llama.cpp 0c1e570)
# unless $LLAMA_PERPLEXITY names one. Context: $CTX (default 256). Threads: $THREADS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."

ctx="${CTX:-256}"
threads="${THREADS:-2}"
top="${TOP:-10}"
llama="${LLAMA_PERPLEXITY:-}"
if [ -z "$llama" ]; then
  llama=$(scripts/build-llama-bench.sh target/llama.cpp llama-perplexity | tail -1)
fi
out=model/tests/fixtures/llama
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for model in models/*.gguf; do
  m=$(basename "$model" .gguf)
  for text in tests/fixtures/text/*.txt; do
    t=$(basename "$text" .txt)
    "$llama" -m "$model" -f "$text" -c "$ctx" -b "$ctx" -ub "$ctx" -t "$threads" \
      --kl-divergence-base "$work/base.bin" >"$work/base.log" 2>&1 ||
      { cat "$work/base.log" >&2; exit 1; }
    "$llama" -m "$model" -f "$text" -c "$ctx" -b 1 -ub 1 -t "$threads" \
      --kl-divergence-base "$work/base.bin" --kl-divergence >"$work/seq.log" 2>&1 ||
      { cat "$work/seq.log" >&2; exit 1; }
    python3 scripts/llama-reference.py "$work/base.bin" "$work/seq.log" "$m" "$t.txt" "$top" \
      >"$out/$m-$t.json"
    echo "$out/$m-$t.json: $(stat -c %s "$out/$m-$t.json") bytes"
  done
done
