//! What one member of a group holds ([`MemberBlock`], [`MemberStage`]) and the computation it
//! does between two synchronisation points.

use std::ops::Range;
use std::sync::Arc;

use burn::module::Param;
use burn::tensor::{Device, Tensor};

use super::error::TpError;
use super::member_attn::attend_heads;
use super::slicing::{GroupPlan, MemberLayerSlice, WoPlacement};
use crate::arch::{
    Activation, AttentionSpec, Block, Embedding, KvCache, ModelConfig, RmsNorm, RopeTables,
    StageSpec,
};
use crate::gguf::GgufFile;
use crate::ops::QLinear;
use crate::quant::KernelPool;

/// Rows `rows` of a linear layer (weight rows and bias entries), sharing the weight's bytes.
fn slice_linear(l: &QLinear, rows: Range<usize>) -> Result<QLinear, TpError> {
    if rows == (0..l.out_features()) {
        return Ok(QLinear::new(
            l.weight.clone(),
            l.bias.as_ref().map(Param::val),
        ));
    }
    let bias = l
        .bias
        .as_ref()
        .map(|b| b.val().narrow(0, rows.start, rows.len()));
    let mut weight = l.weight.slice_rows(rows)?;
    // The member's own rows, packed as a whole stage's would be (see `Stage::load_unpacked`).
    if crate::arch::stage::prepack_enabled() {
        weight.prepack();
    }
    Ok(QLinear::new(weight, bias))
}

/// One layer as a member holds it: its query heads' rows of `attn_q`, its KV heads' rows of
/// `attn_k`/`attn_v`, its rows of `attn_output` (all of them when replicated), `ffn_gate`,
/// `ffn_up` and `ffn_down`, and every (small) norm whole.
#[derive(Debug)]
pub struct MemberBlock {
    /// Norm before attention.
    pub attn_norm: RmsNorm,
    /// Rows of the query projection (its heads).
    pub wq: QLinear,
    /// Rows of the key projection (its KV heads).
    pub wk: QLinear,
    /// Rows of the value projection (its KV heads).
    pub wv: QLinear,
    /// Rows of the output projection.
    pub wo: QLinear,
    /// QK-norms (gemma3), per head, whole.
    pub q_norm: Option<RmsNorm>,
    /// See `q_norm`.
    pub k_norm: Option<RmsNorm>,
    /// Norm after attention (gemma3).
    pub post_attn_norm: Option<RmsNorm>,
    /// Norm before the MLP.
    pub ffn_norm: RmsNorm,
    /// Rows of the gate projection.
    pub gate: QLinear,
    /// Rows of the up projection (same rows as `gate`).
    pub up: QLinear,
    /// Rows of the down projection.
    pub down: QLinear,
    /// Norm after the MLP (gemma3).
    pub post_ffn_norm: Option<RmsNorm>,
    /// MLP activation.
    pub activation: Activation,
    /// The layer's attention settings (whole-layer head counts).
    pub spec: AttentionSpec,
    /// What this member holds of the layer.
    pub slice: MemberLayerSlice,
    /// Layer index in the full model.
    pub index: usize,
}

impl MemberBlock {
    /// Slices a loaded block (whose weights stay in the memory map: only the slice's rows are
    /// ever read).
    pub fn from_block(block: Block, slice: &MemberLayerSlice) -> Result<Self, TpError> {
        let hd = block.attn.spec.head_dim;
        let a = &block.attn;
        let q_rows = slice.q_heads.start * hd..slice.q_heads.end * hd;
        let kv_rows = slice.kv_heads.start * hd..slice.kv_heads.end * hd;
        Ok(Self {
            wq: slice_linear(&a.wq, q_rows)?,
            wk: slice_linear(&a.wk, kv_rows.clone())?,
            wv: slice_linear(&a.wv, kv_rows)?,
            wo: slice_linear(&a.wo, slice.wo_rows.clone())?,
            gate: slice_linear(&block.mlp.gate, slice.ffn_rows.clone())?,
            up: slice_linear(&block.mlp.up, slice.ffn_rows.clone())?,
            down: slice_linear(&block.mlp.down, slice.down_rows.clone())?,
            activation: block.mlp.activation,
            spec: a.spec,
            slice: slice.clone(),
            index: block.index,
            attn_norm: block.attn_norm,
            q_norm: block.attn.q_norm,
            k_norm: block.attn.k_norm,
            post_attn_norm: block.post_attn_norm,
            ffn_norm: block.ffn_norm,
            post_ffn_norm: block.post_ffn_norm,
        })
    }

    /// Attention of its heads on the full residual `x` (`[n, d]`, positions `cache.len()..`):
    /// appends its KV heads to layer `layer` of `cache` and returns its columns of the
    /// attention output (`[n, heads * hd]`, columns [`MemberLayerSlice::attn_cols`]).
    pub fn attention(
        &self,
        x: &Tensor<2>,
        rope: &RopeTables,
        cache: &mut KvCache,
        layer: usize,
    ) -> Result<Tensor<2>, TpError> {
        let n = x.dims()[0];
        let hd = self.spec.head_dim;
        let (nq, nkv) = (self.slice.q_heads.len(), self.slice.kv_heads.len());
        let xn = self.attn_norm.forward(x.clone());
        let q: Tensor<3> = self.wq.forward(xn.clone())?.reshape([n, nq, hd]);
        let k: Tensor<3> = self.wk.forward(xn.clone())?.reshape([n, nkv, hd]);
        let v: Tensor<3> = self.wv.forward(xn)?.reshape([n, nkv, hd]);
        let q = match &self.q_norm {
            Some(norm) => norm.forward(q),
            None => q,
        };
        let k = match &self.k_norm {
            Some(norm) => norm.forward(k),
            None => k,
        };
        Ok(attend_heads(
            &self.spec,
            self.slice.q_heads.clone(),
            self.slice.kv_heads.clone(),
            q,
            k,
            v,
            rope,
            cache,
            layer,
        ))
    }

    /// Its rows of the attention output projection applied to the gathered attention output
    /// (`[n, n_head * hd]`): `[n, wo_rows]`.
    pub fn attn_output(&self, attn: Tensor<2>) -> Result<Tensor<2>, TpError> {
        Ok(self.wo.forward(attn)?)
    }

    /// The residual after attention from the gathered projection output `h` (`[n, d]`).
    pub fn finish_attention(&self, x: Tensor<2>, h: Tensor<2>) -> Tensor<2> {
        let h = match &self.post_attn_norm {
            Some(n) => n.forward(h),
            None => h,
        };
        x + h
    }

    /// Its elements of the MLP hidden vector, `act(gate(x̂)) * up(x̂)` for its rows
    /// (`[n, ffn_rows]`), from the full residual `x`.
    pub fn ffn_hidden(&self, x: &Tensor<2>) -> Result<Tensor<2>, TpError> {
        let xn = self.ffn_norm.forward(x.clone());
        let g = self.gate.forward(xn.clone())?;
        let u = self.up.forward(xn)?;
        Ok(match self.activation {
            Activation::Silu => burn::tensor::activation::silu(g) * u,
            Activation::GeluTanh => crate::arch::mlp::geglu_ggml(g, u),
        })
    }

    /// Its rows of the down projection of the gathered hidden vector (`[n, n_ff]`).
    pub fn ffn_down(&self, a: Tensor<2>) -> Result<Tensor<2>, TpError> {
        Ok(self.down.forward(a)?)
    }

    /// The residual after the MLP from the gathered down projection `h` (`[n, d]`).
    pub fn finish_ffn(&self, x: Tensor<2>, h: Tensor<2>) -> Tensor<2> {
        let h = match &self.post_ffn_norm {
            Some(n) => n.forward(h),
            None => h,
        };
        x + h
    }

    /// Bytes of quantized weights this member holds of the layer.
    pub fn weight_bytes(&self) -> usize {
        [
            &self.wq, &self.wk, &self.wv, &self.wo, &self.gate, &self.up, &self.down,
        ]
        .iter()
        .map(|l| l.weight.n_bytes())
        .sum()
    }
}

/// A member's part of a stage: its [`MemberBlock`]s, the embedding (every member of a first
/// stage looks tokens up itself: only the looked-up rows of the mapped table are read), and
/// on a head stage the final norm and its vocabulary rows of the output head.
#[derive(Debug)]
pub struct MemberStage {
    /// This member's index in the group.
    pub member: usize,
    /// Token embedding (first stage).
    pub embed: Option<Embedding>,
    /// Its slices of the stage's blocks, in order.
    pub blocks: Vec<MemberBlock>,
    /// Final norm (head stage), whole.
    pub norm: Option<RmsNorm>,
    /// Its rows of the output head (head stage).
    pub output: Option<QLinear>,
    /// Its vocabulary rows (head stage).
    pub head_rows: Option<Range<usize>>,
    /// Model hyper-parameters.
    pub config: ModelConfig,
    /// The stage the group holds.
    pub spec: StageSpec,
    /// Whether `attn_output` is replicated (3 syncs per layer) or split (4).
    pub wo: WoPlacement,
    device: Device,
}

impl MemberStage {
    /// Loads member `member`'s slice of stage `spec` of `file` as planned by `plan`. Quantized
    /// weights stay in the memory map and only the member's rows are ever touched; a networked
    /// board would receive exactly those byte ranges (see [`MemberStage::weight_bytes`]).
    pub fn load(
        file: &GgufFile,
        spec: &StageSpec,
        plan: &GroupPlan,
        member: usize,
        device: &Device,
        pool: &Arc<KernelPool>,
    ) -> Result<Self, TpError> {
        if member >= plan.members() {
            return Err(TpError::Protocol(format!(
                "member {member} of a group of {}",
                plan.members()
            )));
        }
        if plan.layers.len() != spec.layers.len() || plan.head_rows.is_some() != spec.head {
            return Err(TpError::Protocol(
                "the plan was made for another stage".into(),
            ));
        }
        // A full stage's parts, zero-copy, then sliced.
        let whole = crate::arch::Stage::load_unpacked(file, spec, device, pool)?;
        let config = whole.config.clone();
        let blocks = whole
            .blocks
            .into_iter()
            .zip(&plan.layers)
            .map(|(b, l)| MemberBlock::from_block(b, &l.members[member]))
            .collect::<Result<Vec<_>, _>>()?;
        let head_rows = plan.head_rows.as_ref().map(|r| r[member].clone());
        let output = match (&whole.output, &head_rows) {
            (Some(o), Some(rows)) => Some(slice_linear(o, rows.clone())?),
            _ => None,
        };
        Ok(Self {
            member,
            embed: whole.embed,
            blocks,
            norm: whole.norm,
            output,
            head_rows,
            config,
            spec: spec.clone(),
            wo: plan.options.wo,
            device: device.clone(),
        })
    }

    /// A fresh KV cache for one sequence: the stage's layers, this member's KV heads only.
    pub fn new_cache(&self, max_ctx: usize) -> KvCache {
        KvCache::new(self.blocks.len(), max_ctx)
    }

    /// The device it computes on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Bytes of quantized weights this member holds (its slices; the embedding table, which
    /// every member of a first stage maps but reads only row by row, is not counted).
    pub fn weight_bytes(&self) -> usize {
        let blocks: usize = self.blocks.iter().map(MemberBlock::weight_bytes).sum();
        blocks + self.output.as_ref().map_or(0, |o| o.weight.n_bytes())
    }

    /// Its logits columns for the rows `h` (`[k, d]`, before the final norm).
    pub(crate) fn head(&self, h: Tensor<2>) -> Result<Tensor<2>, TpError> {
        match (&self.norm, &self.output) {
            (Some(norm), Some(out)) => Ok(out.forward(norm.forward(h))?),
            _ => Err(TpError::Protocol("this stage has no output head".into())),
        }
    }
}
