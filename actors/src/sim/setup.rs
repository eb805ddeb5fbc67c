//! What the simulator runs: a deployed pipeline (stages on nodes, links between them), the
//! model's shapes, the workload and the cost parameters. Pure data; [`pipeline_from_placement`]
//! builds a pipeline from a placement policy's [`Placement`].

use crate::placement::{ClusterView, LinkView, MemberId, ModelProfile, NodeView, Placement};
use serde::{Deserialize, Serialize};

/// A model as the simulator sees it: the placement profile (per-layer quantized bytes, KV and
/// activation sizes) plus the MLP width that sizes tensor-parallel exchanges. This is the JSON
/// `edgeray model profile` prints and `edgeray sim --model-profile` reads; a plain
/// [`ModelProfile`] JSON is accepted too (the MLP width then defaults to 4 × hidden).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimModel {
    /// The placement profile.
    #[serde(flatten)]
    pub profile: ModelProfile,
    /// MLP hidden size (`ffn_gate`/`ffn_up` rows), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ffn_size: Option<usize>,
    /// Where the numbers come from (a GGUF path, or a published configuration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl SimModel {
    /// The MLP width: known, or 4 × hidden.
    pub fn ffn(&self) -> usize {
        self.ffn_size.unwrap_or(4 * self.profile.hidden_size)
    }
}

/// One board of a stage (a tensor-parallel group has several).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimNode {
    /// The node's name.
    pub name: String,
    /// Weight bytes per second it streams through its kernels.
    pub compute_bytes_per_s: f64,
    /// Power while computing, watts.
    pub power_watts: f64,
    /// Its own batch cost (calibrated); `None`: [`SimParams::batch_cost`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_cost: Option<f64>,
    /// Its own KV-cache read speed, bytes/s (calibrated); `None`: `compute_bytes_per_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_bytes_per_s: Option<f64>,
}

impl SimNode {
    /// The simulator's view of a placement node.
    pub fn from_view(n: &NodeView) -> Self {
        SimNode {
            name: n.name.clone(),
            compute_bytes_per_s: n.compute_bytes_per_s,
            power_watts: n.power_watts,
            batch_cost: None,
            kv_bytes_per_s: None,
        }
    }
}

/// One pipeline stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimStage {
    /// Its boards: one, or a tensor-parallel group (the first is the leader).
    pub nodes: Vec<SimNode>,
    /// Transformer layers it holds.
    pub n_layers: usize,
    /// Weight bytes of those layers (streamed once per forward, whatever the batch).
    pub layer_bytes: u64,
    /// Weight bytes of the output head when this is the last stage (once per sequence of a
    /// forward: only the last position gets logits), else 0.
    pub head_bytes: u64,
    /// Link among the group's boards (unused for a one-board stage).
    pub group_link: LinkView,
}

/// A deployed pipeline: stages in order and the links between consecutive stages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimPipeline {
    /// Stages in pipeline order (at least one).
    pub stages: Vec<SimStage>,
    /// `hops[i]`: the link from stage `i` to stage `i + 1` (`None`: the same board, free).
    pub hops: Vec<Option<LinkView>>,
    /// The link the sampled token takes from the last stage back to the first (`None`: the
    /// same board or a single stage).
    pub back: Option<LinkView>,
}

impl SimPipeline {
    /// Every board the pipeline uses.
    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.stages
            .iter()
            .flat_map(|s| s.nodes.iter().map(|n| n.name.as_str()))
    }
}

/// What the streams ask for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    /// Concurrent streams (sequences), all starting at time 0.
    pub streams: usize,
    /// Prompt tokens per stream (prefilled in one forward).
    pub prompt_tokens: usize,
    /// Tokens generated per stream (the first comes out of the prefill).
    pub gen_tokens: usize,
}

/// Cost-model and runtime parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SimParams {
    /// Batching: a forward over `k` positions costs `1 + batch_cost × (k − 1)` times the
    /// weight-streaming time of one (weights are read once per forward; the arithmetic per
    /// position is what grows).
    pub batch_cost: f64,
    /// Most sequences a stage takes from its mailbox into one forward.
    pub max_batch: usize,
    /// Run-time noise: each forward's time is scaled by `1 + jitter × u`, `u` uniform in
    /// [−1, 1) from the seeded generator (0: fully deterministic arithmetic).
    pub jitter: f64,
    /// Seed of the generator.
    pub seed: u64,
    /// Power drawn while idle, as a fraction of the compute power.
    pub idle_power_fraction: f64,
    /// Synchronisation points per layer of a tensor-parallel group.
    pub tp_syncs_per_layer: usize,
    /// Bytes per activation value in a tensor-parallel exchange (f32).
    pub tp_bytes_per_value: u64,
    /// Seconds from a node's failure until the cluster declares it down.
    pub detect_s: f64,
    /// Seconds to redeploy the pipeline after the failure is detected.
    pub redeploy_s: f64,
    /// Stop after this many events (a guard against runaway runs).
    pub max_events: u64,
}

impl Default for SimParams {
    fn default() -> Self {
        SimParams {
            batch_cost: 0.1,
            max_batch: 16,
            jitter: 0.0,
            seed: 0,
            idle_power_fraction: 0.0,
            tp_syncs_per_layer: 3,
            tp_bytes_per_value: 4,
            detect_s: 3.0,
            redeploy_s: 5.0,
            max_events: 50_000_000,
        }
    }
}

/// A node failure, and the pipeline that replaces the running one once it is detected and
/// redeployed (`None`: nothing can replace it; the streams stall).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimFailure {
    /// The node that fails.
    pub node: String,
    /// When, seconds from the start.
    pub at_s: f64,
    /// The redeployed pipeline.
    pub replacement: Option<SimPipeline>,
}

/// Why a placement cannot be simulated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SetupError {
    /// A stage or group names a node the cluster does not have.
    #[error("the placement names node `{0}`, which the cluster view does not have")]
    UnknownNode(String),
    /// A node has no compute score.
    #[error("node `{0}` has compute_mib_s = 0; the simulator needs its speed")]
    NoCompute(String),
    /// The placement has no stages.
    #[error("the placement has no stages")]
    Empty,
    /// Too few nodes for the tensor-parallel groups asked for.
    #[error("--tp {tp} with {stages} stage(s) needs {} nodes; the cluster has {up} up", tp * stages)]
    TooFewNodes {
        /// Group width asked for.
        tp: usize,
        /// Stages of the placement.
        stages: usize,
        /// Nodes up.
        up: usize,
    },
}

/// The boards of each stage when every stage becomes a tensor-parallel group of `tp`, chosen
/// as a deployment does: the stage's node leads, the others are up nodes no stage uses, in id
/// order. Too few nodes: [`SetupError::TooFewNodes`] when `strict`, otherwise groups as wide as
/// the nodes allow. Stages that already carry a group keep it.
pub fn tensor_groups(
    placement: &Placement,
    cluster: &ClusterView,
    tp: usize,
    strict: bool,
) -> Result<Vec<Vec<MemberId>>, SetupError> {
    let n = placement.stages.len();
    let used: Vec<&MemberId> = placement.stages.iter().map(|s| &s.node).collect();
    let mut free: Vec<&MemberId> = cluster
        .nodes
        .iter()
        .filter(|v| v.up && !used.contains(&&v.id))
        .map(|v| &v.id)
        .collect();
    free.sort();
    let want = tp.saturating_sub(1) * n;
    let width = if free.len() >= want {
        tp.max(1)
    } else if strict {
        return Err(SetupError::TooFewNodes {
            tp,
            stages: n,
            up: n + free.len(),
        });
    } else {
        1 + free.len() / n.max(1)
    };
    let mut free = free.into_iter();
    Ok(placement
        .stages
        .iter()
        .map(|s| {
            if !s.group.is_empty() {
                return s.group.iter().map(|g| g.node.clone()).collect();
            }
            let mut g = vec![s.node.clone()];
            g.extend(free.by_ref().take(width - 1).cloned());
            g
        })
        .collect())
}

fn node<'a>(cluster: &'a ClusterView, id: &MemberId) -> Result<&'a NodeView, SetupError> {
    cluster
        .nodes
        .iter()
        .find(|n| &n.id == id)
        .ok_or_else(|| SetupError::UnknownNode(id.0.clone()))
}

/// The pipeline a placement deploys: each stage's boards (its group, if any) with their
/// speeds and powers from `cluster`, the links between consecutive stage leaders, and the
/// token's way back.
pub fn pipeline_from_placement(
    placement: &Placement,
    model: &ModelProfile,
    cluster: &ClusterView,
) -> Result<SimPipeline, SetupError> {
    let groups = tensor_groups(placement, cluster, 1, false)?;
    pipeline_with_groups(placement, model, cluster, &groups)
}

/// [`pipeline_from_placement`] with the boards of each stage given (e.g. by
/// [`tensor_groups`]); the first board of each group must be the stage's node.
pub fn pipeline_with_groups(
    placement: &Placement,
    model: &ModelProfile,
    cluster: &ClusterView,
    groups: &[Vec<MemberId>],
) -> Result<SimPipeline, SetupError> {
    if placement.stages.is_empty() {
        return Err(SetupError::Empty);
    }
    let mut stages = Vec::new();
    let mut leaders = Vec::new();
    for (s, group) in placement.stages.iter().zip(groups) {
        let ids: Vec<&MemberId> = group.iter().collect();
        let mut nodes = Vec::new();
        for id in &ids {
            let v = node(cluster, id)?;
            if v.compute_bytes_per_s <= 0.0 {
                return Err(SetupError::NoCompute(v.name.clone()));
            }
            nodes.push(SimNode::from_view(v));
        }
        // the slowest link inside the group bounds every all-gather
        let mut group_link = LinkView::DEFAULT;
        let mut worst = f64::NEG_INFINITY;
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                let l = cluster.link(a, b);
                let cost = l.rtt_s + 1.0 / l.bandwidth_bytes_per_s;
                if cost > worst {
                    worst = cost;
                    group_link = l;
                }
            }
        }
        let layer_bytes = model.layer_bytes[s.layers.clone()].iter().sum();
        stages.push(SimStage {
            nodes,
            n_layers: s.layers.len(),
            layer_bytes,
            head_bytes: if s.head { model.head_bytes } else { 0 },
            group_link,
        });
        leaders.push(&s.node);
    }
    let link = |a: &MemberId, b: &MemberId| (a != b).then(|| cluster.link(a, b));
    let hops = leaders.windows(2).map(|w| link(w[0], w[1])).collect();
    let back = link(leaders[leaders.len() - 1], leaders[0]);
    Ok(SimPipeline { stages, hops, back })
}
