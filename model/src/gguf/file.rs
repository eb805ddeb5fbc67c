//! [`GgufFile`]: a parsed GGUF header over a memory map (or an owned buffer), with tensor lookup.

use super::error::GgufError;
use super::metadata::Metadata;
use super::parse::{Header, TensorInfo, parse_header};
use crate::quant::{QuantMatrix, SharedBytes};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// A memory map as a shared byte owner.
struct MmapOwner(memmap2::Mmap);

impl AsRef<[u8]> for MmapOwner {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// An opened GGUF file: metadata, tensor index and the (mapped) bytes.
#[derive(Debug, Clone)]
pub struct GgufFile {
    bytes: SharedBytes,
    header: Header,
    by_name: HashMap<String, usize>,
}

impl GgufFile {
    /// Maps and parses the file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref();
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the model files are read-only inputs; like every mmap-based model loader we
        // assume nobody truncates or rewrites them while they are mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        // SAFETY: a read-only private map of the file, never written through.
        Self::from_shared(unsafe { SharedBytes::file_mapped(Arc::new(MmapOwner(map))) })
    }

    /// Parses a GGUF image held in memory.
    pub fn from_bytes(bytes: impl Into<SharedBytes>) -> Result<Self, GgufError> {
        Self::from_shared(bytes.into())
    }

    fn from_shared(bytes: SharedBytes) -> Result<Self, GgufError> {
        let header = parse_header(&bytes)?;
        let by_name = header
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Self {
            bytes,
            header,
            by_name,
        })
    }

    /// GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.header.version
    }

    /// The metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.header.metadata
    }

    /// All tensors, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    /// Data alignment (from `general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.header.alignment
    }

    /// Absolute file offset of the data section.
    pub fn data_offset(&self) -> u64 {
        self.header.data_offset
    }

    /// The tensor named `name`, if any.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.header.tensors[i])
    }

    /// The tensor named `name`, or [`GgufError::TensorNotFound`].
    pub fn require_tensor(&self, name: &str) -> Result<&TensorInfo, GgufError> {
        self.tensor(name)
            .ok_or_else(|| GgufError::TensorNotFound(name.to_string()))
    }

    fn range(&self, info: &TensorInfo) -> std::ops::Range<usize> {
        let start = self.header.data_offset.saturating_add(info.offset);
        let end = start.saturating_add(info.size);
        usize::try_from(start).unwrap_or(usize::MAX)..usize::try_from(end).unwrap_or(usize::MAX)
    }

    /// The exact bytes of a tensor (bounds of this file's tensors were validated at open; an
    /// `info` from elsewhere that lies outside the file gives [`GgufError::TensorOutOfBounds`]).
    pub fn tensor_data(&self, info: &TensorInfo) -> Result<&[u8], GgufError> {
        self.bytes
            .get(self.range(info))
            .ok_or_else(|| GgufError::TensorOutOfBounds {
                name: info.name.clone(),
                offset: info.offset,
                size: info.size,
                data_len: self.bytes.len() as u64,
            })
    }

    /// The bytes of a tensor as a shared handle (no copy), e.g. for a
    /// [`crate::quant::QuantMatrix`] that outlives this `GgufFile`.
    pub fn tensor_bytes(&self, name: &str) -> Result<SharedBytes, GgufError> {
        let info = self.require_tensor(name)?;
        let r = self.range(info);
        self.bytes
            .slice(r)
            .ok_or_else(|| GgufError::TensorOutOfBounds {
                name: name.to_string(),
                offset: info.offset,
                size: info.size,
                data_len: self.bytes.len() as u64,
            })
    }

    /// The 2-D (or higher) tensor `name` as a [`QuantMatrix`] sharing the file's bytes:
    /// `cols = dims[0]`, `rows = dims[1] * dims[2] * ...` (a 1-D tensor is one row).
    pub fn matrix(&self, name: &str) -> Result<QuantMatrix, GgufError> {
        let info = self.require_tensor(name)?;
        let cols = usize::try_from(info.row_len())
            .map_err(|_| GgufError::InvalidInput(format!("{name}: too large")))?;
        let rows = usize::try_from(info.n_rows())
            .map_err(|_| GgufError::InvalidInput(format!("{name}: too large")))?;
        Ok(QuantMatrix::new(
            info.ggml_type,
            rows,
            cols,
            self.tensor_bytes(name)?,
        )?)
    }

    /// The whole file.
    pub fn raw_bytes(&self) -> &SharedBytes {
        &self.bytes
    }
}
