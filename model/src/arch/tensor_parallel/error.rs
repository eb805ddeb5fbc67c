//! Errors of loading and running a tensor-parallel group.

use super::slicing::SliceError;
use crate::arch::ArchError;
use crate::gguf::GgufError;
use crate::quant::QuantError;

/// Everything that can go wrong planning, loading or running a tensor-parallel group.
#[derive(Debug, thiserror::Error)]
pub enum TpError {
    /// No plan exists for this group.
    #[error(transparent)]
    Slice(#[from] SliceError),
    /// Loading or running the model parts failed.
    #[error(transparent)]
    Arch(#[from] ArchError),
    /// Reading the GGUF file failed.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// A quantized kernel failed.
    #[error(transparent)]
    Quant(#[from] QuantError),
    /// Pieces handed to a gather or a member do not fit the synchronisation point.
    #[error("tensor-parallel protocol: {0}")]
    Protocol(String),
}
