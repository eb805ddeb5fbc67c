//! AVX2 decoding of GGUF blocks shared by both AVX2 backends (`avx2`, ggml's generic float
//! order, and `avx2-x86`, ggml's x86 order): only integer work, so exact in either order.

use std::arch::x86_64::*;

/// Legacy block kinds (the `K` parameter of the legacy kernels).
pub(crate) const L_Q8_0: u8 = 0;
pub(crate) const L_Q5_0: u8 = 1;
pub(crate) const L_Q4_0: u8 = 2;

/// Bytes per block of legacy kind `K`.
pub(crate) const fn block_bytes(k: u8) -> usize {
    match k {
        L_Q8_0 => 34,
        L_Q5_0 => 22,
        _ => 18,
    }
}

/// Decodes one legacy block at `p` into 32 signed weight bytes (ggml element order).
///
/// # Safety
/// A whole block of kind `K` at `p`.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn decode<const K: u8>(p: *const u8) -> __m256i {
    // SAFETY: caller guarantees a whole block of kind K at `p`.
    unsafe {
        match K {
            L_Q8_0 => load(p.add(2)),
            L_Q5_0 => {
                let qh = std::ptr::read_unaligned(p.add(2) as *const u32);
                let hi =
                    _mm256_andnot_si256(bytes_from_bits_32(qh), _mm256_set1_epi8(0xF0u8 as i8));
                _mm256_or_si256(nibbles(p.add(6)), hi)
            }
            _ => _mm256_sub_epi8(nibbles(p.add(2)), _mm256_set1_epi8(8)),
        }
    }
}

/// The 8 scales and 8 mins of a Q4_K super-block (6-bit packed in 12 bytes at `p`), as
/// `(scales, mins)` little-endian byte pairs of u64: ggml's x86 word-mask unpacking, the same
/// values as [`super::dequant::scale_min_k4`] for `j = 0..8`.
///
/// # Safety
/// 12 readable bytes at `p`.
#[inline]
pub(crate) unsafe fn q4_k_scales_mins(p: *const u8) -> (u64, u64) {
    const KMASK1: u32 = 0x3f3f_3f3f;
    const KMASK2: u32 = 0x0f0f_0f0f;
    const KMASK3: u32 = 0x0303_0303;
    // SAFETY: caller guarantees 12 bytes.
    let (u0, u1, u2) = unsafe {
        (
            std::ptr::read_unaligned(p as *const u32),
            std::ptr::read_unaligned(p.add(4) as *const u32),
            std::ptr::read_unaligned(p.add(8) as *const u32),
        )
    };
    // scales 0..3 = low 6 bits of bytes 0..3; scales 4..7 = low nibbles of bytes 8..11 with
    // the top 2 bits of bytes 0..3; mins likewise from bytes 4..7 and the high nibbles.
    let sc_lo = u0 & KMASK1;
    let sc_hi = (u2 & KMASK2) | (((u0 >> 6) & KMASK3) << 4);
    let mn_lo = u1 & KMASK1;
    let mn_hi = ((u2 >> 4) & KMASK2) | (((u1 >> 6) & KMASK3) << 4);
    (
        sc_lo as u64 | (sc_hi as u64) << 32,
        mn_lo as u64 | (mn_hi as u64) << 32,
    )
}

/// Loads 32 bytes at `p`.
///
/// # Safety
/// 32 readable bytes at `p`.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn load(p: *const u8) -> __m256i {
    // SAFETY: caller guarantees 32 readable bytes.
    unsafe { _mm256_loadu_si256(p as *const __m256i) }
}

/// 16 packed nibbles -> 32 bytes: low nibbles first, then high nibbles (ggml's element order).
///
/// # Safety
/// 16 readable bytes at `p`.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn nibbles(p: *const u8) -> __m256i {
    // The 16 bytes in both halves (one broadcast load), the upper half shifted right by 4:
    // one shift and one mask instead of a shift, an insert and a mask.
    // SAFETY: caller guarantees 16 readable bytes.
    let q = unsafe { _mm_loadu_si128(p as *const __m128i) };
    let q = _mm256_set_m128i(q, q);
    let both = _mm256_srlv_epi32(q, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// Byte `i` = 0xFF when bit `i` of `x` is set, else 0.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn bytes_from_bits_32(x: u32) -> __m256i {
    let shuf = _mm256_set_epi64x(
        0x0303030303030303,
        0x0202020202020202,
        0x0101010101010101,
        0,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x as i32), shuf);
    let mask = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
    _mm256_cmpeq_epi8(_mm256_or_si256(bytes, mask), _mm256_set1_epi64x(-1))
}

#[cfg(test)]
mod tests {
    use super::super::dequant::scale_min_k4;
    use super::q4_k_scales_mins;

    #[test]
    fn word_unpacking_of_k4_scales_matches_the_per_index_one() {
        let mut x = 0x2545_F491u32;
        for _ in 0..20_000 {
            let q: [u8; 12] = std::array::from_fn(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            });
            // SAFETY: 12 bytes.
            let (sc, mn) = unsafe { q4_k_scales_mins(q.as_ptr()) };
            let (sc, mn) = (sc.to_le_bytes(), mn.to_le_bytes());
            for j in 0..8 {
                assert_eq!((sc[j], mn[j]), scale_min_k4(j, &q), "{q:?} j={j}");
            }
        }
    }
}
