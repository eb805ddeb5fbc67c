//! Exact tensor parallelism: a group of members (boards) that together hold a stage's layers,
//! each a slice of every weight matrix, and compute each token together with results
//! bit-identical to one node.
//!
//! Every matrix is split by *output rows*: a member computes complete dot products for its
//! rows with the same kernel, in the same float order, as one node would, and the pieces are
//! all-gathered (concatenated, never summed) before the next matrix. Attention is split by
//! query heads; each member keeps the KV cache of the KV heads its heads read. Norms, RoPE,
//! activations and residual adds run on every member on the same full vectors.
//!
//! - [`slicing`]: the plan (which heads and rows each member holds), pure arithmetic;
//! - [`shapes`]: the plan's inputs read from a GGUF file;
//! - [`MemberStage`] / [`MemberBlock`]: a member's slices, loaded zero-copy from the map;
//! - [`MemberRun`]: the per-member step API between synchronisation points, [`gather`];
//! - [`LocalGroup`]: all members in one process, the reference driver;
//! - [`cost`]: synchronisation points and bytes per pass.
//!
//! ```no_run
//! use edgeray_model::arch::tensor_parallel::{LocalGroup, SliceOptions};
//! use edgeray_model::arch::{LogitsFor, StageInput, StageSpec, ModelConfig};
//! use edgeray_model::gguf::GgufFile;
//! let file = GgufFile::open("models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")?;
//! let cfg = ModelConfig::from_gguf(&file)?;
//! let pool = std::sync::Arc::new(edgeray_model::quant::KernelPool::new(1)?);
//! let spec = StageSpec::full(cfg.n_layers);
//! let group = LocalGroup::load(&file, &spec, &[1.0, 2.2], SliceOptions::default(),
//!     &burn::tensor::Device::flex(), &pool)?;
//! let mut caches = group.new_caches(512);
//! let out = group.forward(StageInput::Tokens(vec![9707]), &mut caches, LogitsFor::Last)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod cost;
mod error;
mod local;
mod member;
mod member_attn;
mod run;
pub mod shapes;
pub mod slicing;

#[cfg(test)]
mod exactness_tests;
#[cfg(test)]
mod real_tests;
#[cfg(test)]
mod slicing_tests;
#[cfg(test)]
mod test_model;

pub use cost::{PassCost, pass_cost, quantized_bytes};
pub use error::TpError;
pub use local::{LocalGroup, SyncStats};
pub use member::{MemberBlock, MemberStage};
pub use run::{Gathered, MemberRun, Partial, Step, SyncPoint, gather};
pub use shapes::{act_block, layer_shape, plan_stage};
pub use slicing::{
    GroupPlan, LayerShape, LayerSlices, MemberLayerSlice, SliceError, SliceOptions, WoPlacement,
    split_rows,
};
