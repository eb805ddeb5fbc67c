#!/usr/bin/env python3
"""Check an OpenAI-compatible server (e.g. `edgeray serve`) with the official `openai` client.

Usage:
    pip install openai
    python3 scripts/openai_client_test.py --base-url http://127.0.0.1:8080/v1 --model MODEL_ID

Runs a text completion, a chat completion and a streaming chat completion, and asserts sane
results: non-empty text, a valid finish_reason, consistent usage counts. Then log-probabilities
as clients use them: chat `logprobs`/`top_logprobs` (streamed and not), and completions
`logprobs` with `echo` and `max_tokens: 0` (how evaluation harnesses score a text), streamed and
not. Exits non-zero with a message on the first failure.

With `--structured`, runs only the structured-output checks (`response_format`: ten
`json_schema` prompts that must parse and validate, a streamed one, sampled `json_object`
answers, a bad schema's 400); tests/tests/pipeline_processes.rs (serve_qwen…) runs them on qwen2.5 instruct.
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


# Structured output (`--structured`, run against the qwen2.5 instruct model by
# tests/tests/pipeline_processes.rs serve_qwen…): ten json_schema prompts whose answers must parse and
# validate, and json_object prompts whose answers must parse as objects. Numbers are bounded:
# an unbounded integer lets a 0.5B model write zeros until max_tokens.
STRUCTURED = [
    ("Describe a fictional person.", {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0, "maximum": 130}},
        "required": ["name", "age"]}),
    ("Give facts about Paris.", {
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}, "population": {"type": "integer", "minimum": 0, "maximum": 100000000}},
        "required": ["city", "country", "population"]}),
    ("A recipe for pancakes.", {
        "type": "object",
        "properties": {"title": {"type": "string"},
                       "ingredients": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 6}},
        "required": ["title", "ingredients"]}),
    ("Recommend a book.", {
        "type": "object",
        "properties": {"title": {"type": "string"}, "author": {"type": "string"}, "year": {"type": "integer", "minimum": 0, "maximum": 2100}},
        "required": ["title", "author", "year"]}),
    ("What is the weather like in Berlin today?", {
        "type": "object",
        "properties": {"location": {"type": "string"},
                       "condition": {"enum": ["sunny", "cloudy", "rain", "snow"]},
                       "temperature_c": {"type": "number", "minimum": -80, "maximum": 60}},
        "required": ["location", "condition", "temperature_c"]}),
    ("Describe a laptop for sale.", {
        "type": "object",
        "properties": {"product": {"type": "string"}, "price": {"type": "number", "minimum": 0, "maximum": 100000},
                       "in_stock": {"type": "boolean"}},
        "required": ["product", "price", "in_stock"]}),
    ("List three tasks for today.", {
        "type": "object",
        "properties": {"tasks": {"type": "array", "minItems": 3, "maxItems": 3, "items": {
            "type": "object", "properties": {"task": {"type": "string"}, "done": {"type": "boolean"}},
            "required": ["task", "done"]}}},
        "required": ["tasks"]}),
    ("Tell me about the movie Inception.", {
        "type": "object",
        "properties": {"title": {"type": "string"}, "year": {"type": "integer", "minimum": 1880, "maximum": 2100},
                       "genres": {"type": "array", "items": {"type": "string"}, "maxItems": 3}},
        "required": ["title", "year", "genres"]}),
    ("Describe the colour teal.", {
        "type": "object",
        "properties": {"name": {"type": "string"}, "hex": {"type": "string", "pattern": "^#[0-9a-fA-F]{6}$"},
                       "rgb": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 255},
                               "minItems": 3, "maxItems": 3}},
        "required": ["name", "hex", "rgb"]}),
    ("Is 17 a prime number? Explain.", {
        "type": "object",
        "properties": {"answer": {"type": "boolean"}, "reason": {"type": ["string", "null"]}},
        "required": ["answer", "reason"]}),
]


def mini_validate(schema, v, path="$"):
    """The schema subset STRUCTURED uses (when the `jsonschema` package is missing)."""
    import re
    t = schema.get("type")
    types = t if isinstance(t, list) else [t] if t else []
    is_int = isinstance(v, int) and not isinstance(v, bool)
    kinds = {"object": isinstance(v, dict), "array": isinstance(v, list), "string": isinstance(v, str),
             "integer": is_int, "number": is_int or isinstance(v, float), "boolean": isinstance(v, bool),
             "null": v is None}
    check(not types or any(kinds[k] for k in types), f"{path}: {v!r} is not {types}")
    if "enum" in schema:
        check(v in schema["enum"], f"{path}: {v!r} not in {schema['enum']}")
    if kinds["number"] and not isinstance(v, bool):
        check(v >= schema.get("minimum", v) and v <= schema.get("maximum", v), f"{path}: {v} out of range")
    if isinstance(v, str) and "pattern" in schema:
        check(re.search(schema["pattern"], v), f"{path}: {v!r} does not match {schema['pattern']}")
    if isinstance(v, list):
        check(schema.get("minItems", 0) <= len(v) <= schema.get("maxItems", len(v)), f"{path}: {len(v)} items")
        for i, x in enumerate(v):
            mini_validate(schema.get("items", {}), x, f"{path}[{i}]")
    if isinstance(v, dict):
        props = schema.get("properties", {})
        for r in schema.get("required", []):
            check(r in v, f"{path}: missing {r}")
        for k, x in v.items():
            if k in props:
                mini_validate(props[k], x, f"{path}.{k}")
            else:
                check(schema.get("additionalProperties", True) is not False, f"{path}: extra key {k}")


def validate(schema, v):
    try:
        import jsonschema
    except ImportError:
        return mini_validate(schema, v)
    jsonschema.validate(v, schema)


def structured_checks(client, model, max_tokens):
    import json
    for i, (prompt, schema) in enumerate(STRUCTURED):
        strict = i % 2 == 0
        if not strict:
            # The schema says it itself (without either, extra keys may go on and on).
            schema = dict(schema, additionalProperties=False)
        r = client.chat.completions.create(
            model=model, max_tokens=max_tokens, temperature=0,
            messages=[{"role": "system", "content": "Answer in JSON."}, {"role": "user", "content": prompt}],
            response_format={"type": "json_schema",
                             "json_schema": {"name": f"answer_{i}", "schema": schema, "strict": strict}},
        )
        content = r.choices[0].message.content
        check(r.choices[0].finish_reason == "stop", f"json_schema {i}: finish_reason {r.choices[0].finish_reason} ({content!r})")
        v = json.loads(content)
        validate(schema, v)
        check(set(v) <= set(schema["properties"]), f"json_schema {i}: extra keys {sorted(v)}")
        print(f"json_schema {i}: {content}")
    # A streamed answer is the same document.
    prompt, schema = STRUCTURED[0]
    rf = {"type": "json_schema", "json_schema": {"name": "answer_0", "schema": schema, "strict": True}}
    msgs = [{"role": "system", "content": "Answer in JSON."}, {"role": "user", "content": prompt}]
    whole = client.chat.completions.create(model=model, max_tokens=max_tokens, temperature=0, messages=msgs,
                                           response_format=rf).choices[0].message.content
    streamed = "".join(ch.choices[0].delta.content or "" for ch in client.chat.completions.create(
        model=model, max_tokens=max_tokens, temperature=0, messages=msgs, response_format=rf, stream=True)
        if ch.choices)
    check(streamed == whole, f"json_schema stream: {streamed!r} != {whole!r}")
    for prompt in ["List two fruits and their colours.", "Who wrote Hamlet?", "Give me a random number."]:
        r = client.chat.completions.create(
            model=model, max_tokens=max_tokens, temperature=0.7, seed=7,
            messages=[{"role": "user", "content": prompt + " Reply in JSON."}],
            response_format={"type": "json_object"},
        )
        content = r.choices[0].message.content
        check(r.choices[0].finish_reason == "stop", f"json_object: finish_reason {r.choices[0].finish_reason} ({content!r})")
        check(isinstance(json.loads(content), dict), f"json_object: {content!r} is not an object")
        print(f"json_object: {content}")
    # A bad schema is a 400 naming response_format.
    try:
        client.chat.completions.create(
            model=model, max_tokens=4, messages=msgs,
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "banana"}}})
        check(False, "a bad schema was accepted")
    except openai.BadRequestError as e:
        check(e.status_code == 400 and "response_format" in str(e), f"bad schema: {e}")
    print("bad schema: 400 as expected")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8080/v1")
    ap.add_argument("--model", required=True, help="model id the server serves")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    ap.add_argument("--structured", action="store_true", help="only the structured-output checks")
    args = ap.parse_args()

    client = OpenAI(base_url=args.base_url, api_key=os.environ.get("OPENAI_API_KEY", "edgeray"), timeout=args.timeout, max_retries=2)

    models = [m.id for m in client.models.list().data]
    check(args.model in models, f"/v1/models lists {models}, not {args.model}")
    print(f"models: {models}")
    if args.structured:
        structured_checks(client, args.model, args.max_tokens)
        print("OK")
        return

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

    # 5. chat log-probabilities: greedy picks the most likely token; the tokens' bytes are the text
    r = client.chat.completions.create(
        model=args.model, messages=messages, max_tokens=args.max_tokens, temperature=0, logprobs=True, top_logprobs=3
    )
    content = r.choices[0].message.content or ""
    lps = r.choices[0].logprobs.content
    check(len(lps) >= 1, "chat logprobs: no entries")
    check(len(lps) <= r.usage.completion_tokens, "chat logprobs: more entries than tokens")
    for e in lps:
        check(e.logprob <= 0.0, f"chat logprobs: logprob {e.logprob} > 0")
        check(len(e.top_logprobs) == 3, f"chat logprobs: {len(e.top_logprobs)} alternatives, asked for 3")
        check(
            e.top_logprobs[0].token == e.token and e.top_logprobs[0].logprob == e.logprob,
            f"chat logprobs: greedy token {e.token!r} is not the most likely {e.top_logprobs[0].token!r}",
        )
        check(
            all(a.logprob >= b.logprob for a, b in zip(e.top_logprobs, e.top_logprobs[1:])),
            "chat logprobs: alternatives not best first",
        )
    joined = b"".join(bytes(e.bytes) for e in lps).decode("utf-8", errors="replace")
    check(joined == content, f"chat logprobs: tokens spell {joined!r}, content is {content!r}")
    check(content == msg.content, "chat logprobs: asking for them changed the greedy answer")
    print(f"chat logprobs: {len(lps)} tokens, first {lps[0].token!r} {lps[0].logprob:.3f}")

    # 6. streamed chat log-probabilities: one entry per streamed token, same values as above
    stream = client.chat.completions.create(
        model=args.model, messages=messages, max_tokens=args.max_tokens, temperature=0, logprobs=True,
        top_logprobs=3, stream=True,
    )
    streamed = []
    for chunk in stream:
        for choice in chunk.choices:
            if choice.logprobs is not None and choice.logprobs.content:
                streamed.extend(choice.logprobs.content)
    check(
        [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in lps],
        "streamed chat logprobs differ from the non-streamed ones",
    )
    print(f"stream logprobs: {len(streamed)} tokens, identical")

    # 7. scoring a text: echo + logprobs + max_tokens 0 (lm-eval-harness's loglikelihood)
    text = "The capital of France is Paris."
    c = client.completions.create(model=args.model, prompt=text, echo=True, logprobs=2, max_tokens=0, temperature=0)
    lp = c.choices[0].logprobs
    check(c.choices[0].text == text, f"echo: text {c.choices[0].text!r}")
    check(c.usage.completion_tokens == 0, f"echo: {c.usage.completion_tokens} tokens generated with max_tokens 0")
    check("".join(lp.tokens) == text, f"echo: tokens {lp.tokens!r} do not spell the prompt")
    check(len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset), "echo: list lengths differ")
    scored = [x for x in lp.token_logprobs if x is not None]
    check(len(scored) >= len(lp.tokens) - 1, "echo: more than the first token unscored")
    check(all(x <= 0.0 for x in scored), "echo: a logprob > 0")
    check(lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0, f"echo: offsets {lp.text_offset}")
    for i, top in enumerate(lp.top_logprobs):
        if lp.token_logprobs[i] is not None:
            check(len(top) >= 1 and max(top.values()) >= lp.token_logprobs[i], f"echo: position {i} alternatives")
    total = sum(scored)
    print(f"echo: {len(lp.tokens)} tokens, sum logprob {total:.3f}")

    # 8. the same, streamed and continuing: the prompt's scores first, then the generated tokens
    stream = client.completions.create(
        model=args.model, prompt=text, echo=True, logprobs=2, max_tokens=3, temperature=0, stream=True
    )
    chunks = [ch for ch in stream if ch.choices]
    first = chunks[0].choices[0]
    check(first.text == text, f"echo stream: first chunk {first.text!r}")
    check(first.logprobs.token_logprobs == lp.token_logprobs, "echo stream: prompt scores differ from the non-streamed ones")
    generated = [t for ch in chunks[1:] if ch.choices[0].logprobs for t in ch.choices[0].logprobs.tokens]
    check(1 <= len(generated) <= 3, f"echo stream: {len(generated)} generated tokens")
    print(f"echo stream: prompt then {generated!r}")

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
