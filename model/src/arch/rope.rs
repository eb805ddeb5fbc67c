//! Rotary position embeddings computed the way ggml does (f32 iterative theta, `cosf`/`sinf`),
//! applied with burn tensor ops.

use burn::tensor::{Device, Tensor, TensorData};

/// How RoPE pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(x[2i], x[2i+1])` (ggml `LLAMA_ROPE_TYPE_NORM`, the llama family).
    Norm,
    /// Split halves `(x[i], x[i + d/2])` (ggml `LLAMA_ROPE_TYPE_NEOX`: qwen2, gemma3).
    Neox,
}

/// One RoPE setting (rotated dimensions, frequency base, style).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rope {
    /// Number of rotated dimensions (the head dimension for the supported models).
    pub n_rot: usize,
    /// Frequency base (`rope.freq_base`).
    pub base: f32,
    /// Pairing style.
    pub style: RopeStyle,
}

/// Precomputed cos/sin for a run of positions, as `[n, 1, n_rot/2]` tensors.
#[derive(Debug, Clone)]
pub struct RopeTables {
    cos: Tensor<3>,
    sin: Tensor<3>,
}

impl Rope {
    /// cos/sin values for `positions`, row-major `[positions.len(), n_rot/2]`, computed like
    /// ggml's `ggml_rope_cache_init` (theta multiplied by `base^(-2/n_rot)` in f32 each step).
    pub fn cos_sin(&self, positions: &[usize]) -> (Vec<f32>, Vec<f32>) {
        let half = self.n_rot / 2;
        let theta_scale = self.base.powf(-2.0f32 / self.n_rot as f32);
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            let mut theta = p as f32;
            for _ in 0..half {
                cos.push(theta.cos());
                sin.push(theta.sin());
                theta *= theta_scale;
            }
        }
        (cos, sin)
    }

    /// Tables for `positions` on `device`.
    pub fn tables(&self, positions: &[usize], device: &Device) -> RopeTables {
        let half = self.n_rot / 2;
        let n = positions.len();
        let (cos, sin) = self.cos_sin(positions);
        RopeTables {
            cos: Tensor::from_data(TensorData::new(cos, [n, 1, half]), device),
            sin: Tensor::from_data(TensorData::new(sin, [n, 1, half]), device),
        }
    }

    /// Rotates `x` of shape `[n, heads, head_dim]` (`head_dim == n_rot`) by the tables of the
    /// same `n` positions.
    pub fn apply(&self, x: Tensor<3>, t: &RopeTables) -> Tensor<3> {
        let [n, h, d] = x.dims();
        let half = self.n_rot / 2;
        debug_assert_eq!(d, self.n_rot);
        match self.style {
            RopeStyle::Neox => {
                let x0 = x.clone().narrow(2, 0, half);
                let x1 = x.narrow(2, half, half);
                let o0 = x0.clone() * t.cos.clone() - x1.clone() * t.sin.clone();
                let o1 = x0 * t.sin.clone() + x1 * t.cos.clone();
                Tensor::cat(vec![o0, o1], 2)
            }
            RopeStyle::Norm => {
                let x4: Tensor<4> = x.reshape([n, h, half, 2]);
                let cos: Tensor<4> = t.cos.clone().reshape([n, 1, half, 1]);
                let sin: Tensor<4> = t.sin.clone().reshape([n, 1, half, 1]);
                let x0 = x4.clone().narrow(3, 0, 1);
                let x1 = x4.narrow(3, 1, 1);
                let o0 = x0.clone() * cos.clone() - x1.clone() * sin.clone();
                let o1 = x0 * sin + x1 * cos;
                Tensor::cat(vec![o0, o1], 3).reshape([n, h, d])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(style: RopeStyle, x: &[f32], pos: usize, base: f32) -> Vec<f32> {
        let d = x.len();
        let mut out = x.to_vec();
        for i in 0..d / 2 {
            let theta = pos as f64 * (base as f64).powf(-2.0 * i as f64 / d as f64);
            let (s, c) = theta.sin_cos();
            let (a, b) = match style {
                RopeStyle::Neox => (i, i + d / 2),
                RopeStyle::Norm => (2 * i, 2 * i + 1),
            };
            let (x0, x1) = (x[a] as f64, x[b] as f64);
            out[a] = (x0 * c - x1 * s) as f32;
            out[b] = (x0 * s + x1 * c) as f32;
        }
        out
    }

    #[test]
    fn both_styles_match_the_textbook_rotation() {
        let device = Device::flex();
        let d = 8;
        for style in [RopeStyle::Neox, RopeStyle::Norm] {
            let rope = Rope {
                n_rot: d,
                base: 10000.0,
                style,
            };
            let positions = [0usize, 3, 17];
            let x: Vec<f32> = (0..positions.len() * 2 * d)
                .map(|i| (i as f32 * 0.37).sin())
                .collect();
            let t = rope.tables(&positions, &device);
            let xt = Tensor::<3>::from_data(TensorData::new(x.clone(), [3, 2, d]), &device);
            let got: Vec<f32> = rope.apply(xt, &t).into_data().try_into_vec().unwrap();
            for (pi, &p) in positions.iter().enumerate() {
                for h in 0..2 {
                    let off = (pi * 2 + h) * d;
                    let want = reference(style, &x[off..off + d], p, 10000.0);
                    for k in 0..d {
                        assert!(
                            (got[off + k] - want[k]).abs() < 1e-4,
                            "{style:?} p={p} k={k}"
                        );
                    }
                }
            }
        }
    }
}
