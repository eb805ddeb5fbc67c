//! Kernel tests: hand-computed dots, agreement with a dequantized f32 reference, matmul =
//! per-row dots, thread-count invariance, and every SIMD backend against the scalar one.

use super::*;
use half::f16;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn h(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_bits().to_le_bytes()
}

/// Random but valid row bytes of `cols` elements of `ty` (finite, moderate f16 scales).
pub(crate) fn random_row(ty: GgmlType, cols: usize, rng: &mut StdRng) -> Vec<u8> {
    let n = ty.row_bytes(cols).unwrap();
    let mut b: Vec<u8> = (0..n).map(|_| rng.random()).collect();
    let bs = ty.type_size();
    let scale = |rng: &mut StdRng| h(rng.random_range(-0.05f32..0.05));
    for blk in b.chunks_exact_mut(bs) {
        match ty {
            GgmlType::Q8_0 | GgmlType::Q5_0 | GgmlType::Q4_0 => {
                blk[0..2].copy_from_slice(&scale(rng))
            }
            GgmlType::Q4_K => {
                blk[0..2].copy_from_slice(&scale(rng));
                blk[2..4].copy_from_slice(&scale(rng));
            }
            GgmlType::Q6_K => blk[208..210].copy_from_slice(&scale(rng)),
            GgmlType::F16 => blk.copy_from_slice(&h(rng.random_range(-2.0f32..2.0))),
            GgmlType::F32 => blk.copy_from_slice(&rng.random_range(-2.0f32..2.0).to_le_bytes()),
            _ => unreachable!(),
        }
    }
    b
}

fn random_x(n: usize, rng: &mut StdRng) -> Vec<f32> {
    (0..n)
        .map(|i| {
            // include exact zeros and a wide dynamic range
            if i % 17 == 3 {
                0.0
            } else {
                rng.random_range(-3.0f32..3.0) * if i % 5 == 0 { 10.0 } else { 1.0 }
            }
        })
        .collect()
}

const TYPES: [GgmlType; 7] = [
    GgmlType::Q8_0,
    GgmlType::Q5_0,
    GgmlType::Q4_0,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
    GgmlType::F32,
    GgmlType::F16,
];

#[test]
fn q8_0_dot_by_hand() {
    // weights: block 0 d=0.5, q = 2 everywhere; block 1 d=-1, q[j] = j - 16
    let mut w = Vec::from(h(0.5));
    w.extend([2u8; 32]);
    w.extend(h(-1.0));
    w.extend((0..32).map(|j| (j as i8 - 16) as u8));
    // activations: block 0 d=0.25, q = 1 ; block 1 d=2, q = 1 for j < 16, 0 else
    let qs: Vec<i8> = (0..64)
        .map(|i| if i < 32 || i < 48 { 1 } else { 0 })
        .collect();
    let d = [0.25f32, 2.0];
    // block 0: sumi = 64, * (0.5*0.25) = 8 ; block 1: sumi = sum_{j<16}(j-16) = -136, * (-1*2) = 272
    assert_eq!(dot_q8_0_q8_0(&w, Q8_0Row { d: &d, qs: &qs }), 280.0);
}

#[test]
fn q5_0_and_q4_0_dot_by_hand() {
    // Q5_0: d = 1, qh bit 0 set, low nibbles 0 -> x0[0] = 16-16 = 0, others -16; high nibbles 15 -> x1 = -1
    let mut w = Vec::from(h(1.0));
    w.extend(1u32.to_le_bytes());
    w.extend([0xF0u8; 16]);
    let qs = [1i8; 32];
    let d = [0.5f32];
    // sumi = 0 + 15*(-16) + 16*(-1) = -256 ; * 0.5 = -128
    assert_eq!(dot_q5_0_q8_0(&w, Q8_0Row { d: &d, qs: &qs }), -128.0);
    // Q4_0: d = 2, nibbles low 9 (+1), high 7 (-1); acts q = j
    let mut w = Vec::from(h(2.0));
    w.extend([0x79u8; 16]);
    let qs: Vec<i8> = (0..32).collect();
    // sumi = sum_{j<16} j - sum_{j>=16} j = 120 - 376 = -256 ; * 2 * 0.5 = -256
    assert_eq!(dot_q4_0_q8_0(&w, Q8_0Row { d: &d, qs: &qs }), -256.0);
}

#[test]
fn k_quant_dots_match_dequantized_reference_exactly_on_simple_blocks() {
    // With power-of-two scales and small ints every float op is exact, so the ggml arithmetic must
    // equal the plain dequantized dot.
    let mut rng = StdRng::seed_from_u64(7);
    for ty in [GgmlType::Q4_K, GgmlType::Q6_K] {
        let mut w = random_row(ty, 512, &mut rng);
        for blk in w.chunks_exact_mut(ty.type_size()) {
            match ty {
                GgmlType::Q4_K => {
                    blk[0..2].copy_from_slice(&h(0.5));
                    blk[2..4].copy_from_slice(&h(0.25));
                }
                _ => blk[208..210].copy_from_slice(&h(0.125)),
            }
        }
        let qs: Vec<i8> = (0..512).map(|i| ((i * 7) % 23) as i8 - 11).collect();
        let d = [1.0f32, 0.5];
        let bsums: Vec<i16> = qs
            .chunks(16)
            .map(|c| c.iter().map(|&q| q as i16).sum())
            .collect();
        let got = match ty {
            GgmlType::Q4_K => dot_q4_k_q8_k(
                &w,
                Q8KRow {
                    d: &d,
                    qs: &qs,
                    bsums: &bsums,
                },
            ),
            _ => dot_q6_k_q8_k(
                &w,
                Q8KRow {
                    d: &d,
                    qs: &qs,
                    bsums: &bsums,
                },
            ),
        };
        let mut deq = vec![0f32; 512];
        dequantize_row(ty, &w, &mut deq).unwrap();
        let want: f64 = deq
            .iter()
            .enumerate()
            .map(|(i, &v)| v as f64 * qs[i] as f64 * d[i / 256] as f64)
            .sum();
        assert_eq!(got as f64, want, "{ty}");
    }
}

#[test]
fn matvec_is_close_to_the_f32_reference() {
    let mut rng = StdRng::seed_from_u64(1);
    let pool = KernelPool::single();
    for ty in TYPES {
        let (rows, cols) = (9, 512);
        let data: Vec<u8> = (0..rows)
            .flat_map(|_| random_row(ty, cols, &mut rng))
            .collect();
        let w = QuantMatrix::new(ty, rows, cols, data).unwrap();
        let x = random_x(cols, &mut rng);
        let mut y = vec![0f32; rows];
        matvec(&w, &x, &mut y, &pool).unwrap();
        let deq = w.dequantize_all().unwrap();
        for r in 0..rows {
            let want: f64 = (0..cols)
                .map(|c| deq[r * cols + c] as f64 * x[c] as f64)
                .sum();
            let norm: f64 = (0..cols)
                .map(|c| (deq[r * cols + c] as f64 * x[c] as f64).abs())
                .sum();
            let err = (y[r] as f64 - want).abs();
            assert!(
                err <= 0.02 * norm + 1e-6,
                "{ty} row {r}: got {} want {want} (norm {norm})",
                y[r]
            );
        }
    }
}

#[test]
fn matmul_equals_per_row_dots_and_ignores_thread_count() {
    let mut rng = StdRng::seed_from_u64(2);
    let pools: Vec<KernelPool> = [1, 2, 3]
        .into_iter()
        .map(|t| KernelPool::new(t).unwrap())
        .collect();
    for ty in TYPES {
        let (rows, cols, n) = (37, 768, 70);
        let data: Vec<u8> = (0..rows)
            .flat_map(|_| random_row(ty, cols, &mut rng))
            .collect();
        let w = QuantMatrix::new(ty, rows, cols, data).unwrap();
        let x = random_x(n * cols, &mut rng);
        let mut y1 = vec![0f32; n * rows];
        matmul(&w, &x, n, &mut y1, &pools[0]).unwrap();
        for t in 0..n {
            let mut yt = vec![0f32; rows];
            matvec(&w, &x[t * cols..(t + 1) * cols], &mut yt, &pools[0]).unwrap();
            assert_eq!(&y1[t * rows..(t + 1) * rows], &yt[..], "{ty} token {t}");
        }
        for p in &pools[1..] {
            let mut y2 = vec![0f32; n * rows];
            matmul(&w, &x, n, &mut y2, p).unwrap();
            assert_eq!(y1, y2, "{ty} with {p:?}");
        }
        // prepared activations can be reused
        let acts = Activations::for_matrix(&w, &x, n).unwrap();
        let mut y3 = vec![0f32; n * rows];
        matmul_prepared(&w, &acts, &mut y3, &pools[1]).unwrap();
        assert_eq!(y1, y3);
    }
}

#[test]
fn matrix_errors() {
    assert!(matches!(
        QuantMatrix::new(GgmlType::Q8_0, 2, 32, vec![0u8; 67]),
        Err(QuantError::LengthMismatch { .. })
    ));
    assert!(matches!(
        QuantMatrix::new(GgmlType::Q8_0, 2, 31, vec![0u8; 68]),
        Err(QuantError::NotBlockAligned { .. })
    ));
    assert!(matches!(
        QuantMatrix::new(GgmlType::Q8_0, 0, 32, vec![]),
        Err(QuantError::BadShape { .. })
    ));
    let w = QuantMatrix::new(GgmlType::Q8_0, 2, 32, vec![0u8; 68]).unwrap();
    let pool = KernelPool::single();
    let mut y = vec![0f32; 2];
    assert!(matches!(
        matvec(&w, &[0.0; 31], &mut y, &pool),
        Err(QuantError::LengthMismatch { .. })
    ));
    assert!(matches!(
        matvec(&w, &[0.0; 32], &mut y[..1], &pool),
        Err(QuantError::LengthMismatch { .. })
    ));
    let acts = Activations::new(ActKind::Q8K, &[0.0; 256], 1, 256).unwrap();
    assert!(matmul_prepared(&w, &acts, &mut y, &pool).is_err());
    let q2 = QuantMatrix::new(GgmlType::Q2_K, 1, 256, vec![0u8; 84]).unwrap();
    assert!(matches!(
        matvec(&q2, &[0.0; 256], &mut y[..1], &pool),
        Err(QuantError::Unsupported { .. })
    ));
    assert!(matches!(w.row(2), Err(QuantError::RowOutOfRange { .. })));
    let mut out = vec![0f32; 32];
    assert!(matches!(
        w.dequantize_rows(&[5], &mut out),
        Err(QuantError::RowOutOfRange { .. })
    ));
}

#[test]
fn dequantize_rows_picks_rows() {
    let mut rng = StdRng::seed_from_u64(3);
    let data: Vec<u8> = (0..4)
        .flat_map(|_| random_row(GgmlType::Q8_0, 64, &mut rng))
        .collect();
    let w = QuantMatrix::new(GgmlType::Q8_0, 4, 64, data).unwrap();
    let all = w.dequantize_all().unwrap();
    let mut out = vec![0f32; 3 * 64];
    w.dequantize_rows(&[3, 0, 3], &mut out).unwrap();
    assert_eq!(&out[..64], &all[192..256]);
    assert_eq!(&out[64..128], &all[..64]);
    assert_eq!(&out[128..], &all[192..256]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Every available backend gives bit-identical results to the scalar reference of its float
    /// order (ggml's generic one or its x86 one).
    #[test]
    fn simd_backends_equal_scalar(seed in any::<u64>(), ti in 0usize..7, blocks in 1usize..40, rows in 1usize..27, n in 1usize..8) {
        let ty = TYPES[ti];
        let cols = blocks * if ty.block_size() == QK_K { QK_K } else { 32 };
        let mut rng = StdRng::seed_from_u64(seed);
        let data: Vec<u8> = (0..rows).flat_map(|_| random_row(ty, cols, &mut rng)).collect();
        let w = QuantMatrix::new(ty, rows, cols, data).unwrap();
        let x = random_x(n * cols, &mut rng);
        let acts = Activations::for_matrix(&w, &x, n).unwrap();
        let pool = KernelPool::single();
        for b in available_backends() {
            let mut want = vec![0f32; n * rows];
            matmul_with_backend(&w, &acts, &mut want, &pool, b.reference()).unwrap();
            let mut got = vec![0f32; n * rows];
            matmul_with_backend(&w, &acts, &mut got, &pool, b).unwrap();
            for (g, e) in got.iter().zip(&want) {
                prop_assert_eq!(g.to_bits(), e.to_bits(), "{} on {}: {} vs {}", ty, b.name(), g, e);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    /// A Q8_0, Q5_0 or Q4_0 matrix with a packed copy (Q8_0's decoded layout, the others'
    /// compact one) gives every backend the same bits as without it (and as the scalar
    /// reference), for decode-sized and prompt-sized token counts, with rows that are not a
    /// multiple of eight (the tail runs the raw kernel); its dequantized rows too.
    #[test]
    fn prepacked_equals_raw(seed in any::<u64>(), ty in prop::sample::select(vec![GgmlType::Q8_0, GgmlType::Q5_0, GgmlType::Q4_0]), blocks in 1usize..30, rows in 1usize..70, n in prop::sample::select(vec![1usize, 2, 3, 4, 5, 8, 9, 70])) {
        let cols = blocks * 32;
        let mut rng = StdRng::seed_from_u64(seed);
        let data: Vec<u8> = (0..rows).flat_map(|_| random_row(ty, cols, &mut rng)).collect();
        let raw = QuantMatrix::new(ty, rows, cols, data).unwrap();
        let mut packed = raw.clone();
        let did = packed.prepack();
        #[cfg(target_arch = "x86_64")]
        prop_assert_eq!(did, rows >= 8 && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("f16c"));
        let x = random_x(n * cols, &mut rng);
        let acts = Activations::for_matrix(&raw, &x, n).unwrap();
        let pool = KernelPool::new(2).unwrap();
        for b in available_backends() {
            let mut want = vec![0f32; n * rows];
            matmul_with_backend(&raw, &acts, &mut want, &pool, b.reference()).unwrap();
            let mut got = vec![0f32; n * rows];
            matmul_with_backend(&packed, &acts, &mut got, &pool, b).unwrap();
            for (g, e) in got.iter().zip(&want) {
                prop_assert_eq!(g.to_bits(), e.to_bits(), "{} packed={} on {}: {} vs {}", ty, did, b.name(), g, e);
            }
        }
        let idx: Vec<usize> = (0..rows).rev().collect();
        let (mut a, mut b) = (vec![0f32; rows * cols], vec![0f32; rows * cols]);
        raw.dequantize_rows(&idx, &mut a).unwrap();
        packed.dequantize_rows(&idx, &mut b).unwrap();
        prop_assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
}

/// Every SIMD backend available here (AVX2 on x86-64, NEON / NEON-dotprod on aarch64) really
/// dispatches the five SIMD formats to its own kernels, so `simd_backends_equal_scalar` tests
/// them rather than the scalar fallback.
#[test]
fn simd_backends_dispatch_their_own_kernels() {
    use super::kernels::kernel;
    #[cfg(target_arch = "aarch64")]
    assert!(available_backends().contains(&KernelBackend::Neon));
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q5_0,
        GgmlType::Q4_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ] {
        for b in available_backends() {
            let reference = kernel(ty, b.reference()).unwrap().addr();
            if b != b.reference() {
                assert_ne!(
                    kernel(ty, b).unwrap().addr(),
                    reference,
                    "{ty} on {}",
                    b.name()
                );
            }
        }
        // The AVX-512 backend has kernels of its own for every format, not avx2's.
        if available_backends().contains(&KernelBackend::Avx512) {
            assert_ne!(
                kernel(ty, KernelBackend::Avx512).unwrap().addr(),
                kernel(ty, KernelBackend::Avx2).unwrap().addr(),
                "{ty}"
            );
        }
    }
}

/// Activations quantized in parallel on a pool are those quantized serially, for both
/// quantized kinds, any row count and thread count; bad shapes fail the same way.
#[test]
fn parallel_activation_quantization_equals_serial() {
    let mut rng = StdRng::seed_from_u64(9);
    let pools: Vec<KernelPool> = [1, 2, 3]
        .into_iter()
        .map(|t| KernelPool::new(t).unwrap())
        .collect();
    for (kind, cols) in [(ActKind::Q8_0, 96), (ActKind::Q8K, 512)] {
        for n in [1, 7, 8, 9, 33, 70] {
            let x = random_x(n * cols, &mut rng);
            let serial = Activations::new(kind, &x, n, cols).unwrap();
            for pool in &pools {
                let par = Activations::new_on(kind, &x, n, cols, pool).unwrap();
                assert_eq!(par.n(), n);
                assert_eq!(par.q8_0(), serial.q8_0(), "{kind:?} n={n} {pool:?}");
                assert_eq!(par.q8k(), serial.q8k(), "{kind:?} n={n} {pool:?}");
            }
        }
    }
    let x = vec![0.5f32; 16 * 100];
    assert!(matches!(
        Activations::new_on(ActKind::Q8_0, &x, 16, 100, &pools[1]),
        Err(QuantError::NotBlockAligned { .. })
    ));
    assert!(matches!(
        Activations::new_on(ActKind::Q8K, &x[..1599], 16, 100, &pools[1]),
        Err(QuantError::LengthMismatch { .. })
    ));
}
