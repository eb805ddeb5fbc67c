//! What a placement policy sees: the model's memory/compute profile and a view of the cluster.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Opaque identity of a cluster node (the runtime's node id rendered as a string).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MemberId(pub String);

impl MemberId {
    /// Wrap any displayable id (e.g. a `u64` or the runtime's id type).
    pub fn new(id: impl fmt::Display) -> Self {
        MemberId(id.to_string())
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Default fixed per-stage overhead (runtime, scratch activations, logits buffer): 48 MiB.
pub const DEFAULT_STAGE_OVERHEAD_BYTES: u64 = 48 << 20;

/// Memory and compute profile of one quantized model, everything a policy needs to know.
///
/// A token's compute on a stage is modelled as proportional to the weight bytes it streams:
/// the stage's layer bytes, plus the output head on the last stage (the embedding is a
/// single-row lookup and costs nothing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelProfile {
    /// Human-readable model name (e.g. the GGUF `general.name`).
    pub name: String,
    /// Weight bytes of each transformer layer `blk.<i>.*`, in layer order; its length is the
    /// number of layers.
    pub layer_bytes: Vec<u64>,
    /// Bytes of the token-embedding table (held by the first stage).
    pub embedding_bytes: u64,
    /// Bytes of the final norm and output projection (held by the last stage). When the
    /// output projection is tied to the embedding table this includes that table.
    pub head_bytes: u64,
    /// The output projection is the embedding table: a single stage holding both the
    /// embedding and the head stores the table once.
    pub tied_embeddings: bool,
    /// KV-cache bytes per token per layer (keys + values, all KV heads).
    pub kv_bytes_per_token_per_layer: u64,
    /// Context length the KV cache is sized for.
    pub context_length: usize,
    /// Hidden (embedding) size.
    pub hidden_size: usize,
    /// Bytes of activations sent between two stages per token (hidden size × 2 for f16).
    pub activation_bytes_per_token: u64,
    /// Fixed memory each stage needs besides weights and KV cache.
    pub stage_overhead_bytes: u64,
}

impl ModelProfile {
    /// Number of transformer layers.
    pub fn n_layers(&self) -> usize {
        self.layer_bytes.len()
    }

    /// KV-cache bytes of `layers` layers at the configured context.
    pub fn kv_bytes(&self, layers: usize) -> u64 {
        self.kv_bytes_per_token_per_layer
            .saturating_mul(self.context_length as u64)
            .saturating_mul(layers as u64)
    }

    /// Total weight bytes when the whole model sits on one node.
    pub fn total_weight_bytes(&self) -> u64 {
        let layers: u64 = self.layer_bytes.iter().sum();
        let head = if self.tied_embeddings {
            self.head_bytes.saturating_sub(self.embedding_bytes)
        } else {
            self.head_bytes
        };
        layers + self.embedding_bytes + head
    }
}

/// A node as the scheduler sees it at placement time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    /// Opaque node identity.
    pub id: MemberId,
    /// Human-readable node name (e.g. `pi-01`).
    pub name: String,
    /// Memory edgeray may use on this node, in bytes.
    pub memory_budget_bytes: u64,
    /// Memory currently free on this node for edgeray, in bytes (including memory a stage of
    /// the model being placed would release). A placement uses at most
    /// `min(memory_budget_bytes, memory_free_bytes)`.
    pub memory_free_bytes: u64,
    /// Power the node draws while computing, in watts (its power budget).
    pub power_watts: f64,
    /// Measured compute score: weight bytes per second the node streams through its kernels.
    pub compute_bytes_per_s: f64,
    /// Compute backend name (e.g. `flex`, `wgpu`).
    pub backend: String,
    /// The node is a live member of the cluster.
    pub up: bool,
}

impl NodeView {
    /// Memory a placement may use on this node.
    pub fn usable_bytes(&self) -> u64 {
        self.memory_budget_bytes.min(self.memory_free_bytes)
    }
}

/// Network path between two nodes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinkView {
    /// Round-trip time in seconds.
    pub rtt_s: f64,
    /// Usable bandwidth in bytes per second.
    pub bandwidth_bytes_per_s: f64,
}

impl LinkView {
    /// A link assumed when nothing was measured: 1 ms RTT, 100 Mbit/s (12.5 MB/s).
    pub const DEFAULT: LinkView = LinkView {
        rtt_s: 0.001,
        bandwidth_bytes_per_s: 12.5e6,
    };
}

impl Default for LinkView {
    fn default() -> Self {
        LinkView::DEFAULT
    }
}

/// Nodes and the links between them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ClusterView {
    /// Every known node (down ones included; policies exclude them with a reason).
    pub nodes: Vec<NodeView>,
    /// Measured links, symmetric; the key pair is stored in sorted order.
    links: BTreeMap<(MemberId, MemberId), LinkView>,
    /// Link assumed for pairs that were not measured.
    pub default_link: LinkView,
}

impl ClusterView {
    /// A view of `nodes` with no measured links (every pair uses [`LinkView::DEFAULT`]).
    pub fn new(nodes: Vec<NodeView>) -> Self {
        ClusterView {
            nodes,
            links: BTreeMap::new(),
            default_link: LinkView::DEFAULT,
        }
    }

    /// Record the measured link between `a` and `b` (both directions).
    pub fn set_link(&mut self, a: &MemberId, b: &MemberId, link: LinkView) {
        self.links.insert(Self::key(a, b), link);
    }

    /// Builder form of [`ClusterView::set_link`].
    pub fn with_link(mut self, a: &MemberId, b: &MemberId, link: LinkView) -> Self {
        self.set_link(a, b, link);
        self
    }

    /// The link between `a` and `b`: measured, or the default link.
    pub fn link(&self, a: &MemberId, b: &MemberId) -> LinkView {
        self.links
            .get(&Self::key(a, b))
            .copied()
            .unwrap_or(self.default_link)
    }

    /// Every measured link.
    pub fn links(&self) -> impl Iterator<Item = (&MemberId, &MemberId, &LinkView)> {
        self.links.iter().map(|((a, b), l)| (a, b, l))
    }

    fn key(a: &MemberId, b: &MemberId) -> (MemberId, MemberId) {
        if a <= b {
            (a.clone(), b.clone())
        } else {
            (b.clone(), a.clone())
        }
    }
}
