//! Bit-exact dequantization following ggml's reference `dequantize_row_*` functions.

use super::error::QuantError;
use super::types::{GgmlType, QK_K, QK32};
use half::f16;

/// Reads a little-endian IEEE half at `b[0..2]` as f32.
#[inline(always)]
pub(crate) fn f16_at(b: &[u8]) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` (0..8) of a Q4_K/Q5_K
/// super-block from its 12 packed scale bytes.
#[inline(always)]
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Checks that `src` holds exactly the bytes of `n` elements of `ty`.
fn check(ty: GgmlType, src: &[u8], n: usize) -> Result<(), QuantError> {
    let block = ty.block_size();
    if !n.is_multiple_of(block) {
        return Err(QuantError::NotBlockAligned { ty, n, block });
    }
    let expected = n / block * ty.type_size();
    if src.len() != expected {
        return Err(QuantError::LengthMismatch {
            what: "quantized row bytes",
            expected,
            got: src.len(),
        });
    }
    Ok(())
}

/// True when [`dequantize_row`] supports `ty`.
pub fn can_dequantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q4_K | Q5_K | Q6_K | Q8_K
    )
}

/// Dequantizes `dst.len()` elements of type `ty` from `src` (which must hold exactly their bytes).
///
/// Supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, Q8_K.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    check(ty, src, dst.len())?;
    match ty {
        GgmlType::F32 => {
            for (o, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *o = f16_at(c);
            }
        }
        GgmlType::BF16 => {
            for (o, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *o = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
            }
        }
        GgmlType::Q4_0 => {
            for (y, b) in dst.chunks_exact_mut(QK32).zip(src.chunks_exact(18)) {
                let d = f16_at(b);
                let qs = &b[2..18];
                for j in 0..16 {
                    let x0 = (qs[j] & 0x0F) as i32 - 8;
                    let x1 = (qs[j] >> 4) as i32 - 8;
                    y[j] = x0 as f32 * d;
                    y[j + 16] = x1 as f32 * d;
                }
            }
        }
        GgmlType::Q4_1 => {
            for (y, b) in dst.chunks_exact_mut(QK32).zip(src.chunks_exact(20)) {
                let d = f16_at(b);
                let m = f16_at(&b[2..]);
                let qs = &b[4..20];
                for j in 0..16 {
                    let x0 = (qs[j] & 0x0F) as i32;
                    let x1 = (qs[j] >> 4) as i32;
                    y[j] = x0 as f32 * d + m;
                    y[j + 16] = x1 as f32 * d + m;
                }
            }
        }
        GgmlType::Q5_0 => {
            for (y, b) in dst.chunks_exact_mut(QK32).zip(src.chunks_exact(22)) {
                let d = f16_at(b);
                let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                let qs = &b[6..22];
                for j in 0..16 {
                    let xh0 = (((qh >> j) << 4) & 0x10) as u8;
                    let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
                    let x0 = ((qs[j] & 0x0F) | xh0) as i32 - 16;
                    let x1 = ((qs[j] >> 4) | xh1) as i32 - 16;
                    y[j] = x0 as f32 * d;
                    y[j + 16] = x1 as f32 * d;
                }
            }
        }
        GgmlType::Q5_1 => {
            for (y, b) in dst.chunks_exact_mut(QK32).zip(src.chunks_exact(24)) {
                let d = f16_at(b);
                let m = f16_at(&b[2..]);
                let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
                let qs = &b[8..24];
                for j in 0..16 {
                    let xh0 = (((qh >> j) << 4) & 0x10) as u8;
                    let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
                    let x0 = ((qs[j] & 0x0F) | xh0) as i32;
                    let x1 = ((qs[j] >> 4) | xh1) as i32;
                    y[j] = x0 as f32 * d + m;
                    y[j + 16] = x1 as f32 * d + m;
                }
            }
        }
        GgmlType::Q8_0 => {
            for (y, b) in dst.chunks_exact_mut(QK32).zip(src.chunks_exact(34)) {
                let d = f16_at(b);
                for j in 0..QK32 {
                    y[j] = b[2 + j] as i8 as f32 * d;
                }
            }
        }
        GgmlType::Q4_K => {
            for (y, b) in dst.chunks_exact_mut(QK_K).zip(src.chunks_exact(144)) {
                let d = f16_at(b);
                let min = f16_at(&b[2..]);
                let scales = &b[4..16];
                let qs = &b[16..144];
                for (jb, (yy, q)) in y.chunks_exact_mut(64).zip(qs.chunks_exact(32)).enumerate() {
                    let (sc1, m1) = scale_min_k4(2 * jb, scales);
                    let (sc2, m2) = scale_min_k4(2 * jb + 1, scales);
                    let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
                    let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
                    for l in 0..32 {
                        yy[l] = d1 * (q[l] & 0xF) as f32 - m1;
                        yy[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
                    }
                }
            }
        }
        GgmlType::Q5_K => {
            for (y, b) in dst.chunks_exact_mut(QK_K).zip(src.chunks_exact(176)) {
                let d = f16_at(b);
                let min = f16_at(&b[2..]);
                let scales = &b[4..16];
                let qh = &b[16..48];
                let qs = &b[48..176];
                let (mut u1, mut u2) = (1u8, 2u8);
                for (jb, (yy, ql)) in y.chunks_exact_mut(64).zip(qs.chunks_exact(32)).enumerate() {
                    let (sc1, m1) = scale_min_k4(2 * jb, scales);
                    let (sc2, m2) = scale_min_k4(2 * jb + 1, scales);
                    let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
                    let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
                    for l in 0..32 {
                        let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
                        let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
                        yy[l] = d1 * ((ql[l] & 0xF) + h1) as f32 - m1;
                        yy[l + 32] = d2 * ((ql[l] >> 4) + h2) as f32 - m2;
                    }
                    u1 <<= 2;
                    u2 <<= 2;
                }
            }
        }
        GgmlType::Q6_K => {
            for (y, b) in dst.chunks_exact_mut(QK_K).zip(src.chunks_exact(210)) {
                let d = f16_at(&b[208..]);
                for half in 0..2 {
                    let ql = &b[half * 64..half * 64 + 64];
                    let qh = &b[128 + half * 32..128 + half * 32 + 32];
                    let sc = &b[192 + half * 8..192 + half * 8 + 8];
                    let yy = &mut y[half * 128..half * 128 + 128];
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                        yy[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                        yy[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                        yy[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                        yy[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
                    }
                }
            }
        }
        GgmlType::Q8_K => {
            for (y, b) in dst.chunks_exact_mut(QK_K).zip(src.chunks_exact(292)) {
                let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                for j in 0..QK_K {
                    y[j] = d * b[4 + j] as i8 as f32;
                }
            }
        }
        other => {
            return Err(QuantError::Unsupported {
                op: "dequantize_row",
                ty: other,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_bits().to_le_bytes()
    }

    #[test]
    fn f32_f16_bf16() {
        let mut out = [0f32; 2];
        let src: Vec<u8> = [1.5f32, -2.25]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        dequantize_row(GgmlType::F32, &src, &mut out).unwrap();
        assert_eq!(out, [1.5, -2.25]);
        // f16 0x3C00 = 1.0, 0xC000 = -2.0
        dequantize_row(GgmlType::F16, &[0x00, 0x3C, 0x00, 0xC0], &mut out).unwrap();
        assert_eq!(out, [1.0, -2.0]);
        // bf16 0x3FC0 = 1.5, 0xC080 = -4.0
        dequantize_row(GgmlType::BF16, &[0xC0, 0x3F, 0x80, 0xC0], &mut out).unwrap();
        assert_eq!(out, [1.5, -4.0]);
    }

    #[test]
    fn q4_0_block() {
        let mut b = Vec::from(h(0.5));
        // qs[j] = low nibble j, high nibble 15-j
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let mut out = [0f32; 32];
        dequantize_row(GgmlType::Q4_0, &b, &mut out).unwrap();
        for j in 0..16 {
            assert_eq!(out[j], (j as f32 - 8.0) * 0.5);
            assert_eq!(out[j + 16], (7.0 - j as f32) * 0.5);
        }
    }

    #[test]
    fn q4_1_block() {
        let mut b = Vec::from(h(2.0));
        b.extend(h(-1.0));
        b.extend([0x21u8; 16]); // low 1, high 2
        let mut out = [0f32; 32];
        dequantize_row(GgmlType::Q4_1, &b, &mut out).unwrap();
        assert!(out[..16].iter().all(|&v| v == 1.0)); // 1*2 - 1
        assert!(out[16..].iter().all(|&v| v == 3.0)); // 2*2 - 1
    }

    #[test]
    fn q5_0_block() {
        // qh bit j -> high bit of element j; bit j+16 -> element j+16.
        // Set bits 0 and 17: element 0 and element 17 get +16.
        let qh: u32 = (1 << 0) | (1 << 17);
        let mut b = Vec::from(h(0.25));
        b.extend(qh.to_le_bytes());
        b.extend([0x53u8; 16]); // low 3, high 5
        let mut out = [0f32; 32];
        dequantize_row(GgmlType::Q5_0, &b, &mut out).unwrap();
        assert_eq!(out[0], (3.0 + 16.0 - 16.0) * 0.25);
        assert_eq!(out[1], (3.0 - 16.0) * 0.25);
        assert_eq!(out[16], (5.0 - 16.0) * 0.25);
        assert_eq!(out[17], (5.0 + 16.0 - 16.0) * 0.25);
        assert_eq!(out[31], -11.0 * 0.25);
    }

    #[test]
    fn q5_1_block() {
        let qh: u32 = 1 << 31;
        let mut b = Vec::from(h(1.0));
        b.extend(h(0.5));
        b.extend(qh.to_le_bytes());
        b.extend([0xF0u8; 16]);
        let mut out = [0f32; 32];
        dequantize_row(GgmlType::Q5_1, &b, &mut out).unwrap();
        assert_eq!(out[0], 0.5);
        assert_eq!(out[16], 15.5);
        assert_eq!(out[31], 31.5);
    }

    #[test]
    fn q8_0_block() {
        let mut b = Vec::from(h(-0.125));
        b.extend((0..32).map(|j| (j as i8 - 16) as u8));
        let mut out = [0f32; 32];
        dequantize_row(GgmlType::Q8_0, &b, &mut out).unwrap();
        for (j, v) in out.iter().enumerate() {
            assert_eq!(*v, (j as f32 - 16.0) * -0.125);
        }
    }

    /// Builds the 12 packed scale bytes of Q4_K/Q5_K from 8 6-bit scales and mins.
    fn pack_k4(sc: [u8; 8], m: [u8; 8]) -> [u8; 12] {
        let mut q = [0u8; 12];
        for j in 0..4 {
            q[j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
            q[j + 4] = (m[j] & 63) | ((m[j + 4] >> 4) << 6);
            q[j + 8] = (sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4);
        }
        q
    }

    #[test]
    fn scale_min_k4_unpacks_packed() {
        let sc = [1, 2, 63, 4, 17, 33, 48, 63];
        let m = [0, 5, 6, 62, 50, 1, 31, 16];
        let q = pack_k4(sc, m);
        for j in 0..8 {
            assert_eq!(scale_min_k4(j, &q), (sc[j], m[j]), "sub-block {j}");
        }
    }

    #[test]
    fn q4_k_block() {
        let sc = [1, 2, 3, 4, 5, 6, 7, 40];
        let m = [0, 1, 2, 3, 4, 5, 6, 20];
        let mut b = Vec::from(h(0.5));
        b.extend(h(0.25));
        b.extend(pack_k4(sc, m));
        // qs: 4 chunks of 32 bytes; byte l of chunk c: low nibble = (l % 16), high = 15 - l % 16
        for _c in 0..4 {
            b.extend((0..32u8).map(|l| (l % 16) | ((15 - l % 16) << 4)));
        }
        let mut out = vec![0f32; 256];
        dequantize_row(GgmlType::Q4_K, &b, &mut out).unwrap();
        for c in 0..4 {
            for l in 0..32 {
                let lo = (l % 16) as f32;
                let hi = (15 - l % 16) as f32;
                let s0 = 2 * c;
                let s1 = 2 * c + 1;
                assert_eq!(
                    out[c * 64 + l],
                    0.5 * sc[s0] as f32 * lo - 0.25 * m[s0] as f32
                );
                assert_eq!(
                    out[c * 64 + 32 + l],
                    0.5 * sc[s1] as f32 * hi - 0.25 * m[s1] as f32
                );
            }
        }
        // one spot value by hand: sub-block 7 (c=3, high), l=0: 0.5*40*15 - 0.25*20 = 295
        assert_eq!(out[3 * 64 + 32], 295.0);
    }

    #[test]
    fn q5_k_block() {
        let sc = [2; 8];
        let m = [1; 8];
        let mut b = Vec::from(h(1.0));
        b.extend(h(1.0));
        b.extend(pack_k4(sc, m));
        // qh: bit 2c set for l even (element c*64 + l gets +16), bit 2c+1 never.
        b.extend((0..32).map(|l| if l % 2 == 0 { 0b0101_0101u8 } else { 0 }));
        b.extend([0x73u8; 128]); // low 3, high 7
        let mut out = vec![0f32; 256];
        dequantize_row(GgmlType::Q5_K, &b, &mut out).unwrap();
        for c in 0..4 {
            for l in 0..32 {
                let h = if l % 2 == 0 { 16.0 } else { 0.0 };
                assert_eq!(out[c * 64 + l], 2.0 * (3.0 + h) - 1.0);
                assert_eq!(out[c * 64 + 32 + l], 2.0 * 7.0 - 1.0);
            }
        }
    }

    #[test]
    fn q6_k_block() {
        let mut b = vec![0u8; 210];
        // ql: all 0x21 (low 1, high 2); qh: all 0b11_10_01_00 (q1 hi 0, q2 hi 1, q3 hi 2, q4 hi 3)
        b[..128].fill(0x21);
        b[128..192].fill(0b1110_0100);
        for (i, s) in b[192..208].iter_mut().enumerate() {
            *s = (i as i8 - 8) as u8;
        }
        b[208..210].copy_from_slice(&h(0.5));
        let mut out = vec![0f32; 256];
        dequantize_row(GgmlType::Q6_K, &b, &mut out).unwrap();
        let q = [1 - 32, 1 + 16 - 32, 2 + 32 - 32, 2 + 48 - 32];
        for half in 0..2 {
            for l in 0..32 {
                for k in 0..4 {
                    let scale = (half * 8 + l / 16 + 2 * k) as i32 - 8;
                    let want = 0.5 * scale as f32 * q[k] as f32;
                    assert_eq!(
                        out[half * 128 + k * 32 + l],
                        want,
                        "half {half} l {l} k {k}"
                    );
                }
            }
        }
        // by hand: element 0: scale -8, q = -31 -> 0.5*-8*-31 = 124
        assert_eq!(out[0], 124.0);
    }

    #[test]
    fn q8_k_block() {
        let mut b = Vec::from(0.5f32.to_le_bytes());
        b.extend((0..256).map(|j: i32| (j - 128) as i8 as u8));
        b.extend([0u8; 32]);
        let mut out = vec![0f32; 256];
        dequantize_row(GgmlType::Q8_K, &b, &mut out).unwrap();
        assert_eq!(out[0], -64.0);
        assert_eq!(out[255], 63.5);
    }

    #[test]
    fn errors() {
        let mut out = [0f32; 32];
        assert!(matches!(
            dequantize_row(GgmlType::Q8_0, &[0; 33], &mut out),
            Err(QuantError::LengthMismatch {
                expected: 34,
                got: 33,
                ..
            })
        ));
        assert!(matches!(
            dequantize_row(GgmlType::Q8_0, &[0; 34], &mut out[..31]),
            Err(QuantError::NotBlockAligned { .. })
        ));
        assert!(matches!(
            dequantize_row(GgmlType::IQ4_NL, &[0; 18], &mut out),
            Err(QuantError::Unsupported { .. })
        ));
    }
}
