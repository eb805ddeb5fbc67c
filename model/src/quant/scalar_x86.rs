//! Scalar reference vec-dot kernels in **ggml's x86 float order**: what ggml-cpu's AVX2 kernels
//! (`arch/x86/quants.c`, also compiled on AVX-512 machines for these types, and tinyBLAS's
//! `tinyBLAS_Q0_AVX` for the legacy formats) compute, written out element by element.
//!
//! Those kernels keep eight f32 accumulator lanes. Each block adds one fused multiply-add per
//! lane, `acc[k] = fma(d, (float) sumi[k], acc[k])`, where `sumi[k]` is an exact integer sum of
//! a fixed subset of the block's products, and the lanes are reduced at the end by
//! [`hsum_float_8`]. This differs from ggml's generic order (`super::dot`), so results differ in
//! the last bits; the AVX2 backend is bit-identical to this module, and the property tests check
//! it. `f32::mul_add` is a true fused multiply-add (one rounding) on every platform.
#![allow(clippy::needless_range_loop)]

use super::dequant::{f16_at, scale_min_k4};
use super::scalar::{Q8_0Row, Q8KRow};
use super::types::{QK_K, QK32};

/// ggml's `hsum_float_8` (and tinyBLAS's `hsum(__m256)`): `r[i] = x[i] + x[i + 4]`, then
/// `(r[0] + r[2]) + (r[1] + r[3])`.
#[inline]
pub fn hsum_float_8(x: [f32; 8]) -> f32 {
    let r = [x[0] + x[4], x[1] + x[5], x[2] + x[6], x[3] + x[7]];
    (r[0] + r[2]) + (r[1] + r[3])
}

/// The eight lane sums of one legacy block (32 weights `x` against 32 activation quants `y`):
/// lane `k` holds the products of elements `4k .. 4k + 4` (`maddubs` + `madd` with ones).
#[inline]
fn lanes_4(x: &[i8; 32], y: &[i8]) -> [i32; 8] {
    let mut s = [0i32; 8];
    for e in 0..32 {
        s[e / 4] += x[e] as i32 * y[e] as i32;
    }
    s
}

/// Shared body of the legacy formats: `decode` turns block bytes into 32 signed weights.
#[inline]
fn legacy(w: &[u8], bs: usize, a: Q8_0Row<'_>, decode: impl Fn(&[u8]) -> [i8; 32]) -> f32 {
    let mut acc = [0f32; 8];
    for (ib, b) in w.chunks_exact(bs).enumerate() {
        let d = f16_at(b) * a.d[ib];
        let s = lanes_4(&decode(b), &a.qs[ib * QK32..ib * QK32 + QK32]);
        for k in 0..8 {
            acc[k] = d.mul_add(s[k] as f32, acc[k]);
        }
    }
    hsum_float_8(acc)
}

/// Q8_0 × Q8_0 in x86 order (`ggml_vec_dot_q8_0_q8_0`, AVX2).
pub fn dot_q8_0_q8_0_x86(w: &[u8], a: Q8_0Row<'_>) -> f32 {
    legacy(w, 34, a, |b| std::array::from_fn(|j| b[2 + j] as i8))
}

/// Q5_0 weights decoded to 32 signed values (ggml element order).
fn decode_q5_0(b: &[u8]) -> [i8; 32] {
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    std::array::from_fn(|j| {
        let nib = if j < 16 {
            b[6 + j] & 0x0F
        } else {
            b[6 + j - 16] >> 4
        };
        ((nib | ((((qh >> j) & 1) as u8) << 4)) as i8) - 16
    })
}

/// Q5_0 × Q8_0 in x86 order (`ggml_vec_dot_q5_0_q8_0`, AVX2).
pub fn dot_q5_0_q8_0_x86(w: &[u8], a: Q8_0Row<'_>) -> f32 {
    legacy(w, 22, a, decode_q5_0)
}

/// Q4_0 × Q8_0 in x86 order (`ggml_vec_dot_q4_0_q8_0`, AVX2).
pub fn dot_q4_0_q8_0_x86(w: &[u8], a: Q8_0Row<'_>) -> f32 {
    legacy(w, 18, a, |b| {
        std::array::from_fn(|j| {
            let nib = if j < 16 {
                b[2 + j] & 0x0F
            } else {
                b[2 + j - 16] >> 4
            };
            nib as i8 - 8
        })
    })
}

/// Q4_K × Q8_K in x86 order (`ggml_vec_dot_q4_K_q8_K`, AVX2). Per super-block: lane `k` sums
/// `scale(e / 32) * q4[e] * q8[e]` over the elements with `(e % 32) / 4 == k`, and is added
/// with `fma(d, lane, acc)`; the mins go to four more lanes, `m[k] = fma(-dmin, mins[2k] *
/// s[2k] + mins[2k + 1] * s[2k + 1], m[k])` with `s[j]` the sum of the 32 quants of sub-block
/// `j`. Result: `hsum_float_8(acc) + ((m[0] + m[2]) + (m[1] + m[3]))`.
pub fn dot_q4_k_q8_k_x86(w: &[u8], a: Q8KRow<'_>) -> f32 {
    let mut acc = [0f32; 8];
    let mut accm = [0f32; 4];
    for (i, b) in w.chunks_exact(144).enumerate() {
        let d = a.d[i] * f16_at(b);
        let dmin = -a.d[i] * f16_at(&b[2..]);
        let mut sc = [0i32; 8];
        let mut mn = [0i32; 8];
        for j in 0..8 {
            let (s, m) = scale_min_k4(j, &b[4..16]);
            (sc[j], mn[j]) = (s as i32, m as i32);
        }
        let bsums = &a.bsums[i * 16..i * 16 + 16];
        let s32: [i32; 8] = std::array::from_fn(|j| bsums[2 * j] as i32 + bsums[2 * j + 1] as i32);
        for k in 0..4 {
            let prod = mn[2 * k] * s32[2 * k] + mn[2 * k + 1] * s32[2 * k + 1];
            accm[k] = dmin.mul_add(prod as f32, accm[k]);
        }
        let qs = &b[16..144];
        let q8 = &a.qs[i * QK_K..(i + 1) * QK_K];
        let mut lanes = [0i32; 8];
        for e in 0..QK_K {
            let byte = qs[(e / 64) * 32 + e % 32];
            let q4 = if e % 64 < 32 { byte & 0x0F } else { byte >> 4 } as i32;
            lanes[(e % 32) / 4] += sc[e / 32] * q4 * q8[e] as i32;
        }
        for k in 0..8 {
            acc[k] = d.mul_add(lanes[k] as f32, acc[k]);
        }
    }
    hsum_float_8(acc) + ((accm[0] + accm[2]) + (accm[1] + accm[3]))
}

/// Q6_K × Q8_K in x86 order (`ggml_vec_dot_q6_K_q8_K`, AVX2). Weights are taken unsigned
/// (`0..64`); per super-block lane `k` sums `scale(e / 16) * q6[e] * q8[e]` over the elements
/// with `(e % 32) / 4 == k`, minus `32 * (bsums[2k] * scale(2k) + bsums[2k + 1] * scale(2k + 1))`,
/// and is added with `fma(d, lane, acc)`. Result: `hsum_float_8(acc)`.
pub fn dot_q6_k_q8_k_x86(w: &[u8], a: Q8KRow<'_>) -> f32 {
    let mut acc = [0f32; 8];
    for (i, b) in w.chunks_exact(210).enumerate() {
        let d = a.d[i] * f16_at(&b[208..]);
        let ql = &b[0..128];
        let qh = &b[128..192];
        let sc: [i32; 16] = std::array::from_fn(|j| b[192 + j] as i8 as i32);
        let q8 = &a.qs[i * QK_K..(i + 1) * QK_K];
        let bsums = &a.bsums[i * 16..i * 16 + 16];
        let mut lanes = [0i32; 8];
        for e in 0..QK_K {
            // element e: half h = e / 128, quarter c = (e % 128) / 32, l = e % 32
            let (h, c, l) = (e / 128, (e % 128) / 32, e % 32);
            let lo = ql[h * 64 + (c % 2) * 32 + l];
            let nib = if c < 2 { lo & 0x0F } else { lo >> 4 };
            let hi = (qh[h * 32 + l] >> (2 * c)) & 3;
            let q6 = (nib | (hi << 4)) as i32;
            lanes[l / 4] += sc[e / 16] * q6 * q8[e] as i32;
        }
        for k in 0..8 {
            lanes[k] -=
                32 * (bsums[2 * k] as i32 * sc[2 * k] + bsums[2 * k + 1] as i32 * sc[2 * k + 1]);
            acc[k] = d.mul_add(lanes[k] as f32, acc[k]);
        }
    }
    hsum_float_8(acc)
}

#[cfg(test)]
mod tests {
    use super::super::act::{Q8_0Acts, Q8KActs, quantize_row_q8_0, quantize_row_q8_k};
    use super::super::dequant::dequantize_row;
    use super::super::scalar;
    use super::super::tests::random_row;
    use super::super::types::GgmlType;
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    #[test]
    fn hsum_order_is_ggmls() {
        // 1e8 absorbs 1.0 when added first: the pairing is observable.
        let x = [1e8, 1.0, -1e8, 1.0, 1.0, 0.0, 0.0, 0.0];
        // r = [1e8 + 1, 1, -1e8, 1] -> (1e8 + -1e8) + (1 + 1) = 2
        assert_eq!(hsum_float_8(x), 2.0);
        assert_eq!(hsum_float_8([1.0; 8]), 8.0);
    }

    /// The x86-order dots compute the same exact value as the generic ones up to float
    /// rounding: both are close to an f64 evaluation, and they differ from each other on
    /// some inputs (else this module would be pointless).
    #[test]
    fn x86_order_agrees_with_generic_within_rounding() {
        let mut rng = StdRng::seed_from_u64(11);
        let mut differ = 0;
        for round in 0..40 {
            let cols = 512;
            let x: Vec<f32> = (0..cols).map(|_| rng.random_range(-4.0f32..4.0)).collect();
            let mut a0 = Q8_0Acts::default();
            quantize_row_q8_0(&x, &mut a0).unwrap();
            let mut ak = Q8KActs::default();
            quantize_row_q8_k(&x, &mut ak).unwrap();
            let r0 = a0.row(0, cols);
            let rk = ak.row(0, cols);
            let rows: Vec<(GgmlType, Vec<u8>)> = [
                GgmlType::Q8_0,
                GgmlType::Q5_0,
                GgmlType::Q4_0,
                GgmlType::Q4_K,
                GgmlType::Q6_K,
            ]
            .into_iter()
            .map(|ty| (ty, random_row(ty, cols, &mut rng)))
            .collect();
            for (ty, w) in &rows {
                let (g, x86) = match ty {
                    GgmlType::Q8_0 => (scalar::dot_q8_0_q8_0(w, r0), dot_q8_0_q8_0_x86(w, r0)),
                    GgmlType::Q5_0 => (scalar::dot_q5_0_q8_0(w, r0), dot_q5_0_q8_0_x86(w, r0)),
                    GgmlType::Q4_0 => (scalar::dot_q4_0_q8_0(w, r0), dot_q4_0_q8_0_x86(w, r0)),
                    GgmlType::Q4_K => (scalar::dot_q4_k_q8_k(w, rk), dot_q4_k_q8_k_x86(w, rk)),
                    _ => (scalar::dot_q6_k_q8_k(w, rk), dot_q6_k_q8_k_x86(w, rk)),
                };
                let mut deq = vec![0f32; cols];
                dequantize_row(*ty, w, &mut deq).unwrap();
                let norm: f32 = deq.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
                // both are f32 evaluations of the same exact sum: a few ulps of its magnitude
                let tol = 1e-5 * norm;
                assert!(
                    (g - x86).abs() <= tol,
                    "{ty} round {round}: generic {g} vs x86 {x86}"
                );
                if g.to_bits() != x86.to_bits() {
                    differ += 1;
                }
            }
        }
        assert!(
            differ > 20,
            "x86 order should differ from generic in the last bits ({differ})"
        );
    }
}
