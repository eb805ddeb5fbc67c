//! [`GgufWriter`]: builds a GGUF v3 image from metadata and tensors.

use super::error::GgufError;
use super::metadata::{Metadata, MetadataValue, ValueType};
use super::parse::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC, MAX_DIMS, align_up, tensor_size};
use crate::quant::GgmlType;
use std::io::Write;
use std::path::Path;

struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    data: Vec<u8>,
}

/// Builds a GGUF version 3 file. Tensors are laid out in insertion order, each aligned to the
/// alignment (`general.alignment` if set as metadata, else 32).
#[derive(Default)]
pub struct GgufWriter {
    metadata: Metadata,
    tensors: Vec<PendingTensor>,
}

impl GgufWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (or replaces) a metadata value.
    pub fn set_metadata(
        &mut self,
        key: impl Into<String>,
        value: impl Into<MetadataValue>,
    ) -> &mut Self {
        self.metadata.set(key, value);
        self
    }

    /// Copies every pair of `m` (replacing existing keys).
    pub fn extend_metadata(&mut self, m: &Metadata) -> &mut Self {
        for (k, v) in m.iter() {
            self.metadata.set(k, v.clone());
        }
        self
    }

    /// Adds a tensor; `dims` in ggml order (`dims[0]` = row length). The byte length must match
    /// the dims and type exactly, and names must be unique.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
        data: Vec<u8>,
    ) -> Result<&mut Self, GgufError> {
        let name = name.into();
        if dims.len() > MAX_DIMS {
            return Err(GgufError::TooManyDims {
                name,
                n_dims: dims.len() as u32,
            });
        }
        let size = tensor_size(&name, dims, ty)?;
        if size != data.len() as u64 {
            return Err(GgufError::InvalidInput(format!(
                "tensor {name:?}: {ty} {dims:?} needs {size} bytes, got {}",
                data.len()
            )));
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(GgufError::DuplicateTensor(name));
        }
        self.tensors.push(PendingTensor {
            name,
            dims: dims.to_vec(),
            ty,
            data,
        });
        Ok(self)
    }

    /// Adds an f32 tensor from values.
    pub fn add_f32_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        values: &[f32],
    ) -> Result<&mut Self, GgufError> {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.add_tensor(name, dims, GgmlType::F32, data)
    }

    fn alignment(&self) -> Result<u64, GgufError> {
        match self.metadata.get(ALIGNMENT_KEY) {
            None => Ok(DEFAULT_ALIGNMENT),
            Some(v) => match v.as_integer() {
                Some(a) if a > 0 && a <= (1 << 30) && (a as u64).is_power_of_two() => Ok(a as u64),
                _ => Err(GgufError::InvalidAlignment(
                    v.as_integer().unwrap_or(0).clamp(0, u64::MAX as i128) as u64,
                )),
            },
        }
    }

    /// Serializes to a byte vector.
    pub fn to_bytes(&self) -> Result<Vec<u8>, GgufError> {
        let align = self.alignment()?;
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in self.metadata.iter() {
            put_str(&mut out, k);
            out.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
            put_value(&mut out, k, v)?;
        }
        let mut offset = 0u64;
        let mut offsets = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ty.id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            offset = align_up(offset + t.data.len() as u64, align)
                .ok_or_else(|| GgufError::InvalidInput("data section overflows".into()))?;
        }
        let data_start = align_up(out.len() as u64, align).unwrap_or(u64::MAX) as usize;
        out.resize(data_start, 0);
        for (t, off) in self.tensors.iter().zip(offsets) {
            out.resize(data_start + off as usize, 0);
            out.extend_from_slice(&t.data);
        }
        Ok(out)
    }

    /// Serializes into `w`.
    pub fn write_to(&self, mut w: impl Write) -> Result<(), GgufError> {
        w.write_all(&self.to_bytes()?).map_err(GgufError::Write)
    }

    /// Writes the file at `path`.
    pub fn write_file(&self, path: impl AsRef<Path>) -> Result<(), GgufError> {
        let f = std::fs::File::create(path.as_ref()).map_err(GgufError::Write)?;
        let mut w = std::io::BufWriter::new(f);
        self.write_to(&mut w)?;
        w.flush().map_err(GgufError::Write)
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, key: &str, v: &MetadataValue) -> Result<(), GgufError> {
    match v {
        MetadataValue::U8(x) => out.push(*x),
        MetadataValue::I8(x) => out.push(*x as u8),
        MetadataValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::Bool(x) => out.push(*x as u8),
        MetadataValue::String(s) => put_str(out, s),
        MetadataValue::Array(items) => {
            let elem = items
                .first()
                .map_or(ValueType::U8, MetadataValue::value_type);
            if items.iter().any(|i| i.value_type() != elem) {
                return Err(GgufError::InvalidInput(format!(
                    "metadata array {key:?} mixes element types"
                )));
            }
            out.extend_from_slice(&(elem as u32).to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for i in items {
                put_value(out, key, i)?;
            }
        }
    }
    Ok(())
}
