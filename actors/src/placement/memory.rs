//! The `memory` policy: layers in proportion to each node's memory (exo-style).
//!
//! Nodes are taken in order of usable memory (largest first) and the layers are split into
//! contiguous ranges so that the highest memory utilization of any node is as low as possible —
//! every node fills to about the same fraction of its budget. Ties go to the faster pipeline.

use super::PlacementPolicy;
use super::common::{self, SearchSpec};
use super::plan::{Candidate, Placement, Unplaceable};
use super::search::{Acc, OrderMode};
use super::types::{ClusterView, ModelProfile};

/// Layers in proportion to memory budget; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryPolicy;

const COST_NAME: &str = "highest memory utilization";

fn spec() -> SearchSpec {
    SearchSpec {
        need_power: false,
        mode: OrderMode::Fixed,
        sort: |a, b| b.usable_bytes().cmp(&a.usable_bytes()),
        keys: |a: &Acc| (a.max_util, a.latency_s),
    }
}

fn select(finals: &[&super::search::Finished], _k: Option<usize>) -> Result<usize, Unplaceable> {
    common::argmin_by(finals, |a| (a.max_util, a.latency_s)).ok_or(Unplaceable::NoFeasibleSplit {
        reason: "no candidates".into(),
    })
}

impl PlacementPolicy for MemoryPolicy {
    fn name(&self) -> &str {
        "memory"
    }

    fn place(&self, model: &ModelProfile, cluster: &ClusterView) -> Result<Placement, Unplaceable> {
        common::place(
            common::prepare(model, cluster, &spec()),
            cluster,
            self.name(),
            &select,
        )
    }

    fn candidates(&self, model: &ModelProfile, cluster: &ClusterView) -> Vec<Candidate> {
        let prepared = common::prepare(model, cluster, &spec());
        common::candidates(
            prepared,
            cluster,
            self.name(),
            COST_NAME,
            |a| a.max_util,
            &select,
        )
    }
}
