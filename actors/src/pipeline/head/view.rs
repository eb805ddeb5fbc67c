//! The scheduler's logic: turns the live cluster into a [`ClusterView`] (memory, power and
//! measured compute of every Up member, and the RTT and bandwidth this node measured to each),
//! and asks a [`PlacementPolicy`] where each stage goes. It runs inside the scheduler actor on
//! the head node (see [`super::scheduler`]).

use edgeray_runtime::cluster::Cluster;
use edgeray_runtime::identity::NodeId;
use edgeray_runtime::membership::MemberState;

use crate::placement::{
    CandidateOutcome, ClusterView, LinkView, MemberId, ModelProfile, NodeView, Placement,
    PlacementPolicy, Unplaceable,
};

/// Power assumed for a node that reports no power budget, in watts.
pub const DEFAULT_NODE_WATTS: f64 = 10.0;

/// Compute scores are weight megabytes per second streamed through our kernels (see
/// [`crate::pipeline::stage::measure_compute_score`]).
const SCORE_UNIT_BYTES_PER_S: f64 = 1e6;

/// Why no placement came out.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The policy found no valid placement.
    #[error(transparent)]
    Unplaceable(#[from] Unplaceable),
    /// A fixed number of stages was asked for and the policy cannot place that many.
    #[error("no valid placement with {stages} stages: {reason}")]
    NoSuchSplit {
        /// Stages asked for.
        stages: usize,
        /// Why.
        reason: String,
    },
    /// A placement names a node that is not a member.
    #[error("placement names unknown node {0}")]
    UnknownNode(String),
    /// The policy name or its settings are invalid.
    #[error("{0}")]
    Policy(String),
    /// The head node's scheduler could not be asked.
    #[error("cannot reach the scheduler: {0}")]
    Scheduler(String),
    /// The head node's scheduler found no placement (its reason).
    #[error("{0}")]
    Rejected(String),
}

/// The scheduler's view of `cluster`: every Up member that reports resources, and the link
/// (RTT, probed bandwidth) this node measured to each.
pub fn cluster_view(cluster: &Cluster) -> ClusterView {
    let members = cluster.members();
    let me = cluster.node_id();
    let mut view = ClusterView::new(
        members
            .iter()
            .filter(|m| m.is_self || m.state == MemberState::Up)
            .filter_map(|m| {
                let r = m.resources.as_ref()?;
                Some(NodeView {
                    id: place_id(&m.node_id),
                    name: m.name.clone(),
                    memory_budget_bytes: r.memory_budget,
                    memory_free_bytes: r.memory_free,
                    power_watts: r
                        .power_budget_mw
                        .map_or(DEFAULT_NODE_WATTS, |mw| mw as f64 / 1000.0),
                    compute_bytes_per_s: r.compute_score.max(1.0) * SCORE_UNIT_BYTES_PER_S,
                    backend: r.backend.to_string(),
                    up: true,
                })
            })
            .collect(),
    );
    for m in members.iter().filter(|m| !m.is_self) {
        if let Some(link) = measured_link(m.rtt, m.bandwidth_bps) {
            view.set_link(&place_id(&me), &place_id(&m.node_id), link);
        }
    }
    view
}

/// The link to a member as this node measured it (RTT by QUIC, bandwidth by probes, in bits
/// per second); what was not measured keeps [`LinkView::DEFAULT`]'s value. `None`: nothing
/// measured.
pub fn measured_link(
    rtt: Option<std::time::Duration>,
    bandwidth_bps: Option<f64>,
) -> Option<LinkView> {
    if rtt.is_none() && bandwidth_bps.is_none() {
        return None;
    }
    Some(LinkView {
        rtt_s: rtt.map_or(LinkView::DEFAULT.rtt_s, |r| r.as_secs_f64()),
        bandwidth_bytes_per_s: bandwidth_bps
            .filter(|b| b.is_finite() && *b > 0.0)
            .map_or(LinkView::DEFAULT.bandwidth_bytes_per_s, |b| b / 8.0),
    })
}

/// The placement id of a runtime node id.
pub fn place_id(id: &NodeId) -> MemberId {
    MemberId(id.to_hex())
}

/// The runtime node id of a placement id.
pub fn runtime_id(id: &MemberId) -> Result<NodeId, ScheduleError> {
    id.0.parse()
        .map_err(|_| ScheduleError::UnknownNode(id.0.clone()))
}

/// Places `model` on `view` with `policy`; with `stages`, the policy's best candidate with
/// exactly that many stages.
pub fn schedule(
    policy: &dyn PlacementPolicy,
    model: &ModelProfile,
    view: &ClusterView,
    stages: Option<usize>,
) -> Result<Placement, ScheduleError> {
    let Some(n) = stages else {
        return Ok(policy.place(model, view)?);
    };
    let mut reason = format!("the policy offers no {n}-stage candidate");
    for c in policy.candidates(model, view) {
        match c.outcome {
            CandidateOutcome::Placed(p) if p.stages.len() == n => return Ok(p),
            CandidateOutcome::Unplaceable(u) if c.label.starts_with(&format!("{n} stage")) => {
                reason = u.to_string();
            }
            _ => {}
        }
    }
    Err(ScheduleError::NoSuchSplit { stages: n, reason })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn measured_links_fill_in_what_was_measured() {
        assert_eq!(measured_link(None, None), None);
        let l = measured_link(Some(Duration::from_millis(3)), None).unwrap();
        assert_eq!(l.rtt_s, 0.003);
        assert_eq!(
            l.bandwidth_bytes_per_s,
            LinkView::DEFAULT.bandwidth_bytes_per_s
        );
        let l = measured_link(None, Some(80e6)).unwrap();
        assert_eq!(
            (l.rtt_s, l.bandwidth_bytes_per_s),
            (LinkView::DEFAULT.rtt_s, 10e6)
        );
        let l = measured_link(Some(Duration::from_millis(1)), Some(f64::NAN)).unwrap();
        assert_eq!(
            l.bandwidth_bytes_per_s,
            LinkView::DEFAULT.bandwidth_bytes_per_s
        );
    }
}
