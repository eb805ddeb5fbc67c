//! Loading small dense tensors (norm weights, biases) from GGUF into burn tensors.

use burn::tensor::{Device, Tensor, TensorData};

use super::error::ArchError;
use crate::gguf::GgufFile;
use crate::quant::dequantize_row;

/// The 1-D tensor `name` (any dequantizable type) as f32, checked to have `len` elements.
pub fn vector(
    file: &GgufFile,
    name: &str,
    len: usize,
    device: &Device,
) -> Result<Tensor<1>, ArchError> {
    let info = file.require_tensor(name)?;
    if info.n_elements() != len as u64 {
        return Err(ArchError::BadTensor {
            name: name.into(),
            reason: format!("expected {len} elements, got dims {:?}", info.dims),
        });
    }
    let mut out = vec![0f32; len];
    dequantize_row(info.ggml_type, file.tensor_data(info)?, &mut out)?;
    Ok(Tensor::from_data(TensorData::new(out, [len]), device))
}

/// Like [`vector`], `None` when the tensor is absent.
pub fn opt_vector(
    file: &GgufFile,
    name: &str,
    len: usize,
    device: &Device,
) -> Result<Option<Tensor<1>>, ArchError> {
    if file.tensor(name).is_none() {
        return Ok(None);
    }
    vector(file, name, len, device).map(Some)
}
