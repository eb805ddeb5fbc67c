//! Errors of the GGUF reader, metadata accessors and writer.

use std::path::PathBuf;

/// Everything that can go wrong reading, querying or writing a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened or mapped.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Writing failed.
    #[error("cannot write GGUF: {0}")]
    Write(#[source] std::io::Error),
    /// The first four bytes are not `GGUF`.
    #[error("bad magic {0:02x?}: not a GGUF file")]
    BadMagic([u8; 4]),
    /// Only versions 2 and 3 are read.
    #[error("unsupported GGUF version {0} (2 and 3 are supported)")]
    UnsupportedVersion(u32),
    /// The file ends before a field it must contain.
    #[error(
        "truncated file: {what} needs {needed} bytes at offset {offset}, {available} available"
    )]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Byte offset of the field.
        offset: u64,
        /// Bytes needed.
        needed: u64,
        /// Bytes left in the file.
        available: u64,
    },
    /// A declared length/count cannot fit in the rest of the file.
    #[error(
        "{what} at offset {offset} declares {count} items/bytes, more than the {remaining} bytes left"
    )]
    LengthTooLarge {
        /// The field.
        what: &'static str,
        /// Byte offset of the field.
        offset: u64,
        /// The declared count.
        count: u64,
        /// Bytes left in the file.
        remaining: u64,
    },
    /// A string is not UTF-8.
    #[error("{what} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field.
        what: &'static str,
        /// Byte offset of the string bytes.
        offset: u64,
    },
    /// A metadata value type id is unknown.
    #[error("unknown metadata value type {type_id} at offset {offset}")]
    UnknownValueType {
        /// The id read.
        type_id: u32,
        /// Byte offset.
        offset: u64,
    },
    /// Arrays nested deeper than the reader allows.
    #[error("metadata arrays nested deeper than {max} at offset {offset}")]
    NestingTooDeep {
        /// Limit.
        max: usize,
        /// Byte offset.
        offset: u64,
    },
    /// The same metadata key twice.
    #[error("duplicate metadata key {0:?}")]
    DuplicateKey(String),
    /// The same tensor name twice.
    #[error("duplicate tensor name {0:?}")]
    DuplicateTensor(String),
    /// More than 4 dimensions.
    #[error("tensor {name:?} has {n_dims} dimensions (at most 4 allowed)")]
    TooManyDims {
        /// Tensor name.
        name: String,
        /// Declared count.
        n_dims: u32,
    },
    /// Zero, overflowing or otherwise unusable dimensions.
    #[error("tensor {name:?} has invalid dims {dims:?}: {reason}")]
    InvalidDims {
        /// Tensor name.
        name: String,
        /// The dims as read.
        dims: Vec<u64>,
        /// Why they are invalid.
        reason: &'static str,
    },
    /// A ggml type id that is unknown or removed.
    #[error("tensor {name:?} has unknown ggml type id {type_id}")]
    UnknownGgmlType {
        /// Tensor name.
        name: String,
        /// The id read.
        type_id: u32,
    },
    /// `general.alignment` is zero, not a power of two, or not an integer.
    #[error("invalid general.alignment {0}")]
    InvalidAlignment(u64),
    /// A tensor offset that is not a multiple of the alignment.
    #[error("tensor {name:?} offset {offset} is not a multiple of the alignment {alignment}")]
    MisalignedOffset {
        /// Tensor name.
        name: String,
        /// Offset relative to the data section.
        offset: u64,
        /// The alignment.
        alignment: u64,
    },
    /// Tensor bytes past the end of the file.
    #[error(
        "tensor {name:?} bytes [{offset}, {offset}+{size}) exceed the data section of {data_len} bytes"
    )]
    TensorOutOfBounds {
        /// Tensor name.
        name: String,
        /// Offset relative to the data section.
        offset: u64,
        /// Byte size.
        size: u64,
        /// Data section length.
        data_len: u64,
    },
    /// No tensor with that name.
    #[error("no tensor named {0:?}")]
    TensorNotFound(String),
    /// A metadata key is missing.
    #[error("missing metadata key {0:?}")]
    MissingKey(String),
    /// A metadata value has another type than asked for.
    #[error("metadata key {key:?}: expected {expected}, found {found}")]
    WrongType {
        /// The key.
        key: String,
        /// What the getter wanted.
        expected: &'static str,
        /// What the file holds.
        found: &'static str,
    },
    /// An integer metadata value does not fit the asked type.
    #[error("metadata key {key:?}: value {value} does not fit in {target}")]
    OutOfRange {
        /// The key.
        key: String,
        /// The value, printed.
        value: String,
        /// The requested integer type.
        target: &'static str,
    },
    /// A tensor could not be wrapped as a matrix.
    #[error(transparent)]
    Quant(#[from] crate::quant::QuantError),
    /// The writer was given inconsistent input.
    #[error("invalid writer input: {0}")]
    InvalidInput(String),
}
