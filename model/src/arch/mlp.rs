//! Gated MLP (`down(act(gate(x)) * up(x))`) with SiLU or ggml's f16-table GELU.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;

use super::attention::f16_round;
use super::config::Activation;
use super::error::ArchError;
use crate::ops::QLinear;

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

/// GELU (tanh approximation) as ggml's CPU backend computes it: the input rounded to f16, looked
/// up in a table of f16 results (`GGML_GELU_FP16`).
pub fn gelu_ggml<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const COEF_A: f32 = 0.044715;
    let x = f16_round(x);
    let inner = x.clone() * (x.clone().square() * COEF_A + 1.0) * SQRT_2_OVER_PI;
    f16_round(x * (inner.tanh() + 1.0) * 0.5)
}

impl Mlp {
    /// Applies the block to `x` (`[n, d]`).
    pub fn forward(&self, x: Tensor<2>) -> Result<Tensor<2>, ArchError> {
        let g = self.gate.forward(x.clone())?;
        let u = self.up.forward(x)?;
        let a = match self.activation {
            Activation::Silu => silu(g),
            Activation::GeluTanh => gelu_ggml(g),
        };
        self.down.forward(a * u)
    }
}
