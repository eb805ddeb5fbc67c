//! A placement from the head is checked before any shard is shipped: the head is just another
//! member, and a forged or stale answer must not make the coordinator send the model's weights
//! to a node outside the cluster, deploy a pipeline that skips or repeats layers, or overfill a
//! board.
//!
//! Pure: the coordinator hands in what it knows itself (the live members it is connected to
//! and the memory budgets their heartbeats report).

use std::collections::HashMap;

use crate::placement::{MemberId, Placement};

/// What the coordinator itself knows about one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownMember {
    /// The member.
    pub id: MemberId,
    /// Memory edgeray may use there (its heartbeat's budget), bytes.
    pub memory_budget_bytes: u64,
}

/// Why a placement was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementCheckError {
    /// No stages at all.
    #[error("the placement has no stages")]
    NoStages,
    /// A stage names a node that is not a live, connected member.
    #[error(
        "stage {stage} is placed on {node}, which is not a live member this coordinator reaches"
    )]
    UnknownNode {
        /// Stage index.
        stage: usize,
        /// The node named.
        node: String,
    },
    /// The stages' layer ranges do not cover the model exactly once, in order.
    #[error(
        "stage {stage} holds layers {start}..{end}, expected to start at {expected} (the model has {n_layers} layers)"
    )]
    Layers {
        /// Stage index.
        stage: usize,
        /// Its first layer.
        start: usize,
        /// Its end.
        end: usize,
        /// Where it should start.
        expected: usize,
        /// Layers of the model.
        n_layers: usize,
    },
    /// The stages end before (or after) the model's last layer.
    #[error("the stages cover layers 0..{covered} of a model with {n_layers}")]
    Coverage {
        /// Layers covered.
        covered: usize,
        /// Layers of the model.
        n_layers: usize,
    },
    /// The first stage must embed, the last must hold the head, and no other.
    #[error("stage {stage}: embed/head flags do not match its position")]
    Ends {
        /// Stage index.
        stage: usize,
    },
    /// A stage claims less memory than its weights and cache take.
    #[error("stage {stage} claims {memory_bytes} bytes for {needed} bytes of weights and KV cache")]
    Understated {
        /// Stage index.
        stage: usize,
        /// What it claims.
        memory_bytes: u64,
        /// Weights plus KV cache.
        needed: u64,
    },
    /// A node's stages need more than its memory budget.
    #[error("node {node}: its stages need {needed} bytes, its budget is {budget} bytes")]
    OverBudget {
        /// The node.
        node: String,
        /// Sum of its stages' memory.
        needed: u64,
        /// Its budget as the coordinator knows it.
        budget: u64,
    },
    /// A head's placement carries tensor-parallel groups (the coordinator forms groups itself).
    #[error("stage {stage} comes with a tensor-parallel group the coordinator did not form")]
    Group {
        /// Stage index.
        stage: usize,
    },
}

/// Checks a head's placement of a model of `n_layers` layers against the live members the
/// coordinator knows (`members`): every node named is one of them, the layer ranges cover
/// `0..n_layers` once and in order (first stage embeds, last holds the head), each stage's
/// memory covers its weights and cache, and no node's stages exceed its budget.
pub fn check_placement(
    p: &Placement,
    n_layers: usize,
    members: &[KnownMember],
) -> Result<(), PlacementCheckError> {
    if p.stages.is_empty() {
        return Err(PlacementCheckError::NoStages);
    }
    let last = p.stages.len() - 1;
    let mut expected = 0;
    let mut per_node: HashMap<&MemberId, u64> = HashMap::new();
    for (k, st) in p.stages.iter().enumerate() {
        if !members.iter().any(|m| m.id == st.node) {
            return Err(PlacementCheckError::UnknownNode {
                stage: k,
                node: st.node.0.clone(),
            });
        }
        if !st.group.is_empty() {
            return Err(PlacementCheckError::Group { stage: k });
        }
        if st.layers.start != expected || st.layers.end <= st.layers.start {
            return Err(PlacementCheckError::Layers {
                stage: k,
                start: st.layers.start,
                end: st.layers.end,
                expected,
                n_layers,
            });
        }
        expected = st.layers.end;
        if st.embed != (k == 0) || st.head != (k == last) {
            return Err(PlacementCheckError::Ends { stage: k });
        }
        let needed = st.weight_bytes.saturating_add(st.kv_bytes);
        if st.memory_bytes < needed {
            return Err(PlacementCheckError::Understated {
                stage: k,
                memory_bytes: st.memory_bytes,
                needed,
            });
        }
        let used = per_node.entry(&st.node).or_default();
        *used = used.saturating_add(st.memory_bytes);
    }
    if expected != n_layers {
        return Err(PlacementCheckError::Coverage {
            covered: expected,
            n_layers,
        });
    }
    for m in members {
        if let Some(&needed) = per_node.get(&m.id)
            && needed > m.memory_budget_bytes
        {
            return Err(PlacementCheckError::OverBudget {
                node: m.id.0.clone(),
                needed,
                budget: m.memory_budget_bytes,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::{GroupSlot, Prediction, StageAssignment};

    fn stage(node: &str, layers: std::ops::Range<usize>, mem: u64) -> StageAssignment {
        StageAssignment {
            node: MemberId(node.into()),
            node_name: node.into(),
            layers,
            embed: false,
            head: false,
            weight_bytes: mem / 2,
            kv_bytes: mem / 4,
            memory_bytes: mem,
            memory_limit_bytes: mem,
            compute_s: 0.0,
            group: Vec::new(),
        }
    }

    fn placement(mut stages: Vec<StageAssignment>) -> Placement {
        if let Some(s) = stages.first_mut() {
            s.embed = true;
        }
        if let Some(s) = stages.last_mut() {
            s.head = true;
        }
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

    fn members() -> Vec<KnownMember> {
        ["a", "b"]
            .iter()
            .map(|id| KnownMember {
                id: MemberId((*id).into()),
                memory_budget_bytes: 100,
            })
            .collect()
    }

    #[test]
    fn an_honest_placement_passes() {
        let p = placement(vec![stage("a", 0..3, 60), stage("b", 3..8, 90)]);
        assert_eq!(check_placement(&p, 8, &members()), Ok(()));
        // A node may run several stages while they fit its budget together.
        let p = placement(vec![stage("a", 0..3, 40), stage("a", 3..8, 60)]);
        assert_eq!(check_placement(&p, 8, &members()), Ok(()));
    }

    #[test]
    fn forged_placements_are_refused_before_anything_is_shipped() {
        let m = members();
        let check = |stages| check_placement(&placement(stages), 8, &m);
        // A node outside the cluster (or not reachable from here).
        assert!(matches!(
            check(vec![stage("a", 0..4, 10), stage("thief", 4..8, 10)]),
            Err(PlacementCheckError::UnknownNode { stage: 1, .. })
        ));
        // Layers skipped, repeated, empty, beyond the model, or missing at the end.
        assert!(matches!(
            check(vec![stage("a", 0..3, 10), stage("b", 4..8, 10)]),
            Err(PlacementCheckError::Layers {
                stage: 1,
                expected: 3,
                ..
            })
        ));
        assert!(matches!(
            check(vec![stage("a", 0..5, 10), stage("b", 3..8, 10)]),
            Err(PlacementCheckError::Layers { stage: 1, .. })
        ));
        assert!(matches!(
            check(vec![stage("a", 0..0, 10), stage("b", 0..8, 10)]),
            Err(PlacementCheckError::Layers { stage: 0, .. })
        ));
        assert!(matches!(
            check(vec![stage("a", 0..4, 10), stage("b", 4..9, 10)]),
            Err(PlacementCheckError::Coverage { covered: 9, .. })
        ));
        assert!(matches!(
            check(vec![stage("a", 0..4, 10), stage("b", 4..7, 10)]),
            Err(PlacementCheckError::Coverage { covered: 7, .. })
        ));
        assert_eq!(
            check_placement(&placement(Vec::new()), 8, &m),
            Err(PlacementCheckError::NoStages)
        );
        // Over a node's budget, alone or with its other stages.
        assert!(matches!(
            check(vec![stage("a", 0..4, 10), stage("b", 4..8, 101)]),
            Err(PlacementCheckError::OverBudget {
                needed: 101,
                budget: 100,
                ..
            })
        ));
        assert!(matches!(
            check(vec![stage("a", 0..4, 60), stage("a", 4..8, 60)]),
            Err(PlacementCheckError::OverBudget { needed: 120, .. })
        ));
        // Memory understated to slip under the budget.
        let mut s = stage("b", 4..8, 10);
        s.weight_bytes = 500;
        assert!(matches!(
            check(vec![stage("a", 0..4, 10), s]),
            Err(PlacementCheckError::Understated { stage: 1, .. })
        ));
        // Embed/head flags off their ends.
        let mut p = placement(vec![stage("a", 0..4, 10), stage("b", 4..8, 10)]);
        p.stages[1].embed = true;
        assert_eq!(
            check_placement(&p, 8, &m),
            Err(PlacementCheckError::Ends { stage: 1 })
        );
        // A group the coordinator did not form (it would ship slices to its boards).
        let mut s = stage("b", 4..8, 10);
        s.group = vec![GroupSlot {
            member: 0,
            node: MemberId("thief".into()),
            node_name: "thief".into(),
            q_heads: 0..1,
            kv_heads: 0..1,
            ffn_rows: 0..1,
            down_rows: 0..1,
            vocab_rows: None,
            weight_bytes: 1,
        }];
        assert_eq!(
            check(vec![stage("a", 0..4, 10), s]),
            Err(PlacementCheckError::Group { stage: 1 })
        );
    }
}
