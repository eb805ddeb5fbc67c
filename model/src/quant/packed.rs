//! [`PackedRows8`]: a Q8_0, Q5_0 or Q4_0 matrix kept in a transposed eight-row layout of the
//! x86 kernels, built once at load time.
//!
//! Why: with the GGUF layout, every token of a multi-token product pays a horizontal sum of
//! eight row vectors per block (the eight-row kernels keep rows in lanes); the packed layouts
//! give all eight rows' block sums from one broadcast activation dword per instruction, with
//! no horizontal sums. Repacking per call (what prompts do, over many token groups) costs more
//! than it saves for a decode step of 2–4 sequences, so matrices keep a packed copy instead.
//! The packed kernels produce the same bits as the unpacked ones (and the scalar reference),
//! so whether a matrix is packed never changes a result.
//!
//! Two layouts:
//! - **Q8_0** (the output heads): `super::avx2::pack_rows8`'s decoded codes, 288 bytes per
//!   eight rows and block against 272 raw (+6 %).
//! - **Q5_0 / Q4_0** (the bulk of a Q4_K_M model's blocks): `super::compact`'s transposed
//!   blocks, exactly the raw size (176 / 144 bytes per eight rows and block).
//!
//! Memory: when the raw rows are a file mapping, their resident pages are dropped chunk by
//! chunk as packing proceeds ([`super::SharedBytes::release_resident`]), so the resident size
//! stays near one copy; rows read later (a tied embedding's lookups, the last `rows % 8` rows)
//! fault back in from the file. (`MADV_PAGEOUT` was tried first: it leaves pages that another
//! process maps too, e.g. a second edgeray on the same model file, and the raw head stayed
//! resident.)

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::__m256i;

use super::matrix::QuantMatrix;
use super::types::{GgmlType, QK32};

/// Rows packed per chunk before the chunk's raw pages are released.
#[cfg(target_arch = "x86_64")]
const CHUNK_ROWS: usize = 2048;

/// A matrix's whole groups of eight rows in a packed layout (see the module doc).
pub struct PackedRows8 {
    #[cfg(target_arch = "x86_64")]
    vecs: Vec<__m256i>,
    ty: GgmlType,
    groups: usize,
    nb: usize,
}

impl std::fmt::Debug for PackedRows8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedRows8({} groups of 8 rows)", self.groups)
    }
}

impl PackedRows8 {
    /// Packs `m` when it is Q8_0, Q5_0 or Q4_0 with at least eight rows and this CPU runs the
    /// packed kernels (AVX2 and F16C); otherwise `None`.
    pub(crate) fn build(m: &QuantMatrix) -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        {
            use super::avx2_blocks::{L_Q4_0, L_Q5_0, L_Q8_0};
            let ty = m.ty();
            if !matches!(ty, GgmlType::Q8_0 | GgmlType::Q5_0 | GgmlType::Q4_0)
                || m.rows() < 8
                || !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("f16c"))
            {
                return None;
            }
            let nb = m.cols() / QK32;
            let groups = m.rows() / 8;
            let rb = m.row_bytes();
            let data = m.data();
            let mut vecs = Vec::with_capacity(groups * Self::group_vecs(ty, nb));
            let mut row = 0;
            while row < groups * 8 {
                let end = (row + CHUNK_ROWS).min(groups * 8);
                let raw = &data[row * rb..end * rb];
                match ty {
                    // SAFETY: AVX2 and F16C checked above; `raw` holds whole rows.
                    GgmlType::Q8_0 => {
                        vecs.extend(unsafe { super::avx2::pack_rows8::<L_Q8_0>(raw, rb, nb) })
                    }
                    GgmlType::Q5_0 => vecs.extend(super::compact::pack::<L_Q5_0>(raw, rb, nb)),
                    _ => vecs.extend(super::compact::pack::<L_Q4_0>(raw, rb, nb)),
                }
                data.release_resident(row * rb..end * rb);
                row = end;
            }
            Some(Self {
                vecs,
                ty,
                groups,
                nb,
            })
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (m, GgmlType::Q8_0, QK32);
            None
        }
    }

    /// Vectors per group of eight rows of type `ty` with `nb` blocks.
    #[cfg(target_arch = "x86_64")]
    fn group_vecs(ty: GgmlType, nb: usize) -> usize {
        use super::avx2_blocks::{L_Q4_0, L_Q5_0};
        match ty {
            GgmlType::Q8_0 => nb * super::avx2::PACKED_PER_BLOCK,
            GgmlType::Q5_0 => super::compact::group_vecs(L_Q5_0, nb),
            _ => super::compact::group_vecs(L_Q4_0, nb),
        }
    }

    /// Rows covered (a multiple of eight; the matrix's last `rows % 8` are not).
    pub fn rows(&self) -> usize {
        self.groups * 8
    }

    /// Dequantizes row `r` (< [`Self::rows`]) into `out` (`cols` floats) from the packed copy,
    /// with the same arithmetic as the raw rows' dequantization (for Q8_0 the scale is the
    /// block's f16 converted exactly, times each quant; the compact layouts rebuild the row's
    /// GGUF blocks), so a tied embedding's lookups need not touch (and keep resident) the raw
    /// rows.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        assert!(r < self.rows() && out.len() == self.nb * QK32);
        #[cfg(target_arch = "x86_64")]
        {
            use super::avx2_blocks::{L_Q4_0, L_Q5_0};
            let (g, lane) = (r / 8, r % 8);
            let blocks = self.groups(g, g + 1);
            let raw = match self.ty {
                GgmlType::Q5_0 => super::compact::unpack_row::<L_Q5_0>(blocks, self.nb, lane),
                GgmlType::Q4_0 => super::compact::unpack_row::<L_Q4_0>(blocks, self.nb, lane),
                _ => return Self::dequantize_q8_0_lane(blocks, lane, out),
            };
            super::dequant::dequantize_row(self.ty, &raw, out)
                .expect("a rebuilt row has whole blocks");
        }
    }

    /// [`Self::dequantize_row`] for the Q8_0 layout: lane `lane` of one group's vectors.
    #[cfg(target_arch = "x86_64")]
    fn dequantize_q8_0_lane(blocks: &[__m256i], lane: usize, out: &mut [f32]) {
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

    /// Bytes held.
    pub fn n_bytes(&self) -> usize {
        #[cfg(target_arch = "x86_64")]
        return self.vecs.len() * 32;
        #[cfg(not(target_arch = "x86_64"))]
        0
    }

    /// The element type of the packed rows.
    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    /// The vectors of groups `g0 .. g1`.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn groups(&self, g0: usize, g1: usize) -> &[__m256i] {
        let per = Self::group_vecs(self.ty, self.nb);
        &self.vecs[g0 * per..g1 * per]
    }
}
