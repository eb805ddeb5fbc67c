//! The time one forward takes on a stage: weight streaming (once per forward, growing with the
//! batch by [`SimParams::batch_cost`]), KV-cache reads for attention (per position, growing with
//! the context), and a tensor-parallel group's all-gathers.

use super::setup::{SimModel, SimParams, SimStage};

/// One sequence's share of a forward: `n` new positions after `ctx` cached ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Positions {
    /// New positions computed now (the prompt in a prefill, 1 in a decode step).
    pub n: usize,
    /// Positions already in the KV cache.
    pub ctx: usize,
}

/// Seconds one forward over `batch` takes on `stage`, before jitter.
///
/// - weights: `layer_bytes / T / c × (1 + β (k − 1))` for `k` positions in all, plus the head
///   `head_bytes / T / c × (1 + β (b − 1))` for `b` sequences (logits of the last position
///   only), with `T` boards, `c` the slowest board's compute score and `β` its batch cost
///   (calibrated, or [`SimParams::batch_cost`]);
/// - attention: every new position reads the cached keys and values before it:
///   `layers × kv_bytes_per_token_per_layer × Σ (n·ctx + n(n+1)/2) / T / c_kv` (`c_kv`: the
///   board's calibrated KV read speed, or `c`);
/// - a group (`T > 1`) adds per layer `syncs × RTT/2` plus the bytes each board sends,
///   `(2 × hidden + ffn) × k × bytes_per_value × (T − 1) / T`, over the group's link.
pub fn forward_s(stage: &SimStage, batch: &[Positions], model: &SimModel, p: &SimParams) -> f64 {
    let t = stage.nodes.len().max(1) as f64;
    // the slowest board sets the pace of the stage (a group waits for it at every sync)
    let Some(slowest) = stage
        .nodes
        .iter()
        .min_by(|a, b| a.compute_bytes_per_s.total_cmp(&b.compute_bytes_per_s))
    else {
        return 0.0;
    };
    let c = slowest.compute_bytes_per_s;
    let c_kv = slowest.kv_bytes_per_s.unwrap_or(c);
    let beta = slowest.batch_cost.unwrap_or(p.batch_cost);
    let k: usize = batch.iter().map(|x| x.n).sum();
    let b = batch.len();
    let grow = |units: usize| 1.0 + beta * units.saturating_sub(1) as f64;
    let weights = stage.layer_bytes as f64 / t / c * grow(k)
        + if b > 0 {
            stage.head_bytes as f64 / t / c * grow(b)
        } else {
            0.0
        };
    let kv_positions: f64 = batch
        .iter()
        .map(|x| (x.n * x.ctx) as f64 + (x.n * (x.n + 1)) as f64 / 2.0)
        .sum();
    let attention =
        stage.n_layers as f64 * model.profile.kv_bytes_per_token_per_layer as f64 * kv_positions
            / t
            / c_kv;
    let sync = if stage.nodes.len() > 1 {
        let l = &stage.group_link;
        let values = (2 * model.profile.hidden_size + model.ffn()) as f64 * k as f64;
        let bytes = values * p.tp_bytes_per_value as f64 * (t - 1.0) / t;
        stage.n_layers as f64
            * (p.tp_syncs_per_layer as f64 * l.rtt_s / 2.0 + bytes / l.bandwidth_bytes_per_s)
    } else {
        0.0
    };
    weights + attention + sync
}
