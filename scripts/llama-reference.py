#!/usr/bin/env python3
"""Writes a compact llama.cpp reference (a test fixture) from a `llama-perplexity
--kl-divergence-base` file: per scored position, the log-probability llama.cpp gives the actual
next token and its K most likely tokens. The full file holds every vocabulary entry (130 MB for a
512-token text with gemma3's 262,144 tokens); this keeps what a distribution-level test needs.

    scripts/llama-reference.py BASE.bin SEQUENTIAL.log MODEL TEXT K > fixture.json

SEQUENTIAL.log is llama-perplexity's output for the one-token path compared with BASE.bin
(`-b 1 -ub 1 --kl-divergence`): its PPL ratio, mean KL divergence and top-1 agreement are
llama.cpp's own noise floor, stored with the reference. scripts/llama-reference.sh runs it all.
"""

import array
import heapq
import json
import re
import struct
import sys


def stat(log, label):
    for line in log.splitlines():
        if line.startswith(label):
            return float(re.search(r":\s*([-0-9.eE+]+)", line).group(1))
    sys.exit(f"no '{label}' line in the llama-perplexity log")


def main():
    base, seq_log, model, text, k = sys.argv[1:6]
    k = int(k)
    data = open(base, "rb").read()
    if data[:8] != b"_logits_":
        sys.exit(f"{base}: not a --kl-divergence-base file")
    n_ctx, n_vocab, n_chunk = struct.unpack_from("<iii", data, 8)
    off = 20
    tokens = list(struct.unpack_from(f"<{n_ctx * n_chunk}i", data, off))
    off += 4 * n_ctx * n_chunk
    nv = 2 * ((n_vocab + 1) // 2) + 4
    first = n_ctx // 2
    positions = []
    for c in range(n_chunk):
        for pos in range(first, n_ctx - 1):
            rec = array.array("H")
            rec.frombytes(data[off : off + 2 * nv])
            off += 2 * nv
            scale, min_lp = struct.unpack("<ff", rec[:4].tobytes())
            q = rec[4 : 4 + n_vocab]
            lp = lambda i: scale * q[i] + min_lp  # noqa: E731 (as llama.cpp, in f32 then widened)
            nxt = tokens[c * n_ctx + pos + 1]
            top = heapq.nsmallest(k, range(n_vocab), key=lambda i: (-q[i], i))
            positions.append(
                {
                    "index": c * n_ctx + pos + 1,
                    "token": nxt,
                    "logprob": round(lp(nxt), 6),
                    "top": [[i, round(lp(i), 6)] for i in top],
                }
            )
    if off != len(data):
        sys.exit(f"{base}: {len(data) - off} bytes left after the records")
    log = open(seq_log).read()
    out = {
        "about": "llama.cpp (llama-cpp-python 0.3.36, commit 0c1e570, GGML_NATIVE) batch-path "
        "log-probabilities of the scored positions, top-K only; noise: its one-token path against "
        "its batch path (scripts/llama-reference.sh)",
        "model": model,
        "text": text,
        "ctx": n_ctx,
        "chunks": n_chunk,
        "tokens": tokens,
        "positions": positions,
        "noise": {
            "ppl_ratio": stat(log, "Mean PPL(Q)/PPL(base)"),
            "kld_mean": stat(log, "Mean    KLD"),
            "top1_agreement": stat(log, "Same top p") / 100.0,
        },
    }
    json.dump(out, sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
