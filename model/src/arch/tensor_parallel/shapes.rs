//! [`LayerShape`]s of a model's layers read from a GGUF file: the sizes from the config, the
//! activation blocks from the types of the consuming weights (`attn_output`, `ffn_down`).

use super::error::TpError;
use super::slicing::{GroupPlan, LayerShape, SliceOptions};
use crate::arch::{ModelConfig, StageSpec};
use crate::gguf::GgufFile;
use crate::quant::{ActKind, QK_K, QK32};

/// Elements per activation block of an [`ActKind`] (1 where activations are not blocked).
pub fn act_block(kind: ActKind) -> usize {
    match kind {
        ActKind::F32 | ActKind::F16 => 1,
        ActKind::Q8_0 => QK32,
        ActKind::Q8K => QK_K,
    }
}

/// The activation block of the weights `name` consume.
fn consumer_block(file: &GgufFile, name: &str) -> Result<usize, TpError> {
    let info = file.require_tensor(name)?;
    Ok(act_block(ActKind::for_weights(info.ggml_type)?))
}

/// The slicing shape of layer `il` of `file`.
pub fn layer_shape(file: &GgufFile, cfg: &ModelConfig, il: usize) -> Result<LayerShape, TpError> {
    Ok(LayerShape {
        d_model: cfg.d_model,
        n_head: cfg.n_head,
        n_kv_head: cfg.n_kv_head,
        head_dim: cfg.head_dim,
        n_ff: cfg.n_ff,
        attn_out_block: consumer_block(file, &format!("blk.{il}.attn_output.weight"))?,
        ffn_block: consumer_block(file, &format!("blk.{il}.ffn_down.weight"))?,
    })
}

/// The plan of stage `spec` of `file` for members of relative `speeds`.
pub fn plan_stage(
    file: &GgufFile,
    spec: &StageSpec,
    speeds: &[f64],
    options: SliceOptions,
) -> Result<GroupPlan, TpError> {
    let cfg = ModelConfig::from_gguf(file)?;
    spec.validate(&cfg)?;
    let shapes = spec
        .layers
        .clone()
        .map(|il| layer_shape(file, &cfg, il))
        .collect::<Result<Vec<_>, _>>()?;
    let vocab = spec.head.then_some(cfg.vocab_size);
    Ok(GroupPlan::new(&shapes, vocab, speeds, options)?)
}
