//! ggml quantization formats: types, bit-exact dequantization, activation quantization and the
//! matrix kernels.
//!
//! ```no_run
//! use edgeray_model::gguf::GgufFile;
//! use edgeray_model::quant::{KernelPool, matvec};
//! let f = GgufFile::open("models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")?;
//! let w = f.matrix("blk.0.ffn_down.weight")?;
//! let pool = KernelPool::new(2)?;
//! let x = vec![0.5f32; w.cols()];
//! let mut y = vec![0f32; w.rows()];
//! matvec(&w, &x, &mut y, &pool)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod act;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx2_blocks;
#[cfg(target_arch = "x86_64")]
mod avx2_x86;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod bytes;
#[cfg(target_arch = "x86_64")]
mod compact;
mod dequant;
mod error;
mod kernels;
mod matrix;
#[cfg(target_arch = "aarch64")]
mod neon;
mod packed;
mod pool;
mod scalar;
mod scalar_x86;
mod types;

#[cfg(test)]
mod tests;

pub use act::{
    Q8_0Acts, Q8KActs, nearest_int, quantize_row_q8_0, quantize_row_q8_0_ref,
    quantize_row_q8_0_selected, quantize_row_q8_k,
};
pub use bytes::SharedBytes;
pub use dequant::{can_dequantize, dequantize_row};
pub use error::QuantError;
pub use kernels::{KernelBackend, available_backends, backend};
pub use matrix::{
    ActKind, Activations, QuantMatrix, matmul, matmul_prepared, matmul_with_backend, matvec,
};
pub use packed::PackedRows8;
pub use pool::{KernelPool, split_ranges};
pub use scalar::{
    Q8_0Row, Q8KRow, dot_f16_f16, dot_f32_f32, dot_q4_0_q8_0, dot_q4_k_q8_k, dot_q5_0_q8_0,
    dot_q6_k_q8_k, dot_q8_0_q8_0,
};
pub use scalar_x86::{
    dot_q4_0_q8_0_x86, dot_q4_k_q8_k_x86, dot_q5_0_q8_0_x86, dot_q6_k_q8_k_x86, dot_q8_0_q8_0_x86,
    hsum_float_8,
};
pub use types::{GgmlType, QK_K, QK32};
