//! Cluster membership: who is in the cluster, in which state, with which resources, and which
//! node holds the head (scheduler) role.
//!
//! [`Membership`] is a pure state machine: no I/O, no tokio, no clock of its own. The node feeds
//! it what the transport saw (connected, heartbeat, goodbye, disconnected) and the current time
//! ([`std::time::Instant`] passed in, so tests drive a fake clock), and it returns
//! [`MembershipEvent`]s for subscribers.
//!
//! Member states:
//!
//! ```text
//!   connected ──► Joining ──heartbeat──► Up ◄──heartbeat── Suspect
//!                    │                    │ silence ≥ suspect_after │
//!                    │                    └───────────►─────────────┘
//!                    │ silence ≥ down_after, disconnect, goodbye     │ silence ≥ down_after,
//!                    └───────────────► Down ◄────────────────────────┘ disconnect, goodbye
//! ```
//!
//! A member is keyed by [`NodeId`] and carries its [`Incarnation`]: a restarted node connects
//! with a new incarnation, the old incarnation goes Down (reason [`DownReason::Restarted`]) and
//! the new one starts Joining. Messages from a non-current incarnation are ignored. A Down member
//! with the current incarnation that is heard from again becomes Up again. Down members stay in
//! the table (for `status`) for `forget_after`, then are removed.
//!
//! Head: the lowest [`NodeId`] among live members (Up or Suspect, this node included). A Suspect
//! head keeps the role; it moves only when the head goes Down or a lower id comes Up. Every node
//! computes the same rule over the same members, so all nodes agree once they see the same
//! members.

mod machine;
pub mod status;

pub use machine::{Membership, MembershipError, MembershipTiming};

use crate::identity::{Incarnation, NodeId};
use crate::resources::ResourceReport;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The state of a member as seen by this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MemberState {
    /// Connected and authenticated, no heartbeat received yet.
    Joining,
    /// Heard from recently.
    Up,
    /// Silent for `suspect_after`: maybe dead, maybe slow.
    Suspect,
    /// Silent for `down_after`, disconnected, left, or replaced by a new incarnation.
    Down,
}

impl MemberState {
    /// `Up` or `Suspect`: counts as part of the cluster (head eligible).
    pub fn is_live(self) -> bool {
        matches!(self, MemberState::Up | MemberState::Suspect)
    }
    /// The name printed by `status` and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Joining => "Joining",
            MemberState::Up => "Up",
            MemberState::Suspect => "Suspect",
            MemberState::Down => "Down",
        }
    }
}

impl fmt::Display for MemberState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a member went Down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DownReason {
    /// No heartbeat for `down_after`.
    Silence,
    /// Its connection closed or timed out.
    Disconnected,
    /// It said goodbye (graceful shutdown).
    Left,
    /// It restarted: a new incarnation of the same node connected.
    Restarted,
}

impl fmt::Display for DownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DownReason::Silence => "silence",
            DownReason::Disconnected => "disconnected",
            DownReason::Left => "left",
            DownReason::Restarted => "restarted",
        })
    }
}

/// One member as this node knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// Cluster-wide identity.
    pub node_id: NodeId,
    /// Process start of that node.
    pub incarnation: Incarnation,
    /// Display name.
    pub name: String,
    /// Address it accepts connections on, when known.
    pub addr: Option<SocketAddr>,
    /// Current state.
    pub state: MemberState,
    /// Why it is Down (only when `state == Down`).
    pub down_reason: Option<DownReason>,
    /// Last resource report (none before the first heartbeat).
    pub resources: Option<ResourceReport>,
    /// Round-trip time of the connection, when measured.
    pub rtt: Option<Duration>,
    /// Bandwidth to the member measured by this node's probes (bits per second), when measured.
    pub bandwidth_bps: Option<f64>,
    /// The member's own uptime as of `last_heard`.
    pub uptime: Duration,
    /// When it was last heard from (connect, heartbeat).
    pub last_heard: Instant,
    /// When it entered its current state.
    pub state_since: Instant,
    /// Whether this entry is the local node.
    pub is_self: bool,
}

impl Member {
    /// A short identity for the member: its id, incarnation, name and address.
    pub fn summary(&self) -> MemberSummary {
        MemberSummary {
            node_id: self.node_id,
            incarnation: self.incarnation,
            name: self.name.clone(),
            addr: self.addr,
        }
    }
    /// Uptime now (grows from the last report while the member is not Down).
    pub fn uptime_at(&self, now: Instant) -> Duration {
        if self.state == MemberState::Down {
            self.uptime
        } else {
            self.uptime + now.saturating_duration_since(self.last_heard)
        }
    }
}

/// Identity of a member in events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSummary {
    /// Cluster-wide identity.
    pub node_id: NodeId,
    /// Process start.
    pub incarnation: Incarnation,
    /// Display name.
    pub name: String,
    /// Address, when known.
    pub addr: Option<SocketAddr>,
}

impl fmt::Display for MemberSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "name={} id={} inc={}",
            self.name,
            self.node_id.short(),
            self.incarnation
        )?;
        if let Some(a) = self.addr {
            write!(f, " addr={a}")?;
        }
        Ok(())
    }
}

/// What changed in the membership.
#[derive(Debug, Clone, PartialEq)]
pub enum MembershipEvent {
    /// A node connected and authenticated; waiting for its first heartbeat.
    MemberJoining(MemberSummary),
    /// A member is Up (first heartbeat, or heard from again after Suspect/Down).
    MemberUp(MemberSummary),
    /// A member has been silent for `suspect_after`.
    MemberSuspect(MemberSummary),
    /// A member is Down.
    MemberDown {
        /// Who.
        member: MemberSummary,
        /// Why.
        reason: DownReason,
    },
    /// A Down member was forgotten (`forget_after` elapsed).
    MemberRemoved(MemberSummary),
    /// The head role moved.
    HeadChanged {
        /// Previous head.
        old: Option<NodeId>,
        /// New head.
        new: Option<NodeId>,
    },
}

/// A member entry in gossip: what one node tells the others about the members it knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipEntry {
    /// Cluster-wide identity.
    pub node_id: NodeId,
    /// Incarnation as known by the sender.
    pub incarnation: Incarnation,
    /// Display name.
    pub name: String,
    /// Where it accepts connections.
    pub addr: SocketAddr,
    /// State as seen by the sender.
    pub state: MemberState,
}
