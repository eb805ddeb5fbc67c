//! AVX-512 kernels in ggml's **generic** float order (x86-64 with AVX512F, BW, VL and VNNI,
//! runtime-detected; the default `avx512` backend where present). Like the `avx2` backend they
//! form exact integer sums with SIMD and then perform the scalar reference's f32 operations in
//! its order, so results are bit-identical to `scalar` (and to `avx2`).
//!
//! They stay on 256-bit vectors (the float combine keeps eight rows in eight lanes, as in
//! `avx2`) and take from AVX-512 what cuts instructions per weight byte:
//! - VNNI `vpdpbusd` forms four u8 × i8 products and adds them into a dword in one instruction,
//!   where AVX2 needs `maddubs` + `madd` (+ `sign` twice for signed × signed). Every legacy
//!   format is fed to it as unsigned codes: Q5_0 / Q4_0 codes before their offset, Q8_0 quants
//!   XOR 0x80 (= q + 128); the offset × the activation block's sum is taken off afterwards,
//!   exactly, in integers.
//! - `vpdpwssd` fuses the k-quants' multiply by the sub-block scales with the accumulation.
//! - A byte mask (AVX512BW) sets Q5_0's fifth bit with one masked add, replacing AVX2's
//!   shuffle / or / compare expansion of the 32 high bits.
//!
//! One exception: Q8_0 products with a single token (the output heads when one sequence
//! generates) run `avx2`'s kernel, which measured faster on matrices that stream from memory.
//!

use super::avx2::{
    Avx2Rows8, GroupPrefetch, KQuantRows, LegacyRows8, PACKED_PER_BLOCK, Q4_K_PACKED, Q6_K_PACKED,
    VectorBytes, add_lanes, hsum, hsum8, k_quant_rows, lane_order, lanes8, legacy_tile, q4_k_tile,
    q6_k_quants, q6_k_tile, row_scales8, scaled,
};
use super::avx2_blocks::{L_Q4_0, L_Q5_0, L_Q8_0, block_bytes, load, nibbles, q4_k_scales_mins};
use super::dequant::f16_at;
use super::kernels::TileFn;
use super::types::{GgmlType, QK_K, QK32};
use std::arch::x86_64::*;

/// The AVX-512 tile kernel for `ty`, if there is one. Callers must have checked
/// [`available`].
pub(crate) fn tile_fn(ty: GgmlType) -> Option<TileFn> {
    Some(match ty {
        GgmlType::Q8_0 => legacy_tile::<L_Q8_0, Vnni>,
        GgmlType::Q5_0 => legacy_tile::<L_Q5_0, Vnni>,
        GgmlType::Q4_0 => legacy_tile::<L_Q4_0, Vnni>,
        GgmlType::Q4_K => q4_k_tile::<VnniKQuants>,
        GgmlType::Q6_K => q6_k_tile::<VnniKQuants>,
        _ => return None,
    })
}

/// True when this CPU has every feature the kernels of this module use (besides AVX2, FMA and
/// F16C, which the `avx2` kernels they fall back to need too).
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
}

/// The offset a legacy format's unsigned codes carry: 128 for Q8_0 (quants XOR 0x80), 16 for
/// Q5_0, 8 for Q4_0.
const fn code_offset(k: u8) -> i32 {
    match k {
        L_Q8_0 => 128,
        L_Q5_0 => 16,
        _ => 8,
    }
}

/// The 32 unsigned codes of the legacy block of kind `K` at `p` (ggml element order): the
/// weight quants plus [`code_offset`].
///
/// # Safety
/// A whole block of kind `K` at `p`; AVX2 and AVX512BW/VL available.
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl")]
unsafe fn codes<const K: u8>(p: *const u8) -> __m256i {
    // SAFETY: caller guarantees a whole block of kind K at `p`.
    unsafe {
        match K {
            L_Q8_0 => _mm256_xor_si256(load(p.add(2)), _mm256_set1_epi8(0x80u8 as i8)),
            L_Q5_0 => {
                // Bit e of qh is the fifth bit of element e: add 16 to the bytes it selects.
                let qh: __mmask32 = std::ptr::read_unaligned(p.add(2) as *const u32);
                let lo = nibbles(p.add(6));
                _mm256_mask_add_epi8(lo, qh, lo, _mm256_set1_epi8(16))
            }
            _ => nibbles(p.add(2)),
        }
    }
}

/// `acc + madd(pairs, scales)` in one `vpdpwssd`: the VNNI multiply-accumulate of the
/// k-quant kernels.
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
fn madd_acc_vnni(acc: __m256i, pairs: __m256i, scales: __m256i) -> __m256i {
    _mm256_dpwssd_epi32(acc, pairs, scales)
}

k_quant_rows!(
    VnniKQuants,
    "avx2,avx512f,avx512bw,avx512vl,avx512vnni",
    madd_acc_vnni
);

/// The VNNI eight-row kernels for [`legacy_tile`].
pub(crate) struct Vnni;

impl LegacyRows8 for Vnni {
    /// Dots of eight consecutive legacy-quant weight rows (`w` starts at the first; rows are
    /// `row_bytes` apart) with `T` Q8_0 activation rows: `result[t][r]` = row `r` · token `t`.
    /// The structure of the `avx2` backend's `Avx2Rows8::rows8` (rows in lanes, block by block, the same
    /// prefetch), with one `vpdpbusd` per row and block for the integer sum.
    #[target_feature(enable = "avx2,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn rows8<const K: u8, const T: usize>(
        w: &[u8],
        row_bytes: usize,
        d: [&[f32]; T],
        qs: [&[i8]; T],
        sy: [&[i16]; T],
    ) -> [[f32; 8]; T] {
        // Q8_0 one-token products stream the output heads (139-171 MiB per token) from memory,
        // and there `avx2`'s kernel measured faster (gemma3's head 19.0 against 15.9 GiB/s, 1
        // thread, same run) although VNNI's is faster on cache-resident matrices. With several
        // tokens (sequences decoded together) the head is bound by the integer work, not the
        // stream, and VNNI's one instruction per product group wins.
        if K == L_Q8_0 && T == 1 {
            // SAFETY: forwarded from the caller (AVX2 and F16C are part of this backend).
            return unsafe { Avx2Rows8::rows8::<K, T>(w, row_bytes, d, qs, sy) };
        }
        let bs = block_bytes(K);
        let nb = d[0].len();
        assert!(row_bytes >= nb * bs && w.len() >= 7 * row_bytes + nb * bs);
        for t in 0..T {
            assert!(d[t].len() >= nb && qs[t].len() >= nb * QK32 && sy[t].len() >= nb);
        }
        let offset = code_offset(K);
        let wp = w.as_ptr();
        let mut prefetch = GroupPrefetch::new(w, row_bytes, nb);
        let mut acc = [_mm256_setzero_ps(); T];
        for ib in 0..nb {
            prefetch.step();
            // SAFETY: block ib of each row r < 8 lies inside w (asserted).
            let xs: [__m256i; 8] =
                std::array::from_fn(|r| unsafe { codes::<K>(wp.add(r * row_bytes + ib * bs)) });
            // SAFETY: as above.
            let dx = unsafe { row_scales8(wp.add(ib * bs), row_bytes) };
            for t in 0..T {
                // SAFETY: activation block ib, its scale and its sum are in bounds (asserted).
                let (y, dy, s) = unsafe {
                    (
                        load(qs[t].as_ptr().add(ib * QK32) as *const u8),
                        _mm256_set1_ps(*d[t].get_unchecked(ib)),
                        offset * *sy[t].get_unchecked(ib) as i32,
                    )
                };
                let zero = _mm256_setzero_si256();
                let v: [__m256i; 8] = std::array::from_fn(|r| _mm256_dpbusd_epi32(zero, xs[r], y));
                let si = _mm256_sub_epi32(hsum8(&v), _mm256_set1_epi32(s));
                acc[t] = _mm256_add_ps(acc[t], scaled::<K>(si, dx, dy));
            }
        }
        acc.map(|v| lanes8(v))
    }

    /// [`Self::rows8`] on a group of eight rows packed by the `avx2` backend's `pack_rows8` (`p`: the
    /// group's `PACKED_PER_BLOCK * nb` vectors; dword `r` of code vector `v` = elements
    /// `4v .. 4v + 4` of row `r`): one `vpdpbusd` per code vector and token against the broadcast
    /// activation dword gives all eight rows' sums, with no horizontal sums.
    #[target_feature(enable = "avx2,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn packed_rows8<const K: u8, const T: usize>(
        p: &[__m256i],
        d: [&[f32]; T],
        qs: [&[i8]; T],
        sy: [&[i16]; T],
    ) -> [[f32; 8]; T] {
        let nb = d[0].len();
        assert!(p.len() >= nb * PACKED_PER_BLOCK);
        for t in 0..T {
            assert!(d[t].len() >= nb && qs[t].len() >= nb * QK32 && sy[t].len() >= nb);
        }
        let offset = code_offset(K);
        let mut acc = [_mm256_setzero_ps(); T];
        for ib in 0..nb {
            let blk = &p[ib * PACKED_PER_BLOCK..][..PACKED_PER_BLOCK];
            let dx = _mm256_castsi256_ps(blk[0]);
            let mut s32 = [_mm256_setzero_si256(); T];
            for v in 0..8 {
                // `pack_rows8` keeps Q8_0 quants signed: make them codes.
                let x = if K == L_Q8_0 {
                    _mm256_xor_si256(blk[1 + v], _mm256_set1_epi8(0x80u8 as i8))
                } else {
                    blk[1 + v]
                };
                for (t, s) in s32.iter_mut().enumerate() {
                    // Activation dword v (elements 4v .. 4v + 4) of token t, in every lane.
                    // SAFETY: block ib of each token's quants is in bounds (asserted).
                    let y = unsafe {
                        _mm256_set1_epi32(std::ptr::read_unaligned(
                            qs[t].as_ptr().add(ib * QK32 + 4 * v) as *const i32,
                        ))
                    };
                    *s = _mm256_dpbusd_epi32(*s, x, y);
                }
            }
            for t in 0..T {
                // SAFETY: scale and sum ib in bounds (asserted).
                let (dy, s) = unsafe {
                    (
                        _mm256_set1_ps(*d[t].get_unchecked(ib)),
                        offset * *sy[t].get_unchecked(ib) as i32,
                    )
                };
                let si = _mm256_sub_epi32(s32[t], _mm256_set1_epi32(s));
                acc[t] = _mm256_add_ps(acc[t], scaled::<K>(si, dx, dy));
            }
        }
        acc.map(|v| lanes8(v))
    }

    #[target_feature(enable = "avx2,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn compact_rows8<const K: u8, const T: usize>(
        tail: &[__m256i],
        d: [&[f32]; T],
        qs: [&[i8]; T],
        sy: [&[i16]; T],
    ) -> [[f32; 8]; T] {
        // SAFETY: forwarded from the caller.
        unsafe { super::compact::rows8_vnni::<K, T>(tail, d, qs, sy) }
    }
}
