//! llama.cpp-exact attention for short query batches: a burn backend extension implemented on
//! `Flex` that reproduces ggml-cpu's `flash_attn_ext_f16_one_chunk` (the path llama.cpp takes for
//! decode steps and small batches with an F16 KV cache): queries rounded to f16, K·Q dot products
//! in f32, online softmax, and the V accumulator kept in **f16** (`ggml_vec_mad_f16` /
//! `ggml_vec_scale_f16`). Those f16 roundings move logits by up to ~0.1, enough to flip greedy
//! choices, which is why this is not expressed with burn's f32 tensor ops.

use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, TensorMetadata, backend_extension};
use burn::tensor::TensorData;
use half::f16;

/// Shape and masking parameters of one [`FlashAttnBackend::flash_attn_f16`] call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlashAttnParams {
    /// Number of query positions in the batch.
    pub n: usize,
    /// Number of valid keys (positions `0..t`) in the cache buffers.
    pub t: usize,
    /// Position of the first query.
    pub pos0: usize,
    /// Sliding window (0 = none): key `j` is visible to query position `p` iff `p - j < window`.
    pub window: usize,
    /// Scale applied to each K·Q product.
    pub scale: f32,
}

/// Attention with ggml's f16-accumulating CPU flash-attention numerics.
#[backend_extension(Flex)]
pub trait FlashAttnBackend: Backend {
    /// `q`: `[kv_heads, group * n, head_dim]` (row `g * n + i` is query `i` of head `h*group+g`);
    /// `k`, `v`: `[kv_heads, capacity, head_dim]` cache buffers (f16-representable values), of
    /// which positions `0..params.t` are used. Returns `[kv_heads, group * n, head_dim]`.
    fn flash_attn_f16(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        params: FlashAttnParams,
    ) -> FloatTensor<Self>;
}

fn slice(t: &FlexTensor) -> FlexTensor {
    t.to_contiguous()
}

/// `x` rounded to the nearest f16 (ties to even), as an f32: a bit trick in the f16 normal range,
/// `half` elsewhere (subnormals, overflow, NaN). Same result as `f16::from_f32(x).to_f32()`.
#[inline(always)]
pub fn round_f16(x: f32) -> f32 {
    let a = x.abs();
    if (6.103_515_6e-5..65504.0).contains(&a) {
        let b = x.to_bits();
        f32::from_bits((b + 0x0FFF + ((b >> 13) & 1)) & !0x1FFF)
    } else {
        f16::from_f32(x).to_f32()
    }
}

/// Lanes of one f32 vector in ggml-cpu's F16 dot product on the reference machine (x86 with
/// AVX-512F but without AVX512-FP16, e.g. Zen 4: `GGML_F16_EPR` = 16).
const KQ_LANES: usize = 16;
/// Accumulator vectors of that dot product (`GGML_F16_ARR` = `GGML_F16_STEP / GGML_F16_EPR` = 4).
const KQ_ACCS: usize = 4;

/// K·Q dot product in the order of ggml-cpu's `ggml_vec_dot_f16` as built for AVX-512F:
/// element `i` is fused-multiply-added into lane `i % 16` of accumulator `(i / 16) % 4`; the
/// accumulators are added pairwise (0+2, 1+3, then 0+1) and the 16 lanes reduced as
/// `_mm512_reduce_add_ps` does (upper 8 + lower 8, upper 4 + lower 4, then (0+2) + (1+3));
/// a tail shorter than 64 elements is added in f64. A plain sequential f32 sum differs by a few
/// ulp, which the f16 rounding of the V accumulator turns into visible logit changes.
#[inline(always)]
pub fn kq_dot(k: &[f32], q: &[f32]) -> f32 {
    debug_assert_eq!(k.len(), q.len());
    let step = KQ_LANES * KQ_ACCS;
    let np = k.len() - k.len() % step;
    let mut acc = [[0f32; KQ_LANES]; KQ_ACCS];
    for (kc, qc) in k[..np].chunks_exact(step).zip(q[..np].chunks_exact(step)) {
        for (j, a) in acc.iter_mut().enumerate() {
            for (l, lane) in a.iter_mut().enumerate() {
                let i = j * KQ_LANES + l;
                *lane = kc[i].mul_add(qc[i], *lane);
            }
        }
    }
    let mut x = [0f32; KQ_LANES];
    for (l, v) in x.iter_mut().enumerate() {
        *v = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    }
    let mut t8 = [0f32; 8];
    for (l, v) in t8.iter_mut().enumerate() {
        *v = x[l + 8] + x[l];
    }
    let t4 = [t8[4] + t8[0], t8[5] + t8[1], t8[6] + t8[2], t8[7] + t8[3]];
    let mut sum = ((t4[0] + t4[2]) + (t4[1] + t4[3])) as f64;
    for (a, b) in k[np..].iter().zip(&q[np..]) {
        sum += (a * b) as f64;
    }
    sum as f32
}

impl FlashAttnBackend for Flex {
    fn flash_attn_f16(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        p: FlashAttnParams,
    ) -> FlexTensor {
        let qs = q.shape();
        let ks = k.shape();
        let (kvh, rows, hd) = (qs[0], qs[1], qs[2]);
        let cap = ks[1];
        assert!(
            ks[0] == kvh && ks[2] == hd && p.t <= cap && p.n > 0 && rows % p.n == 0,
            "flash_attn_f16: shapes"
        );
        let (q, k, v) = (slice(&q), slice(&k), slice(&v));
        let qd: &[f32] = q.as_slice().expect("contiguous f32 queries");
        let kd: &[f32] = k.as_slice().expect("contiguous f32 keys");
        let vd: &[f32] = v.as_slice().expect("contiguous f32 values");
        let mut out = vec![0f32; kvh * rows * hd];
        attend(qd, kd, vd, &mut out, [kvh, rows, hd, cap], &p);
        FlexTensor::from_data(TensorData::new(out, [kvh, rows, hd]))
    }
}

/// The flash-attention loops of [`FlashAttnBackend::flash_attn_f16`] on flat slices (`dims` =
/// kv heads, query rows, head dim, cache capacity), dispatched to a copy compiled with FMA where
/// the CPU has it: `mul_add` is then one instruction instead of a libm `fmaf` call (baseline
/// x86-64 has no FMA). Fused multiply-add is exact either way, so both give the same bits.
fn attend(
    qd: &[f32],
    kd: &[f32],
    vd: &[f32],
    out: &mut [f32],
    dims: [usize; 4],
    p: &FlashAttnParams,
) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the features were just detected.
        return unsafe { attend_fma(qd, kd, vd, out, dims, p) };
    }
    attend_rows(qd, kd, vd, out, dims, p)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn attend_fma(
    qd: &[f32],
    kd: &[f32],
    vd: &[f32],
    out: &mut [f32],
    dims: [usize; 4],
    p: &FlashAttnParams,
) {
    attend_rows(qd, kd, vd, out, dims, p)
}

#[inline(always)]
fn attend_rows(
    qd: &[f32],
    kd: &[f32],
    vd: &[f32],
    out: &mut [f32],
    dims: [usize; 4],
    p: &FlashAttnParams,
) {
    let [kvh, rows, hd, cap] = dims;
    let mut qq = vec![0f32; hd];
    // The f16 accumulator, held as f16-exact f32 values.
    let mut acc = vec![0f32; hd];
    for h in 0..kvh {
        let kb = &kd[h * cap * hd..];
        let vb = &vd[h * cap * hd..];
        for r in 0..rows {
            let pos = p.pos0 + r % p.n;
            let qrow = &qd[(h * rows + r) * hd..(h * rows + r + 1) * hd];
            for (d, x) in qq.iter_mut().zip(qrow) {
                *d = round_f16(*x);
            }
            acc.fill(0.0);
            let (mut m, mut s_sum) = (f32::NEG_INFINITY, 0f32);
            let last = pos.min(p.t - 1);
            let first = if p.window > 0 {
                (pos + 1).saturating_sub(p.window)
            } else {
                0
            };
            for j in first..=last {
                let krow = &kb[j * hd..(j + 1) * hd];
                let s = kq_dot(krow, &qq) * p.scale;
                let (mut ms, mut vs) = (1.0f32, 1.0f32);
                if s > m {
                    let old = m;
                    m = s;
                    ms = (old - m).exp();
                    for a in acc.iter_mut() {
                        *a = round_f16(*a * ms);
                    }
                } else {
                    vs = (s - m).exp();
                }
                let vrow = &vb[j * hd..(j + 1) * hd];
                for (a, x) in acc.iter_mut().zip(vrow) {
                    *a = round_f16(x.mul_add(vs, *a));
                }
                s_sum = s_sum.mul_add(ms, vs); // `S = S*ms + vs`, contracted to an FMA by gcc
            }
            let inv = if s_sum == 0.0 { 0.0 } else { 1.0 / s_sum };
            let o = &mut out[(h * rows + r) * hd..(h * rows + r + 1) * hd];
            for (y, a) in o.iter_mut().zip(&acc) {
                *y = a * inv;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The FMA-compiled loops give exactly the bits of the portable ones (with a sliding window,
    /// several heads and a batch of queries).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn fma_dispatch_is_bit_identical() {
        if !(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")) {
            return;
        }
        let (kvh, n, group, hd, cap) = (2, 5, 2, 72, 40);
        let rows = n * group;
        let mut x = 0x9E37_79B9u32;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            round_f16((x as i32) as f32 / 2.0e8)
        };
        let q: Vec<f32> = (0..kvh * rows * hd).map(|_| next()).collect();
        let k: Vec<f32> = (0..kvh * cap * hd).map(|_| next()).collect();
        let v: Vec<f32> = (0..kvh * cap * hd).map(|_| next()).collect();
        for window in [0, 7] {
            let p = FlashAttnParams {
                n,
                t: 33,
                pos0: 28,
                window,
                scale: 0.125,
            };
            let mut a = vec![0f32; kvh * rows * hd];
            let mut b = vec![0f32; kvh * rows * hd];
            attend_rows(&q, &k, &v, &mut a, [kvh, rows, hd, cap], &p);
            // SAFETY: the features were detected above.
            unsafe { attend_fma(&q, &k, &v, &mut b, [kvh, rows, hd, cap], &p) };
            assert!(a.iter().any(|&y| y != 0.0));
            let same = a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "window {window}");
        }
    }

    #[test]
    fn kq_dot_uses_ggml_avx512_lane_order() {
        // 2^24 + 1 is not representable in f32: a sequential sum loses the 1, ggml's lane order
        // (elements 0 and 64 share lane 0 of accumulator 0, element 16 is in accumulator 1)
        // cancels the big values first and keeps it.
        let mut k = vec![0f32; 256];
        let q = vec![1f32; 256];
        k[0] = 16_777_216.0;
        k[16] = 1.0;
        k[64] = -16_777_216.0;
        assert_eq!(k.iter().zip(&q).map(|(a, b)| a * b).sum::<f32>(), 0.0);
        assert_eq!(kq_dot(&k, &q), 1.0);
        // A length that is not a multiple of 64 adds the tail in f64.
        let k: Vec<f32> = (0..70).map(|i| i as f32 * 0.5).collect();
        let q: Vec<f32> = (0..70).map(|i| 1.0 - i as f32 * 0.01).collect();
        let want: f64 = k.iter().zip(&q).map(|(a, b)| (a * b) as f64).sum();
        assert!((kq_dot(&k, &q) as f64 - want).abs() < 1e-3);
    }

    #[test]
    fn round_f16_matches_half_everywhere_it_matters() {
        let mut x = 1u32;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let v = f32::from_bits(x);
            if v.is_nan() {
                continue;
            }
            let want = f16::from_f32(v).to_f32();
            assert_eq!(round_f16(v).to_bits(), want.to_bits(), "{v:e}");
        }
        for v in [
            0.0f32,
            -0.0,
            1.0,
            65504.0,
            65519.0,
            65520.0,
            6.1e-5,
            6.103_515_6e-5,
            -3.3,
            1e-8,
        ] {
            assert_eq!(
                round_f16(v).to_bits(),
                f16::from_f32(v).to_f32().to_bits(),
                "{v:e}"
            );
        }
    }
}
