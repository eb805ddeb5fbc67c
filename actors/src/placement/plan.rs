//! What a placement policy produces: placements, candidates, exclusions and failures.

use super::types::MemberId;
use super::units::{fmt_bytes, fmt_secs};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::Range;

/// One pipeline stage: a contiguous range of layers on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageAssignment {
    /// Node that runs the stage.
    pub node: MemberId,
    /// That node's name.
    pub node_name: String,
    /// Transformer layers `start..end` this stage holds.
    pub layers: Range<usize>,
    /// The stage holds the token embedding (first stage).
    pub embed: bool,
    /// The stage holds final norm, output head and sampler (last stage).
    pub head: bool,
    /// Resident weight bytes.
    pub weight_bytes: u64,
    /// KV-cache bytes at the configured context.
    pub kv_bytes: u64,
    /// Weights + KV cache + fixed overhead: what the node must have.
    pub memory_bytes: u64,
    /// The memory the node may use (`min(budget, free)`); always `>= memory_bytes`.
    pub memory_limit_bytes: u64,
    /// Predicted compute time per token on this stage, seconds.
    pub compute_s: f64,
    /// A tensor-parallel group (`--tp N`, N > 1): every board of the stage, the first being
    /// `node` (the group's leader), with the slice each holds. Empty: one board.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group: Vec<GroupSlot>,
}

/// One board of a tensor-parallel group and its slice of every matrix of the stage (the
/// ranges of the stage's first layer; every layer of these models has the same shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSlot {
    /// Member index in the group (0: the leader, which the previous stage talks to).
    pub member: usize,
    /// The board.
    pub node: MemberId,
    /// Its name.
    pub node_name: String,
    /// Query heads it computes.
    pub q_heads: Range<usize>,
    /// KV heads it holds (replicated where several members read one).
    pub kv_heads: Range<usize>,
    /// Rows of `ffn_gate`/`ffn_up` (elements of the MLP hidden vector).
    pub ffn_rows: Range<usize>,
    /// Rows of `ffn_down` (of the residual).
    pub down_rows: Range<usize>,
    /// Vocabulary rows of the output head (head stage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocab_rows: Option<Range<usize>>,
    /// Quantized weight bytes of its slices (estimated from the rows it holds).
    pub weight_bytes: u64,
}

/// Predicted performance of a placement under the shared cost model ([`super::cost`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Single-stream decode speed: 1 / (Σ stage compute + Σ hops incl. the token's way back).
    pub tokens_per_s: f64,
    /// Pipelined throughput bound with many concurrent streams: 1 / slowest stage or hop.
    pub pipelined_tokens_per_s: f64,
    /// Per-token latency of one stream, seconds.
    pub latency_s: f64,
    /// Time of the slowest stage or hop, seconds.
    pub bottleneck_s: f64,
    /// Energy per token: Σ power × stage compute time, joules.
    pub joules_per_token: f64,
    /// Transfer time of each hop between consecutive stages, seconds.
    pub hop_s: Vec<f64>,
    /// Highest fraction of a node's usable memory the placement uses.
    pub max_memory_utilization: f64,
}

/// A complete placement of the model on the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    /// Policy that produced it.
    pub policy: String,
    /// Stages in pipeline order; their layer ranges cover `0..n_layers` exactly once.
    pub stages: Vec<StageAssignment>,
    /// Predicted performance.
    pub prediction: Prediction,
}

impl Placement {
    /// Predicted single-stream tokens per second.
    pub fn predicted_tokens_per_s(&self) -> f64 {
        self.prediction.tokens_per_s
    }

    /// Nodes used, in pipeline order.
    pub fn nodes(&self) -> impl Iterator<Item = &MemberId> {
        self.stages.iter().map(|s| &s.node)
    }

    /// How many sequences' KV caches, each at the full configured context, fit every stage's
    /// node at once: the placement reserves one (`memory_bytes`); each further one needs
    /// `kv_bytes` more of the node's `memory_limit_bytes`. The tightest stage decides; a node
    /// running several stages shares its memory between them. At least 1 (a placement always
    /// fits one); `usize::MAX` when no stage keeps a cache.
    pub fn kv_sequence_capacity(&self) -> usize {
        // Per node: the memory left after every stage it runs, and the KV bytes one more
        // sequence adds there.
        let mut nodes: Vec<(&MemberId, u64, u64, u64)> = Vec::new();
        for s in &self.stages {
            match nodes.iter_mut().find(|(n, ..)| *n == &s.node) {
                Some((_, limit, used, kv)) => {
                    *limit = (*limit).min(s.memory_limit_bytes);
                    *used += s.memory_bytes;
                    *kv += s.kv_bytes;
                }
                None => nodes.push((&s.node, s.memory_limit_bytes, s.memory_bytes, s.kv_bytes)),
            }
        }
        nodes
            .iter()
            .map(|&(_, limit, used, kv)| match kv {
                0 => usize::MAX,
                kv => 1 + (limit.saturating_sub(used) / kv).min(usize::MAX as u64 - 1) as usize,
            })
            .min()
            .unwrap_or(usize::MAX)
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.stages.iter().enumerate() {
            let mut extra = String::new();
            if s.embed {
                extra.push_str(" +embed");
            }
            if s.head {
                extra.push_str(" +head");
            }
            writeln!(
                f,
                "  stage {i}: {:<12} layers {:>3}..{:<3}{extra:<12} mem {:>9} / {:>9} (weights {}, KV {}), {}/token",
                s.node_name,
                s.layers.start,
                s.layers.end,
                fmt_bytes(s.memory_bytes),
                fmt_bytes(s.memory_limit_bytes),
                fmt_bytes(s.weight_bytes),
                fmt_bytes(s.kv_bytes),
                fmt_secs(s.compute_s),
            )?;
        }
        let p = &self.prediction;
        write!(
            f,
            "  predicted: {:.1} tokens/s single stream ({}/token), {:.1} tokens/s pipelined bound, {:.3} J/token",
            p.tokens_per_s,
            fmt_secs(p.latency_s),
            p.pipelined_tokens_per_s,
            p.joules_per_token
        )
    }
}

/// Why a node takes no part in a placement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExclusionReason {
    /// The node is not a live member.
    Down,
    /// The node offers no memory.
    ZeroBudget,
    /// The node has no usable compute score.
    NoComputeScore,
    /// The power policy needs a power figure and the node has none.
    NoPowerBudget,
    /// Even the smallest possible stage does not fit.
    TooSmall {
        /// Memory the node may use.
        usable_bytes: u64,
        /// Memory of the smallest possible stage (one layer + KV + overhead).
        smallest_stage_bytes: u64,
    },
    /// The node could take part but this candidate does not use it.
    Unused,
}

impl fmt::Display for ExclusionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExclusionReason::Down => f.write_str("node is down"),
            ExclusionReason::ZeroBudget => f.write_str("memory budget is zero"),
            ExclusionReason::NoComputeScore => f.write_str("no measured compute score"),
            ExclusionReason::NoPowerBudget => {
                f.write_str("no power figure (W) for the power policy")
            }
            ExclusionReason::TooSmall {
                usable_bytes,
                smallest_stage_bytes,
            } => write!(
                f,
                "usable memory {} < {} for the smallest stage (one layer + KV cache + overhead)",
                fmt_bytes(*usable_bytes),
                fmt_bytes(*smallest_stage_bytes)
            ),
            ExclusionReason::Unused => f.write_str("not used by this placement"),
        }
    }
}

/// A node left out, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exclusion {
    /// The node.
    pub node: MemberId,
    /// Its name.
    pub name: String,
    /// Why it was left out.
    pub reason: ExclusionReason,
}

/// Why the model cannot be placed; every message names the shortfall.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Unplaceable {
    /// The model profile is inconsistent.
    #[error("invalid model profile: {reason}")]
    InvalidModel {
        /// What is wrong.
        reason: String,
    },
    /// The cluster view is inconsistent.
    #[error("invalid cluster view: {reason}")]
    InvalidCluster {
        /// What is wrong.
        reason: String,
    },
    /// No node is usable at all.
    #[error("no usable nodes ({known} known, all excluded)")]
    NoUsableNodes {
        /// Number of nodes in the view.
        known: usize,
    },
    /// The usable nodes together have too little memory.
    #[error(
        "needs {} more: total budget {} < {} required (weights {} + KV cache {} at ctx {context_length} + overhead {})",
        b(.shortfall_bytes), b(.total_budget_bytes), b(.required_bytes),
        b(.weight_bytes), b(.kv_bytes), b(.overhead_bytes)
    )]
    InsufficientMemory {
        /// `required_bytes - total_budget_bytes`.
        shortfall_bytes: u64,
        /// Sum of usable memory over usable nodes.
        total_budget_bytes: u64,
        /// Lower bound of memory any placement needs.
        required_bytes: u64,
        /// Weight bytes (one copy of every tensor).
        weight_bytes: u64,
        /// KV-cache bytes at `context_length`.
        kv_bytes: u64,
        /// Configured context length.
        context_length: usize,
        /// Fixed overhead of one stage.
        overhead_bytes: u64,
    },
    /// Enough memory in total, but whole layers do not pack into the nodes' budgets.
    #[error("no contiguous split fits: {reason}")]
    NoFeasibleSplit {
        /// Which budgets the whole layers do not pack into.
        reason: String,
    },
    /// No placement with the requested number of stages fits.
    #[error("no {stages}-stage placement fits the memory budgets")]
    NoSplitWithStages {
        /// Stage count tried.
        stages: usize,
    },
    /// A placement exists but none meets the latency target.
    #[error(
        "latency target {} per token unreachable: the fastest placement{} takes {}",
        secs(.target_s), with_stages(.stages), secs(.best_s)
    )]
    LatencyTarget {
        /// Requested per-token latency.
        target_s: f64,
        /// Best achievable per-token latency.
        best_s: f64,
        /// Stage count, when the target was checked for a fixed number of stages.
        stages: Option<usize>,
    },
}

fn b(bytes: &u64) -> String {
    fmt_bytes(*bytes)
}

fn secs(s: &f64) -> String {
    fmt_secs(*s)
}

fn with_stages(stages: &Option<usize>) -> String {
    stages
        .map(|k| format!(" with {k} stages"))
        .unwrap_or_default()
}

/// One option a policy considered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Short label, e.g. `3 stages`.
    pub label: String,
    /// The placement, or why this option is impossible.
    pub outcome: CandidateOutcome,
    /// The policy's objective value (lower is better; `inf` when unplaceable).
    pub cost: f64,
    /// What the cost measures, e.g. `slowest stage (s)`.
    pub cost_name: String,
    /// This is the candidate [`super::PlacementPolicy::place`] returns.
    pub chosen: bool,
    /// Nodes left out of this candidate, with reasons.
    pub excluded: Vec<Exclusion>,
}

/// A candidate's placement or failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CandidateOutcome {
    /// A valid placement.
    Placed(Placement),
    /// Why this option cannot be placed.
    Unplaceable(Unplaceable),
}

impl CandidateOutcome {
    /// The placement, if any.
    pub fn placement(&self) -> Option<&Placement> {
        match self {
            CandidateOutcome::Placed(p) => Some(p),
            CandidateOutcome::Unplaceable(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn stage(node: &str, memory: u64, limit: u64, kv: u64) -> StageAssignment {
        StageAssignment {
            node: MemberId(node.into()),
            node_name: node.into(),
            layers: 0..1,
            embed: false,
            head: false,
            weight_bytes: memory - kv,
            kv_bytes: kv,
            memory_bytes: memory,
            memory_limit_bytes: limit,
            compute_s: 0.01,
            group: Vec::new(),
        }
    }

    fn placement(stages: Vec<StageAssignment>) -> Placement {
        Placement {
            policy: "test".into(),
            stages,
            prediction: Prediction {
                tokens_per_s: 1.0,
                pipelined_tokens_per_s: 1.0,
                latency_s: 1.0,
                bottleneck_s: 1.0,
                joules_per_token: 0.0,
                hop_s: Vec::new(),
                max_memory_utilization: 0.5,
            },
        }
    }

    #[test]
    fn kv_capacity_is_set_by_the_tightest_node() {
        // Node a: 100 MiB used of 400 (incl. one 50 MiB cache): 1 + 300/50 = 7 sequences.
        // Node b: 200 of 260 with 20 MiB per cache: 1 + 60/20 = 4.
        let p = placement(vec![
            stage("a", 100 * MIB, 400 * MIB, 50 * MIB),
            stage("b", 200 * MIB, 260 * MIB, 20 * MIB),
        ]);
        assert_eq!(p.kv_sequence_capacity(), 4);
        // A placement that just fits holds exactly one sequence.
        let p = placement(vec![stage("a", 100 * MIB, 100 * MIB, 50 * MIB)]);
        assert_eq!(p.kv_sequence_capacity(), 1);
    }

    #[test]
    fn stages_on_one_node_share_its_memory() {
        // Two stages on node a: 2 × 100 MiB used of 500, each sequence 2 × 30 MiB: 1 + 300/60.
        let p = placement(vec![
            stage("a", 100 * MIB, 500 * MIB, 30 * MIB),
            stage("a", 100 * MIB, 500 * MIB, 30 * MIB),
        ]);
        assert_eq!(p.kv_sequence_capacity(), 6);
        // Without a KV cache anywhere nothing limits the count.
        let p = placement(vec![stage("a", 100 * MIB, 500 * MIB, 0)]);
        assert_eq!(p.kv_sequence_capacity(), usize::MAX);
    }
}
