//! The cost model every policy shares.
//!
//! - stage compute time per token = weight bytes the stage streams / node compute score
//!   (layers, plus the output head on the last stage; the embedding lookup is free);
//! - hop between consecutive stages = RTT/2 + activation bytes / bandwidth;
//! - the sampled token returns from the last stage to the first: RTT/2 (a few bytes);
//! - single-stream tokens/s = 1 / (Σ stage times + Σ hops);
//! - pipelined throughput bound = 1 / max(stage time, hop time);
//! - energy per token = Σ node power (W) × stage time.
//!
//! A stage's memory = resident weights + KV cache at the configured context + fixed overhead.

use super::plan::{Placement, Prediction, StageAssignment};
use super::types::{ClusterView, LinkView, ModelProfile, NodeView};
use std::ops::Range;

/// Memory and compute arithmetic for one model, with O(1) layer-range sums.
#[derive(Debug, Clone)]
pub struct CostModel<'a> {
    model: &'a ModelProfile,
    prefix: Vec<u64>,
}

/// Memory of one stage, split up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageMemory {
    /// Resident weight bytes.
    pub weight_bytes: u64,
    /// KV-cache bytes.
    pub kv_bytes: u64,
    /// Weights + KV + overhead.
    pub total_bytes: u64,
}

impl<'a> CostModel<'a> {
    /// Cost model for `model`.
    pub fn new(model: &'a ModelProfile) -> Self {
        let mut prefix = Vec::with_capacity(model.layer_bytes.len() + 1);
        let mut acc = 0u64;
        prefix.push(0);
        for b in &model.layer_bytes {
            acc = acc.saturating_add(*b);
            prefix.push(acc);
        }
        CostModel { model, prefix }
    }

    /// The model profile.
    pub fn model(&self) -> &ModelProfile {
        self.model
    }

    /// Sum of the layer bytes of `layers`.
    pub fn layer_bytes(&self, layers: &Range<usize>) -> u64 {
        self.prefix[layers.end] - self.prefix[layers.start]
    }

    /// Memory a stage holding `layers` (and the embedding/head when asked) needs.
    pub fn stage_memory(&self, layers: &Range<usize>, embed: bool, head: bool) -> StageMemory {
        let m = self.model;
        let mut weight_bytes = self.layer_bytes(layers);
        if embed {
            weight_bytes += m.embedding_bytes;
        }
        if head {
            weight_bytes += if embed && m.tied_embeddings {
                m.head_bytes.saturating_sub(m.embedding_bytes)
            } else {
                m.head_bytes
            };
        }
        let kv_bytes = m.kv_bytes(layers.len());
        StageMemory {
            weight_bytes,
            kv_bytes,
            total_bytes: weight_bytes
                .saturating_add(kv_bytes)
                .saturating_add(m.stage_overhead_bytes),
        }
    }

    /// Weight bytes a token streams through a stage.
    pub fn stage_compute_bytes(&self, layers: &Range<usize>, head: bool) -> u64 {
        self.layer_bytes(layers) + if head { self.model.head_bytes } else { 0 }
    }

    /// Compute time per token of a stage on `node`, seconds.
    pub fn stage_time_s(&self, node: &NodeView, layers: &Range<usize>, head: bool) -> f64 {
        self.stage_compute_bytes(layers, head) as f64 / node.compute_bytes_per_s
    }

    /// Time to send one token's activations over `link`, seconds.
    pub fn hop_time_s(&self, link: &LinkView) -> f64 {
        link.rtt_s / 2.0 + self.model.activation_bytes_per_token as f64 / link.bandwidth_bytes_per_s
    }

    /// Time for the sampled token id to return from the last stage to the first, seconds.
    pub fn return_time_s(&self, link: &LinkView) -> f64 {
        link.rtt_s / 2.0
    }

    /// Build the full [`Placement`] for stages given as (node, layer range) in pipeline order.
    pub fn evaluate(
        &self,
        policy: &str,
        cluster: &ClusterView,
        stages: &[(&NodeView, Range<usize>)],
    ) -> Placement {
        let n_layers = self.model.n_layers();
        let mut out = Vec::with_capacity(stages.len());
        let mut latency = 0.0;
        let mut bottleneck: f64 = 0.0;
        let mut joules = 0.0;
        let mut max_util: f64 = 0.0;
        for (node, layers) in stages {
            let embed = layers.start == 0;
            let head = layers.end == n_layers;
            let mem = self.stage_memory(layers, embed, head);
            let t = self.stage_time_s(node, layers, head);
            latency += t;
            bottleneck = bottleneck.max(t);
            joules += node.power_watts * t;
            let limit = node.usable_bytes();
            max_util = max_util.max(mem.total_bytes as f64 / limit.max(1) as f64);
            out.push(StageAssignment {
                node: node.id.clone(),
                node_name: node.name.clone(),
                layers: layers.clone(),
                embed,
                head,
                weight_bytes: mem.weight_bytes,
                kv_bytes: mem.kv_bytes,
                memory_bytes: mem.total_bytes,
                memory_limit_bytes: limit,
                compute_s: t,
                group: Vec::new(),
            });
        }
        let mut hop_s = Vec::new();
        for w in stages.windows(2) {
            let h = self.hop_time_s(&cluster.link(&w[0].0.id, &w[1].0.id));
            hop_s.push(h);
            latency += h;
            bottleneck = bottleneck.max(h);
        }
        if stages.len() > 1 {
            let first = &stages[0].0.id;
            let last = &stages[stages.len() - 1].0.id;
            latency += self.return_time_s(&cluster.link(last, first));
        }
        Placement {
            policy: policy.to_string(),
            stages: out,
            prediction: Prediction {
                tokens_per_s: if latency > 0.0 {
                    1.0 / latency
                } else {
                    f64::INFINITY
                },
                pipelined_tokens_per_s: if bottleneck > 0.0 {
                    1.0 / bottleneck
                } else {
                    f64::INFINITY
                },
                latency_s: latency,
                bottleneck_s: bottleneck,
                joules_per_token: joules,
                hop_s,
                max_memory_utilization: max_util,
            },
        }
    }
}
