//! Attention of one member over its own query heads and KV heads, with the same operations in
//! the same order per head as [`crate::arch::Attention`], so every head's output is the same
//! numbers as on one node.

use burn::tensor::Tensor;

use crate::arch::attention::{attend_kv_groups, f16_round};
use crate::arch::{AttentionSpec, KvCache, RopeTables};

/// The query heads `q_heads` (global indices) of `n` positions starting at `cache.len()`:
/// `q` `[n, q_heads.len(), hd]`, `k`/`v` `[n, kv_heads.len(), hd]` (after projections and
/// QK-norms, before RoPE). Appends the keys/values to layer `layer` of `cache` (which holds only
/// `kv_heads`) and returns `[n, q_heads.len() * hd]`.
///
/// Heads sharing a KV head are attended together in one call per KV head, as many of the
/// group's heads as this member holds; each query row is computed independently by both
/// attention paths, so a partial group gives the same rows as the whole one.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend_heads(
    spec: &AttentionSpec,
    q_heads: std::ops::Range<usize>,
    kv_heads: std::ops::Range<usize>,
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    rope: &RopeTables,
    cache: &mut KvCache,
    layer: usize,
) -> Tensor<2> {
    let s = spec;
    let [n, nq, hd] = q.dims();
    let pos0 = cache.len();
    let device = q.device();
    let q = s.rope.apply(q, rope);
    let k = s.rope.apply(k, rope);
    let k = f16_round(k.swap_dims(0, 1));
    let v = f16_round(v.swap_dims(0, 1));
    let (keys, values) = cache.append(layer, k, v);
    let group = s.n_head / s.n_kv_head;
    let q = match s.q_scale {
        Some(f) => q.mul_scalar(f),
        None => q,
    };
    // [n, nq, hd] -> [nq, n, hd]
    let q = q.swap_dims(0, 1);
    let mut outs = Vec::with_capacity(kv_heads.len());
    for kv in kv_heads.clone() {
        let first = q_heads.start.max(kv * group);
        let last = q_heads.end.min((kv + 1) * group);
        let g = last - first;
        let qk: Tensor<3> = q
            .clone()
            .narrow(0, first - q_heads.start, g)
            .reshape([1, g * n, hd]);
        let local = kv - kv_heads.start;
        let keys = keys.clone().narrow(0, local, 1);
        let values = values.clone().narrow(0, local, 1);
        let out = attend_kv_groups(s, qk, keys, values, n, pos0, g, &device);
        outs.push(out.reshape([g, n, hd]));
    }
    let out = if outs.len() == 1 {
        outs.pop().expect("one KV head")
    } else {
        Tensor::cat(outs, 0)
    };
    debug_assert_eq!(out.dims()[0], nq);
    let out: Tensor<3> = out.swap_dims(0, 1);
    out.reshape([n, nq * hd])
}
