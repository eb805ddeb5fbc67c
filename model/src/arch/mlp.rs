//! Gated MLP (`down(act(gate(x)) * up(x))`) with SiLU or ggml's f16-table GELU.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;

use std::sync::OnceLock;

use super::config::Activation;
use super::error::ArchError;
use crate::ops::QLinear;
use burn::tensor::TensorData;
use half::f16;

/// Gated feed-forward block.
#[derive(Module, Debug)]
pub struct Mlp {
    /// Gate projection.
    pub gate: QLinear,
    /// Up projection.
    pub up: QLinear,
    /// Down projection.
    pub down: QLinear,
    /// Activation of the gate.
    #[module(skip)]
    pub activation: Activation,
}

/// ggml's `ggml_table_gelu_f16`: GELU-tanh of every f16 value, computed in f32 exactly as
/// `ggml_gelu_f32` writes it and rounded to f16 (held here as f16-exact f32 values).
fn gelu_table() -> &'static [f32] {
    static TABLE: OnceLock<Vec<f32>> = OnceLock::new();
    TABLE.get_or_init(|| {
        const SQRT_2_OVER_PI: f32 = 0.797_884_6;
        const COEF_A: f32 = 0.044715;
        (0..=u16::MAX)
            .map(|bits| {
                let x = f16::from_bits(bits).to_f32();
                // `1.0f + GELU_COEF_A*x*x`, which gcc (-ffp-contract=fast, FMA targets) fuses.
                let poly = (COEF_A * x).mul_add(x, 1.0);
                let g = 0.5f32 * x * (1.0f32 + (SQRT_2_OVER_PI * x * poly).tanh());
                f16::from_f32(g).to_f32()
            })
            .collect()
    })
}

/// GELU-tanh of one value as ggml-cpu computes it with `GGML_GELU_FP16`: `0` below -10, the
/// input itself from 10 up, otherwise the f16 table entry of the input rounded to f16.
#[inline]
fn gelu_one(x: f32) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        gelu_table()[f16::from_f32(x).to_bits() as usize]
    }
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 tensor data")
}

/// GELU (tanh approximation) as ggml's CPU backend computes it (`ggml_vec_gelu_f32` with
/// `GGML_GELU_FP16`): see `gelu_one`.
pub fn gelu_ggml<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let (dims, device) = (x.dims(), x.device());
    let v: Vec<f32> = to_vec(x).into_iter().map(gelu_one).collect();
    Tensor::from_data(TensorData::new(v, dims), &device)
}

/// `gelu(g) * u` as ggml's fused `ggml_vec_geglu_f32` (`GGML_GELU_FP16`): from 10 up the
/// product is `g * u`, never rounded through f16.
pub fn geglu_ggml<const D: usize>(g: Tensor<D>, u: Tensor<D>) -> Tensor<D> {
    let (dims, device) = (g.dims(), g.device());
    let (g, u) = (to_vec(g), to_vec(u));
    let v: Vec<f32> = g
        .iter()
        .zip(&u)
        .map(|(&x, &y)| if x >= 10.0 { x * y } else { gelu_one(x) * y })
        .collect();
    Tensor::from_data(TensorData::new(v, dims), &device)
}

impl Mlp {
    /// Applies the block to `x` (`[n, d]`).
    pub fn forward(&self, x: Tensor<2>) -> Result<Tensor<2>, ArchError> {
        let g = self.gate.forward(x.clone())?;
        let u = self.up.forward(x)?;
        let a = match self.activation {
            Activation::Silu => silu(g) * u,
            Activation::GeluTanh => geglu_ggml(g, u),
        };
        self.down.forward(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    #[test]
    fn gelu_follows_ggml_table_and_bounds() {
        // Inside (-10, 10): the f16 table value of the f16-rounded input.
        let g1 = gelu_one(1.0);
        assert_eq!(g1, f16::from_f32(g1).to_f32(), "table values are f16-exact");
        assert!((g1 - 0.841_192).abs() < 1e-3, "{g1}");
        assert_eq!(gelu_one(-3.0), gelu_one(f16::from_f32(-3.0001).to_f32()));
        // The bounds: 0 at or below -10, the input itself (not f16-rounded) from 10 up.
        assert_eq!(gelu_one(-10.0), 0.0);
        assert_eq!(gelu_one(-25.0), 0.0);
        assert_eq!(gelu_one(10.123_457), 10.123_457);
        let d = Device::flex();
        let g = Tensor::<1>::from_data(TensorData::new(vec![12.345_679f32, 1.0, -11.0], [3]), &d);
        let u = Tensor::<1>::from_data(TensorData::new(vec![0.5f32, 2.0, 3.0], [3]), &d);
        let y: Vec<f32> = geglu_ggml(g, u).into_data().try_into_vec::<f32>().unwrap();
        assert_eq!(y, vec![12.345_679f32 * 0.5, g1 * 2.0, 0.0]);
    }
}
