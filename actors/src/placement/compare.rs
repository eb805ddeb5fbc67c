//! Run several policies on the same model and cluster and compare their placements.

use super::plan::{Placement, Unplaceable};
use super::types::{ClusterView, ModelProfile};
use super::units::{fmt_bytes, fmt_secs};
use super::{PlacementPolicy, all_policies, builtin_policies};
use serde::Serialize;
use std::fmt::Write as _;

/// One policy's result in a comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchRow {
    /// Policy name.
    pub policy: String,
    /// Its placement.
    pub placement: Option<Placement>,
    /// Why it could not place the model.
    pub error: Option<Unplaceable>,
}

/// Every policy's placement of one model on one cluster view.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlacementBench {
    /// One row per policy, in the order run.
    pub rows: Vec<BenchRow>,
}

impl PlacementBench {
    /// Run `policies` on the same model and view.
    pub fn run(
        policies: &[Box<dyn PlacementPolicy>],
        model: &ModelProfile,
        cluster: &ClusterView,
    ) -> Self {
        let rows = policies
            .iter()
            .map(|p| match p.place(model, cluster) {
                Ok(pl) => BenchRow {
                    policy: p.name().to_string(),
                    placement: Some(pl),
                    error: None,
                },
                Err(e) => BenchRow {
                    policy: p.name().to_string(),
                    placement: None,
                    error: Some(e),
                },
            })
            .collect();
        PlacementBench { rows }
    }

    /// Run every built-in policy with default settings.
    pub fn builtin(model: &ModelProfile, cluster: &ClusterView) -> Self {
        Self::run(&builtin_policies(), model, cluster)
    }

    /// Run every policy [`super::policy_by_name`] knows: the built-ins with default settings and
    /// the registered custom policies ([`super::register_policy`]).
    pub fn registered(model: &ModelProfile, cluster: &ClusterView) -> Self {
        Self::run(&all_policies(), model, cluster)
    }

    /// A plain-text comparison table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<11} {:>6} {:>10} {:>10} {:>12} {:>9} {:>10}  layout",
            "policy", "stages", "tok/s", "piped t/s", "latency", "J/token", "max mem %"
        );
        for row in &self.rows {
            match (&row.placement, &row.error) {
                (Some(p), _) => {
                    let pr = &p.prediction;
                    let layout: Vec<String> = p
                        .stages
                        .iter()
                        .map(|s| {
                            format!(
                                "{}[{}..{}] {}",
                                s.node_name,
                                s.layers.start,
                                s.layers.end,
                                fmt_bytes(s.memory_bytes)
                            )
                        })
                        .collect();
                    let _ = writeln!(
                        out,
                        "{:<11} {:>6} {:>10.2} {:>10.2} {:>12} {:>9.4} {:>9.1}%  {}",
                        row.policy,
                        p.stages.len(),
                        pr.tokens_per_s,
                        pr.pipelined_tokens_per_s,
                        fmt_secs(pr.latency_s),
                        pr.joules_per_token,
                        pr.max_memory_utilization * 100.0,
                        layout.join(" → ")
                    );
                }
                (None, Some(e)) => {
                    let _ = writeln!(out, "{:<11} unplaceable: {e}", row.policy);
                }
                (None, None) => {}
            }
        }
        out
    }
}
