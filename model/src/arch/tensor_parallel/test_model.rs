//! Random-weight GGUF models for the tensor-parallel tests: enough heads, rows and quant types
//! (Q8_0, Q4_K, Q6_K) that groups of 2–4 get uneven, partial-group slices.

use crate::gguf::GgufFile;
use crate::test_models::RandomModel;

pub(crate) use crate::test_models::random_rows;

pub(crate) const D: usize = 256;
pub(crate) const FF: usize = 1024;
pub(crate) const HEADS: usize = 6;
pub(crate) const HD: usize = 32;
pub(crate) const VOCAB: usize = 200;

/// A random model of `arch` (`qwen2`, `gemma3` or `llama`) with `kv` KV heads and `n_layers`
/// layers; `ffn_down` alternates Q6_K (Q8_K activations, blocks of 256) and Q8_0 (blocks of 32)
/// between layers, gate/up are Q4_K, attention Q8_0.
pub(crate) fn random_model(arch: &'static str, n_layers: usize, kv: usize, seed: u64) -> GgufFile {
    RandomModel {
        arch,
        n_layers,
        d_model: D,
        ffn: FF,
        heads: HEADS,
        kv_heads: kv,
        head_dim: HD,
        vocab: VOCAB,
        ctx: 256,
        window: 5,
        mixed_types: true,
        scale: 1.0,
        seed,
        tokenizer: false,
    }
    .file()
}
