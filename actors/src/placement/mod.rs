//! Pipeline placement: which node holds which contiguous range of transformer layers.
//!
//! Pure: no I/O, no async. A [`PlacementPolicy`] maps a [`ModelProfile`] and a
//! [`ClusterView`] to a [`Placement`] (or an [`Unplaceable`] naming the shortfall), using the
//! shared cost model in [`cost`]. Built-in policies: [`MemoryPolicy`] (`memory`),
//! [`PowerPolicy`] (`power`) and [`ThroughputPolicy`] (`throughput`); [`policy_by_name`] finds
//! them by name (custom policies too, once in the [`registry`]) and [`PlacementBench`]
//! compares them.
//!
//! Every placement keeps each stage within its node's usable memory (weights + KV cache at the
//! configured context + fixed overhead), and its stages cover layers `0..n_layers` contiguously,
//! the first stage holding the embedding and the last the output head.

mod common;
pub mod compare;
pub mod cost;
pub mod memory;
pub mod nodes_file;
pub mod plan;
pub mod power;
pub mod profile;
pub mod registry;
pub mod search;
pub mod throughput;
pub mod types;
pub mod units;

pub use compare::{BenchRow, PlacementBench};
pub use memory::MemoryPolicy;
pub use nodes_file::{NodesFileError, parse_nodes_toml};
pub use plan::{
    Candidate, CandidateOutcome, Exclusion, ExclusionReason, GroupSlot, Placement, Prediction,
    StageAssignment, Unplaceable,
};
pub use power::{LatencyTarget, PowerPolicy};
pub use profile::{
    GgufProfileError, ProfileError, ProfileParams, profile_from_gguf, profile_from_tensors,
};
pub use registry::{RegistryError, register_policy, registered_names, unregister_policy};
pub use throughput::ThroughputPolicy;
pub use types::{ClusterView, LinkView, MemberId, ModelProfile, NodeView};

/// A placement policy: pure, deterministic, pluggable.
pub trait PlacementPolicy: Send + Sync {
    /// The policy's registry name.
    fn name(&self) -> &str;

    /// The policy's best placement, or why there is none.
    fn place(&self, model: &ModelProfile, cluster: &ClusterView) -> Result<Placement, Unplaceable>;

    /// Every option the policy weighed (for the built-ins: the best placement for each number
    /// of stages), the one [`PlacementPolicy::place`] returns marked `chosen`.
    fn candidates(&self, model: &ModelProfile, cluster: &ClusterView) -> Vec<Candidate>;
}

/// Names of the built-in policies.
pub const POLICY_NAMES: [&str; 3] = ["memory", "power", "throughput"];

/// Every name [`policy_by_name`] accepts now: the built-ins, then the registered policies.
pub fn policy_names() -> Vec<String> {
    POLICY_NAMES
        .iter()
        .map(|n| n.to_string())
        .chain(registered_names())
        .collect()
}

/// An unknown policy name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown placement policy `{name}`; valid policies: {}", policy_names().join(", "))]
pub struct UnknownPolicy {
    /// The name asked for.
    pub name: String,
}

/// The policy called `name`: a built-in with default settings, or a registered custom policy
/// ([`register_policy`]).
pub fn policy_by_name(name: &str) -> Result<Box<dyn PlacementPolicy>, UnknownPolicy> {
    match name {
        "memory" => Ok(Box::new(MemoryPolicy)),
        "power" => Ok(Box::new(PowerPolicy::default())),
        "throughput" => Ok(Box::new(ThroughputPolicy)),
        _ => registry::registered_policy(name).ok_or_else(|| UnknownPolicy {
            name: name.to_string(),
        }),
    }
}

/// Every policy [`policy_by_name`] knows: the built-ins with default settings, then the
/// registered custom policies by name.
pub fn all_policies() -> Vec<Box<dyn PlacementPolicy>> {
    let mut all = builtin_policies();
    all.extend(
        registered_names()
            .iter()
            .filter_map(|n| registry::registered_policy(n)),
    );
    all
}

/// Every built-in policy with default settings, in [`POLICY_NAMES`] order.
pub fn builtin_policies() -> Vec<Box<dyn PlacementPolicy>> {
    vec![
        Box::new(MemoryPolicy),
        Box::new(PowerPolicy::default()),
        Box::new(ThroughputPolicy),
    ]
}
