//! Hyper-parameters of a supported architecture, read from GGUF metadata.

use crate::gguf::{GgufError, GgufFile, Metadata};

use super::error::ArchError;
use super::rope::{Rope, RopeStyle};

/// Supported architecture families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// `llama` (and GGUF files of the same graph): RMSNorm, SwiGLU, NORM-style RoPE.
    Llama,
    /// `qwen2`: the llama graph with QKV bias and NEOX RoPE.
    Qwen2,
    /// `gemma3`: QK-norm, pre+post norms, GELU-tanh gated MLP, scaled embedding, NEOX RoPE,
    /// sliding-window layers (5 local : 1 global) with a local RoPE base.
    Gemma3,
}

impl Arch {
    /// From `general.architecture`.
    pub fn from_name(name: &str) -> Result<Self, ArchError> {
        match name {
            "llama" => Ok(Self::Llama),
            "qwen2" => Ok(Self::Qwen2),
            "gemma3" => Ok(Self::Gemma3),
            other => Err(ArchError::UnsupportedArch(other.to_string())),
        }
    }

    /// The GGUF metadata prefix.
    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Gemma3 => "gemma3",
        }
    }
}

/// Gated-MLP activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// SiLU (SwiGLU).
    Silu,
    /// GELU, tanh approximation, through ggml's f16 lookup table (GeGLU).
    GeluTanh,
}

/// Per-layer attention settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerSpec {
    /// RoPE of this layer.
    pub rope: Rope,
    /// Sliding window (keys further back than this are masked), `None` for global layers.
    pub window: Option<usize>,
}

/// Model hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Architecture.
    pub arch: Arch,
    /// Number of transformer blocks.
    pub n_layers: usize,
    /// Hidden size.
    pub d_model: usize,
    /// MLP inner size.
    pub n_ff: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_kv_head: usize,
    /// Head dimension of queries and keys.
    pub head_dim: usize,
    /// Head dimension of values.
    pub v_head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Training context length (`context_length`).
    pub context_length: usize,
    /// Vocabulary size (rows of `token_embd`).
    pub vocab_size: usize,
    /// RoPE base of global layers.
    pub rope_base: f32,
    /// RoPE pairing style.
    pub rope_style: RopeStyle,
    /// Sliding window of local layers, if the model has any.
    pub sliding_window: Option<usize>,
    /// RoPE base of sliding-window layers.
    pub rope_base_local: f32,
    /// Scale multiplied into the queries before attention (gemma3), as llama.cpp's graph does.
    pub q_scale: Option<f32>,
    /// Scale of the K·Q scores inside attention (`1/sqrt(head_dim)`, 1 for gemma3).
    pub kq_scale: f32,
    /// Multiplier of the embeddings (`sqrt(d_model)` for gemma3).
    pub embed_scale: Option<f32>,
    /// Whether the output head reuses `token_embd`.
    pub tied_output: bool,
    /// MLP activation.
    pub activation: Activation,
}

/// Metadata key a stage shard (a GGUF holding only some layers) uses for the vocabulary size,
/// since it may lack `token_embd.weight`, where a full model's vocabulary size comes from.
pub const SHARD_VOCAB_KEY: &str = "edgeray.shard.vocab_size";
/// Metadata key a stage shard uses to record whether the full model's output head is tied to
/// the token embedding.
pub const SHARD_TIED_KEY: &str = "edgeray.shard.tied_output";

fn key(arch: Arch, k: &str) -> String {
    format!("{}.{k}", arch.name())
}

fn req_usize(m: &Metadata, k: &str) -> Result<usize, ArchError> {
    let v = m.get_u64(k)?;
    if v == 0 {
        return Err(ArchError::BadHyperParam {
            key: k.into(),
            reason: "must be > 0".into(),
        });
    }
    usize::try_from(v).map_err(|_| ArchError::BadHyperParam {
        key: k.into(),
        reason: "too large".into(),
    })
}

fn opt_usize(m: &Metadata, k: &str) -> Result<Option<usize>, ArchError> {
    match m.get_u64_opt(k)? {
        None => Ok(None),
        Some(0) => Err(ArchError::BadHyperParam {
            key: k.into(),
            reason: "must be > 0".into(),
        }),
        Some(v) => Ok(Some(v as usize)),
    }
}

impl ModelConfig {
    /// Reads the hyper-parameters of `file`; an unsupported architecture or an inconsistent
    /// value is an error.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, ArchError> {
        let m = file.metadata();
        let arch = Arch::from_name(m.get_str("general.architecture")?)?;
        let k = |s: &str| key(arch, s);
        let n_layers = req_usize(m, &k("block_count"))?;
        let d_model = req_usize(m, &k("embedding_length"))?;
        let n_ff = req_usize(m, &k("feed_forward_length"))?;
        let n_head = req_usize(m, &k("attention.head_count"))?;
        let n_kv_head = opt_usize(m, &k("attention.head_count_kv"))?.unwrap_or(n_head);
        if n_head % n_kv_head != 0 {
            return Err(ArchError::BadHyperParam {
                key: k("attention.head_count_kv"),
                reason: format!("{n_kv_head} does not divide head_count {n_head}"),
            });
        }
        let head_dim = match opt_usize(m, &k("attention.key_length"))? {
            Some(v) => v,
            None if d_model % n_head == 0 => d_model / n_head,
            None => {
                return Err(ArchError::BadHyperParam {
                    key: k("attention.head_count"),
                    reason: format!("{n_head} does not divide embedding_length {d_model}"),
                });
            }
        };
        let v_head_dim = opt_usize(m, &k("attention.value_length"))?.unwrap_or(head_dim);
        if v_head_dim != head_dim {
            return Err(ArchError::BadHyperParam {
                key: k("attention.value_length"),
                reason: format!(
                    "value length {v_head_dim} != key length {head_dim} is not supported"
                ),
            });
        }
        if head_dim % 2 != 0 {
            return Err(ArchError::BadHyperParam {
                key: k("attention.key_length"),
                reason: "odd head dim".into(),
            });
        }
        if let Some(n_rot) = opt_usize(m, &k("rope.dimension_count"))?
            && n_rot != head_dim
        {
            return Err(ArchError::BadHyperParam {
                key: k("rope.dimension_count"),
                reason: format!("partial RoPE ({n_rot} of {head_dim}) is not supported"),
            });
        }
        let rms_eps = m
            .get_f32_opt(&k("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-6);
        let context_length = opt_usize(m, &k("context_length"))?.unwrap_or(4096);
        let rope_base = m.get_f32_opt(&k("rope.freq_base"))?.unwrap_or(10_000.0);
        let (vocab_size, tied_output) = match file.tensor("token_embd.weight") {
            Some(embd) => {
                if embd.dims.len() != 2 || embd.dims[0] as usize != d_model {
                    return Err(ArchError::BadTensor {
                        name: embd.name.clone(),
                        reason: format!("dims {:?}, expected [{d_model}, vocab]", embd.dims),
                    });
                }
                (
                    embd.dims[1] as usize,
                    file.tensor("output.weight").is_none(),
                )
            }
            // A stage shard (see `SHARD_VOCAB_KEY`) carries only its own layers' tensors.
            None if m.contains(SHARD_VOCAB_KEY) => {
                let vocab = req_usize(m, SHARD_VOCAB_KEY)?;
                let tied = m.get_bool_opt(SHARD_TIED_KEY)?.unwrap_or(false);
                (vocab, tied)
            }
            None => return Err(GgufError::TensorNotFound("token_embd.weight".into()).into()),
        };
        let inv_sqrt = 1.0 / (head_dim as f32).sqrt();
        let (
            rope_style,
            sliding_window,
            rope_base_local,
            q_scale,
            kq_scale,
            embed_scale,
            activation,
        ) = match arch {
            Arch::Llama => (
                RopeStyle::Norm,
                None,
                rope_base,
                None,
                inv_sqrt,
                None,
                Activation::Silu,
            ),
            Arch::Qwen2 => (
                RopeStyle::Neox,
                None,
                rope_base,
                None,
                inv_sqrt,
                None,
                Activation::Silu,
            ),
            Arch::Gemma3 => {
                // llama.cpp: f_attention_scale = 1/sqrt(n_embd_head_k) (27B: 1/sqrt(n_embd/n_head)),
                // sliding window from metadata, local RoPE base 10000.
                let window = opt_usize(m, &k("attention.sliding_window"))?.unwrap_or(512);
                let scale = m.get_f32_opt(&k("attention.scale"))?.unwrap_or(inv_sqrt);
                (
                    RopeStyle::Neox,
                    Some(window),
                    10_000.0,
                    Some(scale),
                    1.0,
                    Some((d_model as f32).sqrt()),
                    Activation::GeluTanh,
                )
            }
        };
        Ok(Self {
            arch,
            n_layers,
            d_model,
            n_ff,
            n_head,
            n_kv_head,
            head_dim,
            v_head_dim,
            rms_eps,
            context_length,
            vocab_size,
            rope_base,
            rope_style,
            sliding_window,
            rope_base_local,
            q_scale,
            kq_scale,
            embed_scale,
            tied_output,
            activation,
        })
    }

    /// Whether layer `il` is a sliding-window layer (gemma3: `il % 6 < 5`, as llama.cpp's
    /// `set_swa_pattern(6)`).
    pub fn is_local(&self, il: usize) -> bool {
        self.sliding_window.is_some() && il % 6 < 5
    }

    /// Attention settings of layer `il`.
    pub fn layer(&self, il: usize) -> LayerSpec {
        let local = self.is_local(il);
        LayerSpec {
            rope: Rope {
                n_rot: self.head_dim,
                base: if local {
                    self.rope_base_local
                } else {
                    self.rope_base
                },
                style: self.rope_style,
            },
            window: if local { self.sliding_window } else { None },
        }
    }

    /// Bytes of f32 KV cache per position per layer (keys + values), as edgeray stores them.
    pub fn kv_bytes_per_token_per_layer(&self) -> usize {
        2 * self.n_kv_head * self.head_dim * 4
    }
}
