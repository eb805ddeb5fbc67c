//! [`QuantMatrix`] and the matvec / matmul entry points.

use super::act::{Q8_0Acts, Q8KActs, quantize_row_q8_0_selected, quantize_row_q8_k};
use super::bytes::SharedBytes;
use super::dequant::{can_dequantize, dequantize_row};
use super::error::QuantError;
use super::kernels::{Kernel, KernelBackend, backend, kernel};
use super::pool::KernelPool;
use super::types::GgmlType;
use half::f16;
use std::sync::OnceLock;

/// A weight matrix in ggml layout: `rows` rows of `cols` elements, row `r` stored at bytes
/// `[r * row_bytes, (r + 1) * row_bytes)`. The bytes are shared (e.g. a slice of a mmapped GGUF).
#[derive(Clone, Debug)]
pub struct QuantMatrix {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    data: SharedBytes,
    /// The rows in the packed layout, when [`QuantMatrix::prepack`] made them.
    packed: Option<std::sync::Arc<super::packed::PackedRows8>>,
}

/// The activation format a weight type's vec-dot consumes (ggml's `vec_dot_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActKind {
    /// f32 activations (F32 weights).
    F32,
    /// activations rounded to f16 (F16 weights).
    F16,
    /// Q8_0 blocks (Q4_0, Q5_0, Q8_0 weights).
    Q8_0,
    /// Q8_K blocks (Q4_K, Q6_K weights).
    Q8K,
}

impl ActKind {
    /// The activation kind for weights of type `ty`, or an error when matvec does not support it.
    pub fn for_weights(ty: GgmlType) -> Result<Self, QuantError> {
        Ok(match ty {
            GgmlType::F32 => Self::F32,
            GgmlType::F16 => Self::F16,
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => Self::Q8_0,
            GgmlType::Q4_K | GgmlType::Q6_K => Self::Q8K,
            other => {
                return Err(QuantError::Unsupported {
                    op: "matvec",
                    ty: other,
                });
            }
        })
    }
}

/// `n` activation rows of `cols` elements, converted once to the format some weights consume.
/// Reuse one for several matrices of the same [`ActKind`] (e.g. Q, K and V projections).
#[derive(Debug, Clone)]
pub struct Activations {
    kind: ActKind,
    n: usize,
    cols: usize,
    f: Vec<f32>,
    q8_0: Q8_0Acts,
    q8k: Q8KActs,
    /// The Q8_K quants in a kernel's own element order, made on first use (see
    /// [`Activations::q8k_arranged`]), with the arranging function that made them.
    q8k_arranged: OnceLock<(usize, Vec<i8>)>,
}

impl Activations {
    /// Converts `x` (`n` rows of `cols`, row-major) for weights consuming `kind`.
    pub fn new(kind: ActKind, x: &[f32], n: usize, cols: usize) -> Result<Self, QuantError> {
        let expected = n.checked_mul(cols).ok_or(QuantError::BadShape {
            rows: n,
            cols,
            reason: "overflow",
        })?;
        if x.len() != expected {
            return Err(QuantError::LengthMismatch {
                what: "activations",
                expected,
                got: x.len(),
            });
        }
        let mut a = Self {
            kind,
            n,
            cols,
            f: Vec::new(),
            q8_0: Q8_0Acts::default(),
            q8k: Q8KActs::default(),
            q8k_arranged: OnceLock::new(),
        };
        match kind {
            ActKind::F32 => a.f = x.to_vec(),
            ActKind::F16 => a.f = x.iter().map(|&v| f16::from_f32(v).to_f32()).collect(),
            ActKind::Q8_0 => {
                for row in x.chunks_exact(cols.max(1)) {
                    quantize_row_q8_0_selected(row, &mut a.q8_0)?;
                }
            }
            ActKind::Q8K => {
                for row in x.chunks_exact(cols.max(1)) {
                    quantize_row_q8_k(row, &mut a.q8k)?;
                }
            }
        }
        Ok(a)
    }

    /// [`Activations::new`] with the rows quantized in parallel on `pool`, one contiguous run
    /// of rows per thread: the same result (rows are quantized independently). A prompt's
    /// activations are quantized before each of its matrix products; serially that was about
    /// 8% of gemma3's 2-thread prompt processing, with the pool's other threads idle.
    pub fn new_on(
        kind: ActKind,
        x: &[f32],
        n: usize,
        cols: usize,
        pool: &KernelPool,
    ) -> Result<Self, QuantError> {
        // Below a few rows per thread the hand-off costs more than it saves.
        const MIN_ROWS_PER_THREAD: usize = 4;
        if !matches!(kind, ActKind::Q8_0 | ActKind::Q8K)
            || pool.threads() < 2
            || n < MIN_ROWS_PER_THREAD * 2
            || n.checked_mul(cols) != Some(x.len())
        {
            return Self::new(kind, x, n, cols);
        }
        let parts = std::sync::Mutex::new(Vec::new());
        pool.for_each_range(n, MIN_ROWS_PER_THREAD, |rows| {
            let part = Self::new(
                kind,
                &x[rows.start * cols..rows.end * cols],
                rows.len(),
                cols,
            );
            parts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((rows.start, part));
        });
        let mut parts = parts.into_inner().unwrap_or_else(|p| p.into_inner());
        parts.sort_by_key(|(start, _)| *start);
        let mut all = Self::new(kind, &[], 0, cols)?;
        all.n = n;
        for (_, part) in parts {
            let part = part?;
            let (q, p) = (&mut all.q8_0, part.q8_0);
            q.d.extend_from_slice(&p.d);
            q.qs.extend_from_slice(&p.qs);
            q.sums.extend_from_slice(&p.sums);
            let (q, p) = (&mut all.q8k, part.q8k);
            q.d.extend_from_slice(&p.d);
            q.qs.extend_from_slice(&p.qs);
            q.bsums.extend_from_slice(&p.bsums);
        }
        Ok(all)
    }

    /// Converts `x` for the weights `w` (kind taken from `w.ty()`, `cols` from `w.cols()`).
    pub fn for_matrix(w: &QuantMatrix, x: &[f32], n: usize) -> Result<Self, QuantError> {
        Self::new(ActKind::for_weights(w.ty)?, x, n, w.cols)
    }

    /// The format.
    pub fn kind(&self) -> ActKind {
        self.kind
    }

    /// Number of rows (tokens).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Elements per row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    pub(crate) fn f32_row(&self, t: usize) -> &[f32] {
        &self.f[t * self.cols..(t + 1) * self.cols]
    }

    pub(crate) fn q8_0(&self) -> &Q8_0Acts {
        &self.q8_0
    }

    pub(crate) fn q8k(&self) -> &Q8KActs {
        &self.q8k
    }

    /// All rows' Q8_K quants rearranged by `arrange` (which maps the whole quant array to an
    /// array of the same length), computed once and shared by every later call and thread.
    /// `None` when another function arranged them first: the caller then arranges its own.
    pub(crate) fn q8k_arranged(&self, arrange: fn(&[i8], &mut [i8])) -> Option<&[i8]> {
        let (by, quants) = self.q8k_arranged.get_or_init(|| {
            let mut v = vec![0i8; self.q8k.qs.len()];
            arrange(&self.q8k.qs, &mut v);
            (arrange as usize, v)
        });
        (*by == arrange as usize).then_some(quants.as_slice())
    }
}

impl QuantMatrix {
    /// Wraps `data` as a `rows` × `cols` matrix of `ty`; the length must match exactly.
    pub fn new(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        data: impl Into<SharedBytes>,
    ) -> Result<Self, QuantError> {
        let data = data.into();
        if rows == 0 || cols == 0 {
            return Err(QuantError::BadShape {
                rows,
                cols,
                reason: "zero dimension",
            });
        }
        let row_bytes = ty.row_bytes(cols).ok_or(QuantError::NotBlockAligned {
            ty,
            n: cols,
            block: ty.block_size(),
        })?;
        let expected = row_bytes.checked_mul(rows).ok_or(QuantError::BadShape {
            rows,
            cols,
            reason: "overflow",
        })?;
        if data.len() != expected {
            return Err(QuantError::LengthMismatch {
                what: "matrix bytes",
                expected,
                got: data.len(),
            });
        }
        Ok(Self {
            ty,
            rows,
            cols,
            row_bytes,
            data,
            packed: None,
        })
    }

    /// Keeps a packed copy of the rows (Q8_0, Q5_0 and Q4_0 on x86 with AVX2; see `packed`),
    /// releasing the raw rows' resident pages as it goes. Returns whether it did. Results
    /// never change: packed and raw kernels give the same bits.
    pub fn prepack(&mut self) -> bool {
        if self.packed.is_none() {
            self.packed = super::packed::PackedRows8::build(self).map(std::sync::Arc::new);
        }
        self.packed.is_some()
    }

    /// Bytes of the packed copy (0 when not packed).
    pub fn packed_bytes(&self) -> usize {
        self.packed.as_ref().map_or(0, |p| p.n_bytes())
    }

    /// Element type.
    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    /// Number of rows (output features).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Elements per row (input features).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    /// All bytes.
    pub fn data(&self) -> &SharedBytes {
        &self.data
    }

    /// The bytes of row `r`.
    pub fn row(&self, r: usize) -> Result<&[u8], QuantError> {
        if r >= self.rows {
            return Err(QuantError::RowOutOfRange {
                index: r,
                rows: self.rows,
            });
        }
        Ok(&self.data[r * self.row_bytes..(r + 1) * self.row_bytes])
    }

    /// Rows `range` as a matrix of their own, sharing these bytes (no copy): a row is whole
    /// blocks, so a row range is a byte sub-range. Each row's products are the same numbers in
    /// the slice as in the whole matrix (the kernels compute every row independently).
    pub fn slice_rows(&self, range: std::ops::Range<usize>) -> Result<Self, QuantError> {
        if range.start >= range.end || range.end > self.rows {
            return Err(QuantError::RowOutOfRange {
                index: range.end.max(range.start),
                rows: self.rows,
            });
        }
        let data = self
            .data
            .slice(range.start * self.row_bytes..range.end * self.row_bytes)
            .expect("row range checked against the matrix");
        Ok(Self {
            ty: self.ty,
            rows: range.len(),
            cols: self.cols,
            row_bytes: self.row_bytes,
            data,
            packed: None,
        })
    }

    /// Dequantizes the rows `indices` into `out` (`indices.len() * cols` floats, row-major):
    /// embedding lookup on a table that stays quantized.
    pub fn dequantize_rows(&self, indices: &[usize], out: &mut [f32]) -> Result<(), QuantError> {
        if !can_dequantize(self.ty) {
            return Err(QuantError::Unsupported {
                op: "dequantize_rows",
                ty: self.ty,
            });
        }
        let expected = indices.len() * self.cols;
        if out.len() != expected {
            return Err(QuantError::LengthMismatch {
                what: "dequantize_rows output",
                expected,
                got: out.len(),
            });
        }
        for (&r, o) in indices.iter().zip(out.chunks_exact_mut(self.cols)) {
            match &self.packed {
                Some(p) if r < p.rows() => p.dequantize_row(r, o),
                _ => dequantize_row(self.ty, self.row(r)?, o)?,
            }
        }
        Ok(())
    }

    /// Dequantizes the whole matrix (`rows * cols` floats).
    pub fn dequantize_all(&self) -> Result<Vec<f32>, QuantError> {
        let mut out = vec![0f32; self.rows * self.cols];
        dequantize_row(self.ty, &self.data, &mut out)?;
        Ok(out)
    }
}

/// `y[r] = dot(row r of w, x)` for every row; `x.len() == w.cols()`, `y.len() == w.rows()`.
pub fn matvec(
    w: &QuantMatrix,
    x: &[f32],
    y: &mut [f32],
    pool: &KernelPool,
) -> Result<(), QuantError> {
    matmul(w, x, 1, y, pool)
}

/// `y[t * rows + r] = dot(row r of w, x[t])` for `n` activation rows `x` (`n × cols`,
/// row-major); `y` is `n × rows`, row-major. Activations are quantized once and every weight row
/// is streamed once for all `n` rows.
pub fn matmul(
    w: &QuantMatrix,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    pool: &KernelPool,
) -> Result<(), QuantError> {
    let acts = Activations::new_on(ActKind::for_weights(w.ty)?, x, n, w.cols, pool)?;
    matmul_prepared(w, &acts, y, pool)
}

/// [`matmul`] with activations already converted (see [`Activations`]).
pub fn matmul_prepared(
    w: &QuantMatrix,
    acts: &Activations,
    y: &mut [f32],
    pool: &KernelPool,
) -> Result<(), QuantError> {
    matmul_with_backend(w, acts, y, pool, backend())
}

/// [`matmul_prepared`] on an explicit kernel backend (for tests and benchmarks).
pub fn matmul_with_backend(
    w: &QuantMatrix,
    acts: &Activations,
    y: &mut [f32],
    pool: &KernelPool,
    backend: KernelBackend,
) -> Result<(), QuantError> {
    let kind = ActKind::for_weights(w.ty)?;
    if acts.kind != kind {
        return Err(QuantError::Unsupported {
            op: "matmul with activations prepared for another kind",
            ty: w.ty,
        });
    }
    if acts.cols != w.cols {
        return Err(QuantError::LengthMismatch {
            what: "activation row length",
            expected: w.cols,
            got: acts.cols,
        });
    }
    let expected = acts.n * w.rows;
    if y.len() != expected {
        return Err(QuantError::LengthMismatch {
            what: "matmul output",
            expected,
            got: y.len(),
        });
    }
    let kernel: Kernel = kernel(w.ty, backend)?;
    #[cfg(target_arch = "x86_64")]
    if let Some(p) = &w.packed
        && let Some(f) = super::kernels::prepacked(backend, p.ty())
    {
        return matmul_prepacked(w, p, f, kernel, acts, y, pool);
    }
    let out = SyncPtr(y.as_mut_ptr());
    let (rows, rb, n) = (w.rows, w.row_bytes, acts.n);
    pool.for_each_range(rows, ROW_TILE, |range| {
        let out = &out;
        if n == 1 {
            // Decode: one call streams the whole range of rows straight into `y`.
            // SAFETY: `y` has `rows` elements (checked above); row ranges are disjoint across
            // threads and `y` outlives the scope.
            let y = unsafe { std::slice::from_raw_parts_mut(out.0.add(range.start), range.len()) };
            kernel.tile(&w.data[range.start * rb..range.end * rb], rb, acts, 0, 1, y);
            return;
        }
        // Tiles of ROW_TILE weight rows × TOKEN_TILE tokens keep both operands cache-resident
        // for long prompts; each weight row is read from memory once.
        let mut buf = [0f32; ROW_TILE * TOKEN_TILE];
        let mut r0 = range.start;
        while r0 < range.end {
            let r1 = (r0 + ROW_TILE).min(range.end);
            let nr = r1 - r0;
            let mut tt = 0;
            while tt < n {
                let nt = (n - tt).min(TOKEN_TILE);
                kernel.tile(
                    &w.data[r0 * rb..r1 * rb],
                    rb,
                    acts,
                    tt,
                    nt,
                    &mut buf[..nt * nr],
                );
                // SAFETY: `y` has n * rows elements (checked above); each (t, r) is written by
                // exactly one thread because row ranges are disjoint, and `y` outlives the scope.
                unsafe { out.scatter(&buf[..nt * nr], nr, tt, rows, r0) };
                tt += nt;
            }
            r0 = r1;
        }
    });
    Ok(())
}

/// [`matmul_with_backend`] on a matrix with a packed copy: the packed rows run `packed_tile`,
/// the last `rows % 8` the raw kernel. Thread ranges are multiples of [`ROW_TILE`] (so of 8)
/// except the last; tiles of [`ROW_TILE`] rows × [`TOKEN_TILE`] tokens as in the raw path.
#[cfg(target_arch = "x86_64")]
fn matmul_prepacked(
    w: &QuantMatrix,
    p: &super::packed::PackedRows8,
    packed_tile: super::kernels::PrepackedTileFn,
    raw: Kernel,
    acts: &Activations,
    y: &mut [f32],
    pool: &KernelPool,
) -> Result<(), QuantError> {
    let out = SyncPtr(y.as_mut_ptr());
    let (rows, rb, n, covered) = (w.rows, w.row_bytes, acts.n, p.rows());
    pool.for_each_range(rows, ROW_TILE, |range| {
        let out = &out;
        if n == 1 {
            // Decode: one call per part streams its rows straight into `y` (and lets the
            // kernels prefetch across the whole range).
            let split = range.end.min(covered).max(range.start);
            for (r0, r1) in [(range.start, split), (split, range.end)] {
                if r0 == r1 {
                    continue;
                }
                // SAFETY: as below: disjoint row ranges per thread, `y` holds `rows` elements.
                let y = unsafe { std::slice::from_raw_parts_mut(out.0.add(r0), r1 - r0) };
                if r0 < covered {
                    packed_tile(p.groups(r0 / 8, r1 / 8), r1 - r0, acts, 0, 1, y);
                } else {
                    raw.tile(&w.data[r0 * rb..r1 * rb], rb, acts, 0, 1, y);
                }
            }
            return;
        }
        let mut buf = [0f32; ROW_TILE * TOKEN_TILE];
        let mut r0 = range.start;
        while r0 < range.end {
            let r1 = (r0 + ROW_TILE).min(range.end);
            // Packed rows stop at whole groups; the tail rows take the raw kernel.
            let r1 = if r0 < covered { r1.min(covered) } else { r1 };
            let nr = r1 - r0;
            let mut tt = 0;
            while tt < n {
                let nt = (n - tt).min(TOKEN_TILE);
                let tile = &mut buf[..nt * nr];
                if r0 < covered {
                    packed_tile(p.groups(r0 / 8, r1 / 8), nr, acts, tt, nt, tile);
                } else {
                    raw.tile(&w.data[r0 * rb..r1 * rb], rb, acts, tt, nt, tile);
                }
                // SAFETY: as in `matmul_with_backend`: disjoint row ranges per thread, `y`
                // holds n * rows elements and outlives the scope.
                unsafe { out.scatter(tile, nr, tt, rows, r0) };
                tt += nt;
            }
            r0 = r1;
        }
    });
    Ok(())
}

/// Weight rows per cache tile in [`matmul_with_backend`].
const ROW_TILE: usize = 16;
/// Tokens per cache tile in [`matmul_with_backend`].
const TOKEN_TILE: usize = 64;

struct SyncPtr(*mut f32);

impl SyncPtr {
    /// Copies a tile's results (`tile`: tokens of `nr` consecutive rows, token-major) into the
    /// `rows`-wide output at token `t0`, row `r0`.
    ///
    /// # Safety
    /// The output holds every (token, row) the tile covers, and no other thread writes them.
    unsafe fn scatter(&self, tile: &[f32], nr: usize, t0: usize, rows: usize, r0: usize) {
        for (k, part) in tile.chunks_exact(nr).enumerate() {
            // SAFETY: forwarded from the caller.
            unsafe {
                std::ptr::copy_nonoverlapping(part.as_ptr(), self.0.add((t0 + k) * rows + r0), nr)
            };
        }
    }
}
// SAFETY: used only for disjoint writes inside `matmul_with_backend` (see there).
unsafe impl Sync for SyncPtr {}
