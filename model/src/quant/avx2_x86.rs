//! AVX2 + FMA + F16C matrix kernels (x86-64, runtime-detected), in ggml's x86 float order: the
//! `avx2-x86` backend (`EDGERAY_KERNELS=avx2-x86`).
//!
//! Integer sums are computed with SIMD (exact, so any order gives the same sums). The float
//! combination is ggml-cpu's AVX2 one: eight f32 accumulator lanes, one fused multiply-add per
//! block and lane, and [`hsum_float_8`]'s reduction at the end. The scalar module
//! `super::scalar_x86` writes out the same arithmetic element by element; results are
//! bit-identical to it (property-tested).
//!
//! Each call computes a whole tile: a run of consecutive weight rows against up to
//! [`MAX_TOKENS`] activation rows at a time, so the per-row cost is only the row's own blocks
//! (no per-row call, bounds checks or copies), and each weight block is decoded once for all
//! tokens of a group.

#![allow(clippy::needless_range_loop, clippy::too_many_arguments)]

use super::avx2_blocks::{L_Q4_0, L_Q5_0, L_Q8_0, block_bytes, decode, load, q4_k_scales_mins};
use super::kernels::{MAX_TOKENS, TileFn};
use super::matrix::Activations;
use super::types::{GgmlType, QK_K, QK32};
use std::arch::x86_64::*;

/// The AVX2 tile kernel for `ty`, if there is one. Callers must have checked AVX2, FMA and F16C.
pub(crate) fn tile_fn(ty: GgmlType) -> Option<TileFn> {
    Some(match ty {
        GgmlType::Q8_0 => legacy_tile::<L_Q8_0>,
        GgmlType::Q5_0 => legacy_tile::<L_Q5_0>,
        GgmlType::Q4_0 => legacy_tile::<L_Q4_0>,
        GgmlType::Q4_K => q4_k_tile,
        GgmlType::Q6_K => q6_k_tile,
        _ => return None,
    })
}

/// Checks the tile's shapes (the unsafe kernels rely on them) and returns the number of weight
/// rows.
fn check_tile(
    w: &[u8],
    row_bytes: usize,
    block_bytes: usize,
    block: usize,
    a: &Activations,
    t0: usize,
    nt: usize,
    out: &[f32],
) -> usize {
    let nb = a.cols() / block;
    assert_eq!(
        row_bytes,
        nb * block_bytes,
        "row size does not match the activations"
    );
    assert_eq!(w.len() % row_bytes, 0, "tile holds whole rows");
    let nrows = w.len() / row_bytes;
    assert!(t0 + nt <= a.n(), "token range out of bounds");
    assert_eq!(out.len(), nt * nrows, "tile output size");
    nrows
}

/// Tile kernel for Q8_0 / Q5_0 / Q4_0 weights.
fn legacy_tile<const K: u8>(
    w: &[u8],
    row_bytes: usize,
    a: &Activations,
    t0: usize,
    nt: usize,
    out: &mut [f32],
) {
    let nrows = check_tile(w, row_bytes, block_bytes(K), QK32, a, t0, nt, out);
    let q = a.q8_0();
    let (cols, nb) = (a.cols(), a.cols() / QK32);
    assert!(q.d.len() >= (t0 + nt) * nb && q.qs.len() >= (t0 + nt) * cols);
    let mut t = 0;
    while t < nt {
        let tn = (nt - t).min(MAX_TOKENS);
        // SAFETY: this backend is only selected when AVX2, FMA and F16C are available; `w`
        // holds `nrows` rows of `nb` blocks, the activations hold tokens t0 + t .. + tn, and
        // `out` holds nt × nrows floats (all checked above).
        unsafe {
            let d = q.d.as_ptr().add((t0 + t) * nb);
            let qs = q.qs.as_ptr().add((t0 + t) * cols);
            let o = out.as_mut_ptr().add(t * nrows);
            match tn {
                1 => legacy_rows::<K, 1>(w.as_ptr(), nrows, nb, d, qs, o),
                2 => legacy_rows::<K, 2>(w.as_ptr(), nrows, nb, d, qs, o),
                3 => legacy_rows::<K, 3>(w.as_ptr(), nrows, nb, d, qs, o),
                _ => legacy_rows::<K, 4>(w.as_ptr(), nrows, nb, d, qs, o),
            }
        }
        t += tn;
    }
}

/// `T` tokens × `nrows` rows of a legacy format: per block `acc = fma(dx * dy, lanes, acc)`,
/// lane `k` = products of elements `4k .. 4k + 4`; then [`hsum_float_8`]. Writes
/// `out[t * nrows + r]`.
///
/// # Safety
/// AVX2, FMA and F16C available; `w` holds `nrows` rows of `nb` blocks of kind `K`; `d` / `qs`
/// hold `T` activation rows of `nb` scales / `32 nb` quants; `out` has `T * nrows` floats
/// (token stride `nrows`).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn legacy_rows<const K: u8, const T: usize>(
    w: *const u8,
    nrows: usize,
    nb: usize,
    d: *const f32,
    qs: *const i8,
    out: *mut f32,
) {
    let bs = block_bytes(K);
    let cols = nb * QK32;
    let ones = _mm256_set1_epi16(1);
    for r in 0..nrows {
        // SAFETY: all offsets stay inside the regions described in the contract.
        unsafe {
            let row = w.add(r * nb * bs);
            let mut acc = [_mm256_setzero_ps(); T];
            for ib in 0..nb {
                let p = row.add(ib * bs);
                let x = decode::<K>(p);
                let dx = f16_to_f32(std::ptr::read_unaligned(p as *const u16));
                let ax = _mm256_sign_epi8(x, x);
                for t in 0..T {
                    let y = load(qs.add(t * cols + ib * QK32) as *const u8);
                    let s =
                        _mm256_madd_epi16(_mm256_maddubs_epi16(ax, _mm256_sign_epi8(y, x)), ones);
                    let dd = _mm256_set1_ps(dx * *d.add(t * nb + ib));
                    acc[t] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(s), acc[t]);
                }
            }
            for t in 0..T {
                *out.add(t * nrows + r) = hsum_float_8(acc[t]);
            }
        }
    }
}

/// Tile kernel for Q4_K weights.
fn q4_k_tile(w: &[u8], row_bytes: usize, a: &Activations, t0: usize, nt: usize, out: &mut [f32]) {
    let nrows = check_tile(w, row_bytes, 144, QK_K, a, t0, nt, out);
    let q = a.q8k();
    let (cols, nb) = (a.cols(), a.cols() / QK_K);
    assert!(
        q.d.len() >= (t0 + nt) * nb
            && q.qs.len() >= (t0 + nt) * cols
            && q.bsums.len() >= (t0 + nt) * nb * 16
    );
    let mut t = 0;
    while t < nt {
        let tn = (nt - t).min(MAX_TOKENS);
        // SAFETY: as in `legacy_tile` (shapes checked above).
        unsafe {
            let tt = t0 + t;
            let (d, qs, bsums) = (
                q.d.as_ptr().add(tt * nb),
                q.qs.as_ptr().add(tt * cols),
                q.bsums.as_ptr().add(tt * nb * 16),
            );
            let o = out.as_mut_ptr().add(t * nrows);
            match tn {
                1 => q4_k_rows::<1>(w.as_ptr(), nrows, nb, d, qs, bsums, o),
                2 => q4_k_rows::<2>(w.as_ptr(), nrows, nb, d, qs, bsums, o),
                3 => q4_k_rows::<3>(w.as_ptr(), nrows, nb, d, qs, bsums, o),
                _ => q4_k_rows::<4>(w.as_ptr(), nrows, nb, d, qs, bsums, o),
            }
        }
        t += tn;
    }
}

/// `T` tokens × `nrows` rows of Q4_K (ggml's AVX2 `vec_dot_q4_K_q8_K` arithmetic).
///
/// # Safety
/// AVX2, FMA and F16C available; `w` holds `nrows` rows of `nb` super-blocks; `d`, `qs`, `bsums`
/// hold `T` Q8_K activation rows; `out` has `T * nrows` floats (token stride `nrows`).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k_rows<const T: usize>(
    w: *const u8,
    nrows: usize,
    nb: usize,
    d: *const f32,
    qs: *const i8,
    bsums: *const i16,
    out: *mut f32,
) {
    let cols = nb * QK_K;
    let m4 = _mm256_set1_epi8(0x0F);
    for r in 0..nrows {
        // SAFETY: all offsets stay inside the regions described in the contract.
        unsafe {
            let row = w.add(r * nb * 144);
            let mut acc = [_mm256_setzero_ps(); T];
            let mut acc_m = [_mm_setzero_ps(); T];
            for i in 0..nb {
                let b = row.add(i * 144);
                let dx = f16_to_f32(std::ptr::read_unaligned(b as *const u16));
                let dmx = f16_to_f32(std::ptr::read_unaligned(b.add(2) as *const u16));
                let (sc, mn) = q4_k_scales_mins(b.add(4));
                let mins = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(mn as i64));
                let scl: [__m256i; 8] =
                    std::array::from_fn(|j| _mm256_set1_epi16(((sc >> (8 * j)) & 0xFF) as i16));
                let mut sumi = [_mm256_setzero_si256(); T];
                for j in 0..4 {
                    let q4 = load(b.add(16 + 32 * j));
                    let lo = _mm256_and_si256(q4, m4);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), m4);
                    for t in 0..T {
                        let y = qs.add(t * cols + i * QK_K + 64 * j) as *const u8;
                        let pl = _mm256_madd_epi16(scl[2 * j], _mm256_maddubs_epi16(lo, load(y)));
                        let ph = _mm256_madd_epi16(
                            scl[2 * j + 1],
                            _mm256_maddubs_epi16(hi, load(y.add(32))),
                        );
                        sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(pl, ph));
                    }
                }
                for t in 0..T {
                    let dy = *d.add(t * nb + i);
                    let bs = _mm256_loadu_si256(bsums.add((t * nb + i) * 16) as *const __m256i);
                    let s32 =
                        _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
                    let prod = _mm_madd_epi16(mins, s32);
                    acc_m[t] =
                        _mm_fmadd_ps(_mm_set1_ps(-dy * dmx), _mm_cvtepi32_ps(prod), acc_m[t]);
                    acc[t] = _mm256_fmadd_ps(
                        _mm256_set1_ps(dy * dx),
                        _mm256_cvtepi32_ps(sumi[t]),
                        acc[t],
                    );
                }
            }
            for t in 0..T {
                let m = _mm_add_ps(acc_m[t], _mm_movehl_ps(acc_m[t], acc_m[t]));
                let m = _mm_add_ss(m, _mm_movehdup_ps(m));
                *out.add(t * nrows + r) = hsum_float_8(acc[t]) + _mm_cvtss_f32(m);
            }
        }
    }
}

/// Tile kernel for Q6_K weights.
fn q6_k_tile(w: &[u8], row_bytes: usize, a: &Activations, t0: usize, nt: usize, out: &mut [f32]) {
    let nrows = check_tile(w, row_bytes, 210, QK_K, a, t0, nt, out);
    let q = a.q8k();
    let (cols, nb) = (a.cols(), a.cols() / QK_K);
    assert!(
        q.d.len() >= (t0 + nt) * nb
            && q.qs.len() >= (t0 + nt) * cols
            && q.bsums.len() >= (t0 + nt) * nb * 16
    );
    let mut t = 0;
    while t < nt {
        let tn = (nt - t).min(MAX_TOKENS);
        // SAFETY: as in `legacy_tile` (shapes checked above).
        unsafe {
            let tt = t0 + t;
            let (d, qs, bsums) = (
                q.d.as_ptr().add(tt * nb),
                q.qs.as_ptr().add(tt * cols),
                q.bsums.as_ptr().add(tt * nb * 16),
            );
            let o = out.as_mut_ptr().add(t * nrows);
            match tn {
                1 => q6_k_rows::<1>(w.as_ptr(), nrows, nb, d, qs, bsums, o),
                2 => q6_k_rows::<2>(w.as_ptr(), nrows, nb, d, qs, bsums, o),
                3 => q6_k_rows::<3>(w.as_ptr(), nrows, nb, d, qs, bsums, o),
                _ => q6_k_rows::<4>(w.as_ptr(), nrows, nb, d, qs, bsums, o),
            }
        }
        t += tn;
    }
}

/// `T` tokens × `nrows` rows of Q6_K (ggml's AVX2 `vec_dot_q6_K_q8_K` arithmetic: unsigned
/// 6-bit weights, the `-32` offset applied through the activation block sums).
///
/// # Safety
/// As [`q4_k_rows`], with 210-byte super-blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k_rows<const T: usize>(
    w: *const u8,
    nrows: usize,
    nb: usize,
    d: *const f32,
    qs: *const i8,
    bsums: *const i16,
    out: *mut f32,
) {
    let cols = nb * QK_K;
    let m3 = _mm256_set1_epi8(3);
    let m15 = _mm256_set1_epi8(15);
    for r in 0..nrows {
        // SAFETY: all offsets stay inside the regions described in the contract.
        unsafe {
            let row = w.add(r * nb * 210);
            let mut acc = [_mm256_setzero_ps(); T];
            for i in 0..nb {
                let b = row.add(i * 210);
                let dx = f16_to_f32(std::ptr::read_unaligned(b.add(208) as *const u16));
                let scales = _mm_loadu_si128(b.add(192) as *const __m128i);
                let scales16 = _mm256_cvtepi8_epi16(scales);
                // chunk g (elements 32g .. 32g + 32): 16-bit lanes 0..8 = scale 2g, 8..16 = 2g+1
                let scl: [__m256i; 8] = std::array::from_fn(|g| {
                    let lo = (2 * g) as i8;
                    let hi = (2 * g + 1) as i8;
                    let m = _mm_set_epi8(
                        hi, hi, hi, hi, hi, hi, hi, hi, lo, lo, lo, lo, lo, lo, lo, lo,
                    );
                    _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, m))
                });
                let mut sumi = [_mm256_setzero_si256(); T];
                for h in 0..2 {
                    let ql1 = load(b.add(h * 64));
                    let ql2 = load(b.add(h * 64 + 32));
                    let qh = load(b.add(128 + h * 32));
                    let h0 = _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4);
                    let h1 = _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(12)), 2);
                    let h2 = _mm256_and_si256(qh, _mm256_set1_epi8(48));
                    let h3 = _mm256_srli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(-64)), 2);
                    let x = [
                        _mm256_or_si256(_mm256_and_si256(ql1, m15), h0),
                        _mm256_or_si256(_mm256_and_si256(ql2, m15), h1),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m15), h2),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql2, 4), m15), h3),
                    ];
                    for t in 0..T {
                        let y = qs.add(t * cols + i * QK_K + h * 128) as *const u8;
                        let mut s = sumi[t];
                        for (k, xk) in x.iter().enumerate() {
                            let p = _mm256_maddubs_epi16(*xk, load(y.add(32 * k)));
                            s = _mm256_add_epi32(s, _mm256_madd_epi16(scl[4 * h + k], p));
                        }
                        sumi[t] = s;
                    }
                }
                for t in 0..T {
                    let bs = _mm256_loadu_si256(bsums.add((t * nb + i) * 16) as *const __m256i);
                    let sub = _mm256_slli_epi32(_mm256_madd_epi16(bs, scales16), 5);
                    let s = _mm256_sub_epi32(sumi[t], sub);
                    let dd = _mm256_set1_ps(*d.add(t * nb + i) * dx);
                    acc[t] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(s), acc[t]);
                }
            }
            for t in 0..T {
                *out.add(t * nrows + r) = hsum_float_8(acc[t]);
            }
        }
    }
}

/// ggml's `hsum_float_8`: `(x0 + x4) + (x2 + x6)` + `(x1 + x5) + (x3 + x7)`.
#[inline]
#[target_feature(enable = "avx2")]
fn hsum_float_8(x: __m256) -> f32 {
    let r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    let r = _mm_add_ss(r, _mm_movehdup_ps(r));
    _mm_cvtss_f32(r)
}

/// One f16 (bits) to f32 with F16C.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn f16_to_f32(bits: u16) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}
