//! Failover plans with spare shards.
//!
//! After a deployment, for every stage node X other than the coordinator, the placement the
//! cluster would get without X is worked out in advance, and the nodes of that placement receive
//! its shards in the background (one chunk in flight, one shard at a time, so the pipeline's
//! hidden states keep the link). When X is lost, the redeploy uses that plan: nothing is
//! scheduled, built or shipped, and only the stage actors are started.

use std::collections::HashMap;
use std::ops::Range;
use std::time::Instant;

use bytes::Bytes;
use edgeray_runtime::cluster::Cluster;
use edgeray_runtime::identity::NodeId;
use parking_lot::Mutex;

use super::deploy::{DeployError, DeployOptions, PlannedPlacement, Prepared, build_shard};
use super::shipping::{node_has_shard, ship_shard_windowed};
use crate::pipeline::head::{cluster_view, place_id, runtime_id, schedule};
use crate::pipeline::stage::shard_store::content_hash;
use crate::placement::{ClusterView, MemberId, Placement, policy_by_name};

/// The view a failover placement for the loss of `lost` would see: `view` without `lost`, and
/// each node's free memory counting what the stages of `current` on it would release.
pub fn failover_view(view: &ClusterView, current: &Placement, lost: &MemberId) -> ClusterView {
    let mut v = view.clone();
    v.nodes.retain(|n| &n.id != lost);
    for n in &mut v.nodes {
        let held: u64 = current
            .stages
            .iter()
            .filter(|s| s.node == n.id)
            .map(|s| s.memory_bytes)
            .sum();
        n.memory_free_bytes = n.memory_free_bytes.saturating_add(held);
    }
    v
}

/// The stage nodes of `current` whose loss a plan should cover: all but the coordinator (whose
/// loss ends the service anyway), each once, in pipeline order.
pub fn nodes_to_cover(current: &Placement, coordinator: &MemberId) -> Vec<MemberId> {
    let mut out: Vec<MemberId> = Vec::new();
    for s in &current.stages {
        if &s.node != coordinator && !out.contains(&s.node) {
            out.push(s.node.clone());
        }
    }
    out
}

/// Failover plans by the node whose loss each covers.
#[derive(Default)]
pub struct FailoverPlans {
    plans: Mutex<HashMap<NodeId, PlannedPlacement>>,
    ready: Mutex<Option<Instant>>,
}

impl FailoverPlans {
    /// The plan for the loss of `lost`, if one is ready.
    pub fn for_loss(&self, lost: &NodeId) -> Option<PlannedPlacement> {
        self.plans.lock().get(lost).cloned()
    }

    /// Plans ready now.
    pub fn len(&self) -> usize {
        self.plans.lock().len()
    }

    /// Whether no plan is ready.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every plan (the deployment they were made for is gone).
    pub fn clear(&self) {
        self.plans.lock().clear();
        *self.ready.lock() = None;
    }

    /// When the last preparation finished, if it did.
    pub fn ready_at(&self) -> Option<Instant> {
        *self.ready.lock()
    }

    fn insert(&self, lost: NodeId, plan: PlannedPlacement) {
        self.plans.lock().insert(lost, plan);
    }

    fn mark_ready(&self) {
        *self.ready.lock() = Some(Instant::now());
    }
}

/// Works out a failover plan for every stage node of `current` but this one, and ships each
/// plan's shards to its nodes in the background. Plans become usable one by one as their
/// shards are in place. Returns the number of plans made.
pub(crate) async fn prepare_failover_plans(
    cluster: &Cluster,
    prep: &Prepared,
    opts: &DeployOptions,
    current: &Placement,
    plans: &FailoverPlans,
) -> Result<usize, DeployError> {
    let t0 = Instant::now();
    let policy = policy_by_name(&opts.policy).map_err(|e| DeployError::Options(e.to_string()))?;
    let me = place_id(&cluster.node_id());
    // Shards by layer range: the same range is the same bytes whatever node holds it.
    let mut known: HashMap<Range<usize>, (String, u64)> = HashMap::new();
    let mut made = 0;
    let mut sent = 0u64;
    for lost in nodes_to_cover(current, &me) {
        let view = failover_view(&cluster_view(cluster), current, &lost);
        // The redeploy lets the policy choose the stage count: so does the plan.
        let placement = match schedule(policy.as_ref(), &prep.profile, &view, None) {
            Ok(p) => p,
            Err(e) => {
                tracing::info!(lost = %lost.0, error = %e, "no failover placement without this node");
                continue;
            }
        };
        let mut shards = Vec::new();
        for (k, st) in placement.stages.iter().enumerate() {
            let node = runtime_id(&st.node)?;
            if let Some((hash, len)) = known.get(&st.layers)
                && node_has_shard(cluster, node, hash, *len).await?
            {
                shards.push((hash.clone(), *len));
                continue;
            }
            let bytes = build_shard(&prep.file, &prep.config, k, st.layers.clone()).await?;
            let hash = content_hash(&bytes);
            let len = bytes.len() as u64;
            let report =
                ship_shard_windowed(cluster, node, &hash, Bytes::from(bytes), 1, |_, _| {}).await?;
            sent += report.bytes_sent;
            known.insert(st.layers.clone(), (hash.clone(), len));
            shards.push((hash, len));
        }
        tracing::info!(
            lost = %lost.0,
            stages = placement.stages.len(),
            "failover plan ready"
        );
        plans.insert(runtime_id(&lost)?, PlannedPlacement { placement, shards });
        made += 1;
    }
    plans.mark_ready();
    tracing::info!(
        plans = made,
        spare_mib = sent >> 20,
        secs = t0.elapsed().as_secs_f64(),
        "spare shards in place"
    );
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::{NodeView, Prediction, StageAssignment};

    fn node(id: &str, free: u64) -> NodeView {
        NodeView {
            id: MemberId(id.into()),
            name: id.into(),
            memory_budget_bytes: 10_000,
            memory_free_bytes: free,
            power_watts: 5.0,
            compute_bytes_per_s: 1e9,
            backend: "flex".into(),
            up: true,
        }
    }

    fn stage(id: &str, layers: Range<usize>, mem: u64) -> StageAssignment {
        StageAssignment {
            node: MemberId(id.into()),
            node_name: id.into(),
            layers,
            embed: false,
            head: false,
            weight_bytes: mem,
            kv_bytes: 0,
            memory_bytes: mem,
            memory_limit_bytes: mem,
            compute_s: 0.0,
            group: Vec::new(),
        }
    }

    fn placement(stages: Vec<StageAssignment>) -> Placement {
        Placement {
            policy: "throughput".into(),
            stages,
            prediction: Prediction {
                tokens_per_s: 1.0,
                pipelined_tokens_per_s: 1.0,
                latency_s: 1.0,
                bottleneck_s: 1.0,
                joules_per_token: 1.0,
                hop_s: Vec::new(),
                max_memory_utilization: 0.5,
            },
        }
    }

    #[test]
    fn failover_view_drops_the_lost_node_and_credits_released_memory() {
        let view = ClusterView::new(vec![node("a", 100), node("b", 200), node("c", 300)]);
        let cur = placement(vec![
            stage("a", 0..4, 50),
            stage("b", 4..8, 70),
            stage("c", 8..9, 5),
        ]);
        let v = failover_view(&view, &cur, &MemberId("b".into()));
        let ids: Vec<_> = v.nodes.iter().map(|n| n.id.0.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(v.nodes[0].memory_free_bytes, 150);
        assert_eq!(v.nodes[1].memory_free_bytes, 305);
    }

    #[test]
    fn the_coordinator_and_repeated_nodes_are_covered_once_or_not_at_all() {
        let cur = placement(vec![
            stage("coord", 0..2, 1),
            stage("a", 2..4, 1),
            stage("b", 4..6, 1),
            stage("a", 6..8, 1),
        ]);
        let got = nodes_to_cover(&cur, &MemberId("coord".into()));
        assert_eq!(got, [MemberId("a".into()), MemberId("b".into())]);
    }
}
