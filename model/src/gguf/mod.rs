//! GGUF v2/v3 reading (over a memory map) and writing.
//!
//! ```no_run
//! use edgeray_model::gguf::GgufFile;
//! let f = GgufFile::open("models/gemma-3-270m-q4_k_m.gguf")?;
//! let arch = f.metadata().get_str("general.architecture")?;
//! let t = f.require_tensor("token_embd.weight")?;
//! let bytes = f.tensor_data(t)?;
//! # Ok::<(), edgeray_model::gguf::GgufError>(())
//! ```

mod error;
mod file;
mod metadata;
mod parse;
mod writer;

#[cfg(test)]
mod tests;

pub use error::GgufError;
pub use file::GgufFile;
pub use metadata::{Metadata, MetadataValue, ValueType};
pub use parse::{
    ALIGNMENT_KEY, DEFAULT_ALIGNMENT, Header, MAX_ARRAY_DEPTH, MAX_DIMS, TensorInfo, align_up,
    parse_header, tensor_size,
};
pub use writer::GgufWriter;
