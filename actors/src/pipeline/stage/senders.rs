//! Who may send a stage what: a stage does its job only for the pipeline that deployed it.
//!
//! The runtime tells a handler which node a message came from
//! ([`edgeray_runtime::actor::Envelope::sender`], the authenticated peer of the connection). A
//! stage knows its pipeline's nodes from its arguments: the coordinator is the node holding
//! its sink (and the node that spawned it), its upstream is the stage before it (the
//! coordinator for the first stage), and a tensor-parallel member's group is its roster. Any
//! other member of the cluster is refused — it cannot feed the stage batches, release another
//! user's sequences, read its counters or re-wire its group. (Stopping a stage from afar is
//! refused by the runtime itself unless it comes from the node that spawned it.)

use edgeray_runtime::identity::NodeId;

use crate::pipeline::protocol::StageMsg;

/// The kinds of [`StageMsg`], without their contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageMsgKind {
    /// [`StageMsg::Forward`].
    Forward,
    /// [`StageMsg::Release`].
    Release,
    /// [`StageMsg::Stats`].
    Stats,
    /// [`StageMsg::TpRoster`].
    TpRoster,
    /// [`StageMsg::TpRun`].
    TpRun,
    /// [`StageMsg::TpPiece`].
    TpPiece,
}

impl StageMsgKind {
    /// The kind of `msg`.
    pub fn of(msg: &StageMsg) -> Self {
        match msg {
            StageMsg::Forward(_) => StageMsgKind::Forward,
            StageMsg::Release { .. } => StageMsgKind::Release,
            StageMsg::Stats => StageMsgKind::Stats,
            StageMsg::TpRoster(_) => StageMsgKind::TpRoster,
            StageMsg::TpRun(_) => StageMsgKind::TpRun,
            StageMsg::TpPiece(_) => StageMsgKind::TpPiece,
        }
    }
}

/// A message from a node that has no business sending it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused {kind:?} from node {from}: {why}")]
pub struct Refused {
    /// What was sent.
    pub kind: StageMsgKind,
    /// Who sent it.
    pub from: String,
    /// Who may send it instead.
    pub why: &'static str,
}

/// The nodes of a stage's pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Senders {
    /// The deploying coordinator's node (where the sink runs).
    pub coordinator: NodeId,
    /// The node of the stage before this one; the coordinator for the first stage.
    pub upstream: NodeId,
    /// Tensor-parallel group: every member's node in member order (the leader first); empty
    /// for a plain stage or before the roster came.
    pub group: Vec<NodeId>,
}

impl Senders {
    /// Whether `from` may send a message of `kind`.
    pub fn check(&self, kind: StageMsgKind, from: NodeId) -> Result<(), Refused> {
        let leader = self.group.first().copied();
        let (ok, why) = match kind {
            StageMsgKind::Forward => (from == self.upstream, "only the stage before this one"),
            StageMsgKind::Release => (
                from == self.upstream || from == self.coordinator || Some(from) == leader,
                "only the stage before this one, its coordinator or its group leader",
            ),
            StageMsgKind::Stats | StageMsgKind::TpRoster => {
                (from == self.coordinator, "only its coordinator")
            }
            StageMsgKind::TpRun => (Some(from) == leader, "only its group leader"),
            StageMsgKind::TpPiece => (self.group.contains(&from), "only its group's members"),
        };
        if ok {
            Ok(())
        } else {
            Err(Refused {
                kind,
                from: from.short(),
                why,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(b: u8) -> NodeId {
        NodeId([b; 32])
    }

    #[test]
    fn a_plain_stage_takes_work_from_upstream_and_control_from_its_coordinator_only() {
        let s = Senders {
            coordinator: node(1),
            upstream: node(2),
            group: Vec::new(),
        };
        let stranger = node(9);
        assert!(s.check(StageMsgKind::Forward, node(2)).is_ok());
        assert!(s.check(StageMsgKind::Forward, node(1)).is_err());
        assert!(s.check(StageMsgKind::Forward, stranger).is_err());
        assert!(s.check(StageMsgKind::Release, node(1)).is_ok());
        assert!(s.check(StageMsgKind::Release, node(2)).is_ok());
        assert!(s.check(StageMsgKind::Release, stranger).is_err());
        assert!(s.check(StageMsgKind::Stats, node(1)).is_ok());
        assert!(s.check(StageMsgKind::Stats, node(2)).is_err());
        assert!(s.check(StageMsgKind::TpRoster, stranger).is_err());
        // No group: nobody may send group traffic.
        assert!(s.check(StageMsgKind::TpRun, node(1)).is_err());
        assert!(s.check(StageMsgKind::TpPiece, node(2)).is_err());
        let e = s.check(StageMsgKind::Forward, stranger).unwrap_err();
        assert_eq!(e.kind, StageMsgKind::Forward);
        assert!(
            e.to_string().contains("only the stage before this one"),
            "{e}"
        );
    }

    #[test]
    fn the_first_stage_is_fed_by_its_coordinator() {
        let s = Senders {
            coordinator: node(1),
            upstream: node(1),
            group: Vec::new(),
        };
        assert!(s.check(StageMsgKind::Forward, node(1)).is_ok());
        assert!(s.check(StageMsgKind::Forward, node(3)).is_err());
    }

    #[test]
    fn group_traffic_comes_from_the_roster() {
        let s = Senders {
            coordinator: node(1),
            upstream: node(2),
            group: vec![node(4), node(5), node(6)],
        };
        assert!(s.check(StageMsgKind::TpRun, node(4)).is_ok());
        assert!(s.check(StageMsgKind::TpRun, node(5)).is_err());
        assert!(s.check(StageMsgKind::TpPiece, node(6)).is_ok());
        assert!(s.check(StageMsgKind::TpPiece, node(7)).is_err());
        assert!(s.check(StageMsgKind::Release, node(4)).is_ok());
        assert!(s.check(StageMsgKind::Release, node(5)).is_err());
    }
}
