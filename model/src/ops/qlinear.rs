//! [`QuantLinearBackend`] (the burn backend extension) and [`QLinear`] (the module using it).

use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, DispatchDevice, Flex, TensorMetadata, backend_extension};
use burn::module::{Module, Param};
use burn::tensor::{DType, FloatDType, Tensor, TensorData};

use super::qweight::QuantWeight;
use crate::arch::ArchError;

/// Backend operation `y = x · Wᵀ` with `W` a quantized GGUF matrix (`[out, in]`, rows of blocks).
///
/// Only the CPU `Flex` backend implements it (edgeray's kernels work on host memory); calling
/// it with a tensor of another backend panics in burn's dispatch glue, so [`QLinear::forward`]
/// checks the device first and returns an error instead.
#[backend_extension(Flex)]
pub trait QuantLinearBackend: Backend {
    /// `x`: f32 `[..., in]`, contiguous or not. Returns f32 `[..., out]`.
    fn quant_linear(x: FloatTensor<Self>, weight: QuantWeight) -> FloatTensor<Self>;
}

impl QuantLinearBackend for Flex {
    fn quant_linear(x: FloatTensor<Self>, weight: QuantWeight) -> FloatTensor<Self> {
        let shape = x.shape();
        let dims: Vec<usize> = shape.iter().copied().collect();
        let cols = *dims
            .last()
            .expect("quant_linear input has at least one dimension");
        assert_eq!(
            cols,
            weight.cols(),
            "quant_linear: input width must equal the weight's columns"
        );
        let x: FlexTensor = if x.dtype() == DType::F32 {
            x
        } else {
            panic!("quant_linear: f32 input required")
        };
        let x = x.to_contiguous();
        let xs: &[f32] = x.as_slice::<f32>().expect("contiguous f32 tensor");
        let n = xs.len() / cols;
        let mut out = vec![0f32; n * weight.rows()];
        weight
            .matmul(xs, n, &mut out)
            .expect("quant_linear: shapes were validated by QLinear");
        let mut out_dims = dims;
        *out_dims.last_mut().expect("non-empty") = weight.rows();
        FlexTensor::from_data(TensorData::new(out, out_dims))
    }
}

/// A linear layer with a quantized weight and an optional f32 bias.
#[derive(Module, Debug)]
pub struct QLinear {
    /// The quantized weight (`[out, in]`), not a burn parameter: raw GGUF blocks.
    #[module(skip)]
    pub weight: QuantWeight,
    /// Optional bias `[out]`.
    pub bias: Option<Param<Tensor<1>>>,
}

impl QLinear {
    /// A layer from a weight and an optional bias.
    pub fn new(weight: QuantWeight, bias: Option<Tensor<1>>) -> Self {
        Self {
            weight,
            bias: bias.map(Param::from_tensor),
        }
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.weight.cols()
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.weight.rows()
    }

    /// `x · Wᵀ (+ b)` over the last dimension of `x`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Result<Tensor<D>, ArchError> {
        let dims = x.dims();
        if dims[D - 1] != self.in_features() {
            return Err(ArchError::BadInput(format!(
                "linear layer expects {} input features, got shape {dims:?}",
                self.in_features()
            )));
        }
        if !matches!(x.device().as_dispatch(), DispatchDevice::Flex(_)) {
            return Err(ArchError::BadInput(format!(
                "quantized linear layers run on the Flex CPU device, got {:?}",
                x.device()
            )));
        }
        let x = if x.dtype() == DType::F32 {
            x
        } else {
            x.cast(FloatDType::F32)
        };
        let y = Tensor::<D>::from_dispatch(<Dispatch as QuantLinearBackend>::quant_linear(
            x.into_dispatch(),
            self.weight.clone(),
        ));
        Ok(match &self.bias {
            Some(b) => y + b.val().unsqueeze(),
            None => y,
        })
    }
}
