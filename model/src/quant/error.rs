//! Errors of the quantization kernels.

use super::types::GgmlType;

/// Errors returned by dequantization, activation quantization and the matrix kernels.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    /// The operation is not implemented for this type.
    #[error("{op} is not supported for ggml type {ty}")]
    Unsupported {
        /// What was attempted.
        op: &'static str,
        /// The offending type.
        ty: GgmlType,
    },
    /// An element count is not a multiple of the type's block size.
    #[error("{n} elements is not a multiple of the {ty} block size {block}")]
    NotBlockAligned {
        /// The type.
        ty: GgmlType,
        /// The element count.
        n: usize,
        /// The block size.
        block: usize,
    },
    /// A buffer has the wrong length.
    #[error("{what}: expected length {expected}, got {got}")]
    LengthMismatch {
        /// Which buffer.
        what: &'static str,
        /// Required length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// A row index is out of range.
    #[error("row index {index} out of range for a matrix of {rows} rows")]
    RowOutOfRange {
        /// The index asked for.
        index: usize,
        /// Number of rows.
        rows: usize,
    },
    /// Matrix dimensions overflow or are zero.
    #[error("invalid matrix shape {rows}x{cols}: {reason}")]
    BadShape {
        /// Rows.
        rows: usize,
        /// Columns (elements per row).
        cols: usize,
        /// Why.
        reason: &'static str,
    },
    /// The kernel thread pool could not be built.
    #[error("cannot build kernel thread pool: {0}")]
    Pool(String),
}
