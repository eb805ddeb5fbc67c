//! Random-weight GGUF models for the tensor-parallel tests: enough heads, rows and quant types
//! (Q8_0, Q4_K, Q6_K) that groups of 2–4 get uneven, partial-group slices.

use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::gguf::{GgufFile, GgufWriter};
use crate::quant::GgmlType;

pub(crate) const D: usize = 256;
pub(crate) const FF: usize = 1024;
pub(crate) const HEADS: usize = 6;
pub(crate) const HD: usize = 32;
pub(crate) const VOCAB: usize = 200;

fn h(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_bits().to_le_bytes()
}

/// Random valid rows of `ty` (moderate scales, as the kernel tests write them).
pub(crate) fn random_rows(ty: GgmlType, rows: usize, cols: usize, rng: &mut StdRng) -> Vec<u8> {
    let n = ty.row_bytes(cols).expect("block-aligned") * rows;
    let mut b: Vec<u8> = (0..n).map(|_| rng.random()).collect();
    for blk in b.chunks_exact_mut(ty.type_size()) {
        match ty {
            GgmlType::Q8_0 | GgmlType::Q5_0 | GgmlType::Q4_0 => {
                blk[0..2].copy_from_slice(&h(rng.random_range(-0.01f32..0.01)))
            }
            GgmlType::Q4_K => {
                blk[0..2].copy_from_slice(&h(rng.random_range(-0.004f32..0.004)));
                blk[2..4].copy_from_slice(&h(rng.random_range(-0.004f32..0.004)));
            }
            GgmlType::Q6_K => {
                blk[208..210].copy_from_slice(&h(rng.random_range(-0.0005f32..0.0005)))
            }
            _ => unreachable!("not used by the test models"),
        }
    }
    b
}

/// A random model of `arch` (`qwen2`, `gemma3` or `llama`) with `kv` KV heads and `n_layers`
/// layers; `ffn_down` alternates Q6_K (Q8_K activations, blocks of 256) and Q8_0 (blocks of 32)
/// between layers, gate/up are Q4_K, attention Q8_0.
pub(crate) fn random_model(arch: &str, n_layers: usize, kv: usize, seed: u64) -> GgufFile {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut w = GgufWriter::new();
    w.set_metadata("general.architecture", arch);
    let k = |s: &str| format!("{arch}.{s}");
    w.set_metadata(k("block_count"), n_layers as u32);
    w.set_metadata(k("embedding_length"), D as u32);
    w.set_metadata(k("feed_forward_length"), FF as u32);
    w.set_metadata(k("attention.head_count"), HEADS as u32);
    w.set_metadata(k("attention.head_count_kv"), kv as u32);
    w.set_metadata(k("attention.key_length"), HD as u32);
    w.set_metadata(k("context_length"), 256u32);
    w.set_metadata(k("rope.freq_base"), 10000.0f32);
    w.set_metadata(k("attention.layer_norm_rms_epsilon"), 1e-6f32);
    let gemma = arch == "gemma3";
    if gemma {
        w.set_metadata(k("attention.sliding_window"), 5u32);
    }
    let mut mat = |w: &mut GgufWriter, name: &str, ty: GgmlType, rows: usize, cols: usize| {
        let data = random_rows(ty, rows, cols, &mut rng);
        w.add_tensor(name, &[cols as u64, rows as u64], ty, data)
            .unwrap();
    };
    mat(&mut w, "token_embd.weight", GgmlType::Q8_0, VOCAB, D);
    for il in 0..n_layers {
        let p = |s: &str| format!("blk.{il}.{s}");
        mat(&mut w, &p("attn_q.weight"), GgmlType::Q8_0, HEADS * HD, D);
        mat(&mut w, &p("attn_k.weight"), GgmlType::Q8_0, kv * HD, D);
        mat(&mut w, &p("attn_v.weight"), GgmlType::Q8_0, kv * HD, D);
        mat(
            &mut w,
            &p("attn_output.weight"),
            GgmlType::Q8_0,
            D,
            HEADS * HD,
        );
        mat(&mut w, &p("ffn_gate.weight"), GgmlType::Q4_K, FF, D);
        mat(&mut w, &p("ffn_up.weight"), GgmlType::Q4_K, FF, D);
        let down = if il % 2 == 0 {
            GgmlType::Q6_K
        } else {
            GgmlType::Q8_0
        };
        mat(&mut w, &p("ffn_down.weight"), down, D, FF);
        let ones = |n: usize, s: f32| {
            (0..n)
                .map(|i| 1.0 + s * (i as f32 * 0.37).sin())
                .collect::<Vec<_>>()
        };
        w.add_f32_tensor(p("attn_norm.weight"), &[D as u64], &ones(D, 0.1))
            .unwrap();
        w.add_f32_tensor(p("ffn_norm.weight"), &[D as u64], &ones(D, 0.2))
            .unwrap();
        if gemma {
            w.add_f32_tensor(p("attn_q_norm.weight"), &[HD as u64], &ones(HD, 0.3))
                .unwrap();
            w.add_f32_tensor(p("attn_k_norm.weight"), &[HD as u64], &ones(HD, 0.3))
                .unwrap();
            w.add_f32_tensor(p("post_attention_norm.weight"), &[D as u64], &ones(D, 0.1))
                .unwrap();
            w.add_f32_tensor(p("post_ffw_norm.weight"), &[D as u64], &ones(D, 0.1))
                .unwrap();
        } else {
            let b = |n: usize| (0..n).map(|i| 0.05 * (i as f32).cos()).collect::<Vec<_>>();
            w.add_f32_tensor(p("attn_q.bias"), &[(HEADS * HD) as u64], &b(HEADS * HD))
                .unwrap();
            w.add_f32_tensor(p("attn_k.bias"), &[(kv * HD) as u64], &b(kv * HD))
                .unwrap();
            w.add_f32_tensor(p("attn_v.bias"), &[(kv * HD) as u64], &b(kv * HD))
                .unwrap();
        }
    }
    w.add_f32_tensor("output_norm.weight", &[D as u64], &vec![1.0; D])
        .unwrap();
    if !gemma {
        mat(&mut w, "output.weight", GgmlType::Q8_0, VOCAB, D);
    }
    GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap()
}
