//! Kernel backend selection: the scalar reference paths or SIMD paths, chosen at run time.
//! `EDGERAY_KERNELS=scalar` forces the scalar path; `EDGERAY_KERNELS=<backend name>` (e.g. `neon`
//! on a dotprod CPU, or `scalar-x86` anywhere) picks another available backend.
//!
//! Two float orders exist, both copied from ggml-cpu: the generic one (`scalar`, `avx2`, `neon`,
//! `neon-dotprod`: one `sumf += ...` per block) and the x86 one (`scalar-x86`, `avx2-x86`: eight
//! FMA lanes reduced at the end, as ggml's AVX2 kernels). Each SIMD backend is bit-identical to
//! the scalar backend of its order ([`KernelBackend::reference`]). The x86-order backends are only
//! used when named: on gemma3-270m they move greedy output away from the llama.cpp references
//! (see the README's kernel section).

use super::error::QuantError;
use super::matrix::Activations;
use super::scalar;
use super::scalar_x86;
use super::types::GgmlType;
use std::sync::OnceLock;

/// Which implementation of the vec-dot kernels runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelBackend {
    /// Portable scalar code in ggml's generic float order, the reference of the NEON backends.
    Scalar,
    /// Portable scalar code in ggml's x86 (AVX2) float order, the reference of
    /// [`Self::Avx2X86`]. Never chosen automatically; `EDGERAY_KERNELS=scalar-x86` reproduces
    /// `avx2-x86` results on any CPU.
    ScalarX86,
    /// x86-64 AVX2 + FMA + F16C in ggml's x86 float order, whole tiles per call: identical to
    /// [`Self::ScalarX86`]. Only used when named (`EDGERAY_KERNELS=avx2-x86`).
    Avx2X86,
    /// x86-64 AVX2 + F16C in ggml's generic float order (no FMA in the float combine):
    /// identical to [`Self::Scalar`].
    Avx2,
    /// x86-64 AVX-512 (F, BW, VL, VNNI) on top of [`Self::Avx2`], in ggml's generic float
    /// order: identical to [`Self::Scalar`]. Every SIMD format has a kernel of its own here,
    /// except one-token Q8_0 products, which run `avx2`'s (faster on the output heads).
    Avx512,
    /// aarch64 NEON (baseline on aarch64; results identical to scalar).
    Neon,
    /// aarch64 NEON with `SDOT` (dotprod, runtime detected) for the legacy formats; results
    /// identical to scalar.
    NeonDotprod,
}

impl KernelBackend {
    /// Name for logs and benchmarks.
    pub fn name(self) -> &'static str {
        match self {
            Self::Scalar => "scalar",
            Self::ScalarX86 => "scalar-x86",
            Self::Avx2X86 => "avx2-x86",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
            Self::Neon => "neon",
            Self::NeonDotprod => "neon-dotprod",
        }
    }

    /// True when this backend can run on this CPU.
    pub fn is_available(self) -> bool {
        match self {
            Self::Scalar | Self::ScalarX86 => true,
            Self::Avx2 | Self::Avx2X86 => avx2_available(),
            Self::Avx512 => avx2_available() && avx512_available(),
            Self::Neon => cfg!(target_arch = "aarch64"),
            Self::NeonDotprod => dotprod_available(),
        }
    }

    /// The scalar backend computing the same float operations in the same order (bit-identical
    /// results).
    pub fn reference(self) -> KernelBackend {
        match self {
            Self::ScalarX86 | Self::Avx2X86 => Self::ScalarX86,
            Self::Scalar | Self::Avx2 | Self::Avx512 | Self::Neon | Self::NeonDotprod => {
                Self::Scalar
            }
        }
    }

    /// True for the backends [`backend`] may pick without being asked by name.
    fn auto(self) -> bool {
        !matches!(self, Self::ScalarX86 | Self::Avx2X86)
    }
}

fn dotprod_available() -> bool {
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("dotprod")
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        false
    }
}

fn avx512_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::avx512::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn avx2_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The best backend for this CPU, unless `EDGERAY_KERNELS=scalar`. Decided once per process.
pub fn backend() -> KernelBackend {
    static B: OnceLock<KernelBackend> = OnceLock::new();
    *B.get_or_init(|| {
        choose_backend(
            std::env::var("EDGERAY_KERNELS").ok().as_deref(),
            &available_backends(),
        )
    })
}

/// Pure backend choice from the `EDGERAY_KERNELS` value and the available backends (scalar
/// first, best last): the named backend when it is available, else the best one.
fn choose_backend(env: Option<&str>, available: &[KernelBackend]) -> KernelBackend {
    if let Some(v) = env
        && let Some(b) = available.iter().find(|b| b.name().eq_ignore_ascii_case(v))
    {
        return *b;
    }
    available
        .iter()
        .rev()
        .find(|b| b.auto())
        .copied()
        .unwrap_or(KernelBackend::Scalar)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_forces_scalar() {
        let x86 = [
            KernelBackend::Scalar,
            KernelBackend::ScalarX86,
            KernelBackend::Avx2X86,
            KernelBackend::Avx2,
        ];
        assert_eq!(choose_backend(Some("scalar"), &x86), KernelBackend::Scalar);
        assert_eq!(
            choose_backend(Some("scalar-x86"), &x86),
            KernelBackend::ScalarX86
        );
        assert_eq!(
            choose_backend(Some("avx2-x86"), &x86),
            KernelBackend::Avx2X86
        );
        // the x86-order scalar path is only used when named
        let no_simd = [KernelBackend::Scalar, KernelBackend::ScalarX86];
        assert_eq!(choose_backend(None, &no_simd), KernelBackend::Scalar);
        assert_eq!(choose_backend(Some("SCALAR"), &x86), KernelBackend::Scalar);
        assert_eq!(choose_backend(None, &x86), KernelBackend::Avx2);
        assert_eq!(choose_backend(Some("auto"), &x86), KernelBackend::Avx2);
        assert_eq!(
            choose_backend(None, &[KernelBackend::Scalar]),
            KernelBackend::Scalar
        );
        // AVX-512 is preferred where present, and `avx2` can still be named there
        let x86_512 = [
            KernelBackend::Scalar,
            KernelBackend::ScalarX86,
            KernelBackend::Avx2X86,
            KernelBackend::Avx2,
            KernelBackend::Avx512,
        ];
        assert_eq!(choose_backend(None, &x86_512), KernelBackend::Avx512);
        assert_eq!(choose_backend(Some("avx2"), &x86_512), KernelBackend::Avx2);
        assert_eq!(KernelBackend::Avx512.reference(), KernelBackend::Scalar);
        let arm = [
            KernelBackend::Scalar,
            KernelBackend::Neon,
            KernelBackend::NeonDotprod,
        ];
        assert_eq!(choose_backend(None, &arm), KernelBackend::NeonDotprod);
        assert_eq!(choose_backend(Some("neon"), &arm), KernelBackend::Neon);
        assert_eq!(choose_backend(Some("scalar"), &arm), KernelBackend::Scalar);
        // a backend this CPU lacks is ignored
        assert_eq!(
            choose_backend(Some("avx2"), &arm),
            KernelBackend::NeonDotprod
        );
        assert!(available_backends().contains(&KernelBackend::Scalar));
        #[cfg(target_arch = "aarch64")]
        assert!(available_backends().contains(&KernelBackend::Neon));
    }
}

/// Backends usable on this CPU (scalar first).
pub fn available_backends() -> Vec<KernelBackend> {
    [
        KernelBackend::Scalar,
        KernelBackend::ScalarX86,
        KernelBackend::Avx2X86,
        KernelBackend::Avx2,
        KernelBackend::Avx512,
        KernelBackend::Neon,
        KernelBackend::NeonDotprod,
    ]
    .into_iter()
    .filter(|b| b.is_available())
    .collect()
}

/// Most activation rows a [`RowFn`] or one step of a [`TileFn`] handles.
pub(crate) const MAX_TOKENS: usize = 4;

/// Dots of one weight row with activation rows `t0 .. t0 + out.len()` (`out.len() <= MAX_TOKENS`),
/// so a kernel can decode each weight block once for several tokens.
pub(crate) type RowFn = fn(&[u8], &Activations, usize, &mut [f32]);

/// Dots of a run of consecutive weight rows (`w`, rows of `row_bytes`) with activation rows
/// `t0 .. t0 + nt`: `out[k * nrows + i]` = row `i` · token `t0 + k`, `nrows = w.len() /
/// row_bytes`. One call per tile keeps per-row overhead out of the inner loops.
pub(crate) type TileFn = fn(&[u8], usize, &Activations, usize, usize, &mut [f32]);

/// A backend's kernel for one weight type.
#[derive(Clone, Copy)]
pub(crate) enum Kernel {
    /// One row per call.
    Row(RowFn),
    /// A tile of rows per call.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Tile(TileFn),
}

impl Kernel {
    /// Runs the kernel over a tile (see [`TileFn`]).
    pub(crate) fn tile(
        self,
        w: &[u8],
        row_bytes: usize,
        a: &Activations,
        t0: usize,
        nt: usize,
        out: &mut [f32],
    ) {
        match self {
            Self::Tile(f) => f(w, row_bytes, a, t0, nt, out),
            Self::Row(f) => {
                let nrows = w.len() / row_bytes;
                for (i, row) in w.chunks_exact(row_bytes).enumerate() {
                    let mut t = 0;
                    while t < nt {
                        let n = (nt - t).min(MAX_TOKENS);
                        let mut v = [0f32; MAX_TOKENS];
                        f(row, a, t0 + t, &mut v[..n]);
                        for (k, &vk) in v[..n].iter().enumerate() {
                            out[(t + k) * nrows + i] = vk;
                        }
                        t += n;
                    }
                }
            }
        }
    }

    /// An address identifying the kernel function (tests check dispatch with it).
    #[cfg(test)]
    pub(crate) fn addr(self) -> usize {
        match self {
            Self::Tile(f) => f as usize,
            Self::Row(f) => f as usize,
        }
    }
}

/// A tile kernel over rows packed by `super::packed::PackedRows8` (vectors of whole groups,
/// row count, activations, first token, tokens, output).
#[cfg(target_arch = "x86_64")]
pub(crate) type PrepackedTileFn =
    fn(&[std::arch::x86_64::__m256i], usize, &super::matrix::Activations, usize, usize, &mut [f32]);

/// The packed-rows kernel of `backend` for weights of `ty` (Q8_0, Q5_0, Q4_0), for the
/// generic-order x86 backends that have one.
#[cfg(target_arch = "x86_64")]
pub(crate) fn prepacked(backend: KernelBackend, ty: GgmlType) -> Option<PrepackedTileFn> {
    use super::avx2::{Avx2Rows8, legacy_tile_prepacked};
    use super::avx2_blocks::{L_Q4_0, L_Q5_0, L_Q8_0};
    use super::avx512::Vnni;
    Some(match (backend, ty) {
        (KernelBackend::Avx512, _) if !super::avx512::available() => return None,
        (KernelBackend::Avx2, _) if !backend.is_available() => return None,
        (KernelBackend::Avx512, GgmlType::Q8_0) => legacy_tile_prepacked::<L_Q8_0, Vnni>,
        (KernelBackend::Avx512, GgmlType::Q5_0) => legacy_tile_prepacked::<L_Q5_0, Vnni>,
        (KernelBackend::Avx512, GgmlType::Q4_0) => legacy_tile_prepacked::<L_Q4_0, Vnni>,
        (KernelBackend::Avx2, GgmlType::Q8_0) => legacy_tile_prepacked::<L_Q8_0, Avx2Rows8>,
        (KernelBackend::Avx2, GgmlType::Q5_0) => legacy_tile_prepacked::<L_Q5_0, Avx2Rows8>,
        (KernelBackend::Avx2, GgmlType::Q4_0) => legacy_tile_prepacked::<L_Q4_0, Avx2Rows8>,
        _ => return None,
    })
}

/// The kernel for weights of `ty` on `backend` (the backend's reference scalar kernel for
/// types it has no SIMD version of).
pub(crate) fn kernel(ty: GgmlType, backend: KernelBackend) -> Result<Kernel, QuantError> {
    #[cfg(target_arch = "x86_64")]
    if backend == KernelBackend::Avx2X86
        && let Some(f) = super::avx2_x86::tile_fn(ty)
    {
        return Ok(Kernel::Tile(f));
    }
    #[cfg(target_arch = "x86_64")]
    if backend == KernelBackend::Avx512
        && let Some(f) = super::avx512::tile_fn(ty)
    {
        return Ok(Kernel::Tile(f));
    }
    #[cfg(target_arch = "x86_64")]
    if backend == KernelBackend::Avx2
        && let Some(f) = super::avx2::tile_fn(ty)
    {
        return Ok(Kernel::Tile(f));
    }
    #[cfg(target_arch = "aarch64")]
    if matches!(backend, KernelBackend::Neon | KernelBackend::NeonDotprod)
        && let Some(f) = super::neon::row_fn(ty, backend == KernelBackend::NeonDotprod)
    {
        return Ok(Kernel::Row(f));
    }
    let x86 = backend.reference() == KernelBackend::ScalarX86;
    Ok(Kernel::Row(match ty {
        GgmlType::F32 => r_f32,
        GgmlType::F16 => r_f16,
        GgmlType::Q8_0 if x86 => r_q8_0_x86,
        GgmlType::Q5_0 if x86 => r_q5_0_x86,
        GgmlType::Q4_0 if x86 => r_q4_0_x86,
        GgmlType::Q4_K if x86 => r_q4_k_x86,
        GgmlType::Q6_K if x86 => r_q6_k_x86,
        GgmlType::Q8_0 => r_q8_0,
        GgmlType::Q5_0 => r_q5_0,
        GgmlType::Q4_0 => r_q4_0,
        GgmlType::Q4_K => r_q4_k,
        GgmlType::Q6_K => r_q6_k,
        other => {
            return Err(QuantError::Unsupported {
                op: "matvec",
                ty: other,
            });
        }
    }))
}

/// Defines a [`RowFn`] that loops a single-token [`DotFn`] over the tokens.
macro_rules! row_from_dot {
    ($name:ident, $dot:path) => {
        pub(crate) fn $name(w: &[u8], a: &Activations, t0: usize, out: &mut [f32]) {
            for (k, o) in out.iter_mut().enumerate() {
                *o = $dot(w, a, t0 + k);
            }
        }
    };
}

row_from_dot!(r_f32, s_f32);
row_from_dot!(r_f16, s_f16);
row_from_dot!(r_q8_0, s_q8_0);
row_from_dot!(r_q5_0, s_q5_0);
row_from_dot!(r_q4_0, s_q4_0);
row_from_dot!(r_q4_k, s_q4_k);
row_from_dot!(r_q6_k, s_q6_k);
row_from_dot!(r_q8_0_x86, s_q8_0_x86);
row_from_dot!(r_q5_0_x86, s_q5_0_x86);
row_from_dot!(r_q4_0_x86, s_q4_0_x86);
row_from_dot!(r_q4_k_x86, s_q4_k_x86);
row_from_dot!(r_q6_k_x86, s_q6_k_x86);

macro_rules! q8_0_dot {
    ($name:ident, $f:path) => {
        fn $name(w: &[u8], a: &Activations, t: usize) -> f32 {
            $f(w, a.q8_0().row(t, a.cols()))
        }
    };
}
macro_rules! q8k_dot {
    ($name:ident, $f:path) => {
        fn $name(w: &[u8], a: &Activations, t: usize) -> f32 {
            $f(w, a.q8k().row(t, a.cols()))
        }
    };
}

q8_0_dot!(s_q8_0, scalar::dot_q8_0_q8_0);
q8_0_dot!(s_q5_0, scalar::dot_q5_0_q8_0);
q8_0_dot!(s_q4_0, scalar::dot_q4_0_q8_0);
q8k_dot!(s_q4_k, scalar::dot_q4_k_q8_k);
q8k_dot!(s_q6_k, scalar::dot_q6_k_q8_k);
q8_0_dot!(s_q8_0_x86, scalar_x86::dot_q8_0_q8_0_x86);
q8_0_dot!(s_q5_0_x86, scalar_x86::dot_q5_0_q8_0_x86);
q8_0_dot!(s_q4_0_x86, scalar_x86::dot_q4_0_q8_0_x86);
q8k_dot!(s_q4_k_x86, scalar_x86::dot_q4_k_q8_k_x86);
q8k_dot!(s_q6_k_x86, scalar_x86::dot_q6_k_q8_k_x86);

fn s_f32(w: &[u8], a: &Activations, t: usize) -> f32 {
    scalar::dot_f32_f32(w, a.f32_row(t))
}
fn s_f16(w: &[u8], a: &Activations, t: usize) -> f32 {
    scalar::dot_f16_f16(w, a.f32_row(t))
}
