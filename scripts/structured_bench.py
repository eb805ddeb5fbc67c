#!/usr/bin/env python3
"""Per-token cost of structured output: decode speed of a `json_schema` answer against the
same request without `response_format`, alternating on one server (same run, same prompt).

Usage (a release `serve` on the qwen2.5 instruct model):
    target/release/edgeray serve --model models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf --http 127.0.0.1:8080 --no-auth &
    python3 scripts/structured_bench.py --base-url http://127.0.0.1:8080/v1 --reps 5

Decode speed is (completion tokens - 1) / (time of the last streamed token - time of the
first): the prompt and the first token do not count. With --pid (the server's process id, on
the same machine) it also compares the server's CPU time per generated token (user + system,
from /proc), which other processes on a shared machine disturb much less than wall time. The schema asks for 40 strings, so both
answers run to --max-tokens. Prints each pair and the range of the ratio constrained/free.
"""

import argparse
import json
import time

from openai import OpenAI

SCHEMA = {
    "type": "object",
    "properties": {"cities": {"type": "array", "items": {"type": "string"}, "minItems": 40}},
    "required": ["cities"],
}
PROMPT = "List forty cities of the world as JSON."


def cpu_seconds(pid):
    if pid is None:
        return 0.0
    import os
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def decode_rate(client, model, max_tokens, response_format, pid=None):
    cpu0 = cpu_seconds(pid)
    kw = {"response_format": response_format} if response_format else {}
    stream = client.chat.completions.create(
        model=model, max_tokens=max_tokens, temperature=0, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": PROMPT}], **kw)
    first = last = None
    tokens, text = 0, []
    for ch in stream:
        now = time.perf_counter()
        if ch.usage is not None:
            tokens = ch.usage.completion_tokens
        if ch.choices and ch.choices[0].delta.content:
            text.append(ch.choices[0].delta.content)
            first = first or now
            last = now
    cpu = (cpu_seconds(pid) - cpu0) / max(tokens, 1)
    return (tokens - 1) / (last - first), tokens, "".join(text), cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--model", default=None)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--pid", type=int, default=None, help="the server's pid: compare CPU time per token too")
    args = ap.parse_args()
    client = OpenAI(base_url=args.base_url, api_key="edgeray", timeout=600)
    model = args.model or client.models.list().data[0].id
    rf = {"type": "json_schema", "json_schema": {"name": "cities", "schema": SCHEMA, "strict": True}}
    decode_rate(client, model, 8, None)  # warm-up
    decode_rate(client, model, 8, rf)  # warm-up (the last stage prepares the vocabulary once)
    ratios, cpu_ratios = [], []
    for i in range(args.reps):
        free, nf, _, cpu_f = decode_rate(client, model, args.max_tokens, None, args.pid)
        cons, nc, text, cpu_c = decode_rate(client, model, args.max_tokens, rf, args.pid)
        ratios.append(cons / free)
        line = (f"rep {i}: free {free:.2f} tok/s ({nf} tokens), json_schema {cons:.2f} tok/s ({nc} tokens), "
                f"ratio {cons / free:.3f}")
        if args.pid:
            cpu_ratios.append(cpu_c / cpu_f)
            line += f"; CPU ms/token free {cpu_f * 1e3:.1f}, json_schema {cpu_c * 1e3:.1f}, ratio {cpu_c / cpu_f:.3f}"
        print(line)
    med = lambda xs: sorted(xs)[len(xs) // 2]
    print(f"constrained/free decode speed: {min(ratios):.3f}-{max(ratios):.3f} (median {med(ratios):.3f})")
    if cpu_ratios:
        print(f"constrained/free server CPU per token: {min(cpu_ratios):.3f}-{max(cpu_ratios):.3f} "
              f"(median {med(cpu_ratios):.3f})")
    print(f"last constrained answer: {text[:120]}...")
    json.dumps(ratios)


if __name__ == "__main__":
    main()
