//! Steps every search-based policy shares: screening nodes, the memory lower bound, running the
//! search and turning its results into candidates.

use super::cost::CostModel;
use super::plan::{
    Candidate, CandidateOutcome, Exclusion, ExclusionReason, Placement, Unplaceable,
};
use super::search::{self, Acc, Finished, Keys, OrderMode};
use super::types::{ClusterView, ModelProfile, NodeView};
use super::units::fmt_bytes;
use std::cmp::Ordering;
use std::collections::BTreeSet;

/// The search's input and output for one policy run.
pub(crate) struct Prepared<'a> {
    pub cost: CostModel<'a>,
    pub usable: Vec<&'a NodeView>,
    pub excluded: Vec<Exclusion>,
    pub finals: Vec<Finished>,
}

/// How a policy runs the search.
pub(crate) struct SearchSpec {
    pub need_power: bool,
    pub mode: OrderMode,
    /// Node order (decides the order for `Fixed` mode and for large clusters).
    pub sort: fn(&NodeView, &NodeView) -> Ordering,
    pub keys: Keys,
}

/// Check the model and cluster, exclude unusable nodes, check total memory, run the search.
pub(crate) fn prepare<'a>(
    model: &'a ModelProfile,
    cluster: &'a ClusterView,
    spec: &SearchSpec,
) -> Result<Prepared<'a>, (Unplaceable, Vec<Exclusion>)> {
    validate_model(model).map_err(|e| (e, Vec::new()))?;
    let mut seen = BTreeSet::new();
    for node in &cluster.nodes {
        if !seen.insert(&node.id) {
            let reason = format!("node id {} appears twice", node.id);
            return Err((Unplaceable::InvalidCluster { reason }, Vec::new()));
        }
        if !(node.power_watts.is_finite() && node.power_watts >= 0.0) {
            let reason = format!(
                "node {} has an invalid power figure {}",
                node.name, node.power_watts
            );
            return Err((Unplaceable::InvalidCluster { reason }, Vec::new()));
        }
    }
    for (a, b, link) in cluster.links() {
        let ok = link.rtt_s.is_finite()
            && link.rtt_s >= 0.0
            && link.bandwidth_bytes_per_s.is_finite()
            && link.bandwidth_bytes_per_s > 0.0;
        if !ok {
            let reason = format!("link {a}–{b} has an invalid RTT or bandwidth");
            return Err((Unplaceable::InvalidCluster { reason }, Vec::new()));
        }
    }
    let cost = CostModel::new(model);
    let smallest_stage = (0..model.n_layers())
        .map(|i| cost.stage_memory(&(i..i + 1), false, false).total_bytes)
        .min()
        .unwrap_or(0);
    let mut usable = Vec::new();
    let mut excluded = Vec::new();
    for node in &cluster.nodes {
        let reason = if !node.up {
            Some(ExclusionReason::Down)
        } else if node.usable_bytes() == 0 {
            Some(ExclusionReason::ZeroBudget)
        } else if !(node.compute_bytes_per_s.is_finite() && node.compute_bytes_per_s > 0.0) {
            Some(ExclusionReason::NoComputeScore)
        } else if spec.need_power && node.power_watts <= 0.0 {
            Some(ExclusionReason::NoPowerBudget)
        } else if node.usable_bytes() < smallest_stage {
            Some(ExclusionReason::TooSmall {
                usable_bytes: node.usable_bytes(),
                smallest_stage_bytes: smallest_stage,
            })
        } else {
            None
        };
        match reason {
            Some(reason) => excluded.push(Exclusion {
                node: node.id.clone(),
                name: node.name.clone(),
                reason,
            }),
            None => usable.push(node),
        }
    }
    if usable.is_empty() {
        return Err((
            Unplaceable::NoUsableNodes {
                known: cluster.nodes.len(),
            },
            excluded,
        ));
    }
    usable.sort_by(|a, b| (spec.sort)(a, b).then_with(|| a.id.cmp(&b.id)));

    let weight_bytes = model.total_weight_bytes();
    let kv_bytes = model.kv_bytes(model.n_layers());
    let overhead_bytes = model.stage_overhead_bytes;
    let required_bytes = weight_bytes + kv_bytes + overhead_bytes;
    let total_budget_bytes: u64 = usable.iter().map(|n| n.usable_bytes()).sum();
    if total_budget_bytes < required_bytes {
        let err = Unplaceable::InsufficientMemory {
            shortfall_bytes: required_bytes - total_budget_bytes,
            total_budget_bytes,
            required_bytes,
            weight_bytes,
            kv_bytes,
            context_length: model.context_length,
            overhead_bytes,
        };
        return Err((err, excluded));
    }
    let finals = search::search(&cost, cluster, &usable, spec.mode, spec.keys);
    if finals.is_empty() {
        let budgets: Vec<String> = usable
            .iter()
            .map(|n| format!("{} {}", n.name, fmt_bytes(n.usable_bytes())))
            .collect();
        let largest_layer = model.layer_bytes.iter().copied().max().unwrap_or(0);
        let reason = format!(
            "total budget {} covers the {} required, but {} layers (largest {}, KV {} per layer at ctx {}) \
             with {} overhead per stage, the embedding ({}) on the first and the head ({}) on the last stage \
             do not pack into the usable nodes [{}]",
            fmt_bytes(total_budget_bytes),
            fmt_bytes(required_bytes),
            model.n_layers(),
            fmt_bytes(largest_layer),
            fmt_bytes(model.kv_bytes(1)),
            model.context_length,
            fmt_bytes(overhead_bytes),
            fmt_bytes(model.embedding_bytes),
            fmt_bytes(model.head_bytes),
            budgets.join(", ")
        );
        return Err((Unplaceable::NoFeasibleSplit { reason }, excluded));
    }
    Ok(Prepared {
        cost,
        usable,
        excluded,
        finals,
    })
}

fn validate_model(model: &ModelProfile) -> Result<(), Unplaceable> {
    let bad = |reason: &str| {
        Err(Unplaceable::InvalidModel {
            reason: reason.to_string(),
        })
    };
    if model.n_layers() == 0 {
        return bad("the model has no layers");
    }
    if model.context_length == 0 {
        return bad("context length is zero");
    }
    if model.layer_bytes.iter().all(|&b| b == 0) && model.head_bytes == 0 {
        return bad("the model has no weights");
    }
    Ok(())
}

/// Index of the lexicographically smallest element by `key` (first one on ties).
pub(crate) fn argmin_by(finals: &[&Finished], key: impl Fn(&Acc) -> (f64, f64)) -> Option<usize> {
    let mut best: Option<(usize, (f64, f64))> = None;
    for (i, f) in finals.iter().enumerate() {
        let k = key(&f.acc);
        let better = match best {
            None => true,
            Some((_, b)) => k.0.total_cmp(&b.0).then(k.1.total_cmp(&b.1)) == Ordering::Less,
        };
        if better {
            best = Some((i, k));
        }
    }
    best.map(|(i, _)| i)
}

/// Picks the best of some finished pipelines (`stages` = the stage count they share, if fixed).
pub(crate) type Select<'s> = dyn Fn(&[&Finished], Option<usize>) -> Result<usize, Unplaceable> + 's;

/// Evaluate finished pipeline `f` into a [`Placement`].
pub(crate) fn to_placement(
    p: &Prepared<'_>,
    cluster: &ClusterView,
    policy: &str,
    f: &Finished,
) -> Placement {
    let stages: Vec<(&NodeView, std::ops::Range<usize>)> = f
        .stages
        .iter()
        .map(|(i, r)| (p.usable[*i], r.clone()))
        .collect();
    p.cost.evaluate(policy, cluster, &stages)
}

/// The overall best placement.
pub(crate) fn place(
    prepared: Result<Prepared<'_>, (Unplaceable, Vec<Exclusion>)>,
    cluster: &ClusterView,
    policy: &str,
    select: &Select<'_>,
) -> Result<Placement, Unplaceable> {
    let p = prepared.map_err(|(e, _)| e)?;
    let all: Vec<&Finished> = p.finals.iter().collect();
    let i = select(&all, None)?;
    Ok(to_placement(&p, cluster, policy, all[i]))
}

/// One candidate per stage count (1..=usable nodes), the overall best marked `chosen`.
pub(crate) fn candidates(
    prepared: Result<Prepared<'_>, (Unplaceable, Vec<Exclusion>)>,
    cluster: &ClusterView,
    policy: &str,
    cost_name: &str,
    cost: fn(&Acc) -> f64,
    select: &Select<'_>,
) -> Vec<Candidate> {
    let p = match prepared {
        Ok(p) => p,
        Err((e, excluded)) => {
            return vec![Candidate {
                label: "any".to_string(),
                outcome: CandidateOutcome::Unplaceable(e),
                cost: f64::INFINITY,
                cost_name: cost_name.to_string(),
                chosen: false,
                excluded,
            }];
        }
    };
    let all: Vec<&Finished> = p.finals.iter().collect();
    let best = select(&all, None).ok().map(|i| all[i].stages.clone());
    let mut out = Vec::new();
    for k in 1..=p.usable.len() {
        let subset: Vec<&Finished> = p.finals.iter().filter(|f| f.stages.len() == k).collect();
        let label = format!("{k} stage{}", if k == 1 { "" } else { "s" });
        let picked = if subset.is_empty() {
            Err(Unplaceable::NoSplitWithStages { stages: k })
        } else {
            select(&subset, Some(k)).map(|i| subset[i])
        };
        let mut excluded = p.excluded.clone();
        let (outcome, c, chosen) = match picked {
            Ok(f) => {
                for (i, node) in p.usable.iter().enumerate() {
                    if !f.stages.iter().any(|(s, _)| *s == i) {
                        excluded.push(Exclusion {
                            node: node.id.clone(),
                            name: node.name.clone(),
                            reason: ExclusionReason::Unused,
                        });
                    }
                }
                let chosen = best.as_ref() == Some(&f.stages);
                (
                    CandidateOutcome::Placed(to_placement(&p, cluster, policy, f)),
                    cost(&f.acc),
                    chosen,
                )
            }
            Err(e) => (CandidateOutcome::Unplaceable(e), f64::INFINITY, false),
        };
        out.push(Candidate {
            label,
            outcome,
            cost: c,
            cost_name: cost_name.to_string(),
            chosen,
            excluded,
        });
    }
    out
}
