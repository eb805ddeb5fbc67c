//! NEON vec-dot kernels (aarch64, e.g. the Raspberry Pi), plus a `dotprod` (`SDOT`) variant for
//! the legacy formats, chosen at run time.
//!
//! As in the AVX2 backend, integer sums are computed with SIMD (integer arithmetic is exact, so
//! any order gives the same sums) and the float combination performs the same f32 operations in
//! the same order as the scalar reference (`super::dot`), with separate multiplies and adds (never
//! a fused multiply-add). Results are therefore bit-identical to the scalar path.
//!
//! The k-quant kernels need ggml's generic per-lane sums (lane `l` collects elements whose index
//! is `l` mod 8); widening multiplies (`SMULL`/`SMLAL`) produce exactly those lanes, so they are
//! shared by both variants. `SDOT` sums groups of 4 consecutive bytes, which suits the legacy
//! formats (one int sum per 32-element block).
//!
//! NEON is part of the aarch64 baseline, so the plain kernels need no runtime check; the
//! `dotprod` kernels are only selected when the CPU reports it (`SDOT` is emitted with inline
//! assembly because its intrinsic is not stable in Rust yet).

use super::dequant::{f16_at, scale_min_k4};
use super::kernels::RowFn;
use super::matrix::Activations;
use super::types::{GgmlType, QK_K, QK32};
use std::arch::aarch64::*;
use std::arch::asm;

/// The NEON row kernel for `ty`, if there is one. With `dotprod`, callers must have checked
/// that the CPU supports it.
pub(crate) fn row_fn(ty: GgmlType, dotprod: bool) -> Option<RowFn> {
    Some(match (ty, dotprod) {
        (GgmlType::Q8_0, false) => legacy_rows::<L_Q8_0, false>,
        (GgmlType::Q5_0, false) => legacy_rows::<L_Q5_0, false>,
        (GgmlType::Q4_0, false) => legacy_rows::<L_Q4_0, false>,
        (GgmlType::Q8_0, true) => legacy_rows::<L_Q8_0, true>,
        (GgmlType::Q5_0, true) => legacy_rows::<L_Q5_0, true>,
        (GgmlType::Q4_0, true) => legacy_rows::<L_Q4_0, true>,
        (GgmlType::Q4_K, _) => r_q4_k,
        (GgmlType::Q6_K, _) => r_q6_k,
        _ => return None,
    })
}

const L_Q8_0: u8 = 0;
const L_Q5_0: u8 = 1;
const L_Q4_0: u8 = 2;

/// Bytes per block of legacy kind `K`.
const fn block_bytes(k: u8) -> usize {
    match k {
        L_Q8_0 => 34,
        L_Q5_0 => 22,
        _ => 18,
    }
}

/// Row kernel for Q8_0 / Q5_0 / Q4_0 weights and 1..=4 tokens (`DOT`: use `SDOT`).
fn legacy_rows<const K: u8, const DOT: bool>(
    w: &[u8],
    a: &Activations,
    t0: usize,
    out: &mut [f32],
) {
    let q = a.q8_0();
    let cols = a.cols();
    macro_rules! go {
        ($t:literal) => {{
            let rows: [_; $t] = std::array::from_fn(|k| q.row(t0 + k, cols));
            let (d, qs) = (rows.map(|r| r.d), rows.map(|r| r.qs));
            let r = if DOT {
                // SAFETY: the dotprod variant is only selected when the CPU reports dotprod;
                // lengths are asserted inside.
                unsafe { legacy_row_dot::<K, $t>(w, d, qs) }
            } else {
                // SAFETY: lengths are asserted inside; NEON is baseline on aarch64.
                unsafe { legacy_row_neon::<K, $t>(w, d, qs) }
            };
            out.copy_from_slice(&r);
        }};
    }
    match out.len() {
        1 => go!(1),
        2 => go!(2),
        3 => go!(3),
        4 => go!(4),
        n => unreachable!("row kernels take 1..=4 tokens, got {n}"),
    }
}

/// `SDOT`: lane `i` of `acc` += sum of the 4 byte products `4i..4i+4` of `x` and `y`.
#[inline]
#[target_feature(enable = "dotprod")]
fn sdot(mut acc: int32x4_t, x: int8x16_t, y: int8x16_t) -> int32x4_t {
    // SAFETY: register-only instruction, available with the enabled `dotprod` feature.
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {x:v}.16b, {y:v}.16b",
            acc = inout(vreg) acc,
            x = in(vreg) x,
            y = in(vreg) y,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// Four f16 values (packed little-endian in `h`) widened to f32 (`FCVTL`, exact; base ARMv8).
#[inline]
#[target_feature(enable = "neon")]
fn f16x4_to_f32(h: u64) -> float32x4_t {
    let r: float32x4_t;
    // SAFETY: register-only instruction of the aarch64 baseline (FP/SIMD).
    unsafe {
        asm!(
            "fcvtl {r:v}.4s, {h:v}.4h",
            r = out(vreg) r,
            h = in(vreg) vcreate_u16(h),
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    r
}

/// Sum of the 32 byte products of `(x0, x1)` and `(y0, y1)` as 4 i32 partial sums.
#[inline(always)]
unsafe fn dot32<const DOT: bool>(
    x0: int8x16_t,
    x1: int8x16_t,
    y0: int8x16_t,
    y1: int8x16_t,
) -> int32x4_t {
    // SAFETY: only inlined into kernels compiled with NEON, and with dotprod when DOT (which
    // run only when the CPU reports it).
    unsafe {
        if DOT {
            sdot(sdot(vdupq_n_s32(0), x0, y0), x1, y1)
        } else {
            let a = vpaddlq_s16(vmull_s8(vget_low_s8(x0), vget_low_s8(y0)));
            let a = vpadalq_s16(a, vmull_high_s8(x0, y0));
            let a = vpadalq_s16(a, vmull_s8(vget_low_s8(x1), vget_low_s8(y1)));
            vpadalq_s16(a, vmull_high_s8(x1, y1))
        }
    }
}

/// Decodes one legacy block at `p` into 32 signed weight bytes (ggml element order) as two
/// 16-byte halves.
#[inline(always)]
unsafe fn decode<const K: u8>(p: *const u8) -> (int8x16_t, int8x16_t) {
    // SAFETY: caller guarantees a whole block of kind K at `p`.
    unsafe {
        match K {
            L_Q8_0 => (
                vld1q_s8(p.add(2) as *const i8),
                vld1q_s8(p.add(18) as *const i8),
            ),
            L_Q5_0 => {
                let qh = std::ptr::read_unaligned(p.add(2) as *const u32);
                let q = vld1q_u8(p.add(6));
                let m4 = vdupq_n_u8(0x0F);
                // byte j of (h0, h1) = bit j (resp. j + 16) of qh, moved to bit 4
                let qhv = vreinterpretq_u8_u32(vdupq_n_u32(qh));
                const IDX0: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];
                const IDX1: [u8; 16] = [2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3];
                const BITS: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
                let bits = vld1q_u8(BITS.as_ptr());
                let h0 = vtstq_u8(vqtbl1q_u8(qhv, vld1q_u8(IDX0.as_ptr())), bits);
                let h1 = vtstq_u8(vqtbl1q_u8(qhv, vld1q_u8(IDX1.as_ptr())), bits);
                let x0 = vorrq_u8(vandq_u8(q, m4), vandq_u8(h0, vdupq_n_u8(0x10)));
                let x1 = vorrq_u8(vshrq_n_u8::<4>(q), vandq_u8(h1, vdupq_n_u8(0x10)));
                (
                    vsubq_s8(vreinterpretq_s8_u8(x0), vdupq_n_s8(16)),
                    vsubq_s8(vreinterpretq_s8_u8(x1), vdupq_n_s8(16)),
                )
            }
            _ => {
                let q = vld1q_u8(p.add(2));
                (
                    vsubq_s8(
                        vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0F))),
                        vdupq_n_s8(8),
                    ),
                    vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8::<4>(q)), vdupq_n_s8(8)),
                )
            }
        }
    }
}

/// `legacy_row_body` with plain NEON.
#[target_feature(enable = "neon")]
unsafe fn legacy_row_neon<const K: u8, const T: usize>(
    w: &[u8],
    d: [&[f32]; T],
    qs: [&[i8]; T],
) -> [f32; T] {
    // SAFETY: forwarded caller contract.
    unsafe { legacy_row_body::<K, T, false>(w, d, qs) }
}

/// `legacy_row_body` with `SDOT` enabled.
#[target_feature(enable = "neon,dotprod")]
unsafe fn legacy_row_dot<const K: u8, const T: usize>(
    w: &[u8],
    d: [&[f32]; T],
    qs: [&[i8]; T],
) -> [f32; T] {
    // SAFETY: forwarded caller contract.
    unsafe { legacy_row_body::<K, T, true>(w, d, qs) }
}

/// Dots of one legacy-quant weight row with `T` Q8_0 activation rows. Each weight block is
/// decoded once for all tokens; block int sums come 4 at a time, their f32 products are formed
/// lane-wise with the scalar reference's operations, then added to the sum in block order.
#[inline(always)]
unsafe fn legacy_row_body<const K: u8, const T: usize, const DOT: bool>(
    w: &[u8],
    d: [&[f32]; T],
    qs: [&[i8]; T],
) -> [f32; T] {
    // SAFETY: only inlined into `legacy_row_neon` / `legacy_row_dot` (NEON, and dotprod when
    // DOT); memory accesses are bounds-checked by the asserts below.
    unsafe {
        let bs = block_bytes(K);
        let nb = d[0].len();
        assert!(w.len() >= nb * bs);
        for t in 0..T {
            assert!(d[t].len() >= nb && qs[t].len() >= nb * QK32);
        }
        let wp = w.as_ptr();
        let mut sumf = [0f32; T];
        let mut ib = 0;
        while ib + 4 <= nb {
            let mut xs = [(vdupq_n_s8(0), vdupq_n_s8(0)); 4];
            let mut hs = 0u64;
            for k in 0..4 {
                // In bounds: block ib + k < nb lies inside w (asserted).
                {
                    let p = wp.add((ib + k) * bs);
                    xs[k] = decode::<K>(p);
                    hs |= (std::ptr::read_unaligned(p as *const u16) as u64) << (16 * k);
                }
            }
            let dx = f16x4_to_f32(hs);
            for t in 0..T {
                // In bounds: activation blocks ib..ib+4 and scales ib..ib+4 are in bounds (asserted).
                let (v, dy) = {
                    let qp = qs[t].as_ptr().add(ib * QK32);
                    let mut v = [vdupq_n_s32(0); 4];
                    for k in 0..4 {
                        let y0 = vld1q_s8(qp.add(k * QK32));
                        let y1 = vld1q_s8(qp.add(k * QK32 + 16));
                        v[k] = dot32::<DOT>(xs[k].0, xs[k].1, y0, y1);
                    }
                    (v, vld1q_f32(d[t].as_ptr().add(ib)))
                };
                // lane k = int sum of block ib + k
                let si = vpaddq_s32(vpaddq_s32(v[0], v[1]), vpaddq_s32(v[2], v[3]));
                let sf = vcvtq_f32_s32(si);
                let p = if K == L_Q4_0 {
                    vmulq_f32(vmulq_f32(sf, dx), dy)
                } else {
                    vmulq_f32(sf, vmulq_f32(dx, dy))
                };
                let mut pa = [0f32; 4];
                // In bounds: 4 f32 into a 4-f32 array.
                vst1q_f32(pa.as_mut_ptr(), p);
                for x in pa {
                    sumf[t] += x;
                }
            }
            ib += 4;
        }
        while ib < nb {
            // In bounds: block ib < nb in bounds (asserted).
            let (x0, x1) = { decode::<K>(wp.add(ib * bs)) };
            let dxs = f16_at(&w[ib * bs..]);
            for t in 0..T {
                // In bounds: activation block ib in bounds (asserted).
                let sumi = {
                    let qp = qs[t].as_ptr().add(ib * QK32);
                    vaddvq_s32(dot32::<DOT>(x0, x1, vld1q_s8(qp), vld1q_s8(qp.add(16))))
                };
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
}

/// Row kernel for Q4_K weights and 1..=4 tokens.
fn r_q4_k(w: &[u8], a: &Activations, t0: usize, out: &mut [f32]) {
    let q = a.q8k();
    let cols = a.cols();
    macro_rules! go {
        ($t:literal) => {{
            let rows: [_; $t] = std::array::from_fn(|k| q.row(t0 + k, cols));
            // SAFETY: NEON is baseline on aarch64; lengths asserted inside.
            let r = unsafe {
                q4_k_neon::<$t>(
                    w,
                    rows.map(|r| r.d),
                    rows.map(|r| r.qs),
                    rows.map(|r| r.bsums),
                )
            };
            out.copy_from_slice(&r);
        }};
    }
    match out.len() {
        1 => go!(1),
        2 => go!(2),
        3 => go!(3),
        4 => go!(4),
        n => unreachable!("row kernels take 1..=4 tokens, got {n}"),
    }
}

/// Row kernel for Q6_K weights and 1..=4 tokens.
fn r_q6_k(w: &[u8], a: &Activations, t0: usize, out: &mut [f32]) {
    let q = a.q8k();
    let cols = a.cols();
    macro_rules! go {
        ($t:literal) => {{
            let rows: [_; $t] = std::array::from_fn(|k| q.row(t0 + k, cols));
            // SAFETY: NEON is baseline on aarch64; lengths asserted inside.
            let r = unsafe { q6_k_neon::<$t>(w, rows.map(|r| r.d), rows.map(|r| r.qs)) };
            out.copy_from_slice(&r);
        }};
    }
    match out.len() {
        1 => go!(1),
        2 => go!(2),
        3 => go!(3),
        4 => go!(4),
        n => unreachable!("row kernels take 1..=4 tokens, got {n}"),
    }
}

/// Adds `s * (lane l of p)` to lane `l` of the 8 i32 lanes `acc`, where `p` holds the 8 i16
/// per-lane product sums of one group of elements sharing the scale `s`.
#[inline]
#[target_feature(enable = "neon")]
fn scale_acc(acc: (int32x4_t, int32x4_t), p: int16x8_t, s: i16) -> (int32x4_t, int32x4_t) {
    (
        vmlal_n_s16(acc.0, vget_low_s16(p), s),
        vmlal_high_n_s16(acc.1, p, s),
    )
}

/// Per-lane (element index mod 8) i16 sums of the 16 byte products of `x` and `y`.
#[inline]
#[target_feature(enable = "neon")]
fn lane_prod16(x: int8x16_t, y: int8x16_t) -> int16x8_t {
    vmlal_high_s8(vmull_s8(vget_low_s8(x), vget_low_s8(y)), x, y)
}

/// `acc.lanes += dd * f32(iacc.lanes)` (multiply, then add: the scalar reference's rounding).
#[inline]
#[target_feature(enable = "neon")]
fn add_scaled(
    acc: (float32x4_t, float32x4_t),
    iacc: (int32x4_t, int32x4_t),
    dd: f32,
) -> (float32x4_t, float32x4_t) {
    (
        vaddq_f32(acc.0, vmulq_n_f32(vcvtq_f32_s32(iacc.0), dd)),
        vaddq_f32(acc.1, vmulq_n_f32(vcvtq_f32_s32(iacc.1), dd)),
    )
}

/// `sumf += lane 0, ..., += lane 7` in order.
#[inline]
#[target_feature(enable = "neon")]
fn add_lanes(mut sumf: f32, v: (float32x4_t, float32x4_t)) -> f32 {
    let mut lanes = [0f32; 8];
    // SAFETY: 2 x 4 f32 into an 8-f32 array.
    unsafe {
        vst1q_f32(lanes.as_mut_ptr(), v.0);
        vst1q_f32(lanes.as_mut_ptr().add(4), v.1);
    }
    for s in lanes {
        sumf += s;
    }
    sumf
}

/// ggml's generic Q4_K × Q8_K dot for `T` activation rows (weights decoded once per token
/// group): exact per-lane int sums, then the scalar reference's float operations.
#[target_feature(enable = "neon")]
unsafe fn q4_k_neon<const T: usize>(
    w: &[u8],
    d: [&[f32]; T],
    qs: [&[i8]; T],
    bsums: [&[i16]; T],
) -> [f32; T] {
    let nb = d[0].len();
    assert!(w.len() >= nb * 144);
    for t in 0..T {
        assert!(d[t].len() >= nb && qs[t].len() >= nb * QK_K && bsums[t].len() >= nb * 16);
    }
    let zf = vdupq_n_f32(0.0);
    let zi = vdupq_n_s32(0);
    let mut sums = [(zf, zf); T];
    let mut sumf = [0f32; T];
    let m4 = vdupq_n_u8(0x0F);
    for i in 0..nb {
        let b = &w[i * 144..i * 144 + 144];
        let mut sc = [0u8; 8];
        let mut mn = [0u8; 8];
        for j in 0..8 {
            (sc[j], mn[j]) = scale_min_k4(j, &b[4..16]);
        }
        // mins per bsum entry j: mn[j / 2]
        let mut mn16 = [0i16; 16];
        for j in 0..16 {
            mn16[j] = mn[j / 2] as i16;
        }
        // SAFETY: 16 i16 from a 16-i16 array.
        let (m0, m1) = unsafe { (vld1q_s16(mn16.as_ptr()), vld1q_s16(mn16.as_ptr().add(8))) };
        let mut acc = [(zi, zi); T];
        for c in 0..4 {
            // SAFETY: 32 bytes of b[16 + 32c ..], in bounds.
            let (q0, q1) = unsafe {
                let p = b.as_ptr().add(16 + 32 * c);
                (vld1q_u8(p), vld1q_u8(p.add(16)))
            };
            let lo0 = vreinterpretq_s8_u8(vandq_u8(q0, m4));
            let lo1 = vreinterpretq_s8_u8(vandq_u8(q1, m4));
            let hi0 = vreinterpretq_s8_u8(vshrq_n_u8::<4>(q0));
            let hi1 = vreinterpretq_s8_u8(vshrq_n_u8::<4>(q1));
            let s0 = sc[2 * c] as i16;
            let s1 = sc[2 * c + 1] as i16;
            for t in 0..T {
                // SAFETY: q8[64c .. 64c + 64] of block i in bounds (asserted).
                let (ya0, ya1, yb0, yb1) = unsafe {
                    let p = qs[t].as_ptr().add(i * QK_K + 64 * c);
                    (
                        vld1q_s8(p),
                        vld1q_s8(p.add(16)),
                        vld1q_s8(p.add(32)),
                        vld1q_s8(p.add(48)),
                    )
                };
                // 4 products per lane of at most 15 * 128: fits in i16
                let pa = vaddq_s16(lane_prod16(lo0, ya0), lane_prod16(lo1, ya1));
                let pb = vaddq_s16(lane_prod16(hi0, yb0), lane_prod16(hi1, yb1));
                acc[t] = scale_acc(scale_acc(acc[t], pa, s0), pb, s1);
            }
        }
        let dx = f16_at(b);
        let dmx = f16_at(&b[2..]);
        for t in 0..T {
            // SAFETY: 16 i16 at bsums[i*16..], in bounds (asserted).
            let (b0, b1) = unsafe {
                let p = bsums[t].as_ptr().add(i * 16);
                (vld1q_s16(p), vld1q_s16(p.add(8)))
            };
            let s = vmull_s16(vget_low_s16(b0), vget_low_s16(m0));
            let s = vmlal_high_s16(s, b0, m0);
            let s = vmlal_s16(s, vget_low_s16(b1), vget_low_s16(m1));
            let summ = vaddvq_s32(vmlal_high_s16(s, b1, m1));
            sums[t] = add_scaled(sums[t], acc[t], dx * d[t][i]);
            let dmin = dmx * d[t][i];
            sumf[t] -= dmin * summ as f32;
        }
    }
    std::array::from_fn(|t| add_lanes(sumf[t], sums[t]))
}

/// Q6_K weights `(l | (h & 3) << 4) - 32` from low nibbles `l` and shifted high bits `h`.
#[inline]
#[target_feature(enable = "neon")]
fn q6_combine(l: uint8x16_t, h: uint8x16_t, m3: uint8x16_t, m32: int8x16_t) -> int8x16_t {
    vsubq_s8(
        vreinterpretq_s8_u8(vorrq_u8(l, vshlq_n_u8::<4>(vandq_u8(h, m3)))),
        m32,
    )
}

/// ggml's generic Q6_K × Q8_K dot for `T` activation rows (weights decoded once per token
/// group): exact per-lane int sums, then the scalar reference's float operations.
#[target_feature(enable = "neon")]
unsafe fn q6_k_neon<const T: usize>(w: &[u8], d: [&[f32]; T], qs: [&[i8]; T]) -> [f32; T] {
    let nb = d[0].len();
    assert!(w.len() >= nb * 210);
    for t in 0..T {
        assert!(d[t].len() >= nb && qs[t].len() >= nb * QK_K);
    }
    let zf = vdupq_n_f32(0.0);
    let zi = vdupq_n_s32(0);
    let mut sums = [(zf, zf); T];
    let m4 = vdupq_n_u8(0x0F);
    let m3 = vdupq_n_u8(0x03);
    let m32 = vdupq_n_s8(32);
    for i in 0..nb {
        let b = &w[i * 210..i * 210 + 210];
        let scales = &b[192..208];
        let mut acc = [(zi, zi); T];
        for half in 0..2 {
            // SAFETY: ql[half*64 .. +64] and qh[128 + half*32 .. +32] in bounds.
            let (ql, qh) = unsafe {
                let p = b.as_ptr().add(half * 64);
                let h = b.as_ptr().add(128 + half * 32);
                (
                    [
                        vld1q_u8(p),
                        vld1q_u8(p.add(16)),
                        vld1q_u8(p.add(32)),
                        vld1q_u8(p.add(48)),
                    ],
                    [vld1q_u8(h), vld1q_u8(h.add(16))],
                )
            };
            // 16-element groups g = 0..8 of this half: elements half*128 + 16g ..
            let q = |l, h| q6_combine(l, h, m3, m32);
            let a = [
                q(vandq_u8(ql[0], m4), qh[0]),
                q(vandq_u8(ql[1], m4), qh[1]),
                q(vandq_u8(ql[2], m4), vshrq_n_u8::<2>(qh[0])),
                q(vandq_u8(ql[3], m4), vshrq_n_u8::<2>(qh[1])),
                q(vshrq_n_u8::<4>(ql[0]), vshrq_n_u8::<4>(qh[0])),
                q(vshrq_n_u8::<4>(ql[1]), vshrq_n_u8::<4>(qh[1])),
                q(vshrq_n_u8::<4>(ql[2]), vshrq_n_u8::<6>(qh[0])),
                q(vshrq_n_u8::<4>(ql[3]), vshrq_n_u8::<6>(qh[1])),
            ];
            for (g, ag) in a.into_iter().enumerate() {
                let base = half * 128 + g * 16;
                let s = scales[half * 8 + g] as i8 as i16;
                for t in 0..T {
                    // SAFETY: q8[base .. base + 16] of block i in bounds (asserted).
                    let y = unsafe { vld1q_s8(qs[t].as_ptr().add(i * QK_K + base)) };
                    acc[t] = scale_acc(acc[t], lane_prod16(ag, y), s);
                }
            }
        }
        let dx = f16_at(&b[208..]);
        for t in 0..T {
            sums[t] = add_scaled(sums[t], acc[t], dx * d[t][i]);
        }
    }
    std::array::from_fn(|t| add_lanes(0.0, sums[t]))
}
