//! The compact eight-row layout of Q5_0 / Q4_0 matrices, kept at load time for every product
//! (see `super::packed`), and its kernels.
//!
//! Why: the GGUF layout keeps each row's blocks together, so the eight-row kernels hold one row
//! per vector and pay a horizontal sum of eight vectors per block **and token** to form the
//! eight rows' block sums — half the integer work of a decode step of several sequences. The
//! packed layout of the Q8_0 heads (`super::avx2::pack_rows8`) avoids it but stores decoded
//! codes: +64 % memory for Q5_0, too much for the bulk of a model. This layout stores the same
//! bits as the GGUF blocks, only transposed, so it costs **no extra memory** (the raw pages are
//! released as packing proceeds) and unpacks to the broadcast-friendly form with two or three
//! instructions per code vector. Per group of eight rows, in order:
//!
//! - `4 * nb` nibble vectors: vector `4 * ib + u`, dword `r` = bytes `4u .. 4u + 4` of row `r`'s
//!   `qs` in block `ib` (low nibbles: elements `4u ..`; high nibbles: elements `16 + 4u ..`);
//! - Q5_0 only, `nb` mask vectors: vector `ib`, dword `v` = the fifth bits of code vector `v`
//!   (bit `4r + j` = bit `4v + j` of row `r`'s `qh`);
//! - `ceil(nb / 2)` vectors of scales: f16 number `8 * ib + r` is row `r`'s scale in block `ib`.
//!
//! Results are bit-identical to the raw kernels and the scalar reference: the block sums are
//! exact integers, and the float operations are the same ones in the same order.

use super::avx2::{GroupPrefetch, lanes8, scaled};
use super::avx2_blocks::{L_Q4_0, L_Q5_0, block_bytes, bytes_from_bits_32};
use super::types::QK32;
use std::arch::x86_64::*;

/// Vectors per group of eight rows of `nb` blocks of kind `k` (Q5_0 or Q4_0).
pub(crate) const fn group_vecs(k: u8, nb: usize) -> usize {
    4 * nb + mask_vecs(k, nb) + nb.div_ceil(2)
}

/// Mask vectors per group: one per block for Q5_0, none for Q4_0.
const fn mask_vecs(k: u8, nb: usize) -> usize {
    if k == L_Q5_0 { nb } else { 0 }
}

/// Byte offset of the `qs` nibbles in a block of kind `k`.
const fn qs_offset(k: u8) -> usize {
    if k == L_Q5_0 { 6 } else { 2 }
}

/// The whole groups of eight rows of `w` (rows `row_bytes` apart, `nb` blocks of kind `K`
/// each) in the compact layout (see the module doc). Plain byte moves: any x86-64 CPU.
pub(crate) fn pack<const K: u8>(w: &[u8], row_bytes: usize, nb: usize) -> Vec<__m256i> {
    assert!(K == L_Q5_0 || K == L_Q4_0);
    let bs = block_bytes(K);
    assert!(row_bytes >= nb * bs);
    let groups = w.len() / row_bytes / 8;
    let per = group_vecs(K, nb);
    // SAFETY: an all-zero __m256i is a valid value.
    let mut out = vec![unsafe { std::mem::zeroed::<__m256i>() }; groups * per];
    // SAFETY: the vectors are plain bytes; the view covers exactly the vector storage.
    let bytes =
        unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut u8, out.len() * 32) };
    let (masks_at, scales_at) = (4 * nb * 32, (4 * nb + mask_vecs(K, nb)) * 32);
    for g in 0..groups {
        let dst = &mut bytes[g * per * 32..][..per * 32];
        for r in 0..8 {
            let row = &w[(8 * g + r) * row_bytes..][..nb * bs];
            for (ib, b) in row.chunks_exact(bs).enumerate() {
                dst[scales_at + (8 * ib + r) * 2..][..2].copy_from_slice(&b[..2]);
                let qs = &b[qs_offset(K)..][..16];
                for u in 0..4 {
                    dst[(4 * ib + u) * 32 + 4 * r..][..4].copy_from_slice(&qs[4 * u..4 * u + 4]);
                }
                if K == L_Q5_0 {
                    let qh = u32::from_le_bytes(b[2..6].try_into().expect("4 bytes"));
                    for v in 0..8 {
                        let at = masks_at + ib * 32 + 4 * v;
                        let mut m = u32::from_le_bytes(dst[at..at + 4].try_into().expect("4"));
                        m |= ((qh >> (4 * v)) & 0xF) << (4 * r);
                        dst[at..at + 4].copy_from_slice(&m.to_le_bytes());
                    }
                }
            }
        }
    }
    out
}

/// Row `lane` (< 8) of a compact group (`nb` blocks of kind `K`) rebuilt as its GGUF blocks
/// (`nb * block_bytes(K)` bytes), so it dequantizes with the raw rows' own code.
pub(crate) fn unpack_row<const K: u8>(group: &[__m256i], nb: usize, lane: usize) -> Vec<u8> {
    assert!(lane < 8 && group.len() == group_vecs(K, nb));
    // SAFETY: plain reinterpretation of the vectors as bytes.
    let g = unsafe { std::slice::from_raw_parts(group.as_ptr() as *const u8, group.len() * 32) };
    let (masks_at, scales_at) = (4 * nb * 32, (4 * nb + mask_vecs(K, nb)) * 32);
    let bs = block_bytes(K);
    let mut row = vec![0u8; nb * bs];
    for (ib, b) in row.chunks_exact_mut(bs).enumerate() {
        b[..2].copy_from_slice(&g[scales_at + (8 * ib + lane) * 2..][..2]);
        for u in 0..4 {
            let src = &g[(4 * ib + u) * 32 + 4 * lane..][..4];
            b[qs_offset(K) + 4 * u..][..4].copy_from_slice(src);
        }
        if K == L_Q5_0 {
            let mut qh = 0u32;
            for v in 0..8 {
                let at = masks_at + ib * 32 + 4 * v;
                let m = u32::from_le_bytes(g[at..at + 4].try_into().expect("4 bytes"));
                qh |= ((m >> (4 * lane)) & 0xF) << (4 * v);
            }
            b[2..6].copy_from_slice(&qh.to_le_bytes());
        }
    }
    row
}

/// Compact groups (`p`: whole groups of `nb` blocks of kind `K`) decoded into
/// `super::avx2::pack_rows8`'s layout (per block: the eight scales as f32, then eight code
/// vectors), bit for bit what `pack_rows8` makes of the same rows: for a prompt's tile, whose
/// token groups then share one decoding.
///
/// # Safety
/// AVX2 and F16C available.
#[target_feature(enable = "avx2,f16c")]
pub(crate) unsafe fn decode_groups<const K: u8>(p: &[__m256i], nb: usize) -> Vec<__m256i> {
    let per = group_vecs(K, nb);
    assert!(p.len().is_multiple_of(per));
    let low = _mm256_set1_epi8(0x0F);
    let fifth = _mm256_set1_epi8(0x10);
    let mut out = Vec::with_capacity(p.len() / per * nb * super::avx2::PACKED_PER_BLOCK);
    for g in p.chunks_exact(per) {
        let (nib, masks, scales) = parts::<K>(g, nb);
        for ib in 0..nb {
            // SAFETY: block ib's vectors, masks and scales lie inside the group.
            unsafe {
                let dx = _mm256_cvtph_ps(_mm_loadu_si128(scales.add(8 * ib) as *const __m128i));
                out.push(_mm256_castps_si256(dx));
                for v in 0..8 {
                    let n = _mm256_load_si256(nib.add(4 * ib + v % 4));
                    let x = if v < 4 { n } else { _mm256_srli_epi16(n, 4) };
                    let mut x = _mm256_and_si256(x, low);
                    if K == L_Q5_0 {
                        let hb = bytes_from_bits_32(*masks.add(8 * ib + v));
                        x = _mm256_or_si256(x, _mm256_and_si256(hb, fifth));
                    }
                    out.push(x);
                }
            }
        }
    }
    out
}

/// Checks the activations' lengths for the kernels below and splits `tail` (a group and the
/// groups after it) into the group and a prefetcher for the groups ahead. Returns `nb` too.
fn check<'a, const K: u8, const T: usize>(
    tail: &'a [__m256i],
    d: [&[f32]; T],
    qs: [&[i8]; T],
    sy: [&[i16]; T],
) -> (usize, &'a [__m256i], GroupPrefetch) {
    let nb = d[0].len();
    let per = group_vecs(K, nb);
    assert!(tail.len() >= per && tail.len().is_multiple_of(per));
    for t in 0..T {
        assert!(d[t].len() >= nb && qs[t].len() >= nb * QK32 && sy[t].len() >= nb);
    }
    // SAFETY: plain reinterpretation of the vectors as bytes.
    let bytes = unsafe { std::slice::from_raw_parts(tail.as_ptr() as *const u8, tail.len() * 32) };
    // A group is one contiguous stream of `per * 32` bytes: "rows" of an eighth of it.
    (nb, &tail[..per], GroupPrefetch::new(bytes, per * 4, nb))
}

/// Independent integer accumulators per token: with few tokens, one chain of eight
/// multiply-adds per block would wait on its own latency.
const fn chains(t: usize) -> usize {
    match t {
        1 => 4,
        2 => 2,
        _ => 1,
    }
}

/// The offset a code carries (16 for Q5_0, 8 for Q4_0): taken off as offset × the activation
/// block's sum, exactly, in integers.
const fn offset(k: u8) -> i32 {
    if k == L_Q5_0 { 16 } else { 8 }
}

/// Activation dword `v` (elements `4v .. 4v + 4`) of block `ib` of `qs`, in every lane.
///
/// # Safety
/// Block `ib` lies inside `qs`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn y_dword(qs: &[i8], ib: usize, v: usize) -> __m256i {
    // SAFETY: forwarded from the caller.
    _mm256_set1_epi32(unsafe {
        std::ptr::read_unaligned(qs.as_ptr().add(ib * QK32 + 4 * v) as *const i32)
    })
}

/// The compact group's pointers: nibble vectors, masks (u32), scales (f16 bits).
fn parts<const K: u8>(g: &[__m256i], nb: usize) -> (*const __m256i, *const u32, *const u16) {
    let base = g.as_ptr();
    // The offsets lie inside the group (its length is checked by `check`).
    (
        base,
        base.wrapping_add(4 * nb) as *const u32,
        base.wrapping_add(4 * nb + mask_vecs(K, nb)) as *const u16,
    )
}

/// Dots of a compact group's eight rows with `T` Q8_0 activation rows, AVX2 (`maddubs`):
/// `result[t][r]` = row `r` · token `t`. `tail` is the group followed by the groups after it
/// in the same matrix (prefetched ahead).
///
/// # Safety
/// AVX2 and F16C available.
#[target_feature(enable = "avx2,f16c")]
pub(crate) unsafe fn rows8_avx2<const K: u8, const T: usize>(
    tail: &[__m256i],
    d: [&[f32]; T],
    qs: [&[i8]; T],
    sy: [&[i16]; T],
) -> [[f32; 8]; T] {
    let (nb, g, mut prefetch) = check::<K, T>(tail, d, qs, sy);
    let (nib, masks, scales) = parts::<K>(g, nb);
    let (low, fifth, ones) = (
        _mm256_set1_epi8(0x0F),
        _mm256_set1_epi8(0x10),
        _mm256_set1_epi16(1),
    );
    let mut acc = [_mm256_setzero_ps(); T];
    for ib in 0..nb {
        prefetch.step();
        // SAFETY: block ib's vectors, masks and scales lie inside the group (checked); the
        // activation blocks are checked too.
        unsafe {
            let dx = _mm256_cvtph_ps(_mm_loadu_si128(scales.add(8 * ib) as *const __m128i));
            // Codes < 32 and |y| <= 128: each i16 lane of a product is below 8192 in
            // magnitude, so four of them add up exactly in i16 (chain c of token t takes
            // code vectors c, c + chains, ... of each half: at most four).
            let mut s32 = [_mm256_setzero_si256(); T];
            for half in 0..2 {
                let mut s16 = [[_mm256_setzero_si256(); 4]; T];
                for u in 0..4 {
                    let n = _mm256_load_si256(nib.add(4 * ib + u));
                    let v = u + 4 * half;
                    let mut x = if half == 0 {
                        n
                    } else {
                        _mm256_srli_epi16(n, 4)
                    };
                    x = _mm256_and_si256(x, low);
                    if K == L_Q5_0 {
                        let hb = bytes_from_bits_32(*masks.add(8 * ib + v));
                        x = _mm256_or_si256(x, _mm256_and_si256(hb, fifth));
                    }
                    let c = u % chains(T);
                    for (t, s) in s16.iter_mut().enumerate() {
                        let p = _mm256_maddubs_epi16(x, y_dword(qs[t], ib, v));
                        s[c] = _mm256_add_epi16(s[c], p);
                    }
                }
                for (s, h) in s32.iter_mut().zip(s16) {
                    for h in &h[..chains(T)] {
                        *s = _mm256_add_epi32(*s, _mm256_madd_epi16(*h, ones));
                    }
                }
            }
            for t in 0..T {
                let s = offset(K) * *sy[t].get_unchecked(ib) as i32;
                let si = _mm256_sub_epi32(s32[t], _mm256_set1_epi32(s));
                let dy = _mm256_set1_ps(*d[t].get_unchecked(ib));
                acc[t] = _mm256_add_ps(acc[t], scaled::<K>(si, dx, dy));
            }
        }
    }
    acc.map(|v| lanes8(v))
}

/// [`rows8_avx2`] with AVX-512: one `vpdpbusd` per code vector and token, and Q5_0's fifth bit
/// set by one masked add.
///
/// # Safety
/// AVX2, F16C, AVX512F/BW/VL and VNNI available.
#[target_feature(enable = "avx2,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn rows8_vnni<const K: u8, const T: usize>(
    tail: &[__m256i],
    d: [&[f32]; T],
    qs: [&[i8]; T],
    sy: [&[i16]; T],
) -> [[f32; 8]; T] {
    let (nb, g, mut prefetch) = check::<K, T>(tail, d, qs, sy);
    let (nib, masks, scales) = parts::<K>(g, nb);
    let (low, sixteen) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(16));
    let mut acc = [_mm256_setzero_ps(); T];
    for ib in 0..nb {
        prefetch.step();
        // SAFETY: as in `rows8_avx2`.
        unsafe {
            let dx = _mm256_cvtph_ps(_mm_loadu_si128(scales.add(8 * ib) as *const __m128i));
            let mut s = [[_mm256_setzero_si256(); 4]; T];
            for u in 0..4 {
                let n = _mm256_load_si256(nib.add(4 * ib + u));
                let c = u % chains(T);
                for half in 0..2 {
                    let v = u + 4 * half;
                    let mut x = if half == 0 {
                        n
                    } else {
                        _mm256_srli_epi16(n, 4)
                    };
                    x = _mm256_and_si256(x, low);
                    if K == L_Q5_0 {
                        x = _mm256_mask_add_epi8(x, *masks.add(8 * ib + v), x, sixteen);
                    }
                    for (t, s) in s.iter_mut().enumerate() {
                        s[c] = _mm256_dpbusd_epi32(s[c], x, y_dword(qs[t], ib, v));
                    }
                }
            }
            for t in 0..T {
                let mut s32 = s[t][0];
                for &c in &s[t][1..chains(T)] {
                    s32 = _mm256_add_epi32(s32, c);
                }
                let o = offset(K) * *sy[t].get_unchecked(ib) as i32;
                let si = _mm256_sub_epi32(s32, _mm256_set1_epi32(o));
                let dy = _mm256_set1_ps(*d[t].get_unchecked(ib));
                acc[t] = _mm256_add_ps(acc[t], scaled::<K>(si, dx, dy));
            }
        }
    }
    acc.map(|v| lanes8(v))
}
