//! Kernel backend selection: the scalar reference path or SIMD paths, chosen at run time.
//! `EDGERAY_KERNELS=scalar` forces the scalar path; `EDGERAY_KERNELS=<backend name>` (e.g. `neon`
//! on a dotprod CPU) picks another available backend.

use super::dot;
use super::error::QuantError;
use super::matrix::Activations;
use super::types::GgmlType;
use std::sync::OnceLock;

/// Which implementation of the vec-dot kernels runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Portable scalar code, the reference.
    Scalar,
    /// x86-64 AVX2 + F16C (no FMA in the float combine: results identical to scalar).
    Avx2,
    /// aarch64 NEON (baseline on aarch64; results identical to scalar).
    Neon,
    /// aarch64 NEON with `SDOT` (dotprod, runtime detected) for the legacy formats; results
    /// identical to scalar.
    NeonDotprod,
}

impl Backend {
    /// Name for logs and benchmarks.
    pub fn name(self) -> &'static str {
        match self {
            Self::Scalar => "scalar",
            Self::Avx2 => "avx2",
            Self::Neon => "neon",
            Self::NeonDotprod => "neon-dotprod",
        }
    }

    /// True when this backend can run on this CPU.
    pub fn is_available(self) -> bool {
        match self {
            Self::Scalar => true,
            Self::Avx2 => avx2_available(),
            Self::Neon => cfg!(target_arch = "aarch64"),
            Self::NeonDotprod => dotprod_available(),
        }
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

fn avx2_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The best backend for this CPU, unless `EDGERAY_KERNELS=scalar`. Decided once per process.
pub fn backend() -> Backend {
    static B: OnceLock<Backend> = OnceLock::new();
    *B.get_or_init(|| {
        choose_backend(
            std::env::var("EDGERAY_KERNELS").ok().as_deref(),
            &available_backends(),
        )
    })
}

/// Pure backend choice from the `EDGERAY_KERNELS` value and the available backends (scalar
/// first, best last): the named backend when it is available, else the best one.
fn choose_backend(env: Option<&str>, available: &[Backend]) -> Backend {
    if let Some(v) = env
        && let Some(b) = available.iter().find(|b| b.name().eq_ignore_ascii_case(v))
    {
        return *b;
    }
    available.last().copied().unwrap_or(Backend::Scalar)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_forces_scalar() {
        let x86 = [Backend::Scalar, Backend::Avx2];
        assert_eq!(choose_backend(Some("scalar"), &x86), Backend::Scalar);
        assert_eq!(choose_backend(Some("SCALAR"), &x86), Backend::Scalar);
        assert_eq!(choose_backend(None, &x86), Backend::Avx2);
        assert_eq!(choose_backend(Some("auto"), &x86), Backend::Avx2);
        assert_eq!(choose_backend(None, &[Backend::Scalar]), Backend::Scalar);
        let arm = [Backend::Scalar, Backend::Neon, Backend::NeonDotprod];
        assert_eq!(choose_backend(None, &arm), Backend::NeonDotprod);
        assert_eq!(choose_backend(Some("neon"), &arm), Backend::Neon);
        assert_eq!(choose_backend(Some("scalar"), &arm), Backend::Scalar);
        // a backend this CPU lacks is ignored
        assert_eq!(choose_backend(Some("avx2"), &arm), Backend::NeonDotprod);
        assert!(available_backends().contains(&Backend::Scalar));
        #[cfg(target_arch = "aarch64")]
        assert!(available_backends().contains(&Backend::Neon));
    }
}

/// Backends usable on this CPU (scalar first).
pub fn available_backends() -> Vec<Backend> {
    [
        Backend::Scalar,
        Backend::Avx2,
        Backend::Neon,
        Backend::NeonDotprod,
    ]
    .into_iter()
    .filter(|b| b.is_available())
    .collect()
}

/// Most activation rows a [`RowFn`] handles per call.
pub(crate) const MAX_TOKENS: usize = 4;

/// Dots of one weight row with activation rows `t0 .. t0 + out.len()` (`out.len() <= MAX_TOKENS`),
/// so a kernel can decode each weight block once for several tokens.
pub(crate) type RowFn = fn(&[u8], &Activations, usize, &mut [f32]);

/// The row kernel for weights of `ty` on `backend` (scalar for types the backend has no SIMD
/// version of).
pub(crate) fn row_fn(ty: GgmlType, backend: Backend) -> Result<RowFn, QuantError> {
    #[cfg(target_arch = "x86_64")]
    if backend == Backend::Avx2
        && let Some(f) = super::avx2::row_fn(ty)
    {
        return Ok(f);
    }
    #[cfg(target_arch = "aarch64")]
    if matches!(backend, Backend::Neon | Backend::NeonDotprod)
        && let Some(f) = super::neon::row_fn(ty, backend == Backend::NeonDotprod)
    {
        return Ok(f);
    }
    let _ = backend;
    Ok(match ty {
        GgmlType::F32 => r_f32,
        GgmlType::F16 => r_f16,
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
    })
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

q8_0_dot!(s_q8_0, dot::dot_q8_0_q8_0);
q8_0_dot!(s_q5_0, dot::dot_q5_0_q8_0);
q8_0_dot!(s_q4_0, dot::dot_q4_0_q8_0);
q8k_dot!(s_q4_k, dot::dot_q4_k_q8_k);
q8k_dot!(s_q6_k, dot::dot_q6_k_q8_k);

fn s_f32(w: &[u8], a: &Activations, t: usize) -> f32 {
    dot::dot_f32_f32(w, a.f32_row(t))
}
fn s_f16(w: &[u8], a: &Activations, t: usize) -> f32 {
    dot::dot_f16_f16(w, a.f32_row(t))
}
