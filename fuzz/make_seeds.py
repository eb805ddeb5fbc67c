#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets (fuzz/corpus/<target>/): small valid inputs and
one invalid example of each kind the parsers must refuse. Run from anywhere; the files are
committed, so this only needs re-running when the formats change."""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def out(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- GGUF ---------------------------------------------------------------------------------
def gstr(s):
    b = s if isinstance(s, bytes) else s.encode()
    return struct.pack("<Q", len(b)) + b


def kv(key, ty, payload):
    return gstr(key) + struct.pack("<I", ty) + payload


def tinfo(name, dims, ty, off):
    return gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims) \
        + struct.pack("<IQ", ty, off)


def gguf(kvs, tensors, data, version=3, align=32):
    h = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs)) + b"".join(kvs) + b"".join(tensors)
    pad = (-len(h)) % align
    return h + b"\0" * pad + data


ARCH = kv("general.architecture", 8, gstr("llama"))
NAME = kv("general.name", 8, gstr("fuzz seed"))
CTX = kv("llama.context_length", 4, struct.pack("<I", 128))
TOKENS = kv("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 3) + gstr("<s>") + gstr("a") + gstr("b"))
SCORES = kv("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, 3) + struct.pack("<fff", 0, -1, -2))
F32 = struct.pack("<8f", *range(8))
Q8_0 = struct.pack("<e", 0.5) + bytes(range(32))  # one block: f16 scale + 32 int8
Q4_K = bytes(144)

def place(*blobs, align=32):
    """Concatenates tensor data at aligned offsets: (data, offsets)."""
    data, offs = b"", []
    for b in blobs:
        data += b"\0" * ((-len(data)) % align)
        offs.append(len(data))
        data += b
    return data, offs


data, (o_a, o_b, o_c) = place(F32, Q8_0, Q4_K)
valid = gguf([ARCH, NAME, CTX, TOKENS, SCORES],
             [tinfo("a.weight", [8], 0, o_a), tinfo("b.weight", [32, 1], 8, o_b),
              tinfo("c.weight", [256], 12, o_c)], data)
out("gguf", "valid-v3", valid)
out("gguf", "valid-v2-no-tensors", gguf([ARCH, NAME], [], b"", version=2))
out("gguf", "valid-align64", gguf([kv("general.alignment", 4, struct.pack("<I", 64)), ARCH],
                                  [tinfo("t", [4, 2], 1, 0)], bytes(16), align=64))
out("gguf", "bad-magic", b"GGUG" + valid[4:])
out("gguf", "truncated", valid[: len(valid) // 2])
out("gguf", "offset-past-end", gguf([ARCH], [tinfo("t", [8], 0, 4096)], F32))
out("gguf", "absurd-dims", gguf([ARCH], [tinfo("t", [1 << 40, 1 << 40], 0, 0)], F32))
out("gguf", "unknown-quant-type", gguf([ARCH], [tinfo("t", [32], 99, 0)], bytes(64)))
out("gguf", "non-utf8-string", gguf([kv("general.name", 8, gstr(b"\xff\xfe bad"))], [], b""))
out("gguf", "huge-array", gguf([kv("x", 9, struct.pack("<IQ", 8, 1 << 60))], [], b""))

def str_array(key, items):
    return kv(key, 9, struct.pack("<IQ", 8, len(items)) + b"".join(gstr(i) for i in items))


def i32_array(key, items):
    return kv(key, 9, struct.pack("<IQ", 5, len(items)) + struct.pack(f"<{len(items)}i", *items))


def f32_array(key, items):
    return kv(key, 9, struct.pack("<IQ", 6, len(items)) + struct.pack(f"<{len(items)}f", *items))


def u32(key, v):
    return kv(key, 4, struct.pack("<I", v))


spm_tokens = ["<unk>", "<s>", "</s>", "\u2581", "a", "b", "\u2581a", "ab", "<0x41>", "<0x0A>"]
out("gguf", "tokenizer-spm", gguf([
    kv("tokenizer.ggml.model", 8, gstr("llama")), str_array("tokenizer.ggml.tokens", spm_tokens),
    f32_array("tokenizer.ggml.scores", [0, 0, 0, -1, -2, -3, -1.5, -2.5, 0, 0]),
    i32_array("tokenizer.ggml.token_type", [2, 3, 3, 1, 1, 1, 1, 1, 6, 6]),
    u32("tokenizer.ggml.bos_token_id", 1), u32("tokenizer.ggml.eos_token_id", 2),
    u32("tokenizer.ggml.unknown_token_id", 0)], [], b""))
bpe_tokens = ["a", "b", "ab", "\u0120", "\u0120a", "!", "<|im_start|>", "<|im_end|>"]
out("gguf", "tokenizer-bpe-qwen2", gguf([
    kv("tokenizer.ggml.model", 8, gstr("gpt2")), kv("tokenizer.ggml.pre", 8, gstr("qwen2")),
    str_array("tokenizer.ggml.tokens", bpe_tokens), str_array("tokenizer.ggml.merges", ["a b", "\u0120 a"]),
    i32_array("tokenizer.ggml.token_type", [1, 1, 1, 1, 1, 1, 3, 3]),
    u32("tokenizer.ggml.eos_token_id", 7)], [], b""))

# ---- wire frames (FrameDecoder input: [chunk size - 1][mode] then the stream) --------------
def varint(n):
    if n < 251:
        return bytes([n])
    if n < 1 << 16:
        return b"\xfb" + struct.pack("<H", n)
    if n < 1 << 32:
        return b"\xfc" + struct.pack("<I", n)
    return b"\xfd" + struct.pack("<Q", n)


def frame(ty, body, tail=b"", flags=0):
    return struct.pack(">BBHHII", 0xED, 1, ty, flags, len(body), len(tail)) + body + tail


def bstr(s):
    return varint(len(s)) + s.encode()


node, cluster = bytes(range(32)), bytes(range(32, 64))
hello = varint(1) + varint(1) + cluster + node + varint(12345) + bstr("pi-01") \
    + b"\x01" + varint(0) + bytes([127, 0, 0, 1]) + varint(7070)
out("wire", "hello", b"\x00\x00" + frame(0x0001, hello))
out("wire", "hello-refuse", b"\x07\x00" + frame(0x0002, varint(1) + bstr("cluster id mismatch")))
out("wire", "stream-open-then-tail", b"\x03\x00" + frame(0x0003, varint(0x0200) + varint(5))
    + frame(0x0300, varint(7) + bstr("x"), tail=b"\x00\x01\x02\x03"))
out("wire", "join-goodbye", b"\xff\x02" + frame(0x0101, varint(99) + varint(1000)) + frame(0x0104, varint(99)))
out("wire", "status-request", b"\x00\x00" + frame(0x0110, varint(1)))
out("wire", "lying-length", b"\x00\x00" + struct.pack(">BBHHII", 0xED, 1, 0x0101, 0, 0xFFFFFFFF, 0))
out("wire", "tight-limits-tail", b"\x10\x01" + frame(0x0003, varint(1) + varint(1), tail=bytes(100)))
out("wire", "bad-magic", b"\x00\x00" + b"\xEE" + frame(0x0001, b"")[1:])
out("wire", "truncated", b"\x00\x00" + frame(0x0001, hello)[:30])

# ---- HTTP bodies ([mode] then the body; mode bit 0 = chat, bits 1.. = stream chunk size) ----
def http(name, chat, body, chunk=3):
    mode = (chunk - 1) << 1 | (1 if chat else 0)
    out("http", name, bytes([mode]) + (body if isinstance(body, bytes) else json.dumps(body).encode()))


M = "Gemma 3 270m"
http("completion", False, {"model": M, "prompt": "The capital of France is", "max_tokens": 16,
                           "temperature": 0, "stream": True, "stop": ["\n\n", "."]})
http("completion-list-prompt", False, {"model": M, "prompt": ["hi"], "stop": "x", "seed": 7, "top_k": 40})
http("completion-batched", False, {"model": M, "prompt": ["a", "b"]})
http("completion-token-ids", False, {"model": M, "prompt": [1, 2, 3]})
http("chat", True, {"model": M, "messages": [{"role": "system", "content": "Be brief."},
                                            {"role": "user", "content": "Hi"}],
                    "max_completion_tokens": 8, "stream": True, "stream_options": {"include_usage": True}})
http("chat-parts", True, {"model": M, "messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                                              {"type": "text", "text": "b"}]}],
                          "stop": ["<|im_end|>"]}, chunk=1)
http("chat-assistant-tool", True, {"model": M, "messages": [{"role": "user", "content": "2+2?"},
                                                           {"role": "assistant", "content": None},
                                                           {"role": "tool", "content": "4"}]})
http("chat-bad-role", True, {"model": M, "messages": [{"role": "wizard", "content": "x"}]})
http("chat-empty", True, {"model": M, "messages": []})
http("bad-params", False, {"model": M, "prompt": "x", "temperature": 9, "n": 2, "max_tokens": 0})
http("invalid-json", True, b'{"model": [}')
http("not-utf8", False, b'{"model": "\xff", "prompt": "x"}')
