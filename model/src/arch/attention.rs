//! Grouped-query self-attention with RoPE, optional QK-norm and sliding window, on burn ops.

use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::{Device, FloatDType, Tensor, TensorData};

use super::error::ArchError;
use super::kv_cache::KvCache;
use super::norm::RmsNorm;
use super::rope::{Rope, RopeTables};
use crate::ops::{FlashAttnBackend, FlashAttnParams, QLinear};
use burn::backend::Dispatch;

/// Query batches at least this long take ggml's tiled flash-attention path (f32 throughout);
/// shorter ones (decode steps) the one-chunk path with f16 accumulation (`GGML_FA_TILE_Q`).
pub const TILED_MIN_QUERIES: usize = 32;

/// Fixed attention settings of one layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionSpec {
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_kv_head: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// Scale applied to the queries before attention (gemma3: `attention.scale`, as llama.cpp's
    /// `ggml_scale` on Q), `None` for none.
    pub q_scale: Option<f32>,
    /// Scale applied to each K·Q score inside attention.
    pub kq_scale: f32,
    /// RoPE of the layer.
    pub rope: Rope,
    /// Sliding window, `None` for full attention.
    pub window: Option<usize>,
}

/// Rounds values through f16 (llama.cpp stores K/V in an F16 cache).
pub(crate) fn f16_round<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    t.cast(FloatDType::F16).cast(FloatDType::F32)
}

/// Self-attention block (projections, QK-norm, RoPE, cache, softmax, output projection).
#[derive(Module, Debug)]
pub struct Attention {
    /// Query projection.
    pub wq: QLinear,
    /// Key projection.
    pub wk: QLinear,
    /// Value projection.
    pub wv: QLinear,
    /// Output projection.
    pub wo: QLinear,
    /// Per-head RMSNorm of queries (gemma3).
    pub q_norm: Option<RmsNorm>,
    /// Per-head RMSNorm of keys (gemma3).
    pub k_norm: Option<RmsNorm>,
    /// Settings.
    #[module(skip)]
    pub spec: AttentionSpec,
}

/// Additive mask `[1, 1, n, t]`: 0 where query `i` (position `pos0 + i`) may see key `j`, -inf
/// elsewhere (future keys, keys at distance ≥ window). `None` when nothing is masked.
pub(crate) fn mask(
    pos0: usize,
    n: usize,
    t: usize,
    window: Option<usize>,
    device: &Device,
) -> Option<Tensor<4>> {
    let visible = |i: usize, j: usize| {
        let q = pos0 + i;
        j <= q && window.is_none_or(|w| q - j < w)
    };
    let all_visible = (0..n).all(|i| visible(i, 0) && visible(i, t - 1) && t <= pos0 + i + 1);
    if all_visible {
        return None;
    }
    let mut m = vec![0f32; n * t];
    for i in 0..n {
        for j in 0..t {
            if !visible(i, j) {
                m[i * t + j] = f32::NEG_INFINITY;
            }
        }
    }
    Some(Tensor::from_data(TensorData::new(m, [1, 1, n, t]), device))
}

/// One sequence's share of a multi-sequence attention call: its `n` consecutive rows of the
/// stacked input (positions `cache.len()..`), their RoPE tables and its own KV cache.
pub struct AttnSeq<'a> {
    /// Rows (positions) of this sequence in the stacked input.
    pub n: usize,
    /// RoPE tables of those positions for this layer's base.
    pub rope: &'a RopeTables,
    /// The sequence's KV cache.
    pub cache: &'a mut KvCache,
}

impl Attention {
    /// Attends `x` (`[n, d]`, positions `cache.len()..`) and appends its keys/values to layer
    /// `layer` of `cache`. `rope` must hold the tables of those `n` positions for this layer's base.
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

    /// Attention for several sequences whose rows are stacked in `x` (`[Σ n, d]`, in the order
    /// of `seqs`). The projections run once over all rows; RoPE, the cache append and the
    /// attention itself run per sequence on its own rows and cache, so each sequence's output
    /// rows equal what [`Attention::forward`] gives for it alone.
    pub fn forward_batch(
        &self,
        x: Tensor<2>,
        seqs: &mut [AttnSeq<'_>],
        layer: usize,
    ) -> Result<Tensor<2>, ArchError> {
        let s = self.spec;
        let [rows, _] = x.dims();
        let total: usize = seqs.iter().map(|q| q.n).sum();
        if total != rows || seqs.iter().any(|q| q.n == 0) {
            return Err(ArchError::BadInput(format!(
                "{rows} stacked rows for sequences of {:?} rows",
                seqs.iter().map(|q| q.n).collect::<Vec<_>>()
            )));
        }
        let q: Tensor<3> = self
            .wq
            .forward(x.clone())?
            .reshape([rows, s.n_head, s.head_dim]);
        let k: Tensor<3> = self
            .wk
            .forward(x.clone())?
            .reshape([rows, s.n_kv_head, s.head_dim]);
        let v: Tensor<3> = self.wv.forward(x)?.reshape([rows, s.n_kv_head, s.head_dim]);
        let q = match &self.q_norm {
            Some(norm) => norm.forward(q),
            None => q,
        };
        let k = match &self.k_norm {
            Some(norm) => norm.forward(k),
            None => k,
        };
        let out = if let [one] = seqs {
            self.attend(q, k, v, one, layer)
        } else {
            let mut outs = Vec::with_capacity(seqs.len());
            let mut row = 0;
            for seq in seqs.iter_mut() {
                let n = seq.n;
                outs.push(self.attend(
                    q.clone().narrow(0, row, n),
                    k.clone().narrow(0, row, n),
                    v.clone().narrow(0, row, n),
                    seq,
                    layer,
                ));
                row += n;
            }
            Tensor::cat(outs, 0)
        };
        self.wo.forward(out)
    }

    /// RoPE, cache append and attention of one sequence's rows (`[n, heads, hd]` queries,
    /// `[n, kv_heads, hd]` keys and values, after the projections and QK-norms); returns
    /// `[n, heads * hd]` before the output projection.
    fn attend(
        &self,
        q: Tensor<3>,
        k: Tensor<3>,
        v: Tensor<3>,
        seq: &mut AttnSeq<'_>,
        layer: usize,
    ) -> Tensor<2> {
        let s = self.spec;
        let n = seq.n;
        let cache = &mut *seq.cache;
        let pos0 = cache.len();
        let device = q.device();
        let q = s.rope.apply(q, seq.rope);
        let k = s.rope.apply(k, seq.rope);
        // Cache layout [kv_heads, positions, head_dim], f16-rounded like llama.cpp's F16 cache.
        let k = f16_round(k.swap_dims(0, 1));
        let v = f16_round(v.swap_dims(0, 1));
        let (keys, values) = cache.append(layer, k, v);
        let group = s.n_head / s.n_kv_head;
        let q = match s.q_scale {
            Some(f) => q.mul_scalar(f),
            None => q,
        };
        // Queries [n, heads, hd] -> [kv_heads, group * n, hd]; head h uses kv head h / group.
        let q = q
            .swap_dims(0, 1)
            .reshape([s.n_kv_head, group * n, s.head_dim]);
        let out = attend_kv_groups(&s, q, keys, values, n, pos0, group, &device);
        let out: Tensor<3> = out.reshape([s.n_head, n, s.head_dim]).swap_dims(0, 1);
        out.reshape([n, s.n_head * s.head_dim])
    }
}

/// Attention of queries `q` (`[kv, group * n, hd]`: for each of `kv` KV heads, the `group`
/// query heads that read it, each with `n` rows at positions `pos0..`) against `keys` /
/// `values` (`[kv, ctx, hd]`, the first `pos0 + n` positions valid). Returns
/// `[kv, group * n, hd]`. Batches of [`TILED_MIN_QUERIES`] rows or more take ggml's tiled path
/// (f32 GEMMs and softmax), shorter ones (decode steps) its one-chunk flash attention (f16 Q
/// and V sums). Every query row is computed independently, so any subset of a KV head's query
/// heads (a tensor-parallel member's) gives the same rows as the whole group.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend_kv_groups(
    s: &AttentionSpec,
    q: Tensor<3>,
    keys: Tensor<3>,
    values: Tensor<3>,
    n: usize,
    pos0: usize,
    group: usize,
    device: &Device,
) -> Tensor<3> {
    let kv = q.dims()[0];
    let t = pos0 + n;
    if n < TILED_MIN_QUERIES {
        let params = FlashAttnParams {
            n,
            t,
            pos0,
            window: s.window.unwrap_or(0),
            scale: s.kq_scale,
        };
        Tensor::<3>::from_dispatch(<Dispatch as FlashAttnBackend>::flash_attn_f16(
            q.into_dispatch(),
            keys.into_dispatch(),
            values.into_dispatch(),
            params,
        ))
    } else {
        let keys = keys.narrow(1, 0, t);
        let values = values.narrow(1, 0, t);
        let scores = q.matmul(keys.swap_dims(1, 2)).mul_scalar(s.kq_scale); // [kv, group*n, t]
        let scores: Tensor<4> = scores.reshape([kv, group, n, t]);
        let scores = match mask(pos0, n, t, s.window, device) {
            Some(m) => scores + m,
            None => scores,
        };
        let probs: Tensor<3> = softmax(scores, 3).reshape([kv, group * n, t]);
        probs.matmul(values) // [kv, group*n, hd]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_is_causal_and_windowed() {
        let d = Device::flex();
        assert!(mask(5, 1, 6, None, &d).is_none());
        assert!(mask(5, 1, 6, Some(512), &d).is_none());
        let m: Vec<f32> = mask(0, 3, 3, None, &d)
            .unwrap()
            .into_data()
            .try_into_vec()
            .unwrap();
        let inf = f32::NEG_INFINITY;
        assert_eq!(m, vec![0.0, inf, inf, 0.0, 0.0, inf, 0.0, 0.0, 0.0]);
        let m: Vec<f32> = mask(3, 1, 4, Some(2), &d)
            .unwrap()
            .into_data()
            .try_into_vec()
            .unwrap();
        assert_eq!(m, vec![inf, inf, 0.0, 0.0]);
    }
}
