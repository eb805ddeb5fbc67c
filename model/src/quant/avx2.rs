//! AVX2 vec-dot kernels in ggml's **generic** float order (x86-64, runtime-detected; the default
//! `avx2` backend). Integer sums are computed with SIMD (integer
//! arithmetic is exact, so any order gives the same sums); the float combination performs the
//! same f32 operations in the same order as the scalar reference (`super::scalar`), so results are
//! bit-identical to it.

use super::avx2_blocks::{
    L_Q4_0, L_Q5_0, L_Q8_0, block_bytes, bytes_from_bits_32, decode, load, nibbles,
    q4_k_scales_mins,
};
use super::dequant::f16_at;
use super::kernels::{MAX_TOKENS, TileFn};
use super::matrix::Activations;
use super::types::{GgmlType, QK_K, QK32};
use std::arch::x86_64::*;

/// The generic-order AVX2 tile kernel for `ty`, if there is one. Callers must have checked AVX2
/// and F16C.
pub(crate) fn tile_fn(ty: GgmlType) -> Option<TileFn> {
    Some(match ty {
        GgmlType::Q8_0 => legacy_tile::<L_Q8_0, Avx2Rows8>,
        GgmlType::Q5_0 => legacy_tile::<L_Q5_0, Avx2Rows8>,
        GgmlType::Q4_0 => legacy_tile::<L_Q4_0, Avx2Rows8>,
        GgmlType::Q4_K => q4_k_tile::<Avx2KQuants>,
        GgmlType::Q6_K => q6_k_tile::<Avx2KQuants>,
        _ => return None,
    })
}

/// Runs `$body` for each token group of up to [`MAX_TOKENS`] with `$rows` bound to an array of
/// that many activation rows (of `$cols` elements) of `$acts`, and `$t` to the group's first token offset in the tile.
macro_rules! token_groups {
    ($acts:expr, $cols:expr, $t0:expr, $nt:expr, |$t:ident, $rows:ident| $body:expr) => {{
        let cols = $cols;
        let mut $t = 0;
        while $t < $nt {
            let tn = ($nt - $t).min(MAX_TOKENS);
            match tn {
                1 => {
                    let $rows: [_; 1] = std::array::from_fn(|k| $acts.row($t0 + $t + k, cols));
                    $body
                }
                2 => {
                    let $rows: [_; 2] = std::array::from_fn(|k| $acts.row($t0 + $t + k, cols));
                    $body
                }
                3 => {
                    let $rows: [_; 3] = std::array::from_fn(|k| $acts.row($t0 + $t + k, cols));
                    $body
                }
                _ => {
                    let $rows: [_; 4] = std::array::from_fn(|k| $acts.row($t0 + $t + k, cols));
                    $body
                }
            }
            $t += tn;
        }
    }};
}

/// Tiles with more tokens than this decode their weight rows once into a packed layout that
/// every token group then reuses. With at most one token group (a decode step of up to
/// [`MAX_TOKENS`] sequences) nothing would reuse the packing: it cost more than the dots
/// themselves (qwen2.5-0.5b, 2 threads, 4 sequences decoded together: 35 % of the time in
/// `pack_rows8`, and 4 streams ran at 1.1x one stream's aggregate). Packed and unpacked
/// kernels give the same bits, so the choice never changes a result.
const PACK_ABOVE_TOKENS: usize = MAX_TOKENS;

/// Stores a row's results for a token group into the tile output (token stride `nrows`).
#[inline]
pub(crate) fn store<const T: usize>(
    out: &mut [f32],
    nrows: usize,
    t: usize,
    i: usize,
    r: [f32; T],
) {
    for (k, v) in r.into_iter().enumerate() {
        out[(t + k) * nrows + i] = v;
    }
}

/// The eight-row inner kernels of [`legacy_tile`], one implementation per instruction set. Both
/// must give the scalar reference's results bit for bit.
pub(crate) trait LegacyRows8 {
    /// Dots of eight consecutive rows of raw blocks with `T` tokens (see [`Avx2Rows8`]).
    ///
    /// # Safety
    /// The implementation's target features are available; `w` holds eight rows of `nb` blocks
    /// (`nb = d[0].len()`), and `d`, `qs`, `sy` hold `nb` blocks of each token.
    unsafe fn rows8<const K: u8, const T: usize>(
        w: &[u8],
        row_bytes: usize,
        d: [&[f32]; T],
        qs: [&[i8]; T],
        sy: [&[i16]; T],
    ) -> [[f32; 8]; T];

    /// The same dots from an eight-row group packed by [`pack_rows8`] (see [`Avx2Rows8`]).
    ///
    /// # Safety
    /// As [`Self::rows8`], with `p` one packed group of `nb` blocks.
    unsafe fn packed_rows8<const K: u8, const T: usize>(
        p: &[__m256i],
        d: [&[f32]; T],
        qs: [&[i8]; T],
        sy: [&[i16]; T],
    ) -> [[f32; 8]; T];

    /// The same dots from an eight-row group of Q5_0 / Q4_0 rows in the compact layout of
    /// `super::compact` (`tail`: the group's vectors, then the matrix's groups after it, which
    /// the kernel prefetches).
    ///
    /// # Safety
    /// As [`Self::rows8`], with `tail` whole compact groups of `nb` blocks.
    unsafe fn compact_rows8<const K: u8, const T: usize>(
        tail: &[__m256i],
        d: [&[f32]; T],
        qs: [&[i8]; T],
        sy: [&[i16]; T],
    ) -> [[f32; 8]; T];
}

/// The AVX2 (`maddubs` + `madd`) eight-row kernels.
pub(crate) struct Avx2Rows8;

impl LegacyRows8 for Avx2Rows8 {
    /// Dots of eight consecutive legacy-quant weight rows (`w` starts at the first; rows are
    /// `row_bytes` apart) with `T` Q8_0 activation rows: `result[t][r]` = row `r` · token `t`.
    ///
    /// The rows sit in the eight lanes, so each row's float sum is still formed block by block in
    /// the scalar reference's order (bit-identical to it), while the float work is vectorised and no
    /// sum waits on its own add latency: the 8 block int sums of one block come from one `hsum8`
    /// tree over the rows.
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn rows8<const K: u8, const T: usize>(
        w: &[u8],
        row_bytes: usize,
        d: [&[f32]; T],
        qs: [&[i8]; T],
        sy: [&[i16]; T],
    ) -> [[f32; 8]; T] {
        // `sy[t][ib]`: the sum of token t's activation block ib (unused for Q8_0).
        let bs = block_bytes(K);
        let nb = d[0].len();
        assert!(row_bytes >= nb * bs && w.len() >= 7 * row_bytes + nb * bs);
        for t in 0..T {
            assert!(d[t].len() >= nb && qs[t].len() >= nb * QK32);
            assert!(K == L_Q8_0 || sy[t].len() >= nb);
        }
        // Q5_0 / Q4_0 quants are stored with an offset (16 / 8): their unsigned codes multiply the
        // signed activations directly (`maddubs`), and offset × the activation block sum is taken
        // off afterwards. Integer arithmetic, so the block sums are exactly the reference's.
        let offset = if K == L_Q5_0 { 16 } else { 8 };
        let wp = w.as_ptr();
        let mut prefetch = GroupPrefetch::new(w, row_bytes, nb);
        let mut acc = [_mm256_setzero_ps(); T];
        for ib in 0..nb {
            prefetch.step();
            let mut xs = [_mm256_setzero_si256(); 8];
            for (r, x) in xs.iter_mut().enumerate() {
                // SAFETY: block ib of row r < 8 lies inside w (asserted).
                unsafe {
                    let p = wp.add(r * row_bytes + ib * bs);
                    *x = if K == L_Q8_0 {
                        decode::<K>(p)
                    } else {
                        decode_unsigned::<K>(p)
                    };
                }
            }
            // SAFETY: block ib of each of the eight rows lies inside w (asserted).
            let dx = unsafe { row_scales8(wp.add(ib * bs), row_bytes) };
            for t in 0..T {
                // SAFETY: activation block ib and scale ib are in bounds (asserted).
                let (y, dy) = unsafe {
                    (
                        load(qs[t].as_ptr().add(ib * QK32) as *const u8),
                        _mm256_set1_ps(*d[t].get_unchecked(ib)),
                    )
                };
                let mut v = [_mm256_setzero_si256(); 8];
                let si = if K == L_Q8_0 {
                    for r in 0..8 {
                        v[r] = mul_sum_i8(xs[r], y);
                    }
                    hsum8(&v)
                } else {
                    for r in 0..8 {
                        v[r] = mul_sum_u8_i8(xs[r], y);
                    }
                    // SAFETY: sums ib in bounds (asserted).
                    let s = _mm256_set1_epi32(offset * unsafe { *sy[t].get_unchecked(ib) } as i32);
                    _mm256_sub_epi32(hsum8(&v), s)
                };
                acc[t] = _mm256_add_ps(acc[t], scaled::<K>(si, dx, dy));
            }
        }
        acc.map(|v| lanes8(v))
    }

    /// [`Self::rows8`] on a group of eight rows packed by [`pack_rows8`] (`p`: the group's
    /// `PACKED_PER_BLOCK * nb` vectors): the same exact block sums and the same float operations in
    /// the same order, so bit-identical to it and to the scalar reference, but each block's sums
    /// for all eight rows come from eight `maddubs` against broadcast activation dwords.
    #[target_feature(enable = "avx2")]
    unsafe fn packed_rows8<const K: u8, const T: usize>(
        p: &[__m256i],
        d: [&[f32]; T],
        qs: [&[i8]; T],
        sy: [&[i16]; T],
    ) -> [[f32; 8]; T] {
        let nb = d[0].len();
        assert!(p.len() >= nb * PACKED_PER_BLOCK);
        for t in 0..T {
            assert!(d[t].len() >= nb && qs[t].len() >= nb * QK32);
            assert!(K == L_Q8_0 || sy[t].len() >= nb);
        }
        let offset = if K == L_Q5_0 { 16 } else { 8 };
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); T];
        for ib in 0..nb {
            let blk = &p[ib * PACKED_PER_BLOCK..][..PACKED_PER_BLOCK];
            let dx = _mm256_castsi256_ps(blk[0]);
            let mut s32 = [_mm256_setzero_si256(); T];
            let mut s16 = [_mm256_setzero_si256(); T];
            for v in 0..8 {
                let x = blk[1 + v];
                // Activation dword v (elements 4v .. 4v + 4) of token t, in every lane.
                // SAFETY: block ib of each token's quants is in bounds (asserted).
                let y = |t: usize| unsafe {
                    _mm256_set1_epi32(std::ptr::read_unaligned(
                        qs[t].as_ptr().add(ib * QK32 + 4 * v) as *const i32,
                    ))
                };
                if K == L_Q8_0 {
                    let ax = _mm256_sign_epi8(x, x);
                    for (t, s) in s32.iter_mut().enumerate() {
                        let m = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(y(t), x));
                        *s = _mm256_add_epi32(*s, _mm256_madd_epi16(m, ones));
                    }
                } else {
                    // Codes < 32 and |y| <= 128: each i16 lane of a product is below 8192 in
                    // magnitude, so four of them add up exactly in i16.
                    for (t, s) in s16.iter_mut().enumerate() {
                        *s = _mm256_add_epi16(*s, _mm256_maddubs_epi16(x, y(t)));
                    }
                    if v % 4 == 3 {
                        for (s, h) in s32.iter_mut().zip(s16.iter_mut()) {
                            *s = _mm256_add_epi32(*s, _mm256_madd_epi16(*h, ones));
                            *h = _mm256_setzero_si256();
                        }
                    }
                }
            }
            for t in 0..T {
                let si = if K == L_Q8_0 {
                    s32[t]
                } else {
                    // SAFETY: sums ib in bounds (asserted).
                    let s = offset * unsafe { *sy[t].get_unchecked(ib) } as i32;
                    _mm256_sub_epi32(s32[t], _mm256_set1_epi32(s))
                };
                // SAFETY: scale ib in bounds (asserted).
                let dy = _mm256_set1_ps(unsafe { *d[t].get_unchecked(ib) });
                acc[t] = _mm256_add_ps(acc[t], scaled::<K>(si, dx, dy));
            }
        }
        acc.map(|v| lanes8(v))
    }

    #[target_feature(enable = "avx2,f16c")]
    unsafe fn compact_rows8<const K: u8, const T: usize>(
        tail: &[__m256i],
        d: [&[f32]; T],
        qs: [&[i8]; T],
        sy: [&[i16]; T],
    ) -> [[f32; 8]; T] {
        // SAFETY: forwarded from the caller.
        unsafe { super::compact::rows8_avx2::<K, T>(tail, d, qs, sy) }
    }
}

/// Tile kernel for Q8_0 / Q5_0 / Q4_0 weights: activation rows are sliced once per token group,
/// not once per weight row; groups of eight rows go to `R`'s kernels, the rest row by row.
///
/// Callers must have checked AVX2, F16C and `R`'s own target features.
pub(crate) fn legacy_tile<const K: u8, R: LegacyRows8>(
    w: &[u8],
    row_bytes: usize,
    a: &Activations,
    t0: usize,
    nt: usize,
    out: &mut [f32],
) {
    let nrows = w.len() / row_bytes;
    let q = a.q8_0();
    // Several tokens: decode the tile's rows once into the transposed layout (see
    // `pack_rows8`), which every token group of the tile then reuses.
    let packed = if nt > PACK_ABOVE_TOKENS {
        // SAFETY: this backend is only selected when AVX2 and F16C are available.
        unsafe { pack_rows8::<K>(w, row_bytes, a.cols() / QK32) }
    } else {
        Vec::new()
    };
    token_groups!(q, a.cols(), t0, nt, |t, rows| {
        let (d, qs) = (rows.map(|r| r.d), rows.map(|r| r.qs));
        // Offset-coded weights are decoded unsigned; each row's block sum is then corrected by
        // the format's offset × the activation block's sum. `Activations` are only built by the
        // quantizers, which record those sums (the kernels assert their length).
        let mut k = 0;
        let sy = d.map(|_| {
            k += 1;
            q.row_sums(t0 + t + k - 1, a.cols()).unwrap_or(&[])
        });
        let mut i = 0;
        while i + 8 <= nrows {
            // SAFETY: the caller checked the target features; lengths are asserted inside.
            let r = unsafe {
                if packed.is_empty() {
                    R::rows8::<K, _>(&w[i * row_bytes..], row_bytes, d, qs, sy)
                } else {
                    let per_group = PACKED_PER_BLOCK * d[0].len();
                    R::packed_rows8::<K, _>(&packed[i / 8 * per_group..][..per_group], d, qs, sy)
                }
            };
            for (k, v) in r.iter().enumerate() {
                out[(t + k) * nrows + i..][..8].copy_from_slice(v);
            }
            i += 8;
        }
        for (j, wr) in w[i * row_bytes..].chunks_exact(row_bytes).enumerate() {
            // SAFETY: as above.
            store(out, nrows, t, i + j, unsafe {
                legacy_row::<K, _>(wr, d, qs)
            });
        }
    })
}

/// [`legacy_tile`] on rows already packed (`p`: the vectors of `nrows / 8` consecutive groups;
/// `nrows` a multiple of eight) — by [`pack_rows8`] for Q8_0, in the compact layout of
/// `super::compact` for Q5_0 / Q4_0: the same results, without the per-token horizontal sums
/// and without packing per call (see `super::packed`).
pub(crate) fn legacy_tile_prepacked<const K: u8, R: LegacyRows8>(
    p: &[__m256i],
    nrows: usize,
    a: &Activations,
    t0: usize,
    nt: usize,
    out: &mut [f32],
) {
    let q = a.q8_0();
    let nb = a.cols() / QK32;
    let per_group = if K == L_Q8_0 {
        PACKED_PER_BLOCK * nb
    } else {
        super::compact::group_vecs(K, nb)
    };
    assert!(nrows.is_multiple_of(8) && p.len() == nrows / 8 * per_group);
    assert!(out.len() >= nt * nrows);
    // Several token groups: decode the compact tile once into `pack_rows8`'s layout, which
    // every token group then reuses (instead of unpacking it again per group).
    let decoded = if K != L_Q8_0 && nt > PACK_ABOVE_TOKENS {
        // SAFETY: the backends selecting this kernel have AVX2 and F16C.
        unsafe { super::compact::decode_groups::<K>(p, nb) }
    } else {
        Vec::new()
    };
    token_groups!(q, a.cols(), t0, nt, |t, rows| {
        let (d, qs) = (rows.map(|r| r.d), rows.map(|r| r.qs));
        let mut k = 0;
        let sy = d.map(|_| {
            k += 1;
            q.row_sums(t0 + t + k - 1, a.cols()).unwrap_or(&[])
        });
        for g in 0..nrows / 8 {
            // SAFETY: the backend selecting this kernel checked its target features; the
            // groups' lengths are exact (asserted) and the activation lengths are asserted
            // inside.
            let r = unsafe {
                if K == L_Q8_0 {
                    R::packed_rows8::<K, _>(&p[g * per_group..][..per_group], d, qs, sy)
                } else if !decoded.is_empty() {
                    let per = PACKED_PER_BLOCK * nb;
                    R::packed_rows8::<K, _>(&decoded[g * per..][..per], d, qs, sy)
                } else {
                    R::compact_rows8::<K, _>(&p[g * per_group..], d, qs, sy)
                }
            };
            for (k, v) in r.iter().enumerate() {
                out[(t + k) * nrows + g * 8..][..8].copy_from_slice(v);
            }
        }
    })
}

/// The k-quant row kernels of [`q4_k_tile`] and [`q6_k_tile`], one implementation per
/// instruction set. All must give the scalar reference's results bit for bit.
pub(crate) trait KQuantRows {
    /// ggml's generic Q4_K × Q8_K dot of one row of raw super-blocks with `T` activation rows.
    ///
    /// # Safety
    /// The implementation's target features are available.
    unsafe fn q4_k_one<const T: usize>(
        w: &[u8],
        d: [&[f32]; T],
        ys: [&[i8]; T],
        bsums: [&[i16]; T],
    ) -> [f32; T];
    /// The same from one row packed by [`pack_q4_k`].
    ///
    /// # Safety
    /// As [`Self::q4_k_one`].
    unsafe fn q4_k_packed<const T: usize>(
        p: &[__m256i],
        d: [&[f32]; T],
        ys: [&[i8]; T],
        bsums: [&[i16]; T],
    ) -> [f32; T];
    /// ggml's generic Q6_K × Q8_K dot of one row of raw super-blocks with `T` activation rows.
    ///
    /// # Safety
    /// As [`Self::q4_k_one`].
    unsafe fn q6_k_one<const T: usize>(w: &[u8], d: [&[f32]; T], ys: [&[i8]; T]) -> [f32; T];
    /// The same from one row packed by [`pack_q6_k`].
    ///
    /// # Safety
    /// As [`Self::q4_k_one`].
    unsafe fn q6_k_packed<const T: usize>(
        p: &[__m256i],
        d: [&[f32]; T],
        ys: [&[i8]; T],
    ) -> [f32; T];
}

/// Defines `$name`, a [`KQuantRows`] whose kernels are compiled with `$features` and add each
/// `i16` pair product × scale into the dword accumulators with `$madd_acc(acc, pairs, scales)`
/// (AVX2: `madd` + `add`; VNNI: one `vpdpwssd`). Integer sums, so exact either way.
macro_rules! k_quant_rows {
    ($name:ident, $features:literal, $madd_acc:path) => {
        pub(crate) struct $name;

        impl $name {
            /// One Q4_K super-block `i`'s share of `T` rows' dots, from its parts: per
            /// 64-element chunk `c`, `chunk(c)` gives the low and high nibbles (lane order) and
            /// their two sub-block scales; `mins16` the mins widened to i16, `dx`/`dmx` the
            /// block's d and dmin. The raw and the packed kernels both run it, so they do the
            /// same exact lane sums and float operations in the same order.
            ///
            /// # Safety
            /// `ys[t]` holds block `i`'s 256 quants and `bsums[t]` its 16 sums for every `t`.
            #[target_feature(enable = $features)]
            #[inline]
            #[allow(clippy::too_many_arguments)]
            unsafe fn q4_k_block<const T: usize>(
                chunk: impl Fn(usize) -> (__m256i, __m256i, __m256i, __m256i),
                mins16: __m256i,
                dx: f32,
                dmx: f32,
                i: usize,
                d: [&[f32]; T],
                ys: [&[i8]; T],
                bsums: [&[i16]; T],
                sums: &mut [__m256; T],
                sumf: &mut [f32; T],
            ) {
                let mut acc = [_mm256_setzero_si256(); T];
                for c in 0..4 {
                    let (lo, hi, s0, s1) = chunk(c);
                    for t in 0..T {
                        // SAFETY: quants 64c .. 64c + 64 of block i in bounds (the caller's).
                        let (ya, yb) = unsafe {
                            let q = ys[t].as_ptr().add(i * QK_K + 64 * c) as *const u8;
                            (load(q), load(q.add(32)))
                        };
                        let a = $madd_acc(acc[t], _mm256_maddubs_epi16(lo, ya), s0);
                        acc[t] = $madd_acc(a, _mm256_maddubs_epi16(hi, yb), s1);
                    }
                }
                for t in 0..T {
                    // SAFETY: 16 i16 = 32 bytes at bsums[i*16..], in bounds (the caller's).
                    let bs = unsafe {
                        _mm256_loadu_si256(bsums[t].as_ptr().add(i * 16) as *const __m256i)
                    };
                    let summ = hsum(_mm256_madd_epi16(bs, mins16));
                    let dd = _mm256_set1_ps(dx * d[t][i]);
                    sums[t] = _mm256_add_ps(sums[t], _mm256_mul_ps(dd, _mm256_cvtepi32_ps(acc[t])));
                    let dmin = dmx * d[t][i];
                    sumf[t] -= dmin * summ as f32;
                }
            }

            /// One Q6_K super-block `i`'s share of `T` rows' dots: per 32-element chunk `k`,
            /// `chunk(k)` gives the signed quants (lane order) and the pair of sub-block scales
            /// as dwords; `dx` is the block's d. Shared by the raw and the packed kernels.
            ///
            /// # Safety
            /// `ys[t]` holds block `i`'s 256 quants for every `t`.
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn q6_k_block<const T: usize>(
                chunk: impl Fn(usize) -> (__m256i, __m256i),
                dx: f32,
                i: usize,
                d: [&[f32]; T],
                ys: [&[i8]; T],
                sums: &mut [__m256; T],
            ) {
                let mut acc = [_mm256_setzero_si256(); T];
                for k in 0..8 {
                    let (x, pair) = chunk(k);
                    let ax = _mm256_sign_epi8(x, x);
                    for t in 0..T {
                        // SAFETY: q8[32k .. 32k + 32] of block i in bounds (the caller's).
                        let y = unsafe { load(ys[t].as_ptr().add(i * QK_K + 32 * k) as *const u8) };
                        let m = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(y, x));
                        acc[t] = $madd_acc(acc[t], m, pair);
                    }
                }
                for t in 0..T {
                    let dd = _mm256_set1_ps(dx * d[t][i]);
                    sums[t] = _mm256_add_ps(sums[t], _mm256_mul_ps(dd, _mm256_cvtepi32_ps(acc[t])));
                }
            }
        }

        impl KQuantRows for $name {
            /// ggml's generic Q4_K × Q8_K dot for `T` activation rows, the activations' quants
            /// given in [`lane_order`] (weights are reordered the same way, once per token
            /// group): exact per-lane int sums, then the scalar reference's float operations.
            #[target_feature(enable = $features)]
            unsafe fn q4_k_one<const T: usize>(
                w: &[u8],
                d: [&[f32]; T],
                ys: [&[i8]; T],
                bsums: [&[i16]; T],
            ) -> [f32; T] {
                let nb = d[0].len();
                assert!(w.len() >= nb * 144);
                for t in 0..T {
                    assert!(
                        d[t].len() >= nb && ys[t].len() >= nb * QK_K && bsums[t].len() >= nb * 16
                    );
                }
                let mut sums = [_mm256_setzero_ps(); T];
                let mut sumf = [0f32; T];
                let m4 = _mm256_set1_epi8(0x0F);
                for i in 0..nb {
                    let b = &w[i * 144..i * 144 + 144];
                    // SAFETY: b[4..16] holds the 12 packed scale bytes.
                    let (sc, mn) = unsafe { q4_k_scales_mins(b.as_ptr().add(4)) };
                    let (sc, mn) = (sc.to_le_bytes(), mn.to_le_bytes());
                    // summ = sum_j bsums[j] * mins[j / 2]: each min paired with two 16-element
                    // sums.
                    let m = _mm_cvtsi64_si128(i64::from_le_bytes(mn));
                    let mins16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, m));
                    let dx = f16_at(b);
                    let dmx = f16_at(&b[2..]);
                    let chunk = |c: usize| {
                        // SAFETY: 32 bytes of b[16 + 32c ..], in bounds. Byte k holds element
                        // k (low nibble, sub-block 2c) and element 32 + k (high nibble,
                        // sub-block 2c + 1).
                        let q4 = lane_order(unsafe { load(b.as_ptr().add(16 + 32 * c)) });
                        let lo = _mm256_and_si256(q4, m4);
                        let hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), m4);
                        let s0 = _mm256_set1_epi16(sc[2 * c] as i16);
                        let s1 = _mm256_set1_epi16(sc[2 * c + 1] as i16);
                        (lo, hi, s0, s1)
                    };
                    // SAFETY: the slices' lengths are asserted above.
                    unsafe {
                        Self::q4_k_block(
                            chunk, mins16, dx, dmx, i, d, ys, bsums, &mut sums, &mut sumf,
                        )
                    };
                }
                std::array::from_fn(|t| add_lanes(sumf[t], sums[t]))
            }

            /// [`KQuantRows::q4_k_one`] on one row packed by [`pack_q4_k`] (`p`: its
            /// `nb * Q4_K_PACKED` vectors): the same exact lane sums and the same float
            /// operations in the same order, without the decoding.
            #[target_feature(enable = $features)]
            unsafe fn q4_k_packed<const T: usize>(
                p: &[__m256i],
                d: [&[f32]; T],
                ys: [&[i8]; T],
                bsums: [&[i16]; T],
            ) -> [f32; T] {
                let nb = d[0].len();
                assert!(p.len() >= nb * Q4_K_PACKED);
                for t in 0..T {
                    assert!(
                        d[t].len() >= nb && ys[t].len() >= nb * QK_K && bsums[t].len() >= nb * 16
                    );
                }
                let mut sums = [_mm256_setzero_ps(); T];
                let mut sumf = [0f32; T];
                for i in 0..nb {
                    let b = &p[i * Q4_K_PACKED..][..Q4_K_PACKED];
                    let meta = b[8].as_ptr_i16();
                    let mins16 = b[9];
                    let chunk = |c: usize| {
                        // SAFETY: meta holds 8 i16 scales.
                        let (s0, s1) = unsafe {
                            (
                                _mm256_set1_epi16(*meta.add(2 * c)),
                                _mm256_set1_epi16(*meta.add(2 * c + 1)),
                            )
                        };
                        (b[2 * c], b[2 * c + 1], s0, s1)
                    };
                    // SAFETY: meta's bytes 16..24 hold d and dmin.
                    let (dx, dmx) = unsafe {
                        let f = meta.add(8) as *const f32;
                        (
                            std::ptr::read_unaligned(f),
                            std::ptr::read_unaligned(f.add(1)),
                        )
                    };
                    // SAFETY: the slices' lengths are asserted above.
                    unsafe {
                        Self::q4_k_block(
                            chunk, mins16, dx, dmx, i, d, ys, bsums, &mut sums, &mut sumf,
                        )
                    };
                }
                std::array::from_fn(|t| add_lanes(sumf[t], sums[t]))
            }

            /// ggml's generic Q6_K × Q8_K dot for `T` activation rows, the activations' quants
            /// given in [`lane_order`] (weights decoded and reordered once per token group):
            /// exact per-lane int sums, then the scalar reference's float operations.
            #[target_feature(enable = $features)]
            unsafe fn q6_k_one<const T: usize>(
                w: &[u8],
                d: [&[f32]; T],
                ys: [&[i8]; T],
            ) -> [f32; T] {
                let nb = d[0].len();
                assert!(w.len() >= nb * 210);
                for t in 0..T {
                    assert!(d[t].len() >= nb && ys[t].len() >= nb * QK_K);
                }
                let mut sums = [_mm256_setzero_ps(); T];
                for i in 0..nb {
                    let b = &w[i * 210..i * 210 + 210];
                    // SAFETY: a whole 210-byte super-block.
                    let quants = unsafe { q6_k_quants(b.as_ptr()) };
                    // The 16 signed 8-bit sub-block scales widened to i16: dword p = (scale 2p,
                    // 2p + 1).
                    // SAFETY: b[192..208] in bounds.
                    let sv = _mm256_cvtepi8_epi16(unsafe {
                        _mm_loadu_si128(b.as_ptr().add(192) as *const __m128i)
                    });
                    let chunk = |k: usize| {
                        // Lane order: dword l = elements l, l+8 (sub-block 2k) and l+16, l+24
                        // (sub-block 2k+1) of chunk k, so `madd` by the pair (scale 2k, scale
                        // 2k+1) gives lane l's sum. Dword k of `sv` holds the scales of
                        // sub-blocks 2k, 2k + 1.
                        (
                            lane_order(quants[k]),
                            _mm256_permutevar8x32_epi32(sv, _mm256_set1_epi32(k as i32)),
                        )
                    };
                    let dx = f16_at(&b[208..]);
                    // SAFETY: the slices' lengths are asserted above.
                    unsafe { Self::q6_k_block(chunk, dx, i, d, ys, &mut sums) };
                }
                std::array::from_fn(|t| add_lanes(0.0, sums[t]))
            }

            /// [`KQuantRows::q6_k_one`] on one row packed by [`pack_q6_k`] (`p`: its
            /// `nb * Q6_K_PACKED` vectors): the same exact lane sums and the same float
            /// operations in the same order, without the decoding.
            #[target_feature(enable = $features)]
            unsafe fn q6_k_packed<const T: usize>(
                p: &[__m256i],
                d: [&[f32]; T],
                ys: [&[i8]; T],
            ) -> [f32; T] {
                let nb = d[0].len();
                assert!(p.len() >= nb * Q6_K_PACKED);
                for t in 0..T {
                    assert!(d[t].len() >= nb && ys[t].len() >= nb * QK_K);
                }
                let mut sums = [_mm256_setzero_ps(); T];
                for i in 0..nb {
                    let b = &p[i * Q6_K_PACKED..][..Q6_K_PACKED];
                    let chunk = |k: usize| (b[k], b[8 + k]);
                    let dx = _mm256_cvtss_f32(_mm256_castsi256_ps(b[16]));
                    // SAFETY: the slices' lengths are asserted above.
                    unsafe { Self::q6_k_block(chunk, dx, i, d, ys, &mut sums) };
                }
                std::array::from_fn(|t| add_lanes(0.0, sums[t]))
            }
        }
    };
}
pub(crate) use k_quant_rows;

/// The block's scale product in the scalar reference's association: `sumi * dx * dy` for
/// Q4_0, `sumi * (dx * dy)` for Q8_0 and Q5_0.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn scaled<const K: u8>(si: __m256i, dx: __m256, dy: __m256) -> __m256 {
    let sf = _mm256_cvtepi32_ps(si);
    if K == L_Q4_0 {
        _mm256_mul_ps(_mm256_mul_ps(sf, dx), dy)
    } else {
        _mm256_mul_ps(sf, _mm256_mul_ps(dx, dy))
    }
}

/// The eight lanes of `v`.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn lanes8(v: __m256) -> [f32; 8] {
    let mut lanes = [0f32; 8];
    // SAFETY: 8 f32 into an 8-f32 array.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
    lanes
}

/// `acc` plus the eight lanes of `v`, added one after another in lane order (the scalar
/// reference's final sum over its eight lane accumulators).
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn add_lanes(mut acc: f32, v: __m256) -> f32 {
    for s in lanes8(v) {
        acc += s;
    }
    acc
}

/// `acc + madd(pairs, scales)`: the AVX2 multiply-accumulate of [`KQuantRows`] kernels.
#[inline]
#[target_feature(enable = "avx2")]
fn madd_acc_avx2(acc: __m256i, pairs: __m256i, scales: __m256i) -> __m256i {
    _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, scales))
}

k_quant_rows!(Avx2KQuants, "avx2", madd_acc_avx2);

/// Tile kernel for Q4_K weights. With several tokens the rows are decoded once for the whole
/// tile ([`pack_q4_k`]); the activations' quants are put in lane order once per matmul.
pub(crate) fn q4_k_tile<R: KQuantRows>(
    w: &[u8],
    row_bytes: usize,
    a: &Activations,
    t0: usize,
    nt: usize,
    out: &mut [f32],
) {
    let nrows = w.len() / row_bytes;
    let q = a.q8k();
    let cols = a.cols();
    let nb = cols / QK_K;
    let mut lanes = Vec::new();
    // SAFETY: this backend is only selected when AVX2 is available.
    let packed = if nt > PACK_ABOVE_TOKENS {
        unsafe { pack_q4_k(w, row_bytes, nb) }
    } else {
        Vec::new()
    };
    let arranged = a.q8k_arranged(lane_order_slice);
    token_groups!(q, cols, t0, nt, |t, rows| {
        let (d, qs, bs) = (rows.map(|r| r.d), rows.map(|r| r.qs), rows.map(|r| r.bsums));
        let ys = tokens_in_lane_order(arranged, qs, t0 + t, cols, &mut lanes);
        for (i, wr) in w.chunks_exact(row_bytes).enumerate() {
            // SAFETY: AVX2 checked at backend selection; lengths asserted inside.
            let r = unsafe {
                if packed.is_empty() {
                    R::q4_k_one(wr, d, ys, bs)
                } else {
                    R::q4_k_packed(
                        &packed[i * nb * Q4_K_PACKED..][..nb * Q4_K_PACKED],
                        d,
                        ys,
                        bs,
                    )
                }
            };
            store(out, nrows, t, i, r);
        }
    })
}

/// The quants of the `T` tokens from `first` on, in [`lane_order`]: slices of `arranged`
/// (every token's quants already in lane order) when given, else reordered into `buf`.
fn tokens_in_lane_order<'a, const T: usize>(
    arranged: Option<&'a [i8]>,
    qs: [&[i8]; T],
    first: usize,
    cols: usize,
    buf: &'a mut Vec<i8>,
) -> [&'a [i8]; T] {
    match arranged {
        Some(all) => std::array::from_fn(|k| &all[(first + k) * cols..(first + k + 1) * cols]),
        None => lane_ordered(qs, cols, buf),
    }
}

/// [`lane_order_all`] as a plain function (for [`Activations::q8k_arranged`]).
fn lane_order_slice(src: &[i8], dst: &mut [i8]) {
    // SAFETY: only called from this backend's tile kernels, selected when AVX2 is available.
    unsafe { lane_order_all(src, dst) }
}

/// Vectors per super-block of a row packed by [`pack_q4_k`].
pub(crate) const Q4_K_PACKED: usize = 10;

/// Every row of `w` (rows `row_bytes` apart, `nb` Q4_K super-blocks each) decoded for
/// [`KQuantRows::q4_k_packed`]: per super-block, vectors `2c` and `2c + 1` hold the low and high nibbles of
/// chunk `c` in lane order (sub-blocks `2c` and `2c + 1`), vector 8 the eight sub-block scales
/// as i16 then `d` and `dmin` as f32, vector 9 the mins widened to i16 and paired with the
/// activation block sums they multiply.
#[target_feature(enable = "avx2")]
unsafe fn pack_q4_k(w: &[u8], row_bytes: usize, nb: usize) -> Vec<__m256i> {
    let nrows = w.len() / row_bytes;
    assert!(row_bytes >= nb * 144);
    let m4 = _mm256_set1_epi8(0x0F);
    let mut out = Vec::with_capacity(nrows * nb * Q4_K_PACKED);
    for r in 0..nrows {
        for i in 0..nb {
            let b = &w[r * row_bytes + i * 144..][..144];
            for c in 0..4 {
                // SAFETY: 32 bytes of b[16 + 32c ..], in bounds.
                let q4 = lane_order(unsafe { load(b.as_ptr().add(16 + 32 * c)) });
                out.push(_mm256_and_si256(q4, m4));
                out.push(_mm256_and_si256(_mm256_srli_epi16(q4, 4), m4));
            }
            // SAFETY: b[4..16] holds the 12 packed scale bytes.
            let (sc, mn) = unsafe { q4_k_scales_mins(b.as_ptr().add(4)) };
            let sc16 = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(sc as i64));
            let ds = _mm_setr_ps(f16_at(b), f16_at(&b[2..]), 0.0, 0.0);
            out.push(_mm256_set_m128i(_mm_castps_si128(ds), sc16));
            let m = _mm_cvtsi64_si128(mn as i64);
            out.push(_mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, m)));
        }
    }
    out
}

/// Pointer access to a vector's lanes (packed metadata).
pub(crate) trait VectorBytes {
    /// The vector's memory as i16 lanes.
    fn as_ptr_i16(&self) -> *const i16;
}

impl VectorBytes for __m256i {
    fn as_ptr_i16(&self) -> *const i16 {
        self as *const __m256i as *const i16
    }
}

/// The quants of `qs` (rows of `cols`) in [`lane_order`], in `buf`.
fn lane_ordered<'a, const T: usize>(
    qs: [&[i8]; T],
    cols: usize,
    buf: &'a mut Vec<i8>,
) -> [&'a [i8]; T] {
    buf.clear();
    buf.resize(T * cols, 0i8);
    for (k, q) in qs.iter().enumerate() {
        // SAFETY: only reached from tile kernels of this AVX2 backend; both slices hold `cols`
        // bytes.
        unsafe { lane_order_all(&q[..cols], &mut buf[k * cols..(k + 1) * cols]) };
    }
    let buf: &'a [i8] = buf;
    std::array::from_fn(|k| &buf[k * cols..(k + 1) * cols])
}

/// Reorders 32 bytes so that dword `l` holds bytes `l, l+8, l+16, l+24`: the four elements of a
/// 32-element sub-block that ggml's generic k-quant code adds into lane `l`. With weights and
/// activations both in this order, `maddubs` then `madd` by the sub-block scale yields the
/// eight lane sums directly.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn lane_order(v: __m256i) -> __m256i {
    let d = _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
    let b = _mm256_setr_epi8(
        0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15, 0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10,
        14, 3, 7, 11, 15,
    );
    _mm256_shuffle_epi8(d, b)
}

/// [`lane_order`] over each 32-byte chunk of `src` into `dst` (same length, a multiple of 32).
#[target_feature(enable = "avx2")]
unsafe fn lane_order_all(src: &[i8], dst: &mut [i8]) {
    assert!(src.len() == dst.len() && src.len().is_multiple_of(32));
    for (s, d) in src.chunks_exact(32).zip(dst.chunks_exact_mut(32)) {
        // SAFETY: 32 bytes each.
        unsafe {
            let v = lane_order(load(s.as_ptr() as *const u8));
            _mm256_storeu_si256(d.as_mut_ptr() as *mut __m256i, v);
        }
    }
}

/// Tile kernel for Q6_K weights. With several tokens the rows are decoded once for the whole
/// tile ([`pack_q6_k`]); the activations' quants are put in lane order once per matmul.
pub(crate) fn q6_k_tile<R: KQuantRows>(
    w: &[u8],
    row_bytes: usize,
    a: &Activations,
    t0: usize,
    nt: usize,
    out: &mut [f32],
) {
    let nrows = w.len() / row_bytes;
    let q = a.q8k();
    let cols = a.cols();
    let nb = cols / QK_K;
    let mut lanes = Vec::new();
    // SAFETY: this backend is only selected when AVX2 is available.
    let packed = if nt > PACK_ABOVE_TOKENS {
        unsafe { pack_q6_k(w, row_bytes, nb) }
    } else {
        Vec::new()
    };
    let arranged = a.q8k_arranged(lane_order_slice);
    token_groups!(q, cols, t0, nt, |t, rows| {
        let (d, qs) = (rows.map(|r| r.d), rows.map(|r| r.qs));
        let ys = tokens_in_lane_order(arranged, qs, t0 + t, cols, &mut lanes);
        for (i, wr) in w.chunks_exact(row_bytes).enumerate() {
            // SAFETY: AVX2 checked at backend selection; lengths asserted inside.
            let r = unsafe {
                if packed.is_empty() {
                    R::q6_k_one(wr, d, ys)
                } else {
                    R::q6_k_packed(&packed[i * nb * Q6_K_PACKED..][..nb * Q6_K_PACKED], d, ys)
                }
            };
            store(out, nrows, t, i, r);
        }
    })
}

/// Vectors per super-block of a row packed by [`pack_q6_k`].
pub(crate) const Q6_K_PACKED: usize = 18;

/// Every row of `w` (rows `row_bytes` apart, `nb` Q6_K super-blocks each) decoded for
/// [`KQuantRows::q6_k_packed`]: per super-block, vector `k` (0..8) holds the signed quants of elements
/// `32k .. 32k + 32` in lane order, vector `8 + k` the pair of sub-block scales they multiply
/// (i16, one pair per dword), and vector 16 the super-block scale `d` as f32 in lane 0.
#[target_feature(enable = "avx2")]
unsafe fn pack_q6_k(w: &[u8], row_bytes: usize, nb: usize) -> Vec<__m256i> {
    let nrows = w.len() / row_bytes;
    assert!(row_bytes >= nb * 210);
    let mut out = Vec::with_capacity(nrows * nb * Q6_K_PACKED);
    for r in 0..nrows {
        for i in 0..nb {
            let b = &w[r * row_bytes + i * 210..][..210];
            // SAFETY: a whole 210-byte super-block.
            let xs = unsafe { q6_k_quants(b.as_ptr()) };
            for x in xs {
                out.push(lane_order(x));
            }
            // SAFETY: b[192..208] in bounds.
            let sv = _mm256_cvtepi8_epi16(unsafe {
                _mm_loadu_si128(b.as_ptr().add(192) as *const __m128i)
            });
            for k in 0..8 {
                out.push(_mm256_permutevar8x32_epi32(sv, _mm256_set1_epi32(k)));
            }
            out.push(_mm256_castps_si256(_mm256_set1_ps(f16_at(&b[208..]))));
            out.push(_mm256_setzero_si256());
        }
    }
    out
}

/// The 256 signed quants (`q - 32`) of the Q6_K super-block at `p`, 32 elements per vector in
/// ggml element order.
///
/// # Safety
/// A whole 210-byte super-block at `p`.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn q6_k_quants(p: *const u8) -> [__m256i; 8] {
    let m4 = _mm256_set1_epi8(0x0F);
    let m3 = _mm256_set1_epi8(0x03);
    let m32 = _mm256_set1_epi8(32);
    let mut out = [_mm256_setzero_si256(); 8];
    for half in 0..2 {
        // SAFETY: ql[half*64 .. +64] and qh[128 + half*32 .. +32] lie in the super-block.
        let (ql0, ql1, qh) = unsafe {
            (
                load(p.add(half * 64)),
                load(p.add(half * 64 + 32)),
                load(p.add(128 + half * 32)),
            )
        };
        let hb = |s: i32| {
            let shifted = match s {
                0 => qh,
                2 => _mm256_srli_epi16(qh, 2),
                4 => _mm256_srli_epi16(qh, 4),
                _ => _mm256_srli_epi16(qh, 6),
            };
            _mm256_slli_epi16(_mm256_and_si256(shifted, m3), 4)
        };
        let lo4 = |v: __m256i| _mm256_and_si256(v, m4);
        let hi4 = |v: __m256i| _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        out[4 * half] = _mm256_sub_epi8(_mm256_or_si256(lo4(ql0), hb(0)), m32);
        out[4 * half + 1] = _mm256_sub_epi8(_mm256_or_si256(lo4(ql1), hb(2)), m32);
        out[4 * half + 2] = _mm256_sub_epi8(_mm256_or_si256(hi4(ql0), hb(4)), m32);
        out[4 * half + 3] = _mm256_sub_epi8(_mm256_or_si256(hi4(ql1), hb(6)), m32);
    }
    out
}

/// The 8 block sums of eight 8-lane i32 vectors, in order.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn hsum8(v: &[__m256i; 8]) -> __m256i {
    let h0 = _mm256_hadd_epi32(v[0], v[1]);
    let h1 = _mm256_hadd_epi32(v[2], v[3]);
    let h2 = _mm256_hadd_epi32(v[4], v[5]);
    let h3 = _mm256_hadd_epi32(v[6], v[7]);
    let g0 = _mm256_hadd_epi32(h0, h1);
    let g1 = _mm256_hadd_epi32(h2, h3);
    _mm256_add_epi32(
        _mm256_permute2x128_si256(g0, g1, 0x20),
        _mm256_permute2x128_si256(g0, g1, 0x31),
    )
}

/// How many groups of eight rows ahead [`Avx2Rows8::rows8`] prefetches (measured on qwen2 decode,
/// 1 thread: 0 → 5.7 t/s, 1 → 10.7, 2 → 11.0, 4 → 11.2).
pub(crate) const PREFETCH_GROUPS: usize = 2;

/// Software prefetch for kernels that read eight rows as eight interleaved streams, which the
/// hardware prefetchers follow poorly: the group of eight rows [`PREFETCH_GROUPS`] groups ahead
/// (rows are contiguous in memory) is prefetched a slice per block, so it is in cache when its
/// turn comes.
pub(crate) struct GroupPrefetch {
    base: *const u8,
    lines: usize,
    per_block: usize,
    line: usize,
}

impl GroupPrefetch {
    /// For the group starting at `w` (rows `row_bytes` apart, `nb` blocks each).
    pub(crate) fn new(w: &[u8], row_bytes: usize, nb: usize) -> Self {
        let group = 8 * row_bytes;
        let ahead = w.len().saturating_sub(PREFETCH_GROUPS * group).min(group);
        let lines = ahead.div_ceil(64);
        Self {
            base: w.as_ptr().wrapping_add(PREFETCH_GROUPS * group),
            lines,
            per_block: lines.div_ceil(nb.max(1)),
            line: 0,
        }
    }

    /// Prefetches the next block's slice.
    #[inline]
    pub(crate) fn step(&mut self) {
        let until = (self.line + self.per_block).min(self.lines);
        while self.line < until {
            // SAFETY: a prefetch never faults (and the address lies inside `w` anyway).
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(self.base.wrapping_add(self.line * 64) as *const i8)
            };
            self.line += 1;
        }
    }
}

/// The f16 scales at `p`, `p + row_bytes`, ... (one block of each of eight rows) as eight f32,
/// gathered straight into a vector (going through a stack array would stall on store
/// forwarding).
///
/// # Safety
/// Two readable bytes at each of the eight addresses.
#[inline]
#[target_feature(enable = "avx2,f16c")]
pub(crate) unsafe fn row_scales8(p: *const u8, row_bytes: usize) -> __m256 {
    // SAFETY: caller guarantees the eight scales.
    let h = |r: usize| unsafe { std::ptr::read_unaligned(p.add(r * row_bytes) as *const i16) };
    _mm256_cvtph_ps(_mm_set_epi16(
        h(7),
        h(6),
        h(5),
        h(4),
        h(3),
        h(2),
        h(1),
        h(0),
    ))
}

/// Vectors per block of an 8-row group in [`pack_rows8`]'s layout: the scales, then 8 of codes.
pub(crate) const PACKED_PER_BLOCK: usize = 9;

/// The whole groups of eight rows of `w` (rows `row_bytes` apart, `nb` legacy blocks of kind
/// `K` each) decoded and transposed, for [`LegacyRows8::packed_rows8`]: per group and block, one vector of
/// the eight rows' scales (f32), then eight vectors of codes where vector `v`, dword `r`, holds
/// elements `4v .. 4v + 4` of row `r` (signed for Q8_0, unsigned codes before the offset for
/// Q5_0 / Q4_0). One broadcast activation dword then multiplies all eight rows at once, with no
/// horizontal sums.
#[target_feature(enable = "avx2,f16c")]
pub(crate) unsafe fn pack_rows8<const K: u8>(
    w: &[u8],
    row_bytes: usize,
    nb: usize,
) -> Vec<__m256i> {
    let bs = block_bytes(K);
    let groups = w.len() / row_bytes / 8;
    assert!(row_bytes >= nb * bs);
    let mut out = Vec::with_capacity(groups * nb * PACKED_PER_BLOCK);
    for g in 0..groups {
        let wp = w[g * 8 * row_bytes..].as_ptr();
        for ib in 0..nb {
            // SAFETY: block ib of each of the group's eight rows lies inside w (groups and nb
            // bounded above).
            let dx = unsafe { row_scales8(wp.add(ib * bs), row_bytes) };
            out.push(_mm256_castps_si256(dx));
            let mut xs = [_mm256_setzero_si256(); 8];
            for (r, x) in xs.iter_mut().enumerate() {
                // SAFETY: as above.
                unsafe {
                    let p = wp.add(r * row_bytes + ib * bs);
                    *x = if K == L_Q8_0 {
                        decode::<K>(p)
                    } else {
                        decode_unsigned::<K>(p)
                    };
                }
            }
            out.extend_from_slice(&transpose8x8_epi32(xs));
        }
    }
    out
}

/// The 8×8 dword transpose: dword `r` of result `v` is dword `v` of `x[r]`.
#[inline]
#[target_feature(enable = "avx2")]
fn transpose8x8_epi32(x: [__m256i; 8]) -> [__m256i; 8] {
    let t: [__m256i; 8] = std::array::from_fn(|k| {
        let (a, b) = (x[k / 2 * 2], x[k / 2 * 2 + 1]);
        if k % 2 == 0 {
            _mm256_unpacklo_epi32(a, b)
        } else {
            _mm256_unpackhi_epi32(a, b)
        }
    });
    // u[4h + j] holds dwords j (low lane) and j + 4 (high lane) of rows 4h .. 4h + 4.
    let u: [__m256i; 8] = std::array::from_fn(|k| {
        let (h, j) = (k / 4, k % 4);
        let (a, b) = (t[4 * h + j / 2], t[4 * h + 2 + j / 2]);
        if j % 2 == 0 {
            _mm256_unpacklo_epi64(a, b)
        } else {
            _mm256_unpackhi_epi64(a, b)
        }
    });
    std::array::from_fn(|v| {
        if v < 4 {
            _mm256_permute2x128_si256(u[v], u[4 + v], 0x20)
        } else {
            _mm256_permute2x128_si256(u[v - 4], u[v], 0x31)
        }
    })
}

/// Dots of one legacy-quant weight row with `T` Q8_0 activation rows, block by block in the
/// scalar reference's order. Only the rows of a tile that do not fill a group of eight for
/// [`LegacyRows8::rows8`] come here.
#[target_feature(enable = "avx2,f16c")]
unsafe fn legacy_row<const K: u8, const T: usize>(
    w: &[u8],
    d: [&[f32]; T],
    qs: [&[i8]; T],
) -> [f32; T] {
    let bs = block_bytes(K);
    let nb = d[0].len();
    assert!(w.len() >= nb * bs);
    for t in 0..T {
        assert!(d[t].len() >= nb && qs[t].len() >= nb * QK32);
    }
    let wp = w.as_ptr();
    let mut sumf = [0f32; T];
    let mut ib = 0;
    while ib < nb {
        // SAFETY: block ib < nb in bounds (asserted).
        let x = unsafe { decode::<K>(wp.add(ib * bs)) };
        let dxs = f16_at(&w[ib * bs..]);
        for t in 0..T {
            // SAFETY: activation block ib in bounds (asserted).
            let sumi = hsum(mul_sum_i8(x, unsafe {
                load(qs[t].as_ptr().add(ib * QK32) as *const u8)
            }));
            let dy = d[t][ib];
            sumf[t] += if K == L_Q4_0 {
                sumi as f32 * dxs * dy
            } else {
                sumi as f32 * (dxs * dy)
            };
        }
        ib += 1;
    }
    sumf
}

/// Decodes one Q5_0 / Q4_0 block at `p` into its 32 unsigned codes (0..32 / 0..16, before the
/// format's offset is taken off), in ggml element order.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn decode_unsigned<const K: u8>(p: *const u8) -> __m256i {
    // SAFETY: caller guarantees a whole block of kind K at `p`.
    unsafe {
        match K {
            L_Q5_0 => {
                let qh = std::ptr::read_unaligned(p.add(2) as *const u32);
                let hi = _mm256_and_si256(bytes_from_bits_32(qh), _mm256_set1_epi8(0x10));
                _mm256_or_si256(nibbles(p.add(6)), hi)
            }
            _ => nibbles(p.add(2)),
        }
    }
}

/// Sum of the 32 products of unsigned bytes `x` (< 128) and signed bytes `y`, as 8 i32 partial
/// sums.
#[inline]
#[target_feature(enable = "avx2")]
fn mul_sum_u8_i8(x: __m256i, y: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), _mm256_set1_epi16(1))
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

#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn hsum(a: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
    let s = _mm_hadd_epi32(s, s);
    let s = _mm_hadd_epi32(s, s);
    _mm_cvtsi128_si32(s)
}
