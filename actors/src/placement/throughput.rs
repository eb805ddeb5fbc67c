//! The `throughput` policy: minimise the slowest pipeline stage (or hop).
//!
//! Uses each node's measured compute score and the links' RTT and bandwidth; searches every
//! contiguous split and, for up to [`super::search::MAX_ANY_ORDER_NODES`] usable nodes, every
//! node order (larger clusters keep the fastest-first order). Among placements with the same
//! slowest stage it picks the lowest single-stream latency.

use super::PlacementPolicy;
use super::common::{self, SearchSpec};
use super::plan::{Candidate, Placement, Unplaceable};
use super::search::{Acc, Finished, OrderMode};
use super::types::{ClusterView, ModelProfile};

/// Minimises the slowest stage; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ThroughputPolicy;

const COST_NAME: &str = "slowest stage or hop (s)";

fn spec() -> SearchSpec {
    SearchSpec {
        need_power: false,
        mode: OrderMode::Any,
        sort: |a, b| b.compute_bytes_per_s.total_cmp(&a.compute_bytes_per_s),
        keys: |a: &Acc| (a.bottleneck_s, a.latency_s),
    }
}

fn select(finals: &[&Finished], _k: Option<usize>) -> Result<usize, Unplaceable> {
    common::argmin_by(finals, |a| (a.bottleneck_s, a.latency_s)).ok_or(
        Unplaceable::NoFeasibleSplit {
            reason: "no candidates".into(),
        },
    )
}

impl PlacementPolicy for ThroughputPolicy {
    fn name(&self) -> &str {
        "throughput"
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
            |a| a.bottleneck_s,
            &select,
        )
    }
}
