#!/usr/bin/env python3
"""Check an OpenAI-compatible server (e.g. `edgeray serve`) with the official `openai` client.

Usage:
    pip install openai
    python3 scripts/openai_client_test.py --base-url http://127.0.0.1:8080/v1 --model MODEL_ID

Runs a text completion, a chat completion and a streaming chat completion, and asserts sane
results: non-empty text, a valid finish_reason, consistent usage counts. Exits non-zero with a
message on the first failure.
"""

import argparse
import os
import sys

try:
    import openai
    from openai import OpenAI
except ImportError:  # pragma: no cover - environment problem, not a test failure
    sys.exit("the `openai` package is required: pip install openai")

FINISH_REASONS = {"stop", "length"}


def check(cond, message):
    if not cond:
        raise AssertionError(message)


def check_usage(usage, what):
    check(usage is not None, f"{what}: no usage")
    check(usage.prompt_tokens > 0, f"{what}: prompt_tokens = {usage.prompt_tokens}")
    check(usage.completion_tokens > 0, f"{what}: completion_tokens = {usage.completion_tokens}")
    check(
        usage.total_tokens == usage.prompt_tokens + usage.completion_tokens,
        f"{what}: total_tokens {usage.total_tokens} != {usage.prompt_tokens} + {usage.completion_tokens}",
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8080/v1")
    ap.add_argument("--model", required=True, help="model id the server serves")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    args = ap.parse_args()

    client = OpenAI(base_url=args.base_url, api_key=os.environ.get("OPENAI_API_KEY", "edgeray"), timeout=args.timeout, max_retries=2)

    models = [m.id for m in client.models.list().data]
    check(args.model in models, f"/v1/models lists {models}, not {args.model}")
    print(f"models: {models}")

    # 1. text completion
    c = client.completions.create(
        model=args.model, prompt="The capital of France is", max_tokens=args.max_tokens, temperature=0
    )
    check(c.object == "text_completion", f"completion object = {c.object}")
    check(len(c.choices) == 1, "completion: expected one choice")
    text = c.choices[0].text
    check(text != "", f"completion: empty text {text!r}")
    check(c.choices[0].finish_reason in FINISH_REASONS, f"completion finish_reason = {c.choices[0].finish_reason}")
    check_usage(c.usage, "completion")
    check(c.usage.completion_tokens <= args.max_tokens, "completion: more tokens than max_tokens")
    print(f"completion: {text!r} ({c.choices[0].finish_reason}, {c.usage.completion_tokens} tokens)")

    # 2. chat completion
    messages = [
        {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
        {"role": "user", "content": "Name a primary colour."},
    ]
    r = client.chat.completions.create(model=args.model, messages=messages, max_tokens=args.max_tokens, temperature=0)
    check(r.object == "chat.completion", f"chat object = {r.object}")
    msg = r.choices[0].message
    check(msg.role == "assistant", f"chat role = {msg.role}")
    check((msg.content or "") != "", f"chat: empty content {msg.content!r}")
    check(r.choices[0].finish_reason in FINISH_REASONS, f"chat finish_reason = {r.choices[0].finish_reason}")
    check_usage(r.usage, "chat")
    print(f"chat: {msg.content!r} ({r.choices[0].finish_reason}, {r.usage.completion_tokens} tokens)")

    # 3. streaming chat completion
    stream = client.chat.completions.create(
        model=args.model,
        messages=messages,
        max_tokens=args.max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage, n_chunks, ids = [], None, None, 0, set()
    for chunk in stream:
        n_chunks += 1
        ids.add(chunk.id)
        check(chunk.object == "chat.completion.chunk", f"stream chunk object = {chunk.object}")
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason is not None:
                finish = choice.finish_reason
    streamed = "".join(pieces)
    check(streamed != "", "stream: no content")
    check(finish in FINISH_REASONS, f"stream finish_reason = {finish}")
    check(len(ids) == 1, f"stream: chunks carry {len(ids)} different ids")
    check(len(pieces) >= 1 and n_chunks >= 3, f"stream: only {n_chunks} chunks")
    check_usage(usage, "stream")
    check(usage.completion_tokens >= len(pieces), "stream: fewer tokens than content chunks")
    print(f"stream: {streamed!r} ({finish}, {n_chunks} chunks)")

    # 4. an unknown model is a 404 in OpenAI's error shape
    try:
        client.chat.completions.create(model=args.model + "-missing", messages=messages, max_tokens=1)
        check(False, "unknown model did not fail")
    except openai.NotFoundError as e:
        check(e.status_code == 404, f"unknown model status {e.status_code}")
    print("unknown model: 404 as expected")
    print("OK")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        sys.exit(f"FAILED: {e}")
