#!/usr/bin/env python3
"""Writes profiles/models/*.json: `edgeray sim --model-profile` profiles of models we do not
ship, built from their published Hugging Face configurations and llama.cpp's Q4_K_M recipe.

Q4_K_M (llama.cpp src/llama-quant.cpp, llama_tensor_get_type): every 2-D weight is Q4_K
(144 bytes per 256 values) except attn_v and ffn_down, which are Q6_K (210 bytes per 256) in the
"more bits" layers: i < n/8, i >= 7n/8, or (i - n/8) % 3 == 2; output.weight is Q6_K;
token_embd stays Q4_K; norms and biases are f32. The KV cache is sized as edgeray stores it
(f32), activations between stages as f16 (the placement profile's conventions,
actors/src/placement/profile.rs). Run from the repository root: python3 scripts/profile_from_config.py
"""
import json

Q4K, Q6K = 144 / 256, 210 / 256
OVERHEAD = 48 << 20

MODELS = {
    "llama3-8b-q4_k_m": dict(
        name="Llama 3 8B (Q4_K_M, from the published config)",
        source="https://huggingface.co/meta-llama/Meta-Llama-3-8B/blob/main/config.json",
        hidden=4096, layers=32, heads=32, kv_heads=8, ffn=14336, vocab=128256, ctx=8192,
        qkv_bias=False),
    "qwen2.5-7b-q4_k_m": dict(
        name="Qwen2.5 7B (Q4_K_M, from the published config)",
        source="https://huggingface.co/Qwen/Qwen2.5-7B/blob/main/config.json",
        hidden=3584, layers=28, heads=28, kv_heads=4, ffn=18944, vocab=152064, ctx=32768,
        qkv_bias=True),
    "llama3-70b-q4_k_m": dict(
        name="Llama 3 70B (Q4_K_M, from the published config)",
        source="https://huggingface.co/meta-llama/Meta-Llama-3-70B/blob/main/config.json",
        hidden=8192, layers=80, heads=64, kv_heads=8, ffn=28672, vocab=128256, ctx=8192,
        qkv_bias=False),
}


def more_bits(i, n):
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def profile(m, ctx=4096):
    h, hd = m["hidden"], m["hidden"] // m["heads"]
    kv = m["kv_heads"] * hd
    layers = []
    for i in range(m["layers"]):
        v_type = Q6K if more_bits(i, m["layers"]) else Q4K
        b = (h * h + h * kv) * Q4K        # q, k
        b += h * kv * v_type              # v
        b += h * h * Q4K                  # o
        b += 2 * h * m["ffn"] * Q4K       # gate, up
        b += m["ffn"] * h * v_type        # down (same rule as attn_v)
        b += 2 * h * 4                    # attn_norm, ffn_norm
        if m["qkv_bias"]:
            b += (h + 2 * kv) * 4
        layers.append(int(b))
    embd = int(m["vocab"] * h * Q4K)
    head = int(m["vocab"] * h * Q6K) + h * 4
    return {
        "name": m["name"],
        "layer_bytes": layers,
        "embedding_bytes": embd,
        "head_bytes": head,
        "tied_embeddings": False,
        "kv_bytes_per_token_per_layer": m["kv_heads"] * 2 * hd * 4,
        "context_length": ctx,
        "hidden_size": h,
        "activation_bytes_per_token": h * 2,
        "stage_overhead_bytes": OVERHEAD,
        "ffn_size": m["ffn"],
        "source": m["source"] + " + llama.cpp Q4_K_M recipe (scripts/profile_from_config.py)",
    }


if __name__ == "__main__":
    for key, m in MODELS.items():
        p = profile(m)
        total = sum(p["layer_bytes"]) + p["embedding_bytes"] + p["head_bytes"]
        with open(f"profiles/models/{key}.json", "w") as f:
            json.dump(p, f, indent=2)
            f.write("\n")
        print(f"{key}: {total / 1e9:.2f} GB of weights")
