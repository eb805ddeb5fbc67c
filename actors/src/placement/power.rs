//! The `power` policy: the least energy per token that still meets a latency target.
//!
//! Energy per token = Σ node power (W) × stage compute time, so efficient nodes (high compute
//! score per watt) are preferred. The latency target is per token for one stream; by default
//! it is the best achievable latency × 1.5. Searches every split and node order like the
//! `throughput` policy, keeping the exact latency/energy trade-off per search state.

use super::PlacementPolicy;
use super::common::{self, SearchSpec};
use super::plan::{Candidate, Placement, Unplaceable};
use super::search::{Acc, Finished, OrderMode};
use super::types::{ClusterView, ModelProfile};

/// The per-token latency the power policy must meet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LatencyTarget {
    /// This multiple of the fastest placement's latency (≥ 1).
    Factor(f64),
    /// An absolute per-token latency in seconds.
    Seconds(f64),
}

/// Least energy under a latency target; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerPolicy {
    /// The latency target.
    pub target: LatencyTarget,
}

/// Default latency slack of the power policy: 1.5 × the best achievable latency.
pub const DEFAULT_LATENCY_FACTOR: f64 = 1.5;

impl Default for PowerPolicy {
    fn default() -> Self {
        PowerPolicy {
            target: LatencyTarget::Factor(DEFAULT_LATENCY_FACTOR),
        }
    }
}

impl PowerPolicy {
    /// Meet `factor` × the best achievable latency (values below 1 are treated as 1).
    pub fn with_factor(factor: f64) -> Self {
        PowerPolicy {
            target: LatencyTarget::Factor(if factor.is_finite() {
                factor.max(1.0)
            } else {
                1.0
            }),
        }
    }

    /// Meet an absolute per-token latency in seconds.
    pub fn with_target_s(seconds: f64) -> Self {
        PowerPolicy {
            target: LatencyTarget::Seconds(seconds),
        }
    }
}

const COST_NAME: &str = "joules per token";

fn spec() -> SearchSpec {
    SearchSpec {
        need_power: true,
        mode: OrderMode::Any,
        // large clusters: most bytes per joule first
        sort: |a, b| {
            (b.compute_bytes_per_s / b.power_watts)
                .total_cmp(&(a.compute_bytes_per_s / a.power_watts))
        },
        keys: |a: &Acc| (a.latency_s, a.joules),
    }
}

impl PowerPolicy {
    fn select(
        &self,
        all_best_latency: f64,
    ) -> impl Fn(&[&Finished], Option<usize>) -> Result<usize, Unplaceable> + '_ {
        move |finals: &[&Finished], k: Option<usize>| {
            let target = match self.target {
                LatencyTarget::Factor(f) => all_best_latency * f,
                LatencyTarget::Seconds(s) => s,
            };
            // tolerance for float rounding when the target equals the best latency
            let limit = target * (1.0 + 1e-9);
            let ok: Vec<&Finished> = finals
                .iter()
                .copied()
                .filter(|f| f.acc.latency_s <= limit)
                .collect();
            match common::argmin_by(&ok, |a| (a.joules, a.latency_s)) {
                Some(i) => {
                    let pick = ok[i];
                    Ok(finals
                        .iter()
                        .position(|f| std::ptr::eq(*f, pick))
                        .unwrap_or(0))
                }
                None => Err(Unplaceable::LatencyTarget {
                    target_s: target,
                    best_s: finals
                        .iter()
                        .map(|f| f.acc.latency_s)
                        .fold(f64::INFINITY, f64::min),
                    stages: k,
                }),
            }
        }
    }

    fn best_latency(finals: &[Finished]) -> f64 {
        finals
            .iter()
            .map(|f| f.acc.latency_s)
            .fold(f64::INFINITY, f64::min)
    }
}

impl PlacementPolicy for PowerPolicy {
    fn name(&self) -> &str {
        "power"
    }

    fn place(&self, model: &ModelProfile, cluster: &ClusterView) -> Result<Placement, Unplaceable> {
        let prepared = common::prepare(model, cluster, &spec());
        let best = prepared
            .as_ref()
            .map(|p| Self::best_latency(&p.finals))
            .unwrap_or(f64::INFINITY);
        common::place(prepared, cluster, self.name(), &self.select(best))
    }

    fn candidates(&self, model: &ModelProfile, cluster: &ClusterView) -> Vec<Candidate> {
        let prepared = common::prepare(model, cluster, &spec());
        let best = prepared
            .as_ref()
            .map(|p| Self::best_latency(&p.finals))
            .unwrap_or(f64::INFINITY);
        common::candidates(
            prepared,
            cluster,
            self.name(),
            COST_NAME,
            |a| a.joules,
            &self.select(best),
        )
    }
}
