//! RMS normalisation over the last dimension, multiplied by a weight (as ggml's `rms_norm` + `mul`).
//!
//! GGUF files converted by llama.cpp already hold gemma's `(1 + w)` folded into the stored norm
//! weights (stored values are around 1, not around 0), so every architecture multiplies by the
//! stored weight as is, exactly like llama.cpp's graph.

use burn::module::{Module, Param};
use burn::tensor::{Tensor, TensorData};

/// RMSNorm with a learned weight vector.
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// Weight, one value per normalised element.
    pub weight: Param<Tensor<1>>,
    /// Epsilon added to the mean square.
    pub eps: f64,
}

impl RmsNorm {
    /// A norm with the given weight.
    pub fn new(weight: Tensor<1>, eps: f32) -> Self {
        Self {
            weight: Param::from_tensor(weight),
            eps: eps as f64,
        }
    }

    /// Normalise `x` over its last dimension and multiply by the weight, with ggml's arithmetic
    /// (`ggml_compute_forward_rms_norm_f32` + `mul`): squares in f32 summed in f64, the mean
    /// rounded to f32, `scale = 1 / sqrtf(mean + eps)` in f32, then `(x * scale) * w`. Computing
    /// the mean in f32 instead shifts outputs by a few ulp, which is enough to flip Q8_0
    /// activation rounding in the next matmul.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dims = x.dims();
        let device = x.device();
        let n = dims[D - 1];
        let xs: Vec<f32> = x
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("f32 tensor data");
        let w: Vec<f32> = self
            .weight
            .val()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("f32 weight");
        let mut y = vec![0f32; xs.len()];
        let eps = self.eps as f32;
        for (xr, yr) in xs.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
            let sum: f64 = xr.iter().map(|&v| (v * v) as f64).sum();
            let mean = (sum / n as f64) as f32;
            let scale = 1.0f32 / (mean + eps).sqrt();
            for ((o, &v), &wv) in yr.iter_mut().zip(xr).zip(&w) {
                *o = v * scale * wv;
            }
        }
        Tensor::from_data(TensorData::new(y, dims), &device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    #[test]
    fn normalises_rows() {
        let device = Device::flex();
        let x = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 3.0, -4.0, 0.0, 4.0], [2, 3]),
            &device,
        );
        let w = Tensor::<1>::from_data(TensorData::new(vec![1.0f32, 0.5, 2.0], [3]), &device);
        let n = RmsNorm::new(w, 1e-6);
        let y: Vec<f32> = n.forward(x).into_data().try_into_vec().unwrap();
        let r0 = ((1.0f32 + 4.0 + 9.0) / 3.0 + 1e-6).sqrt();
        let r1 = ((16.0f32 + 0.0 + 16.0) / 3.0 + 1e-6).sqrt();
        let want = [1.0 / r0, 1.0 / r0, 6.0 / r0, -4.0 / r1, 0.0, 8.0 / r1];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}
