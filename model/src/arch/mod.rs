//! Transformer architectures (llama, qwen2, gemma3) as burn modules, loadable per layer range.
//!
//! ```no_run
//! use edgeray_model::arch::{LogitsFor, Stage, StageInput, StageOutput, StageSpec, ModelConfig};
//! use edgeray_model::gguf::GgufFile;
//! let file = GgufFile::open("models/gemma-3-270m-q4_k_m.gguf")?;
//! let cfg = ModelConfig::from_gguf(&file)?;
//! let device = burn::tensor::Device::flex();
//! let pool = std::sync::Arc::new(edgeray_model::quant::KernelPool::new(1)?);
//! let stage = Stage::load(&file, &StageSpec::full(cfg.n_layers), &device, &pool)?;
//! let mut cache = stage.new_cache(1024);
//! let out = stage.forward(StageInput::Tokens(vec![2, 818]), &mut cache, LogitsFor::Last)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod attention;
mod block;
mod config;
mod error;
mod generate;
mod kv_cache;
mod mlp;
mod norm;
mod rope;
mod stage;
pub mod tensor_parallel;
mod tensors;

#[cfg(test)]
mod tests;

pub use attention::{Attention, AttentionSpec, AttnSeq, TILED_MIN_QUERIES};
pub use block::Block;
pub use config::{Activation, Arch, LayerSpec, ModelConfig, SHARD_TIED_KEY, SHARD_VOCAB_KEY};
pub use error::ArchError;
pub use generate::{
    GenerateError, GenerateOptions, GenerateStop, Generation, Generator, TokenEvent,
};
pub use kv_cache::KvCache;
pub use mlp::{Mlp, gelu_ggml};
pub use norm::RmsNorm;
pub use rope::{Rope, RopeStyle, RopeTables};
pub use stage::{
    BatchItem, Embedding, LogitsFor, Stage, StageInput, StageOutput, StageSpec, hidden_from_vec,
    hidden_to_vec,
};
