//! [`PackedRows8`]: a Q8_0 matrix kept in the transposed eight-row layout of the x86 kernels'
//! `packed_rows8`, built once at load time, for matrices that run with several tokens at a
//! time during generation (the output heads when several sequences decode together).
//!
//! Why: with the GGUF layout, every token of a multi-token product pays a horizontal sum of
//! eight row vectors per block (the eight-row kernels keep rows in lanes); the packed layout
//! gives all eight rows' block sums from one broadcast activation dword per instruction, with
//! no horizontal sums. Repacking per call (what prompts do, over many token groups) costs more
//! than it saves for a decode step of 2–4 sequences, so the heads keep a packed copy instead.
//! The packed kernels produce the same bits as the unpacked ones (and the scalar reference),
//! so whether a matrix is packed never changes a result.
//!
//! Memory: the packed copy is 288 bytes per eight rows and block against 272 for Q8_0 (+6 %).
//! When the raw rows are a file mapping, their resident pages are dropped chunk by chunk as
//! packing proceeds ([`super::SharedBytes::release_resident`]), so the resident size stays
//! near one copy; rows read later (a tied embedding's lookups) fault back in from the file.
//! (`MADV_PAGEOUT` was tried first: it leaves pages that another process maps too, e.g. a
//! second edgeray on the same model file, and the raw head stayed resident.)

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::__m256i;

use super::matrix::QuantMatrix;
use super::types::{GgmlType, QK32};

/// Rows packed per chunk before the chunk's raw pages are released.
#[cfg(target_arch = "x86_64")]
const CHUNK_ROWS: usize = 2048;

/// A Q8_0 matrix's whole groups of eight rows in the packed layout (see the module doc).
pub struct PackedRows8 {
    #[cfg(target_arch = "x86_64")]
    vecs: Vec<__m256i>,
    groups: usize,
    nb: usize,
}

impl std::fmt::Debug for PackedRows8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedRows8({} groups of 8 rows)", self.groups)
    }
}

impl PackedRows8 {
    /// Packs `m` when it is Q8_0 with at least eight rows and this CPU runs the packed
    /// kernels (AVX2 and F16C); otherwise `None`.
    pub(crate) fn build(m: &QuantMatrix) -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        {
            if m.ty() != GgmlType::Q8_0
                || m.rows() < 8
                || !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("f16c"))
            {
                return None;
            }
            let nb = m.cols() / QK32;
            let groups = m.rows() / 8;
            let rb = m.row_bytes();
            let data = m.data();
            let mut vecs = Vec::with_capacity(groups * nb * super::avx2::PACKED_PER_BLOCK);
            let mut row = 0;
            while row < groups * 8 {
                let end = (row + CHUNK_ROWS).min(groups * 8);
                let raw = &data[row * rb..end * rb];
                // SAFETY: AVX2 and F16C checked above; `raw` holds whole rows.
                vecs.extend(unsafe {
                    super::avx2::pack_rows8::<{ super::avx2_blocks::L_Q8_0 }>(raw, rb, nb)
                });
                data.release_resident(row * rb..end * rb);
                row = end;
            }
            Some(Self { vecs, groups, nb })
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (m, GgmlType::Q8_0, QK32);
            None
        }
    }

    /// Rows covered (a multiple of eight; the matrix's last `rows % 8` are not).
    pub fn rows(&self) -> usize {
        self.groups * 8
    }

    /// Dequantizes row `r` (< [`Self::rows`]) into `out` (`cols` floats) from the packed copy,
    /// with the same arithmetic as the raw rows' dequantization (the scale is the block's f16
    /// converted exactly, times each quant), so a tied embedding's lookups need not touch (and
    /// keep resident) the raw rows.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        assert!(r < self.rows() && out.len() == self.nb * QK32);
        #[cfg(target_arch = "x86_64")]
        {
            let (g, lane) = (r / 8, r % 8);
            let blocks = self.groups(g, g + 1);
            for (ib, y) in out.chunks_exact_mut(QK32).enumerate() {
                let blk = &blocks[ib * super::avx2::PACKED_PER_BLOCK..];
                // SAFETY: plain reinterpretation of 32-byte vectors as lanes.
                let d = unsafe { std::mem::transmute::<__m256i, [f32; 8]>(blk[0]) }[lane];
                for v in 0..8 {
                    // SAFETY: as above.
                    let codes = unsafe { std::mem::transmute::<__m256i, [[u8; 4]; 8]>(blk[1 + v]) };
                    for (k, &q) in codes[lane].iter().enumerate() {
                        y[4 * v + k] = q as i8 as f32 * d;
                    }
                }
            }
        }
    }

    /// Bytes held.
    pub fn n_bytes(&self) -> usize {
        self.groups * self.nb * PACKED_VECTORS_PER_BLOCK * 32
    }

    /// The vectors of groups `g0 .. g1`.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn groups(&self, g0: usize, g1: usize) -> &[__m256i] {
        let per = self.nb * super::avx2::PACKED_PER_BLOCK;
        &self.vecs[g0 * per..g1 * per]
    }
}

/// Vectors per group of eight rows and block (one of scales, eight of codes).
const PACKED_VECTORS_PER_BLOCK: usize = 9;
