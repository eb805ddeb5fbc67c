//! Pure GGUF header parser over a byte slice: metadata, tensor infos and validation.
//! Every length is checked against the remaining bytes before anything is allocated.

use super::error::GgufError;
use super::metadata::{Metadata, MetadataValue, ValueType};
use crate::quant::GgmlType;
use std::collections::HashMap;

/// `GGUF` magic as the first four file bytes.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// Default data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Metadata key holding the data alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// Most tensor dimensions GGUF allows.
pub const MAX_DIMS: usize = 4;
/// Deepest nesting of metadata arrays accepted.
pub const MAX_ARRAY_DEPTH: usize = 8;

/// One tensor's entry in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name.
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the row length (innermost, contiguous).
    pub dims: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Byte offset relative to the start of the data section.
    pub offset: u64,
    /// Exact byte size of the tensor data.
    pub size: u64,
}

impl TensorInfo {
    /// Total number of elements.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Row length (`dims[0]`; 0 for a dimensionless info, which the reader never produces).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(0)
    }

    /// Number of rows (product of `dims[1..]`).
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }
}

/// A parsed header.
#[derive(Debug, Clone)]
pub struct Header {
    /// GGUF version (2 or 3).
    pub version: u32,
    /// Metadata pairs.
    pub metadata: Metadata,
    /// Tensor index in file order.
    pub tensors: Vec<TensorInfo>,
    /// Data alignment.
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &'static str) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what,
                offset: self.pos as u64,
                needed: n,
                available: self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn arr<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }

    fn string(&mut self, what: &'static str) -> Result<String, GgufError> {
        let at = self.pos as u64;
        let len = self.u64(what)?;
        if len > self.remaining() {
            return Err(GgufError::LengthTooLarge {
                what,
                offset: at,
                count: len,
                remaining: self.remaining(),
            });
        }
        let start = self.pos as u64;
        let bytes = self.take(len, what)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| GgufError::InvalidUtf8 {
                what,
                offset: start,
            })
    }

    fn value_type(&mut self) -> Result<ValueType, GgufError> {
        let at = self.pos as u64;
        let id = self.u32("metadata value type")?;
        ValueType::from_id(id).ok_or(GgufError::UnknownValueType {
            type_id: id,
            offset: at,
        })
    }

    fn value(&mut self, ty: ValueType, depth: usize) -> Result<MetadataValue, GgufError> {
        const W: &str = "metadata value";
        Ok(match ty {
            ValueType::U8 => MetadataValue::U8(self.arr::<1>(W)?[0]),
            ValueType::I8 => MetadataValue::I8(self.arr::<1>(W)?[0] as i8),
            ValueType::U16 => MetadataValue::U16(u16::from_le_bytes(self.arr(W)?)),
            ValueType::I16 => MetadataValue::I16(i16::from_le_bytes(self.arr(W)?)),
            ValueType::U32 => MetadataValue::U32(u32::from_le_bytes(self.arr(W)?)),
            ValueType::I32 => MetadataValue::I32(i32::from_le_bytes(self.arr(W)?)),
            ValueType::U64 => MetadataValue::U64(u64::from_le_bytes(self.arr(W)?)),
            ValueType::I64 => MetadataValue::I64(i64::from_le_bytes(self.arr(W)?)),
            ValueType::F32 => MetadataValue::F32(f32::from_le_bytes(self.arr(W)?)),
            ValueType::F64 => MetadataValue::F64(f64::from_le_bytes(self.arr(W)?)),
            ValueType::Bool => MetadataValue::Bool(self.arr::<1>(W)?[0] != 0),
            ValueType::String => MetadataValue::String(self.string("metadata string")?),
            ValueType::Array => {
                let at = self.pos as u64;
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::NestingTooDeep {
                        max: MAX_ARRAY_DEPTH,
                        offset: at,
                    });
                }
                let elem = self.value_type()?;
                let count_at = self.pos as u64;
                let count = self.u64("metadata array length")?;
                let min = elem.min_encoded_size();
                if count.checked_mul(min).is_none_or(|b| b > self.remaining()) {
                    return Err(GgufError::LengthTooLarge {
                        what: "metadata array",
                        offset: count_at,
                        count,
                        remaining: self.remaining(),
                    });
                }
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(elem, depth + 1)?);
                }
                MetadataValue::Array(items)
            }
        })
    }
}

/// Rounds `x` up to a multiple of `align` (a power of two); `None` on overflow.
pub fn align_up(x: u64, align: u64) -> Option<u64> {
    x.checked_add(align - 1).map(|v| v & !(align - 1))
}

/// Byte size of a tensor of `dims` and `ty`, validating the dims.
pub fn tensor_size(name: &str, dims: &[u64], ty: GgmlType) -> Result<u64, GgufError> {
    let bad = |reason| GgufError::InvalidDims {
        name: name.to_string(),
        dims: dims.to_vec(),
        reason,
    };
    if dims.is_empty() {
        return Err(bad("no dimensions"));
    }
    if dims.contains(&0) {
        return Err(bad("zero dimension"));
    }
    let bs = ty.block_size() as u64;
    if !dims[0].is_multiple_of(bs) {
        return Err(bad("row length is not a multiple of the type's block size"));
    }
    let mut n: u64 = 1;
    for &d in dims {
        n = n
            .checked_mul(d)
            .ok_or_else(|| bad("element count overflows"))?;
    }
    if n > i64::MAX as u64 {
        return Err(bad("element count overflows"));
    }
    (n / bs)
        .checked_mul(ty.type_size() as u64)
        .ok_or_else(|| bad("byte size overflows"))
}

/// Parses and validates a whole GGUF header in `buf` (the complete file).
pub fn parse_header(buf: &[u8]) -> Result<Header, GgufError> {
    let mut c = Cursor { buf, pos: 0 };
    let magic: [u8; 4] = c.arr("magic")?;
    if magic != MAGIC {
        return Err(GgufError::BadMagic(magic));
    }
    let version = c.u32("version")?;
    if version != 2 && version != 3 {
        return Err(GgufError::UnsupportedVersion(version));
    }
    let n_tensors_at = c.pos as u64;
    let n_tensors = c.u64("tensor count")?;
    let n_kv_at = c.pos as u64;
    let n_kv = c.u64("metadata count")?;
    // Smallest key/value: 8-byte key length + 4-byte type + 1-byte value.
    if n_kv.checked_mul(13).is_none_or(|b| b > c.remaining()) {
        return Err(GgufError::LengthTooLarge {
            what: "metadata count",
            offset: n_kv_at,
            count: n_kv,
            remaining: c.remaining(),
        });
    }
    let mut metadata = Metadata::new();
    for _ in 0..n_kv {
        let key = c.string("metadata key")?;
        let ty = c.value_type()?;
        let value = c.value(ty, 0)?;
        metadata.insert(key, value)?;
    }
    let alignment = match metadata.get(ALIGNMENT_KEY) {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_integer() {
            Some(a) if a > 0 && a <= (1 << 30) && (a as u64).is_power_of_two() => a as u64,
            Some(a) => {
                return Err(GgufError::InvalidAlignment(
                    a.clamp(0, u64::MAX as i128) as u64
                ));
            }
            None => return Err(GgufError::InvalidAlignment(0)),
        },
    };
    // Smallest tensor info: 8-byte name length + 4 n_dims + 8 dim + 4 type + 8 offset.
    if n_tensors.checked_mul(32).is_none_or(|b| b > c.remaining()) {
        return Err(GgufError::LengthTooLarge {
            what: "tensor count",
            offset: n_tensors_at,
            count: n_tensors,
            remaining: c.remaining(),
        });
    }
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut names: HashMap<String, ()> = HashMap::with_capacity(n_tensors as usize);
    for _ in 0..n_tensors {
        let name = c.string("tensor name")?;
        let n_dims = c.u32("tensor n_dims")?;
        if n_dims as usize > MAX_DIMS {
            return Err(GgufError::TooManyDims { name, n_dims });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64("tensor dim")?);
        }
        let type_id = c.u32("tensor type")?;
        let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownGgmlType {
            name: name.clone(),
            type_id,
        })?;
        let offset = c.u64("tensor offset")?;
        let size = tensor_size(&name, &dims, ggml_type)?;
        if offset % alignment != 0 {
            return Err(GgufError::MisalignedOffset {
                name,
                offset,
                alignment,
            });
        }
        if names.insert(name.clone(), ()).is_some() {
            return Err(GgufError::DuplicateTensor(name));
        }
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
            size,
        });
    }
    let header_end = c.pos as u64;
    let data_offset = align_up(header_end, alignment).unwrap_or(u64::MAX);
    let file_len = buf.len() as u64;
    let data_len = file_len.saturating_sub(data_offset);
    if !tensors.is_empty() && data_offset > file_len {
        return Err(GgufError::Truncated {
            what: "data section padding",
            offset: header_end,
            needed: data_offset - header_end,
            available: file_len - header_end,
        });
    }
    for t in &tensors {
        if t.offset
            .checked_add(t.size)
            .is_none_or(|end| end > data_len)
        {
            return Err(GgufError::TensorOutOfBounds {
                name: t.name.clone(),
                offset: t.offset,
                size: t.size,
                data_len,
            });
        }
    }
    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}
