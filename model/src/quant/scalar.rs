//! Scalar reference vec-dot kernels: each computes exactly what ggml's portable
//! `ggml_vec_dot_<w>_<a>_generic` computes (int32 sums inside a block, then the same f32
//! operations in the same order). Rust never fuses multiply-adds, so results are reproducible.
//! Loops index like the C code on purpose, to make the correspondence easy to check.
#![allow(clippy::needless_range_loop)]

use super::act::{Q8_0Acts, Q8KActs};
use super::dequant::{f16_at, scale_min_k4};
use super::types::{QK_K, QK32};

/// One activation row quantized to Q8_0: `d.len()` blocks, `qs.len() == 32 * d.len()`.
#[derive(Clone, Copy, Debug)]
pub struct Q8_0Row<'a> {
    /// Block scales.
    pub d: &'a [f32],
    /// Quants.
    pub qs: &'a [i8],
}

/// One activation row quantized to Q8_K.
#[derive(Clone, Copy, Debug)]
pub struct Q8KRow<'a> {
    /// Block scales.
    pub d: &'a [f32],
    /// Quants (256 per block).
    pub qs: &'a [i8],
    /// Sums of 16 quants (16 per block).
    pub bsums: &'a [i16],
}

impl Q8_0Acts {
    /// The block sums of row `t` of `cols` elements, when they were recorded (they are by
    /// [`super::quantize_row_q8_0`] and [`super::quantize_row_q8_0_ref`]).
    pub fn row_sums(&self, t: usize, cols: usize) -> Option<&[i16]> {
        let nb = cols / QK32;
        self.sums.get(t * nb..(t + 1) * nb)
    }

    /// Row `t` of `cols` elements.
    pub fn row(&self, t: usize, cols: usize) -> Q8_0Row<'_> {
        let nb = cols / QK32;
        Q8_0Row {
            d: &self.d[t * nb..(t + 1) * nb],
            qs: &self.qs[t * cols..(t + 1) * cols],
        }
    }
}

impl Q8KActs {
    /// Row `t` of `cols` elements.
    pub fn row(&self, t: usize, cols: usize) -> Q8KRow<'_> {
        let nb = cols / QK_K;
        Q8KRow {
            d: &self.d[t * nb..(t + 1) * nb],
            qs: &self.qs[t * cols..(t + 1) * cols],
            bsums: &self.bsums[t * nb * 16..(t + 1) * nb * 16],
        }
    }
}

/// `ggml_vec_dot_q8_0_q8_0_generic`: `sumf += sumi * (dx * dy)` per block.
pub fn dot_q8_0_q8_0(w: &[u8], a: Q8_0Row<'_>) -> f32 {
    let mut sumf = 0f32;
    for (ib, b) in w.chunks_exact(34).enumerate() {
        let q = &a.qs[ib * QK32..ib * QK32 + QK32];
        let mut sumi = 0i32;
        for j in 0..QK32 {
            sumi += (b[2 + j] as i8 as i32) * q[j] as i32;
        }
        sumf += sumi as f32 * (f16_at(b) * a.d[ib]);
    }
    sumf
}

/// Int sum of one Q5_0 block against 32 activation quants (shared with the SIMD tests).
#[inline(always)]
pub(crate) fn q5_0_block_sumi(b: &[u8], q: &[i8]) -> i32 {
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    let (mut s0, mut s1) = (0i32, 0i32);
    for j in 0..16 {
        let xh0 = (((qh >> j) & 1) << 4) as u8;
        let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
        let x0 = ((qs[j] & 0x0F) | xh0) as i32 - 16;
        let x1 = ((qs[j] >> 4) | xh1) as i32 - 16;
        s0 += x0 * q[j] as i32;
        s1 += x1 * q[j + 16] as i32;
    }
    s0 + s1
}

/// `ggml_vec_dot_q5_0_q8_0_generic`: `sumf += (dx * dy) * sumi` per block.
pub fn dot_q5_0_q8_0(w: &[u8], a: Q8_0Row<'_>) -> f32 {
    let mut sumf = 0f32;
    for (ib, b) in w.chunks_exact(22).enumerate() {
        let sumi = q5_0_block_sumi(b, &a.qs[ib * QK32..ib * QK32 + QK32]);
        sumf += (f16_at(b) * a.d[ib]) * sumi as f32;
    }
    sumf
}

/// `ggml_vec_dot_q4_0_q8_0_generic`: `sumf += sumi * dx * dy` per block.
pub fn dot_q4_0_q8_0(w: &[u8], a: Q8_0Row<'_>) -> f32 {
    let mut sumf = 0f32;
    for (ib, b) in w.chunks_exact(18).enumerate() {
        let q = &a.qs[ib * QK32..ib * QK32 + QK32];
        let (mut s0, mut s1) = (0i32, 0i32);
        for j in 0..16 {
            s0 += ((b[2 + j] & 0x0F) as i32 - 8) * q[j] as i32;
            s1 += ((b[2 + j] >> 4) as i32 - 8) * q[j + 16] as i32;
        }
        sumf += (s0 + s1) as f32 * f16_at(b) * a.d[ib];
    }
    sumf
}

/// The 8 lane sums (`aux32`) of one Q4_K super-block against Q8_K quants, and the min sum
/// `sum_j bsums[j] * mins[j / 2]`, exactly as `ggml_vec_dot_q4_K_q8_K_generic` forms them.
#[inline(always)]
pub(crate) fn q4_k_block_ints(b: &[u8], q8: &[i8], bsums: &[i16]) -> ([i32; 8], i32) {
    let scales = &b[4..16];
    let qs = &b[16..144];
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..8 {
        (sc[j], mn[j]) = scale_min_k4(j, scales);
    }
    let mut summ = 0i32;
    for j in 0..16 {
        summ += bsums[j] as i32 * mn[j / 2] as i32;
    }
    let mut aux32 = [0i32; 8];
    for j in 0..8 {
        // sub-block j: 32 values; low nibbles of chunk j/2 for even j, high nibbles for odd j
        let chunk = &qs[(j / 2) * 32..(j / 2) * 32 + 32];
        let scale = sc[j] as i32;
        for k in 0..4 {
            for l in 0..8 {
                let idx = k * 8 + l;
                let a = if j % 2 == 0 {
                    chunk[idx] & 0xF
                } else {
                    chunk[idx] >> 4
                } as i32;
                let p = (q8[j * 32 + idx] as i32 * a) as i16 as i32;
                aux32[l] += scale * p;
            }
        }
    }
    (aux32, summ)
}

/// `ggml_vec_dot_q4_K_q8_K_generic`: 8 f32 lane sums `sums[l] += d * aux32[l]`,
/// `sumf -= dmin * summ` per block, then `sumf += sums[0..8]` in order.
pub fn dot_q4_k_q8_k(w: &[u8], a: Q8KRow<'_>) -> f32 {
    let mut sums = [0f32; 8];
    let mut sumf = 0f32;
    for (i, b) in w.chunks_exact(144).enumerate() {
        let (aux32, summ) = q4_k_block_ints(
            b,
            &a.qs[i * QK_K..(i + 1) * QK_K],
            &a.bsums[i * 16..i * 16 + 16],
        );
        let d = f16_at(b) * a.d[i];
        for l in 0..8 {
            sums[l] += d * aux32[l] as f32;
        }
        let dmin = f16_at(&b[2..]) * a.d[i];
        sumf -= dmin * summ as f32;
    }
    for s in sums {
        sumf += s;
    }
    sumf
}

/// The 8 lane sums (`aux32`) of one Q6_K super-block against Q8_K quants, as
/// `ggml_vec_dot_q6_K_q8_K_generic` forms them.
#[inline(always)]
pub(crate) fn q6_k_block_ints(b: &[u8], q8: &[i8]) -> [i32; 8] {
    let mut a = [0i8; QK_K];
    for half in 0..2 {
        let ql = &b[half * 64..half * 64 + 64];
        let qh = &b[128 + half * 32..128 + half * 32 + 32];
        let aa = &mut a[half * 128..half * 128 + 128];
        for l in 0..32 {
            aa[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
            aa[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            aa[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            aa[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    let scales = &b[192..208];
    let mut aux32 = [0i32; 8];
    for j in 0..16 {
        let scale = scales[j] as i8 as i32;
        for k in 0..2 {
            for l in 0..8 {
                let idx = j * 16 + k * 8 + l;
                let p = (q8[idx] as i32 * a[idx] as i32) as i16 as i32;
                aux32[l] += scale * p;
            }
        }
    }
    aux32
}

/// `ggml_vec_dot_q6_K_q8_K_generic`: `sums[l] += d * aux32[l]` per block, then summed in order.
pub fn dot_q6_k_q8_k(w: &[u8], a: Q8KRow<'_>) -> f32 {
    let mut sums = [0f32; 8];
    for (i, b) in w.chunks_exact(210).enumerate() {
        let aux32 = q6_k_block_ints(b, &a.qs[i * QK_K..(i + 1) * QK_K]);
        let d = f16_at(&b[208..]) * a.d[i];
        for l in 0..8 {
            sums[l] += d * aux32[l] as f32;
        }
    }
    let mut sumf = 0f32;
    for s in sums {
        sumf += s;
    }
    sumf
}

/// `ggml_vec_dot_f32` without SIMD: products in f32, accumulated in f64 (`ggml_float`).
pub fn dot_f32_f32(w: &[u8], x: &[f32]) -> f32 {
    let mut sum = 0f64;
    for (c, &xv) in w.chunks_exact(4).zip(x) {
        sum += (f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * xv) as f64;
    }
    sum as f32
}

/// `ggml_vec_dot_f16` without SIMD: `x` holds activations already rounded to f16 (as ggml
/// converts them), products in f32, accumulated in f64.
pub fn dot_f16_f16(w: &[u8], x: &[f32]) -> f32 {
    let mut sum = 0f64;
    for (c, &xv) in w.chunks_exact(2).zip(x) {
        sum += (f16_at(c) * xv) as f64;
    }
    sum as f32
}
