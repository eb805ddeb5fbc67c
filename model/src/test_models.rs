//! Models for tests. The real ones: their file names and where `scripts/fetch-models.sh` puts
//! them (tests skip when a model has not been fetched, and fail instead under `CI=true`). And
//! [`RandomModel`]: random-weight GGUF models of any shape, written in memory.

use std::path::PathBuf;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::gguf::{GgufFile, GgufWriter};
use crate::quant::GgmlType;
use crate::tokenizer::bytelevel::byte_to_char;

/// File name of the Gemma 3 270M model under `models/`.
pub const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";
/// File name of the Qwen2.5-Coder-0.5B-Instruct model under `models/`.
pub const QWEN2: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";

/// The workspace's `models/` folder.
pub fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("model/ has a parent")
        .join("models")
}

/// Path of a real model under `models/`; `None` (and a printed SKIP reason) when it has not
/// been fetched. In CI (`CI=true`) a missing model is a failure, not a skip.
pub fn real_model(file_name: &str) -> Option<PathBuf> {
    let path = models_dir().join(file_name);
    if path.exists() {
        return Some(path);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "{} is missing in CI: run scripts/fetch-models.sh",
            path.display()
        );
    }
    eprintln!(
        "SKIP: {} not found (run scripts/fetch-models.sh)",
        path.display()
    );
    None
}

/// A random-weight model: any architecture edgeray runs, at a test's size, with an optional
/// byte-level tokenizer so prompts can be text. Shared by the model crate's stage and
/// tensor-parallel tests and by the actors crate's deployment tests; no real weights needed.
#[derive(Debug, Clone)]
pub struct RandomModel {
    /// `general.architecture`: `qwen2`, `gemma3` or `llama`.
    pub arch: &'static str,
    /// Transformer blocks.
    pub n_layers: usize,
    /// Hidden size.
    pub d_model: usize,
    /// Feed-forward size.
    pub ffn: usize,
    /// Query heads.
    pub heads: usize,
    /// KV heads.
    pub kv_heads: usize,
    /// Head size.
    pub head_dim: usize,
    /// Vocabulary rows (at least [`RandomModel::TOKENIZER_VOCAB`] with a tokenizer).
    pub vocab: usize,
    /// `context_length`.
    pub ctx: u32,
    /// Gemma 3's sliding window.
    pub window: u32,
    /// `false`: every matrix Q8_0. `true`: gate/up Q4_K, down alternating Q6_K and Q8_0 between
    /// layers (activations in blocks of 256 and of 32), attention Q8_0.
    pub mixed_types: bool,
    /// Scales the weights' block scales (1.0: the kernel tests' moderate scales).
    pub scale: f32,
    /// Seed of the weights.
    pub seed: u64,
    /// Adds a byte-level BPE tokenizer: the 256 byte tokens, one merge (`ab`) and `<eos>`.
    pub tokenizer: bool,
}

impl RandomModel {
    /// Tokens the built-in tokenizer uses: 256 bytes, `ab`, `<eos>`.
    pub const TOKENIZER_VOCAB: usize = 258;

    /// A small model of `arch` with a tokenizer: 4 layers of 64, 2 query heads, 1 KV head,
    /// a 264-token vocabulary and a 256-token context.
    pub fn small(arch: &'static str, seed: u64) -> Self {
        RandomModel {
            arch,
            n_layers: 4,
            d_model: 64,
            ffn: 96,
            heads: 2,
            kv_heads: 1,
            head_dim: 32,
            vocab: 264,
            ctx: 256,
            window: 5,
            mixed_types: false,
            scale: 0.4,
            seed,
            tokenizer: true,
        }
    }

    /// The model as a GGUF file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let (d, kv, hd) = (self.d_model, self.kv_heads, self.head_dim);
        let q = self.heads * hd;
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut w = GgufWriter::new();
        let arch = self.arch;
        w.set_metadata("general.architecture", arch);
        let k = |s: &str| format!("{arch}.{s}");
        w.set_metadata(k("block_count"), self.n_layers as u32);
        w.set_metadata(k("embedding_length"), d as u32);
        w.set_metadata(k("feed_forward_length"), self.ffn as u32);
        w.set_metadata(k("attention.head_count"), self.heads as u32);
        w.set_metadata(k("attention.head_count_kv"), kv as u32);
        w.set_metadata(k("attention.key_length"), hd as u32);
        w.set_metadata(k("context_length"), self.ctx);
        w.set_metadata(k("rope.freq_base"), 10000.0f32);
        w.set_metadata(k("attention.layer_norm_rms_epsilon"), 1e-6f32);
        let gemma = arch == "gemma3";
        if gemma {
            w.set_metadata(k("attention.sliding_window"), self.window);
        }
        if self.tokenizer {
            self.write_tokenizer(&mut w);
        }
        let scale = self.scale;
        let mut mat = |w: &mut GgufWriter, name: &str, ty: GgmlType, rows: usize, cols: usize| {
            let data = random_rows(ty, rows, cols, scale, &mut rng);
            w.add_tensor(name, &[cols as u64, rows as u64], ty, data)
                .expect("a valid tensor");
        };
        let (gate_up, q8) = if self.mixed_types {
            (GgmlType::Q4_K, GgmlType::Q8_0)
        } else {
            (GgmlType::Q8_0, GgmlType::Q8_0)
        };
        let ones = |n: usize, s: f32| {
            (0..n)
                .map(|i| 1.0 + s * (i as f32 * 0.37).sin())
                .collect::<Vec<_>>()
        };
        let f32s = |w: &mut GgufWriter, name: String, v: &[f32]| {
            w.add_f32_tensor(name, &[v.len() as u64], v)
                .expect("a valid tensor");
        };
        mat(&mut w, "token_embd.weight", q8, self.vocab, d);
        for il in 0..self.n_layers {
            let p = |s: &str| format!("blk.{il}.{s}");
            mat(&mut w, &p("attn_q.weight"), q8, q, d);
            mat(&mut w, &p("attn_k.weight"), q8, kv * hd, d);
            mat(&mut w, &p("attn_v.weight"), q8, kv * hd, d);
            mat(&mut w, &p("attn_output.weight"), q8, d, q);
            mat(&mut w, &p("ffn_gate.weight"), gate_up, self.ffn, d);
            mat(&mut w, &p("ffn_up.weight"), gate_up, self.ffn, d);
            let down = if self.mixed_types && il % 2 == 0 {
                GgmlType::Q6_K
            } else {
                q8
            };
            mat(&mut w, &p("ffn_down.weight"), down, d, self.ffn);
            f32s(&mut w, p("attn_norm.weight"), &ones(d, 0.1));
            f32s(&mut w, p("ffn_norm.weight"), &ones(d, 0.2));
            if gemma {
                f32s(&mut w, p("attn_q_norm.weight"), &ones(hd, 0.3));
                f32s(&mut w, p("attn_k_norm.weight"), &ones(hd, 0.3));
                f32s(&mut w, p("post_attention_norm.weight"), &ones(d, 0.1));
                f32s(&mut w, p("post_ffw_norm.weight"), &ones(d, 0.1));
            } else {
                let b = |n: usize| (0..n).map(|i| 0.05 * (i as f32).cos()).collect::<Vec<_>>();
                f32s(&mut w, p("attn_q.bias"), &b(q));
                f32s(&mut w, p("attn_k.bias"), &b(kv * hd));
                f32s(&mut w, p("attn_v.bias"), &b(kv * hd));
            }
        }
        f32s(&mut w, "output_norm.weight".into(), &vec![1.0; d]);
        if !gemma {
            mat(&mut w, "output.weight", q8, self.vocab, d);
        }
        w.to_bytes().expect("a valid GGUF")
    }

    /// The model as an open GGUF file.
    pub fn file(&self) -> GgufFile {
        GgufFile::from_bytes(self.to_bytes()).expect("the written GGUF reads back")
    }

    fn write_tokenizer(&self, w: &mut GgufWriter) {
        assert!(
            self.vocab >= Self::TOKENIZER_VOCAB,
            "a tokenizer needs a vocabulary of {} tokens",
            Self::TOKENIZER_VOCAB
        );
        let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_to_char(b).to_string()).collect();
        tokens.push("ab".into());
        tokens.push("<eos>".into());
        let mut types = vec![1i32; tokens.len()];
        types[Self::TOKENIZER_VOCAB - 1] = 3;
        // Rows beyond the tokenizer's are unused tokens.
        for i in Self::TOKENIZER_VOCAB..self.vocab {
            tokens.push(format!("<unused{i}>"));
            types.push(5);
        }
        w.set_metadata("tokenizer.ggml.model", "gpt2");
        w.set_metadata("tokenizer.ggml.pre", "default");
        w.set_metadata("tokenizer.ggml.tokens", tokens);
        w.set_metadata("tokenizer.ggml.token_type", types);
        w.set_metadata("tokenizer.ggml.merges", vec!["a b"]);
        w.set_metadata(
            "tokenizer.ggml.eos_token_id",
            (Self::TOKENIZER_VOCAB - 1) as u32,
        );
        w.set_metadata("tokenizer.ggml.add_bos_token", false);
    }
}

fn f16_bytes(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_bits().to_le_bytes()
}

/// Random valid rows of `ty` (block scales in moderate ranges times `scale`, as the kernel
/// tests write them).
pub fn random_rows(
    ty: GgmlType,
    rows: usize,
    cols: usize,
    scale: f32,
    rng: &mut StdRng,
) -> Vec<u8> {
    let n = ty.row_bytes(cols).expect("block-aligned") * rows;
    let mut b: Vec<u8> = (0..n).map(|_| rng.random()).collect();
    let mut d = |r: f32| f16_bytes(rng.random_range(-r * scale..r * scale));
    for blk in b.chunks_exact_mut(ty.type_size()) {
        match ty {
            GgmlType::Q8_0 | GgmlType::Q5_0 | GgmlType::Q4_0 => blk[0..2].copy_from_slice(&d(0.01)),
            GgmlType::Q4_K => {
                blk[0..2].copy_from_slice(&d(0.004));
                blk[2..4].copy_from_slice(&d(0.004));
            }
            GgmlType::Q6_K => blk[208..210].copy_from_slice(&d(0.0005)),
            other => panic!("random rows of {other} are not supported"),
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::ModelConfig;
    use crate::tokenizer::Tokenizer;

    #[test]
    fn a_small_model_reads_back_with_its_tokenizer() {
        for arch in ["qwen2", "gemma3", "llama"] {
            let f = RandomModel::small(arch, 7).file();
            let c = ModelConfig::from_gguf(&f).unwrap();
            assert_eq!((c.n_layers, c.d_model), (4, 64), "{arch}");
            let t = Tokenizer::from_gguf(&f).unwrap();
            let ids = t.encode_with("abc é", false, false).unwrap();
            // "ab" is the one merge; the rest are single bytes (é is two).
            assert_eq!(ids, [256, u32::from(b'c'), u32::from(b' '), 0xc3, 0xa9]);
            assert_eq!(t.decode(&ids).unwrap(), "abc é");
        }
        // The same seed writes the same bytes.
        assert_eq!(
            RandomModel::small("qwen2", 1).to_bytes(),
            RandomModel::small("qwen2", 1).to_bytes()
        );
    }
}
