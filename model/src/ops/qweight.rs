//! [`QuantWeight`]: a quantized GGUF matrix kept as raw blocks (shared with the memory map),
//! with the kernel thread pool its products run on.

use std::fmt;
use std::sync::Arc;

use crate::arch::ArchError;
use crate::gguf::GgufFile;
use crate::quant::{KernelPool, QuantError, QuantMatrix, matmul};

/// A `[rows, cols]` matrix of GGUF blocks (row `r` = output feature `r`); cheap to clone.
#[derive(Clone)]
pub struct QuantWeight {
    name: Arc<str>,
    matrix: Arc<QuantMatrix>,
    pool: Arc<KernelPool>,
}

impl fmt::Debug for QuantWeight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "QuantWeight({} {} [{}x{}])",
            self.name,
            self.matrix.ty(),
            self.rows(),
            self.cols()
        )
    }
}

impl QuantWeight {
    /// The 2-D tensor `name` of `file` (ggml dims `[cols, rows]`), without copying its bytes;
    /// products run on `pool`.
    pub fn from_gguf(
        file: &GgufFile,
        name: &str,
        pool: &Arc<KernelPool>,
    ) -> Result<Self, ArchError> {
        let info = file.require_tensor(name)?;
        if info.dims.len() != 2 {
            return Err(ArchError::BadTensor {
                name: name.into(),
                reason: format!("expected 2 dims, got {:?}", info.dims),
            });
        }
        let matrix = file.matrix(name)?;
        Ok(Self {
            name: name.into(),
            matrix: Arc::new(matrix),
            pool: pool.clone(),
        })
    }

    /// Rows `range` of this weight (output features `range`), sharing its bytes: what a
    /// tensor-parallel member holds of a matrix split by output rows. Named `name[a..b]`.
    pub fn slice_rows(&self, range: std::ops::Range<usize>) -> Result<Self, ArchError> {
        let matrix = self.matrix.slice_rows(range.clone())?;
        Ok(Self {
            name: format!("{}[{}..{}]", self.name, range.start, range.end).into(),
            matrix: Arc::new(matrix),
            pool: self.pool.clone(),
        })
    }

    /// Tensor name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.matrix.rows()
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        self.matrix.cols()
    }

    /// Keeps a packed copy of the rows where the kernels have one (Q8_0, Q5_0 and Q4_0 on x86;
    /// see [`QuantMatrix::prepack`]): results never change, decode steps of several sequences
    /// get faster. Returns whether it packed.
    pub fn prepack(&mut self) -> bool {
        Arc::make_mut(&mut self.matrix).prepack()
    }

    /// The underlying matrix.
    pub fn matrix(&self) -> &QuantMatrix {
        &self.matrix
    }

    /// Size of the raw blocks.
    pub fn n_bytes(&self) -> usize {
        self.matrix.data().len()
    }

    /// Dequantizes rows `ids` into `out` (`ids.len() * cols`), e.g. an embedding lookup.
    pub fn dequantize_rows(&self, ids: &[usize], out: &mut [f32]) -> Result<(), ArchError> {
        Ok(self.matrix.dequantize_rows(ids, out)?)
    }

    /// `out[i, r] = Σ_c x[i, c] · W[r, c]` for `n` input rows, on edgeray's kernels (activations
    /// quantized to Q8_0 / Q8_K like ggml).
    pub(crate) fn matmul(&self, x: &[f32], n: usize, out: &mut [f32]) -> Result<(), QuantError> {
        matmul(&self.matrix, x, n, out, &self.pool)
    }
}
