//! Kernel backend selection: the scalar reference path or SIMD paths, chosen at run time.
//! `EDGERAY_KERNELS=scalar` forces the scalar path.

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
    /// x86-64 AVX2 (+FMA-free float combine, identical results to scalar).
    Avx2,
}

impl Backend {
    /// Name for logs and benchmarks.
    pub fn name(self) -> &'static str {
        match self {
            Self::Scalar => "scalar",
            Self::Avx2 => "avx2",
        }
    }

    /// True when this backend can run on this CPU.
    pub fn is_available(self) -> bool {
        match self {
            Self::Scalar => true,
            Self::Avx2 => avx2_available(),
        }
    }
}

fn avx2_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
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
        if std::env::var("EDGERAY_KERNELS").is_ok_and(|v| v.eq_ignore_ascii_case("scalar")) {
            return Backend::Scalar;
        }
        if avx2_available() { Backend::Avx2 } else { Backend::Scalar }
    })
}

/// Backends usable on this CPU (scalar first).
pub fn available_backends() -> Vec<Backend> {
    [Backend::Scalar, Backend::Avx2].into_iter().filter(|b| b.is_available()).collect()
}

/// A dot product of one weight row with activation row `t`.
pub(crate) type DotFn = fn(&[u8], &Activations, usize) -> f32;

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

/// The dot kernel for weights of `ty` on `backend` (falls back to scalar for types the backend
/// has no SIMD version of).
pub(crate) fn dot_fn(ty: GgmlType, backend: Backend) -> Result<DotFn, QuantError> {
    #[cfg(target_arch = "x86_64")]
    if backend == Backend::Avx2 {
        if let Some(f) = super::avx2::dot_fn(ty) {
            return Ok(f);
        }
    }
    let _ = backend;
    Ok(match ty {
        GgmlType::F32 => s_f32,
        GgmlType::F16 => s_f16,
        GgmlType::Q8_0 => s_q8_0,
        GgmlType::Q5_0 => s_q5_0,
        GgmlType::Q4_0 => s_q4_0,
        GgmlType::Q4_K => s_q4_k,
        GgmlType::Q6_K => s_q6_k,
        other => return Err(QuantError::Unsupported { op: "matvec", ty: other }),
    })
}
