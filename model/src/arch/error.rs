//! Errors of model configuration, loading and forward passes.

use crate::gguf::GgufError;
use crate::quant::QuantError;

/// Everything that can go wrong building or running a model stage.
#[derive(Debug, thiserror::Error)]
pub enum ArchError {
    /// `general.architecture` names an architecture edgeray does not implement.
    #[error("unsupported architecture {0:?} (supported: llama, qwen2, gemma3)")]
    UnsupportedArch(String),
    /// A hyper-parameter has an unusable value.
    #[error("bad hyper-parameter {key}: {reason}")]
    BadHyperParam {
        /// Metadata key.
        key: String,
        /// Why it is unusable.
        reason: String,
    },
    /// A tensor has an unexpected shape or type.
    #[error("tensor {name}: {reason}")]
    BadTensor {
        /// Tensor name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The requested layer range does not fit the model.
    #[error("layer range {start}..{end} is invalid for a model of {n_layers} layers")]
    BadLayerRange {
        /// Range start.
        start: usize,
        /// Range end.
        end: usize,
        /// Layers of the model.
        n_layers: usize,
    },
    /// The stage input does not match what the stage expects.
    #[error("bad stage input: {0}")]
    BadInput(String),
    /// The KV cache is full.
    #[error("context full: {len} positions used of {ctx}, cannot add {adding}")]
    ContextFull {
        /// Context length.
        ctx: usize,
        /// Positions already used.
        len: usize,
        /// Positions requested.
        adding: usize,
    },
    /// The KV cache was made for a different stage.
    #[error("KV cache covers {got} layers, the stage has {want}")]
    CacheMismatch {
        /// Layers of the stage.
        want: usize,
        /// Layers of the cache.
        got: usize,
    },
    /// Reading the GGUF file failed.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// A quantized kernel failed.
    #[error(transparent)]
    Quant(#[from] QuantError),
}
