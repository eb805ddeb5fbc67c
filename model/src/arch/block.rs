//! One transformer block: pre-norm attention and MLP with residuals, plus gemma3's post-norms.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::attention::{Attention, AttentionSpec, AttnSeq};
use super::config::ModelConfig;
use super::error::ArchError;
use super::kv_cache::KvCache;
use super::mlp::Mlp;
use super::norm::RmsNorm;
use super::rope::RopeTables;
use super::tensors::{opt_vector, vector};
use std::sync::Arc;

use crate::gguf::GgufFile;
use crate::ops::{QLinear, QuantWeight};
use crate::quant::KernelPool;

/// A transformer block (layer `index` of the model).
#[derive(Module, Debug)]
pub struct Block {
    /// Norm before attention.
    pub attn_norm: RmsNorm,
    /// Self-attention.
    pub attn: Attention,
    /// Norm after attention (gemma3).
    pub post_attn_norm: Option<RmsNorm>,
    /// Norm before the MLP.
    pub ffn_norm: RmsNorm,
    /// Gated MLP.
    pub mlp: Mlp,
    /// Norm after the MLP (gemma3).
    pub post_ffn_norm: Option<RmsNorm>,
    /// Layer index in the full model.
    #[module(skip)]
    pub index: usize,
}

fn linear(
    file: &GgufFile,
    name: &str,
    rows: usize,
    cols: usize,
    device: &Device,
    pool: &Arc<KernelPool>,
) -> Result<QLinear, ArchError> {
    let w = QuantWeight::from_gguf(file, &format!("{name}.weight"), pool)?;
    if w.rows() != rows || w.cols() != cols {
        return Err(ArchError::BadTensor {
            name: w.name().into(),
            reason: format!(
                "expected [{rows} x {cols}] (out x in), got [{} x {}]",
                w.rows(),
                w.cols()
            ),
        });
    }
    let bias = opt_vector(file, &format!("{name}.bias"), rows, device)?;
    Ok(QLinear::new(w, bias))
}

impl Block {
    /// Loads layer `il` from `file` (only that layer's tensors are read).
    pub fn load(
        file: &GgufFile,
        cfg: &ModelConfig,
        il: usize,
        device: &Device,
        pool: &Arc<KernelPool>,
    ) -> Result<Self, ArchError> {
        let p = |s: &str| format!("blk.{il}.{s}");
        let (d, hd) = (cfg.d_model, cfg.head_dim);
        let norm = |name: &str, len: usize| -> Result<RmsNorm, ArchError> {
            Ok(RmsNorm::new(
                vector(file, &p(name), len, device)?,
                cfg.rms_eps,
            ))
        };
        let opt_norm = |name: &str, len: usize| -> Result<Option<RmsNorm>, ArchError> {
            Ok(opt_vector(file, &p(name), len, device)?.map(|w| RmsNorm::new(w, cfg.rms_eps)))
        };
        let layer = cfg.layer(il);
        let attn = Attention {
            wq: linear(file, &p("attn_q"), cfg.n_head * hd, d, device, pool)?,
            wk: linear(file, &p("attn_k"), cfg.n_kv_head * hd, d, device, pool)?,
            wv: linear(file, &p("attn_v"), cfg.n_kv_head * hd, d, device, pool)?,
            wo: linear(file, &p("attn_output"), d, cfg.n_head * hd, device, pool)?,
            q_norm: opt_norm("attn_q_norm.weight", hd)?,
            k_norm: opt_norm("attn_k_norm.weight", hd)?,
            spec: AttentionSpec {
                n_head: cfg.n_head,
                n_kv_head: cfg.n_kv_head,
                head_dim: hd,
                q_scale: cfg.q_scale,
                kq_scale: cfg.kq_scale,
                rope: layer.rope,
                window: layer.window,
            },
        };
        let mlp = Mlp {
            gate: linear(file, &p("ffn_gate"), cfg.n_ff, d, device, pool)?,
            up: linear(file, &p("ffn_up"), cfg.n_ff, d, device, pool)?,
            down: linear(file, &p("ffn_down"), d, cfg.n_ff, device, pool)?,
            activation: cfg.activation,
        };
        Ok(Self {
            attn_norm: norm("attn_norm.weight", d)?,
            attn,
            post_attn_norm: opt_norm("post_attention_norm.weight", d)?,
            ffn_norm: norm("ffn_norm.weight", d)?,
            mlp,
            post_ffn_norm: opt_norm("post_ffw_norm.weight", d)?,
            index: il,
        })
    }

    /// Keeps the packed copies of its projections whose formats have one (Q8_0, Q5_0, Q4_0 on
    /// x86; see [`crate::ops::QuantWeight::prepack`]); results never change. Returns how many
    /// it packed.
    pub fn prepack(&mut self) -> usize {
        let a = &mut self.attn;
        let m = &mut self.mlp;
        [
            &mut a.wq,
            &mut a.wk,
            &mut a.wv,
            &mut a.wo,
            &mut m.gate,
            &mut m.up,
            &mut m.down,
        ]
        .into_iter()
        .filter_map(|l| l.weight.prepack().then_some(()))
        .count()
    }

    /// Runs the block on `x` (`[n, d]`); `layer` is this block's index within `cache`.
    pub fn forward(
        &self,
        x: Tensor<2>,
        rope: &RopeTables,
        cache: &mut KvCache,
        layer: usize,
    ) -> Result<Tensor<2>, ArchError> {
        let n = x.dims()[0];
        self.forward_batch(x, &mut [AttnSeq { n, rope, cache }], layer)
    }

    /// Runs the block on the stacked rows of several sequences (see
    /// [`Attention::forward_batch`]): norms, projections and the MLP see all rows at once,
    /// attention each sequence's own rows and cache.
    pub fn forward_batch(
        &self,
        x: Tensor<2>,
        seqs: &mut [AttnSeq<'_>],
        layer: usize,
    ) -> Result<Tensor<2>, ArchError> {
        let h = self
            .attn
            .forward_batch(self.attn_norm.forward(x.clone()), seqs, layer)?;
        let h = match &self.post_attn_norm {
            Some(n) => n.forward(h),
            None => h,
        };
        let x = x + h;
        let h = self.mlp.forward(self.ffn_norm.forward(x.clone()))?;
        let h = match &self.post_ffn_norm {
            Some(n) => n.forward(h),
            None => h,
        };
        Ok(x + h)
    }

    /// Bytes of quantized weights of this block.
    pub fn weight_bytes(&self) -> usize {
        [
            &self.attn.wq,
            &self.attn.wk,
            &self.attn.wv,
            &self.attn.wo,
            &self.mlp.gate,
            &self.mlp.up,
            &self.mlp.down,
        ]
        .iter()
        .map(|l| l.weight.n_bytes())
        .sum()
    }
}
