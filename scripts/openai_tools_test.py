#!/usr/bin/env python3
"""Check tool calling, strict validation, penalties and n_predict of an OpenAI-compatible server
(`edgeray serve` on a model whose chat template offers tools, e.g. Qwen2.5) with the official
`openai` client.

Usage:
    python3 scripts/openai_tools_test.py --base-url http://127.0.0.1:8080/v1 --model MODEL_ID

1. a tool call round trip: asked for the weather with a `get_weather` tool, the model returns a
   call whose arguments parse and name a city; the tool's result is fed back (assistant
   `tool_calls` + `tool` message) and the final answer streams;
2. `tool_choice: "required"` and a named tool force a call;
3. an unknown request field is a 400 naming it;
4. presence and frequency penalties change a greedy answer that repeats itself;
5. llama-server's `n_predict` bounds the answer;
6. `/v1/embeddings`: unit vectors, deterministic, similar sentences closer.
Exits non-zero with a message on the first failure.
"""

import argparse
import json
import os
import sys

try:
    import openai
    from openai import OpenAI
except ImportError:  # pragma: no cover - environment problem, not a test failure
    sys.exit("the `openai` package is required: pip install openai")

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "the city's name"}},
            "required": ["city"],
        },
    },
}


def check(cond, message):
    if not cond:
        raise AssertionError(message)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args()
    client = OpenAI(base_url=args.base_url, api_key=os.environ.get("OPENAI_API_KEY", "edgeray"), timeout=args.timeout, max_retries=0)
    m = args.model

    # 1. round trip
    messages = [{"role": "user", "content": "What is the weather in Berlin?"}]
    r = client.chat.completions.create(model=m, messages=messages, tools=[WEATHER], temperature=0, max_tokens=64)
    choice = r.choices[0]
    calls = choice.message.tool_calls or []
    check(len(calls) >= 1, f"no tool call: {choice.message.content!r}")
    check(choice.finish_reason == "tool_calls", f"finish_reason {choice.finish_reason}")
    call = calls[0]
    check(call.type == "function" and call.function.name == "get_weather", f"call {call}")
    arguments = json.loads(call.function.arguments)
    check("berlin" in str(arguments.get("city", "")).lower(), f"arguments {arguments}")
    print(f"tool call: {call.function.name}({call.function.arguments}) id {call.id}")
    messages.append({"role": "assistant", "content": None, "tool_calls": [
        {"id": call.id, "type": "function", "function": {"name": call.function.name, "arguments": call.function.arguments}}
    ]})
    messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature_c": 21, "sky": "sunny"})})
    stream = client.chat.completions.create(model=m, messages=messages, tools=[WEATHER], temperature=0, max_tokens=48, stream=True)
    text, finish = "", None
    for chunk in stream:
        for c in chunk.choices:
            text += c.delta.content or ""
            check(not c.delta.tool_calls, "the final answer called a tool again")
            finish = c.finish_reason or finish
    check(text.strip() != "", "empty final answer")
    check(finish in ("stop", "length"), f"final finish_reason {finish}")
    print(f"final answer (streamed): {text.strip()!r}")

    # 2. forced calls, streamed and not
    r = client.chat.completions.create(model=m, messages=[{"role": "user", "content": "Tell me about Paris."}],
                                       tools=[WEATHER], tool_choice="required", temperature=0, max_tokens=48)
    check(r.choices[0].message.tool_calls, f"required: no call: {r.choices[0].message.content!r}")
    stream = client.chat.completions.create(model=m, messages=[{"role": "user", "content": "Hello!"}], tools=[WEATHER],
                                            tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                            temperature=0, max_tokens=48, stream=True)
    streamed = [tc for ch in stream for c in ch.choices for tc in (c.delta.tool_calls or [])]
    check(len(streamed) >= 1 and streamed[0].function.name == "get_weather", f"named: {streamed}")
    json.loads(streamed[0].function.arguments)
    print(f"forced calls: required and named ({streamed[0].function.arguments})")

    # 3. strict validation
    try:
        client.chat.completions.create(model=m, messages=[{"role": "user", "content": "hi"}], max_tokens=2,
                                       extra_body={"made_up_field": 1})
        check(False, "an unknown field was accepted")
    except openai.BadRequestError as e:
        check("made_up_field" in str(e), f"400 does not name the field: {e}")
    print("unknown field: 400 naming it")

    # 4. penalties change greedy answers: frequency cuts a repetition short, presence steers
    # away from words already used
    prompt = [{"role": "user", "content": "Repeat the word 'hello' twenty times."}]
    plain = client.chat.completions.create(model=m, messages=prompt, temperature=0, max_tokens=24).choices[0].message.content
    freq = client.chat.completions.create(model=m, messages=prompt, temperature=0, max_tokens=24, frequency_penalty=1.5).choices[0].message.content
    check(plain.lower().count("hello") > freq.lower().count("hello"), f"fewer repeats expected: {plain!r} vs {freq!r}")
    poem = [{"role": "user", "content": "Write a short poem about the sea."}]
    plain_poem = client.chat.completions.create(model=m, messages=poem, temperature=0, max_tokens=30).choices[0].message.content
    pres = client.chat.completions.create(model=m, messages=poem, temperature=0, max_tokens=30, presence_penalty=2.0).choices[0].message.content
    check(pres != plain_poem, f"presence_penalty changed nothing: {plain_poem!r}")
    print(f"penalties: {plain!r} -> {freq!r}; {plain_poem!r} -> {pres!r}")

    # 6. embeddings: one unit vector per input, deterministic, a batch equal to single inputs
    texts = ["The cat sat on the mat.", "A cat was sitting on a rug.", "Quarterly tax filing deadlines"]
    e = client.embeddings.create(model=m, input=texts)
    vecs = [d.embedding for d in sorted(e.data, key=lambda d: d.index)]
    check(len(vecs) == 3 and len({len(v) for v in vecs}) == 1 and len(vecs[0]) >= 64, "embedding shapes")
    for v in vecs:
        check(abs(sum(x * x for x in v) - 1.0) < 1e-4, "embedding not unit length")
    again = client.embeddings.create(model=m, input=texts[0]).data[0].embedding
    check(again == vecs[0], "the same input gave another embedding")
    cos = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
    check(cos(vecs[0], vecs[1]) > cos(vecs[0], vecs[2]), "the cat sentences are not the closest pair")
    check(e.usage.prompt_tokens > 0, "embedding usage")
    print(f"embeddings: {len(vecs)} x {len(vecs[0])}, similarity {cos(vecs[0], vecs[1]):.3f} vs {cos(vecs[0], vecs[2]):.3f}")

    # 5. n_predict
    r = client.completions.create(model=m, prompt="def add(a, b):", temperature=0, extra_body={"n_predict": 5})
    check(r.usage.completion_tokens <= 5, f"n_predict 5 gave {r.usage.completion_tokens} tokens")
    print(f"n_predict: {r.usage.completion_tokens} tokens")
    print("OK")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        sys.exit(f"FAILED: {e}")
