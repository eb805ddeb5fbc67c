//! What one forward pass of a group exchanges: synchronisation points and bytes each member
//! sends, with every piece as f32 or, where the plan allows, already quantized for the
//! consuming matrix (ggml block sizes: Q8_0 34 bytes per 32 values, Q8_K 292 per 256).

use super::slicing::{GroupPlan, WoPlacement};

/// Wire bytes of `values` activations quantized in blocks of `block` (1: sent as f32).
pub fn quantized_bytes(values: usize, block: usize) -> usize {
    match block {
        32 => values / 32 * 34,
        256 => values / 256 * 292,
        _ => values * 4,
    }
}

/// The exchange of one pass of `n` positions (`logit_rows` of them get logits on a head stage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassCost {
    /// All-gathers of the pass.
    pub sync_points: usize,
    /// Per member: bytes sent (its piece to each other member) with every piece as f32.
    pub bytes_f32: Vec<usize>,
    /// Per member: bytes sent when the attention output and MLP hidden pieces travel quantized
    /// for their consumer (where the slice boundaries allow it) and the rest as f32.
    pub bytes_quantized: Vec<usize>,
}

/// The exchange of one pass of `n` positions through `plan`'s stage.
pub fn pass_cost(plan: &GroupPlan, n: usize, logit_rows: usize) -> PassCost {
    let m = plan.members();
    let fanout = m - 1;
    let mut cost = PassCost {
        sync_points: 0,
        bytes_f32: vec![0; m],
        bytes_quantized: vec![0; m],
    };
    for l in &plan.layers {
        let s = &l.shape;
        cost.sync_points += if plan.options.wo == WoPlacement::Split {
            4
        } else {
            3
        };
        let attn_q = l.attn_out_quantizable();
        for (i, ms) in l.members.iter().enumerate() {
            let attn = ms.attn_cols(s.head_dim).len() * n;
            let ffn = ms.ffn_rows.len() * n;
            let down = ms.down_rows.len() * n;
            let wo = if plan.options.wo == WoPlacement::Split {
                ms.wo_rows.len() * n
            } else {
                0
            };
            cost.bytes_f32[i] += (attn + ffn + down + wo) * 4 * fanout;
            let attn_wire = if attn_q {
                quantized_bytes(attn, s.attn_out_block)
            } else {
                attn * 4
            };
            let ffn_wire = if ms.ffn_rows.len() % s.ffn_block == 0 {
                quantized_bytes(ffn, s.ffn_block)
            } else {
                ffn * 4
            };
            cost.bytes_quantized[i] += (attn_wire + ffn_wire + (down + wo) * 4) * fanout;
        }
    }
    if let Some(rows) = &plan.head_rows {
        cost.sync_points += 1;
        for (i, r) in rows.iter().enumerate() {
            let b = r.len() * logit_rows * 4 * fanout;
            cost.bytes_f32[i] += b;
            cost.bytes_quantized[i] += b;
        }
    }
    cost
}
