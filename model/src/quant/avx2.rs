//! AVX2 vec-dot kernels (x86-64, runtime-detected). Integer sums are computed with SIMD (integer
//! arithmetic is exact, so any order gives the same sums); the float combination performs the
//! same f32 operations in the same order as the scalar reference (`super::dot`), so results are
//! bit-identical to it.

use super::dequant::{f16_at, scale_min_k4};
use super::kernels::DotFn;
use super::matrix::Activations;
use super::types::{GgmlType, QK_K, QK32};
use std::arch::x86_64::*;

/// The AVX2 kernel for `ty`, if there is one. Callers must have checked AVX2 support.
pub(crate) fn dot_fn(ty: GgmlType) -> Option<DotFn> {
    Some(match ty {
        GgmlType::Q8_0 => q8_0,
        GgmlType::Q5_0 => q5_0,
        GgmlType::Q4_0 => q4_0,
        GgmlType::Q4_K => q4_k,
        GgmlType::Q6_K => q6_k,
        _ => return None,
    })
}

fn q8_0(w: &[u8], a: &Activations, t: usize) -> f32 {
    let r = a.q8_0().row(t, a.cols());
    // SAFETY: this backend is only selected when AVX2 is available; lengths: w holds
    // r.d.len() blocks of 34 bytes (checked by QuantMatrix/Activations).
    unsafe { q8_0_avx2(w, r.d, r.qs) }
}

fn q5_0(w: &[u8], a: &Activations, t: usize) -> f32 {
    let r = a.q8_0().row(t, a.cols());
    // SAFETY: as in `q8_0`.
    unsafe { q5_0_avx2(w, r.d, r.qs) }
}

fn q4_0(w: &[u8], a: &Activations, t: usize) -> f32 {
    let r = a.q8_0().row(t, a.cols());
    // SAFETY: as in `q8_0`.
    unsafe { q4_0_avx2(w, r.d, r.qs) }
}

fn q4_k(w: &[u8], a: &Activations, t: usize) -> f32 {
    let r = a.q8k().row(t, a.cols());
    // SAFETY: as in `q8_0`.
    unsafe { q4_k_avx2(w, r.d, r.qs, r.bsums) }
}

fn q6_k(w: &[u8], a: &Activations, t: usize) -> f32 {
    let r = a.q8k().row(t, a.cols());
    // SAFETY: as in `q8_0`.
    unsafe { q6_k_avx2(w, r.d, r.qs) }
}

/// Sum of the 32 signed byte products of `x` and `y`, as 8 i32 partial sums.
#[inline]
#[target_feature(enable = "avx2")]
fn mul_sum_i8(x: __m256i, y: __m256i) -> __m256i {
    let ax = _mm256_sign_epi8(x, x);
    let sy = _mm256_sign_epi8(y, x);
    let dot = _mm256_maddubs_epi16(ax, sy);
    _mm256_madd_epi16(dot, _mm256_set1_epi16(1))
}

/// Horizontal sums of four 8-lane i32 vectors: `[sum(a), sum(b), sum(c), sum(d)]`.
#[inline]
#[target_feature(enable = "avx2")]
fn hsum4(a: __m256i, b: __m256i, c: __m256i, d: __m256i) -> __m128i {
    let ab = _mm256_hadd_epi32(a, b);
    let cd = _mm256_hadd_epi32(c, d);
    let abcd = _mm256_hadd_epi32(ab, cd);
    _mm_add_epi32(_mm256_castsi256_si128(abcd), _mm256_extracti128_si256(abcd, 1))
}

#[inline]
#[target_feature(enable = "avx2")]
fn hsum(a: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
    let s = _mm_hadd_epi32(s, s);
    let s = _mm_hadd_epi32(s, s);
    _mm_cvtsi128_si32(s)
}

/// Loads 32 bytes at `p`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load(p: *const u8) -> __m256i {
    // SAFETY: caller guarantees 32 readable bytes.
    unsafe { _mm256_loadu_si256(p as *const __m256i) }
}

/// 16 packed nibbles -> 32 bytes: low nibbles first, then high nibbles (ggml's element order).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn nibbles(p: *const u8) -> __m256i {
    // SAFETY: caller guarantees 16 readable bytes.
    let q = unsafe { _mm_loadu_si128(p as *const __m128i) };
    let lo = _mm_and_si128(q, _mm_set1_epi8(0x0F));
    let hi = _mm_and_si128(_mm_srli_epi16(q, 4), _mm_set1_epi8(0x0F));
    _mm256_set_m128i(hi, lo)
}

/// Byte `i` = 0xFF when bit `i` of `x` is set, else 0.
#[inline]
#[target_feature(enable = "avx2")]
fn bytes_from_bits_32(x: u32) -> __m256i {
    let shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x as i32), shuf);
    let mask = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
    _mm256_cmpeq_epi8(_mm256_or_si256(bytes, mask), _mm256_set1_epi64x(-1))
}

/// Per-block int sums of a legacy-quant row, computed 4 blocks at a time; `block(ib)` gives
/// the 8-lane partial sums of block `ib`. Then the scalar float combine `combine(ib, sumi)`.
macro_rules! legacy_row {
    ($nb:expr, $block:expr, $combine:expr) => {{
        let nb = $nb;
        let mut sumf = 0f32;
        let mut ib = 0;
        let mut sums = [0i32; 4];
        while ib + 4 <= nb {
            let s = hsum4($block(ib), $block(ib + 1), $block(ib + 2), $block(ib + 3));
            // SAFETY: 4 i32 into a 4-i32 array.
            unsafe { _mm_storeu_si128(sums.as_mut_ptr() as *mut __m128i, s) };
            for (k, &si) in sums.iter().enumerate() {
                sumf = $combine(sumf, ib + k, si);
            }
            ib += 4;
        }
        while ib < nb {
            sumf = $combine(sumf, ib, hsum($block(ib)));
            ib += 1;
        }
        sumf
    }};
}

#[target_feature(enable = "avx2")]
unsafe fn q8_0_avx2(w: &[u8], d: &[f32], qs: &[i8]) -> f32 {
    let nb = d.len();
    assert!(w.len() >= nb * 34 && qs.len() >= nb * QK32);
    let wp = w.as_ptr();
    let qp = qs.as_ptr() as *const u8;
    // SAFETY: block ib reads w[ib*34+2 .. ib*34+34] and qs[ib*32 .. ib*32+32], in bounds (assert).
    let block = |ib: usize| unsafe { mul_sum_i8(load(wp.add(ib * 34 + 2)), load(qp.add(ib * QK32))) };
    let combine = |sumf: f32, ib: usize, sumi: i32| sumf + sumi as f32 * (f16_at(&w[ib * 34..]) * d[ib]);
    legacy_row!(nb, block, combine)
}

#[target_feature(enable = "avx2")]
unsafe fn q5_0_avx2(w: &[u8], d: &[f32], qs: &[i8]) -> f32 {
    let nb = d.len();
    assert!(w.len() >= nb * 22 && qs.len() >= nb * QK32);
    let wp = w.as_ptr();
    let qp = qs.as_ptr() as *const u8;
    let block = |ib: usize| {
        let b = &w[ib * 22..ib * 22 + 22];
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        // SAFETY: nibbles reads b[6..22]; the activation load reads qs[ib*32..ib*32+32].
        unsafe {
            let x = nibbles(wp.add(ib * 22 + 6));
            let hi = _mm256_andnot_si256(bytes_from_bits_32(qh), _mm256_set1_epi8(0xF0u8 as i8));
            mul_sum_i8(_mm256_or_si256(x, hi), load(qp.add(ib * QK32)))
        }
    };
    let combine = |sumf: f32, ib: usize, sumi: i32| sumf + (f16_at(&w[ib * 22..]) * d[ib]) * sumi as f32;
    legacy_row!(nb, block, combine)
}

#[target_feature(enable = "avx2")]
unsafe fn q4_0_avx2(w: &[u8], d: &[f32], qs: &[i8]) -> f32 {
    let nb = d.len();
    assert!(w.len() >= nb * 18 && qs.len() >= nb * QK32);
    let wp = w.as_ptr();
    let qp = qs.as_ptr() as *const u8;
    // SAFETY: nibbles reads w[ib*18+2 .. ib*18+18]; activation load reads qs[ib*32..+32].
    let block = |ib: usize| unsafe {
        let x = _mm256_sub_epi8(nibbles(wp.add(ib * 18 + 2)), _mm256_set1_epi8(8));
        mul_sum_i8(x, load(qp.add(ib * QK32)))
    };
    let combine = |sumf: f32, ib: usize, sumi: i32| sumf + sumi as f32 * f16_at(&w[ib * 18..]) * d[ib];
    legacy_row!(nb, block, combine)
}

/// Sign-extends the 16 bytes of each 128-bit half of `v` and multiplies by `a` (likewise):
/// returns the (low, high) 16 i16 products.
#[inline]
#[target_feature(enable = "avx2")]
fn mul_i8_to_i16(x: __m256i, y: __m256i) -> (__m256i, __m256i) {
    let xl = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(x));
    let xh = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(x, 1));
    let yl = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(y));
    let yh = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(y, 1));
    (_mm256_mullo_epi16(xl, yl), _mm256_mullo_epi16(xh, yh))
}

/// Folds 16 i16 (elements k*8 + l) into 8 i32 lane sums over k (l = lane).
#[inline]
#[target_feature(enable = "avx2")]
fn fold_lanes(p: __m256i) -> __m256i {
    let s = _mm_add_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
    _mm256_cvtepi16_epi32(s)
}

#[target_feature(enable = "avx2")]
unsafe fn q4_k_avx2(w: &[u8], d: &[f32], qs: &[i8], bsums: &[i16]) -> f32 {
    let nb = d.len();
    assert!(w.len() >= nb * 144 && qs.len() >= nb * QK_K && bsums.len() >= nb * 16);
    let mut sums = _mm256_setzero_ps();
    let mut sumf = 0f32;
    let m4 = _mm256_set1_epi8(0x0F);
    for i in 0..nb {
        let b = &w[i * 144..i * 144 + 144];
        let q8 = &qs[i * QK_K..(i + 1) * QK_K];
        let mut sc = [0u8; 8];
        let mut mn = [0u8; 8];
        for j in 0..8 {
            (sc[j], mn[j]) = scale_min_k4(j, &b[4..16]);
        }
        // summ = sum_j bsums[j] * mins[j / 2]
        let mins16 = _mm256_set_epi16(
            mn[7] as i16, mn[7] as i16, mn[6] as i16, mn[6] as i16, mn[5] as i16, mn[5] as i16, mn[4] as i16,
            mn[4] as i16, mn[3] as i16, mn[3] as i16, mn[2] as i16, mn[2] as i16, mn[1] as i16, mn[1] as i16,
            mn[0] as i16, mn[0] as i16,
        );
        // SAFETY: 16 i16 = 32 bytes at bsums[i*16..], in bounds (assert).
        let bs = unsafe { _mm256_loadu_si256(bsums.as_ptr().add(i * 16) as *const __m256i) };
        let summ = hsum(_mm256_madd_epi16(bs, mins16));
        let mut acc = _mm256_setzero_si256();
        for c in 0..4 {
            // SAFETY: 32 bytes of b[16 + 32c ..] and of q8[64c ..], q8[64c + 32 ..], in bounds.
            let (q4, ya, yb) = unsafe {
                (
                    load(b.as_ptr().add(16 + 32 * c)),
                    load(q8.as_ptr().add(64 * c) as *const u8),
                    load(q8.as_ptr().add(64 * c + 32) as *const u8),
                )
            };
            let lo = _mm256_and_si256(q4, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), m4);
            for (x, y, s) in [(lo, ya, sc[2 * c]), (hi, yb, sc[2 * c + 1])] {
                let (p0, p1) = mul_i8_to_i16(x, y);
                // elements k*8+l of the 32-element sub-block: p0 holds k = 0, 1; p1 holds k = 2, 3
                let lanes = fold_lanes(_mm256_add_epi16(p0, p1));
                acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(lanes, _mm256_set1_epi32(s as i32)));
            }
        }
        let dd = _mm256_set1_ps(f16_at(b) * d[i]);
        sums = _mm256_add_ps(sums, _mm256_mul_ps(dd, _mm256_cvtepi32_ps(acc)));
        let dmin = f16_at(&b[2..]) * d[i];
        sumf -= dmin * summ as f32;
    }
    let mut lanes = [0f32; 8];
    // SAFETY: 8 f32 into an 8-f32 array.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sums) };
    for s in lanes {
        sumf += s;
    }
    sumf
}

#[target_feature(enable = "avx2")]
unsafe fn q6_k_avx2(w: &[u8], d: &[f32], qs: &[i8]) -> f32 {
    let nb = d.len();
    assert!(w.len() >= nb * 210 && qs.len() >= nb * QK_K);
    let mut sums = _mm256_setzero_ps();
    let m4 = _mm256_set1_epi8(0x0F);
    let m3 = _mm256_set1_epi8(0x03);
    let m32 = _mm256_set1_epi8(32);
    for i in 0..nb {
        let b = &w[i * 210..i * 210 + 210];
        let q8 = &qs[i * QK_K..(i + 1) * QK_K];
        let scales = &b[192..208];
        let mut acc = _mm256_setzero_si256();
        for half in 0..2 {
            // SAFETY: ql[half*64 .. +64], qh[128 + half*32 .. +32] and q8[half*128 .. +128] in bounds.
            let (ql0, ql1, qh) = unsafe {
                (
                    load(b.as_ptr().add(half * 64)),
                    load(b.as_ptr().add(half * 64 + 32)),
                    load(b.as_ptr().add(128 + half * 32)),
                )
            };
            let h0 = _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4);
            let h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m3), 4);
            let h2 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m3), 4);
            let h3 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m3), 4);
            let a = [
                _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(ql0, m4), h0), m32),
                _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(ql1, m4), h1), m32),
                _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), h2), m32),
                _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4), h3), m32),
            ];
            for (k, ak) in a.into_iter().enumerate() {
                let base = half * 128 + k * 32;
                // SAFETY: q8[base .. base + 32] in bounds.
                let y = unsafe { load(q8.as_ptr().add(base) as *const u8) };
                let (p0, p1) = mul_i8_to_i16(ak, y);
                let g = base / 16;
                let s0 = _mm256_set1_epi32(scales[g] as i8 as i32);
                let s1 = _mm256_set1_epi32(scales[g + 1] as i8 as i32);
                acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(fold_lanes(p0), s0));
                acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(fold_lanes(p1), s1));
            }
        }
        let dd = _mm256_set1_ps(f16_at(&b[208..]) * d[i]);
        sums = _mm256_add_ps(sums, _mm256_mul_ps(dd, _mm256_cvtepi32_ps(acc)));
    }
    let mut lanes = [0f32; 8];
    // SAFETY: 8 f32 into an 8-f32 array.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sums) };
    let mut sumf = 0f32;
    for s in lanes {
        sumf += s;
    }
    sumf
}
