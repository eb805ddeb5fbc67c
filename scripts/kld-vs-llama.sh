#!/usr/bin/env bash
# Distribution-level comparison of edgeray with llama.cpp on real text, with llama.cpp's own
# batch-vs-sequential disagreement as the noise floor.
#
#   scripts/kld-vs-llama.sh [TEXT...]     (default: tests/fixtures/text/*.txt)
#
# For each model in models/ and each text: `llama-perplexity` scores the text through its prompt
# path (batch = context) and writes its log-probabilities (`--kl-divergence-base`); then
# - llama.cpp's one-token path (`-b 1 -ub 1`, one token per decode) is compared with that file:
#   the noise floor, how far llama.cpp is from itself;
# - `edgeray perplexity --kld-base` is compared with the same file.
# Prints one markdown row per model and text: scored tokens, PPL of each, and for both
# comparisons the PPL ratio, mean and max KL divergence and top-1 agreement.
#
# llama-perplexity is built from the sources of scripts/build-llama-bench.sh (llama.cpp 0c1e570)
# unless $LLAMA_PERPLEXITY names one. Context: $CTX (default 256; a text needs 2 x CTX tokens).
# Threads: $THREADS (default 2). The edgeray binary: $EDGERAY_BIN (default: a release build).
set -euo pipefail
cd "$(dirname "$0")/.."

ctx="${CTX:-256}"
threads="${THREADS:-2}"
if [ "$#" -gt 0 ]; then texts=("$@"); else texts=(tests/fixtures/text/*.txt); fi

llama="${LLAMA_PERPLEXITY:-}"
if [ -z "$llama" ]; then
  llama=$(scripts/build-llama-bench.sh target/llama.cpp llama-perplexity | tail -1)
fi
if [ -n "${EDGERAY_BIN:-}" ]; then
  edgeray=$EDGERAY_BIN
else
  cargo build -q --release -p edgeray --bins
  edgeray=target/release/edgeray
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The number after "label:" in llama-perplexity's KL statistics (first match).
stat() { grep -m1 "$1" "$2" | sed -E 's/^[^:]*:[[:space:]]*([-0-9.eE+]+).*/\1/'; }

echo "| model | text | scored | PPL llama.cpp (batch) | PPL edgeray | edgeray vs llama.cpp batch: PPL ratio / mean KLD / max KLD / top-1 | llama.cpp sequential vs batch: PPL ratio / mean KLD / max KLD / top-1 |"
echo "|---|---|---|---|---|---|---|"
for model in models/*.gguf; do
  for text in "${texts[@]}"; do
    base="$work/base.bin"
    "$llama" -m "$model" -f "$text" -c "$ctx" -b "$ctx" -ub "$ctx" -t "$threads" \
      --kl-divergence-base "$base" >"$work/base.log" 2>&1 ||
      { cat "$work/base.log" >&2; exit 1; }
    "$llama" -m "$model" -f "$text" -c "$ctx" -b 1 -ub 1 -t "$threads" \
      --kl-divergence-base "$base" --kl-divergence >"$work/seq.log" 2>&1 ||
      { cat "$work/seq.log" >&2; exit 1; }
    "$edgeray" perplexity --model "$model" --text-file "$text" --kld-base "$base" \
      --threads "$threads" --top-logprobs 1 --json >"$work/edgeray.json" 2>"$work/edgeray.log" ||
      { cat "$work/edgeray.log" >&2; exit 1; }
    seq_ratio=$(stat '^Mean PPL(Q)/PPL(base)' "$work/seq.log")
    seq_kld=$(stat '^Mean    KLD' "$work/seq.log")
    seq_max=$(stat '^Maximum KLD' "$work/seq.log")
    seq_top=$(stat '^Same top p' "$work/seq.log")
    python3 - "$work/edgeray.json" "$(basename "$model" .gguf)" "$(basename "$text")" \
      "$seq_ratio" "$seq_kld" "$seq_max" "$seq_top" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
k = d["kld"]
model, text, sr, sk, sm, st = sys.argv[2:8]
print(f"| {model} | {text} | {k['positions']} | {k['ppl_base']:.4f} | {k['ppl']:.4f} | "
      f"{k['ppl_ratio']:.5f} / {k['kld_mean']:.2e} / {k['kld_max']:.2e} / {100 * k['top1_agreement']:.1f} % | "
      f"{float(sr):.5f} / {float(sk):.2e} / {float(sm):.2e} / {float(st):.1f} % |")
PY
  done
done
