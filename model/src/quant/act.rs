//! Activation quantization exactly as ggml-cpu does it before a quantized vec-dot:
//! `quantize_row_q8_0` (for Q4_0/Q5_0/Q8_0 weights) and `quantize_row_q8_K` (for k-quant weights).
//!
//! Quantized activations are kept as structure-of-arrays ([`Q8_0Acts`], [`Q8KActs`]) holding the
//! same numbers as ggml's `block_q8_0` / `block_q8_K` (scales already widened to f32, exactly as
//! `GGML_CPU_FP16_TO_FP32` widens them).

use super::error::QuantError;
use super::types::{QK_K, QK32};
use half::f16;

/// Activations quantized to ggml `Q8_0` blocks (32 values per block).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Q8_0Acts {
    /// One scale per block: the f16 block scale, widened to f32.
    pub d: Vec<f32>,
    /// 32 quants per block.
    pub qs: Vec<i8>,
    /// The sum of each block's 32 quants (kernels for offset-coded weights use it).
    pub sums: Vec<i16>,
}

/// Activations quantized to ggml `Q8_K` blocks (256 values per block).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Q8KActs {
    /// One f32 scale per block.
    pub d: Vec<f32>,
    /// 256 quants per block.
    pub qs: Vec<i8>,
    /// 16 sums of 16 consecutive quants per block.
    pub bsums: Vec<i16>,
}

impl Q8_0Acts {
    /// Number of blocks held.
    pub fn n_blocks(&self) -> usize {
        self.d.len()
    }
}

impl Q8KActs {
    /// Number of blocks held.
    pub fn n_blocks(&self) -> usize {
        self.d.len()
    }
}

fn aligned(n: usize, block: usize, ty: super::GgmlType) -> Result<(), QuantError> {
    if !n.is_multiple_of(block) {
        return Err(QuantError::NotBlockAligned { ty, n, block });
    }
    Ok(())
}

/// ggml-cpu's `quantize_row_q8_0` as compiled for x86 (AVX/AVX2/AVX-512 builds, the reference
/// machine's build): `d = amax / 127` stored as f16, `id = 127 / amax` (0 when amax is 0), and
/// quants `round_half_even(x * id)`. Appends the blocks of `x` to `out`.
pub fn quantize_row_q8_0(x: &[f32], out: &mut Q8_0Acts) -> Result<(), QuantError> {
    aligned(x.len(), QK32, super::GgmlType::Q8_0)?;
    out.d.reserve(x.len() / QK32);
    out.qs.reserve(x.len());
    for b in x.chunks_exact(QK32) {
        let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        out.d.push(f16::from_f32(d).to_f32());
        let start = out.qs.len();
        out.qs.extend(b.iter().map(|&v| nearest_int(v * id) as i8));
        out.sums.push(block_sum(&out.qs[start..]));
    }
    Ok(())
}

/// ggml's portable `quantize_row_q8_0_ref` (used by ggml-cpu on targets without an AVX or NEON
/// version): `d = amax / 127`, `id = 1 / d`, quants `roundf(x * id)` (ties away from zero).
/// Kept for comparison; the kernels use [`quantize_row_q8_0`].
pub fn quantize_row_q8_0_ref(x: &[f32], out: &mut Q8_0Acts) -> Result<(), QuantError> {
    aligned(x.len(), QK32, super::GgmlType::Q8_0)?;
    for b in x.chunks_exact(QK32) {
        let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.d.push(f16::from_f32(d).to_f32());
        let start = out.qs.len();
        out.qs.extend(b.iter().map(|&v| (v * id).round() as i8));
        out.sums.push(block_sum(&out.qs[start..]));
    }
    Ok(())
}

/// Sum of one block's quants (at most 32 × 127 in magnitude, so it fits an i16).
fn block_sum(q: &[i8]) -> i16 {
    q.iter().map(|&v| v as i16).sum()
}

/// ggml's `quantize_row_q8_K_ref` (ggml-cpu uses it on x86 too): `max` is the first element of
/// largest magnitude, `iscale = -127 / max`, quants `min(127, nearest_int(iscale * x))`
/// (round half to even), `d = 1 / iscale`, and the 16 block sums. An all-zero block gets `d = 0`
/// and zero quants. Appends the blocks of `x` to `out`.
pub fn quantize_row_q8_k(x: &[f32], out: &mut Q8KActs) -> Result<(), QuantError> {
    aligned(x.len(), QK_K, super::GgmlType::Q8_K)?;
    for b in x.chunks_exact(QK_K) {
        let mut max = 0f32;
        let mut amax = 0f32;
        for &v in b {
            let ax = v.abs();
            if ax > amax {
                amax = ax;
                max = v;
            }
        }
        let start = out.qs.len();
        if amax == 0.0 {
            out.d.push(0.0);
            out.qs.extend(std::iter::repeat_n(0i8, QK_K));
            out.bsums.extend([0i16; QK_K / 16]);
            continue;
        }
        let iscale = -127.0f32 / max;
        out.qs
            .extend(b.iter().map(|&v| nearest_int(iscale * v).min(127) as i8));
        let qs = &out.qs[start..];
        for j in 0..QK_K / 16 {
            let s: i32 = qs[j * 16..j * 16 + 16].iter().map(|&q| q as i32).sum();
            out.bsums.push(s as i16);
        }
        out.d.push(1.0 / iscale);
    }
    Ok(())
}

/// Which Q8_0 activation quantizer the kernels use: [`quantize_row_q8_0`] (ggml-cpu's x86 build,
/// the default) or, with `EDGERAY_Q8_0_ROUNDING=ref`, [`quantize_row_q8_0_ref`] (ggml's portable
/// reference, as used on targets without AVX/NEON). Read once per process; for comparisons.
pub fn quantize_row_q8_0_selected(x: &[f32], out: &mut Q8_0Acts) -> Result<(), QuantError> {
    static USE_REF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let use_ref = *USE_REF.get_or_init(|| {
        std::env::var("EDGERAY_Q8_0_ROUNDING").is_ok_and(|v| v.eq_ignore_ascii_case("ref"))
    });
    if use_ref {
        quantize_row_q8_0_ref(x, out)
    } else {
        quantize_row_q8_0(x, out)
    }
}

/// ggml's `nearest_int`: round to nearest, ties to even (NaN gives 0; magnitudes beyond i32
/// saturate as `as i32` does). Like ggml it adds and subtracts a magic constant, which rounds in
/// the FPU's default mode and stays inline; done in f64 (1.5 × 2^52) it is exact for every f32
/// below 2^51 in magnitude. `f32::round_ties_even` is a libm `rintf` call on baseline x86-64
/// (no SSE4.1) and cost 7 % of prompt processing.
#[inline(always)]
pub fn nearest_int(x: f32) -> i32 {
    const MAGIC: f64 = 6_755_399_441_055_744.0;
    ((x as f64 + MAGIC) - MAGIC) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_is_round_half_even() {
        let mut x = 0x1234_5678u32;
        let mut cases = vec![
            0.5f32,
            1.5,
            2.5,
            -0.5,
            -1.5,
            -2.5,
            127.5,
            -127.5,
            4_194_303.5,
        ];
        cases.extend([-0.0, 0.0, f32::NAN, 1e9, -1e9, 4_194_304.5, 8_388_609.0]);
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            cases.push((x as i32) as f32 / 65_536.0);
        }
        for v in cases {
            assert_eq!(nearest_int(v), v.round_ties_even() as i32, "{v}");
        }
    }

    #[test]
    fn q8_0_by_hand() {
        let mut x = [0f32; 32];
        x[0] = 127.0;
        x[1] = -63.5; // exactly half: ties to even -> -64 (roundf would give -64 as well)
        x[2] = 0.5; // tie -> 0 (roundf -> 1)
        x[3] = 1.5; // tie -> 2
        x[4] = -2.5; // tie -> -2 (roundf -> -3)
        let mut a = Q8_0Acts::default();
        quantize_row_q8_0(&x, &mut a).unwrap();
        assert_eq!(a.d, vec![1.0]);
        assert_eq!(&a.qs[..6], &[127, -64, 0, 2, -2, 0]);
        let mut r = Q8_0Acts::default();
        quantize_row_q8_0_ref(&x, &mut r).unwrap();
        assert_eq!(&r.qs[..6], &[127, -64, 1, 2, -3, 0]);
    }

    #[test]
    fn q8_0_zero_block_and_f16_scale() {
        let mut a = Q8_0Acts::default();
        quantize_row_q8_0(&[0.0; 32], &mut a).unwrap();
        assert_eq!(a.d, vec![0.0]);
        assert!(a.qs.iter().all(|&q| q == 0));
        let mut x = [0f32; 32];
        x[5] = -0.1;
        let mut a = Q8_0Acts::default();
        quantize_row_q8_0(&x, &mut a).unwrap();
        assert_eq!(a.d[0], f16::from_f32(0.1 / 127.0).to_f32());
        assert_eq!(a.qs[5], -127);
        assert!(quantize_row_q8_0(&[0.0; 31], &mut a).is_err());
    }

    #[test]
    fn q8_k_by_hand() {
        let mut x = [0f32; 256];
        x[0] = 1.0;
        x[10] = -2.0; // max magnitude, negative: iscale = -127 / -2 = 63.5
        x[11] = 2.0; // same magnitude later: not the max (strict >)
        x[20] = 1.0 / 127.0; // 0.5 exactly -> ties to even -> 0
        x[21] = 3.0 / 127.0; // 1.5 -> 2
        let mut a = Q8KActs::default();
        quantize_row_q8_k(&x, &mut a).unwrap();
        assert_eq!(a.d, vec![1.0 / 63.5]);
        assert_eq!(a.qs[0], 64); // 63.5 -> 64 (even)
        assert_eq!(a.qs[10], -127);
        assert_eq!(a.qs[11], 127);
        assert_eq!(a.qs[20], 0);
        assert_eq!(a.qs[21], 2);
        assert_eq!(a.bsums[0], 64 - 127 + 127);
        assert_eq!(a.bsums[1], 2);
        assert!(a.bsums[2..].iter().all(|&s| s == 0));
    }

    #[test]
    fn q8_k_positive_max_uses_negative_iscale() {
        let mut x = [0f32; 256];
        x[3] = 4.0;
        x[4] = -4.0;
        let mut a = Q8KActs::default();
        quantize_row_q8_k(&x, &mut a).unwrap();
        // iscale = -127/4: x=4 -> -127, x=-4 -> 127, d = 1/iscale < 0
        assert_eq!(a.qs[3], -127);
        assert_eq!(a.qs[4], 127);
        assert_eq!(a.d[0], 1.0 / (-127.0f32 / 4.0));
        let mut z = Q8KActs::default();
        quantize_row_q8_k(&[0.0; 256], &mut z).unwrap();
        assert_eq!(z.d, vec![0.0]);
        assert_eq!(z.bsums, vec![0; 16]);
    }
}
