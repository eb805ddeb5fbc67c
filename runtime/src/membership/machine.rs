//! The membership state machine (pure; see the module documentation of [`super`]).

use super::{DownReason, GossipEntry, Member, MemberState, MemberSummary, MembershipEvent};
use crate::config::Timing;
use crate::identity::{Incarnation, NodeId};
use crate::resources::ResourceReport;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The timings the state machine uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MembershipTiming {
    /// Silence before Up → Suspect.
    pub suspect_after: Duration,
    /// Silence before Joining/Up/Suspect → Down.
    pub down_after: Duration,
    /// Time a Down member stays in the table.
    pub forget_after: Duration,
}

impl From<&Timing> for MembershipTiming {
    fn from(t: &Timing) -> Self {
        MembershipTiming {
            suspect_after: t.suspect_after,
            down_after: t.down_after,
            forget_after: t.forget_after,
        }
    }
}

/// Errors of membership operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// The table holds `max_members` members (Down ones included).
    #[error("member table full ({0} members)")]
    Full(usize),
    /// The peer claims this node's own id.
    #[error("peer claims our own node id")]
    OwnId,
}

/// Members of the cluster as this node sees them, plus the head role. Pure: every input carries
/// the current time.
#[derive(Debug, Clone)]
pub struct Membership {
    me: NodeId,
    timing: MembershipTiming,
    max_members: usize,
    members: BTreeMap<NodeId, Member>,
    head: Option<NodeId>,
}

impl Membership {
    /// A table holding only this node (Up, head of its one-node cluster).
    pub fn new(
        me: MemberSummary,
        resources: ResourceReport,
        timing: MembershipTiming,
        max_members: usize,
        now: Instant,
    ) -> Self {
        let id = me.node_id;
        let member = Member {
            node_id: id,
            incarnation: me.incarnation,
            name: me.name,
            addr: me.addr,
            state: MemberState::Up,
            down_reason: None,
            resources: Some(resources),
            rtt: None,
            bandwidth_bps: None,
            uptime: Duration::ZERO,
            last_heard: now,
            state_since: now,
            is_self: true,
        };
        let mut members = BTreeMap::new();
        members.insert(id, member);
        Membership {
            me: id,
            timing,
            max_members: max_members.max(1),
            members,
            head: Some(id),
        }
    }

    /// This node's id.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// The current head (lowest live id; never `None` while this node runs).
    pub fn head(&self) -> Option<NodeId> {
        self.head
    }

    /// One member.
    pub fn get(&self, id: &NodeId) -> Option<&Member> {
        self.members.get(id)
    }

    /// Every member (this node included), ordered by id.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// Members in `Up` state (this node included).
    pub fn up_members(&self) -> impl Iterator<Item = &Member> {
        self.members.values().filter(|m| m.state == MemberState::Up)
    }

    /// Refresh this node's own resource report and uptime.
    pub fn update_self(&mut self, resources: ResourceReport, uptime: Duration, now: Instant) {
        if let Some(m) = self.members.get_mut(&self.me) {
            m.resources = Some(resources);
            m.uptime = uptime;
            m.last_heard = now;
        }
    }

    /// Replace the roles in this node's own resource report at once (the rest of the report
    /// is refreshed by the next [`Membership::update_self`]). Roles are bounded as by
    /// [`crate::resources::bound_roles`].
    pub fn set_self_roles(&mut self, roles: Vec<String>) {
        if let Some(r) = self
            .members
            .get_mut(&self.me)
            .and_then(|m| m.resources.as_mut())
        {
            r.roles = crate::resources::bound_roles(roles);
        }
    }

    /// A peer connected and passed authentication. Unknown or Down members become Joining; a new
    /// incarnation of a known node replaces the old one (which goes Down as `Restarted`).
    pub fn on_connected(
        &mut self,
        peer: MemberSummary,
        now: Instant,
    ) -> Result<Vec<MembershipEvent>, MembershipError> {
        if peer.node_id == self.me {
            return Err(MembershipError::OwnId);
        }
        let mut events = Vec::new();
        match self.members.get_mut(&peer.node_id) {
            Some(m) if m.incarnation == peer.incarnation => {
                if peer.addr.is_some() {
                    m.addr = peer.addr;
                }
                m.name = peer.name;
                m.last_heard = now;
                if m.state == MemberState::Down {
                    m.state = MemberState::Joining;
                    m.down_reason = None;
                    m.state_since = now;
                    events.push(MembershipEvent::MemberJoining(m.summary()));
                }
            }
            Some(m) => {
                if m.state != MemberState::Down {
                    events.push(MembershipEvent::MemberDown {
                        member: m.summary(),
                        reason: DownReason::Restarted,
                    });
                }
                *m = Self::joining(peer, now);
                events.push(MembershipEvent::MemberJoining(m.summary()));
            }
            None => {
                if self.members.len() >= self.max_members && !self.evict_oldest_down() {
                    return Err(MembershipError::Full(self.members.len()));
                }
                let m = Self::joining(peer, now);
                events.push(MembershipEvent::MemberJoining(m.summary()));
                self.members.insert(m.node_id, m);
            }
        }
        self.recompute_head(&mut events);
        Ok(events)
    }

    fn joining(peer: MemberSummary, now: Instant) -> Member {
        Member {
            node_id: peer.node_id,
            incarnation: peer.incarnation,
            name: peer.name,
            addr: peer.addr,
            state: MemberState::Joining,
            down_reason: None,
            resources: None,
            rtt: None,
            bandwidth_bps: None,
            uptime: Duration::ZERO,
            last_heard: now,
            state_since: now,

            is_self: false,
        }
    }

    fn evict_oldest_down(&mut self) -> bool {
        let oldest = self
            .members
            .values()
            .filter(|m| m.state == MemberState::Down)
            .min_by_key(|m| m.state_since)
            .map(|m| m.node_id);
        oldest.is_some_and(|id| self.members.remove(&id).is_some())
    }

    /// A heartbeat from a connected peer: refreshes last-seen, resources and uptime; Joining,
    /// Suspect and Down members of the current incarnation become Up, except one that said
    /// goodbye (`Left`): a heartbeat it sent before leaving may be handled after its goodbye,
    /// and must not bring it back. Heartbeats of unknown members or other incarnations are
    /// ignored (the peer must connect first). Roles beyond the bounds of
    /// [`crate::resources::bound_roles`] are truncated.
    pub fn on_heartbeat(
        &mut self,
        node_id: NodeId,
        incarnation: Incarnation,
        mut resources: ResourceReport,
        uptime: Duration,
        now: Instant,
    ) -> Vec<MembershipEvent> {
        let mut events = Vec::new();
        let Some(m) = self.members.get_mut(&node_id) else {
            return events;
        };
        if m.is_self || m.incarnation != incarnation || m.down_reason == Some(DownReason::Left) {
            return events;
        }
        m.last_heard = now;
        resources.enforce_role_bounds();
        m.resources = Some(resources);
        m.uptime = uptime;
        if m.state != MemberState::Up {
            m.state = MemberState::Up;
            m.down_reason = None;
            m.state_since = now;
            events.push(MembershipEvent::MemberUp(m.summary()));
        }
        self.recompute_head(&mut events);
        events
    }

    /// Record the measured round-trip time of a member's connection.
    pub fn set_rtt(&mut self, node_id: NodeId, rtt: Duration) {
        if let Some(m) = self.members.get_mut(&node_id) {
            m.rtt = Some(rtt);
        }
    }

    /// Record the bandwidth this node measured to a member (bits per second).
    pub fn set_bandwidth(&mut self, node_id: NodeId, bps: f64) {
        if let Some(m) = self.members.get_mut(&node_id) {
            m.bandwidth_bps = Some(bps);
        }
    }

    /// The member's connection closed or timed out: Down (`Disconnected`).
    pub fn on_disconnected(
        &mut self,
        node_id: NodeId,
        incarnation: Incarnation,
        now: Instant,
    ) -> Vec<MembershipEvent> {
        self.mark_down(node_id, incarnation, DownReason::Disconnected, now)
    }

    /// The member said goodbye over its authenticated connection: Down (`Left`).
    pub fn on_goodbye(
        &mut self,
        node_id: NodeId,
        incarnation: Incarnation,
        now: Instant,
    ) -> Vec<MembershipEvent> {
        self.mark_down(node_id, incarnation, DownReason::Left, now)
    }

    fn mark_down(
        &mut self,
        node_id: NodeId,
        incarnation: Incarnation,
        reason: DownReason,
        now: Instant,
    ) -> Vec<MembershipEvent> {
        let mut events = Vec::new();
        let Some(m) = self.members.get_mut(&node_id) else {
            return events;
        };
        if m.is_self || m.incarnation != incarnation || m.state == MemberState::Down {
            return events;
        }
        Self::set_down(m, reason, now, &mut events);
        self.recompute_head(&mut events);
        events
    }

    fn set_down(
        m: &mut Member,
        reason: DownReason,
        now: Instant,
        events: &mut Vec<MembershipEvent>,
    ) {
        m.state = MemberState::Down;
        m.down_reason = Some(reason);
        m.state_since = now;
        m.rtt = None;
        m.bandwidth_bps = None;
        events.push(MembershipEvent::MemberDown {
            member: m.summary(),
            reason,
        });
    }

    /// Apply the passage of time: Up → Suspect after `suspect_after` of silence, Joining/Up/Suspect
    /// → Down after `down_after`, Down members forgotten after `forget_after`.
    pub fn tick(&mut self, now: Instant) -> Vec<MembershipEvent> {
        let mut events = Vec::new();
        let t = self.timing;
        let mut forget = Vec::new();
        for m in self.members.values_mut().filter(|m| !m.is_self) {
            let silence = now.saturating_duration_since(m.last_heard);
            match m.state {
                MemberState::Up if silence >= t.down_after => {
                    Self::set_down(m, DownReason::Silence, now, &mut events)
                }
                MemberState::Up if silence >= t.suspect_after => {
                    m.state = MemberState::Suspect;
                    m.state_since = now;
                    events.push(MembershipEvent::MemberSuspect(m.summary()));
                }
                MemberState::Joining | MemberState::Suspect if silence >= t.down_after => {
                    Self::set_down(m, DownReason::Silence, now, &mut events)
                }
                MemberState::Down
                    if now.saturating_duration_since(m.state_since) >= t.forget_after =>
                {
                    forget.push(m.node_id)
                }
                _ => {}
            }
        }
        for id in forget {
            if let Some(m) = self.members.remove(&id) {
                events.push(MembershipEvent::MemberRemoved(m.summary()));
            }
        }
        self.recompute_head(&mut events);
        events
    }

    fn recompute_head(&mut self, events: &mut Vec<MembershipEvent>) {
        // BTreeMap iterates in id order: the first live member is the lowest id.
        let new = self
            .members
            .values()
            .find(|m| m.state.is_live())
            .map(|m| m.node_id);
        if new != self.head {
            let old = self.head;
            self.head = new;
            events.push(MembershipEvent::HeadChanged { old, new });
        }
    }

    /// What this node tells others: every non-Down member with a known address (itself included).
    pub fn gossip(&self) -> Vec<GossipEntry> {
        self.members
            .values()
            .filter(|m| m.state != MemberState::Down)
            .filter_map(|m| {
                Some(GossipEntry {
                    node_id: m.node_id,
                    incarnation: m.incarnation,
                    name: m.name.clone(),
                    addr: m.addr?,
                    state: m.state,
                })
            })
            .collect()
    }

    /// Entries of received gossip worth dialing: members not known here, known only as Down, or
    /// known with another incarnation. Gossip never changes states by itself (only a direct,
    /// authenticated connection does).
    pub fn dial_candidates(&self, gossip: &[GossipEntry]) -> Vec<(NodeId, SocketAddr)> {
        gossip
            .iter()
            .filter(|e| e.node_id != self.me && e.state != MemberState::Down)
            .filter(|e| match self.members.get(&e.node_id) {
                None => true,
                Some(m) => m.state == MemberState::Down || m.incarnation != e.incarnation,
            })
            .map(|e| (e.node_id, e.addr))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ComputeBackend;

    const T: MembershipTiming = MembershipTiming {
        suspect_after: Duration::from_secs(3),
        down_after: Duration::from_secs(8),
        forget_after: Duration::from_secs(60),
    };

    fn id(b: u8) -> NodeId {
        NodeId([b; 32])
    }
    fn summary(b: u8, inc: u64) -> MemberSummary {
        MemberSummary {
            node_id: id(b),
            incarnation: Incarnation(inc),
            name: format!("n{b}"),
            addr: Some(SocketAddr::from(([10, 0, 0, b], 7070))),
        }
    }
    fn res(free: u64) -> ResourceReport {
        ResourceReport {
            memory_total: 8 << 30,
            memory_free: free,
            memory_budget: free,
            power_budget_mw: Some(6000),
            load1: 0.1,
            temperature_c: None,
            compute_score: 100.0,
            backend: ComputeBackend::Cpu,
            cpus: 4,
            roles: Vec::new(),
        }
    }
    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    /// A fake clock: `t0 + offset`.
    struct Clock(Instant);
    impl Clock {
        fn at(&self, secs: f64) -> Instant {
            self.0 + Duration::from_secs_f64(secs)
        }
    }

    fn setup(me: u8) -> (Membership, Clock) {
        let c = Clock(Instant::now());
        (Membership::new(summary(me, 1), res(1), T, 16, c.at(0.0)), c)
    }

    fn state(m: &Membership, b: u8) -> Option<MemberState> {
        m.get(&id(b)).map(|m| m.state)
    }

    #[test]
    fn join_heartbeat_up() {
        let (mut m, c) = setup(5);
        assert_eq!(m.head(), Some(id(5)));
        let ev = m.on_connected(summary(7, 1), c.at(0.1)).unwrap();
        assert_eq!(ev, vec![MembershipEvent::MemberJoining(summary(7, 1))]);
        assert_eq!(state(&m, 7), Some(MemberState::Joining));
        // Joining members are not head-eligible and stay Joining on ticks before down_after.
        assert!(m.tick(c.at(5.0)).is_empty());
        let ev = m.on_heartbeat(id(7), Incarnation(1), res(2), s(3), c.at(5.0));
        assert_eq!(ev, vec![MembershipEvent::MemberUp(summary(7, 1))]);
        assert_eq!(m.get(&id(7)).unwrap().resources, Some(res(2)));
        assert_eq!(m.get(&id(7)).unwrap().uptime_at(c.at(6.0)), s(4));
        assert_eq!(m.up_members().count(), 2);
        // A second heartbeat is not a new event.
        assert!(
            m.on_heartbeat(id(7), Incarnation(1), res(3), s(4), c.at(6.0))
                .is_empty()
        );
        assert_eq!(m.head(), Some(id(5)));
    }

    #[test]
    fn roles_from_heartbeats_are_bounded_and_self_roles_apply_at_once() {
        use crate::resources::{MAX_ROLE_CHARS, MAX_ROLES};
        let (mut m, c) = setup(5);
        m.on_connected(summary(7, 1), c.at(0.0)).unwrap();
        let mut r = res(2);
        r.roles = (0..100)
            .map(|i| format!("{i}{}", "z".repeat(1000)))
            .collect();
        m.on_heartbeat(id(7), Incarnation(1), r, s(1), c.at(0.5));
        let got = m
            .get(&id(7))
            .unwrap()
            .resources
            .as_ref()
            .unwrap()
            .roles
            .clone();
        assert_eq!(got.len(), MAX_ROLES);
        assert!(got.iter().all(|x| x.chars().count() == MAX_ROLE_CHARS));
        assert!(got[3].starts_with("3z"));
        m.set_self_roles(vec!["stage 0/2 layers 0..9 m (coordinator n5)".into()]);
        let me = m.get(&id(5)).unwrap().resources.as_ref().unwrap();
        assert_eq!(
            me.roles,
            vec!["stage 0/2 layers 0..9 m (coordinator n5)".to_string()]
        );
        assert_eq!(me.memory_free, 1, "the rest of the report is kept");
    }

    #[test]
    fn silence_suspect_down_and_back_up() {
        let (mut m, c) = setup(5);
        m.on_connected(summary(7, 1), c.at(0.0)).unwrap();
        m.on_heartbeat(id(7), Incarnation(1), res(2), s(0), c.at(1.0));
        assert!(
            m.tick(c.at(3.9)).is_empty(),
            "2.9 s of silence is below suspect_after"
        );
        let ev = m.tick(c.at(4.0));
        assert_eq!(ev, vec![MembershipEvent::MemberSuspect(summary(7, 1))]);
        assert!(m.tick(c.at(8.9)).is_empty());
        let ev = m.tick(c.at(9.0));
        assert_eq!(
            ev,
            vec![MembershipEvent::MemberDown {
                member: summary(7, 1),
                reason: DownReason::Silence
            }]
        );
        assert_eq!(
            m.get(&id(7)).unwrap().down_reason,
            Some(DownReason::Silence)
        );
        assert!(m.tick(c.at(10.0)).is_empty(), "Down is reported once");
        // Heard from again: Up.
        let ev = m.on_heartbeat(id(7), Incarnation(1), res(2), s(9), c.at(11.0));
        assert_eq!(ev, vec![MembershipEvent::MemberUp(summary(7, 1))]);
        // Suspect → Up on a heartbeat, too.
        m.tick(c.at(14.5));
        assert_eq!(state(&m, 7), Some(MemberState::Suspect));
        assert_eq!(
            m.on_heartbeat(id(7), Incarnation(1), res(2), s(13), c.at(15.0)),
            vec![MembershipEvent::MemberUp(summary(7, 1))]
        );
    }

    #[test]
    fn joining_without_heartbeat_goes_down() {
        let (mut m, c) = setup(5);
        m.on_connected(summary(7, 1), c.at(0.0)).unwrap();
        assert!(m.tick(c.at(7.9)).is_empty());
        assert_eq!(
            m.tick(c.at(8.0)),
            vec![MembershipEvent::MemberDown {
                member: summary(7, 1),
                reason: DownReason::Silence
            }]
        );
    }

    #[test]
    fn disconnect_and_goodbye_are_down_immediately() {
        let (mut m, c) = setup(5);
        for b in [6, 7] {
            m.on_connected(summary(b, 1), c.at(0.0)).unwrap();
            m.on_heartbeat(id(b), Incarnation(1), res(2), s(0), c.at(0.0));
        }
        assert_eq!(
            m.on_disconnected(id(6), Incarnation(1), c.at(1.0)),
            vec![MembershipEvent::MemberDown {
                member: summary(6, 1),
                reason: DownReason::Disconnected
            }]
        );
        assert_eq!(
            m.on_goodbye(id(7), Incarnation(1), c.at(1.0)),
            vec![MembershipEvent::MemberDown {
                member: summary(7, 1),
                reason: DownReason::Left
            }]
        );
        // Repeated or stale reports change nothing; a heartbeat sent before the goodbye but
        // handled after it does not bring the member back.
        assert!(
            m.on_disconnected(id(7), Incarnation(1), c.at(1.5))
                .is_empty()
        );
        assert!(
            m.on_heartbeat(id(7), Incarnation(1), res(2), s(1), c.at(1.5))
                .is_empty()
        );
        assert_eq!(state(&m, 7), Some(MemberState::Down));
        assert!(
            m.on_disconnected(id(9), Incarnation(1), c.at(1.5))
                .is_empty()
        );
        // Reconnect of the same incarnation: Joining again, then Up.
        assert_eq!(
            m.on_connected(summary(6, 1), c.at(2.0)).unwrap(),
            vec![MembershipEvent::MemberJoining(summary(6, 1))]
        );
        assert_eq!(
            m.on_heartbeat(id(6), Incarnation(1), res(2), s(2), c.at(2.0)),
            vec![MembershipEvent::MemberUp(summary(6, 1))]
        );
    }

    #[test]
    fn restart_is_a_new_incarnation() {
        let (mut m, c) = setup(5);
        m.on_connected(summary(7, 1), c.at(0.0)).unwrap();
        m.on_heartbeat(id(7), Incarnation(1), res(2), s(0), c.at(0.0));
        let ev = m.on_connected(summary(7, 2), c.at(1.0)).unwrap();
        assert_eq!(
            ev,
            vec![
                MembershipEvent::MemberDown {
                    member: summary(7, 1),
                    reason: DownReason::Restarted
                },
                MembershipEvent::MemberJoining(summary(7, 2)),
            ]
        );
        // The old incarnation's late messages are ignored.
        assert!(
            m.on_heartbeat(id(7), Incarnation(1), res(2), s(0), c.at(1.1))
                .is_empty()
        );
        assert!(
            m.on_disconnected(id(7), Incarnation(1), c.at(1.2))
                .is_empty()
        );
        assert_eq!(state(&m, 7), Some(MemberState::Joining));
        assert_eq!(
            m.on_heartbeat(id(7), Incarnation(2), res(2), s(0), c.at(1.3)),
            vec![MembershipEvent::MemberUp(summary(7, 2))]
        );
    }

    #[test]
    fn head_is_lowest_live_id_and_moves_on_down() {
        let (mut m, c) = setup(5);
        m.on_connected(summary(3, 1), c.at(0.0)).unwrap();
        assert_eq!(m.head(), Some(id(5)), "a Joining member is not head");
        let ev = m.on_heartbeat(id(3), Incarnation(1), res(2), s(0), c.at(0.5));
        assert_eq!(
            ev,
            vec![
                MembershipEvent::MemberUp(summary(3, 1)),
                MembershipEvent::HeadChanged {
                    old: Some(id(5)),
                    new: Some(id(3))
                },
            ]
        );
        // Higher ids joining do not move the head.
        m.on_connected(summary(9, 1), c.at(0.6)).unwrap();
        assert!(
            !m.on_heartbeat(id(9), Incarnation(1), res(2), s(0), c.at(0.6))
                .iter()
                .any(|e| matches!(e, MembershipEvent::HeadChanged { .. }))
        );
        // A Suspect head keeps the role.
        m.on_heartbeat(id(9), Incarnation(1), res(2), s(0), c.at(4.0));
        let ev = m.tick(c.at(4.0));
        assert_eq!(ev, vec![MembershipEvent::MemberSuspect(summary(3, 1))]);
        assert_eq!(m.head(), Some(id(3)));
        // Head Down: the next lowest live id (this node, 5) takes over.
        let ev = m.on_disconnected(id(3), Incarnation(1), c.at(4.5));
        assert_eq!(
            ev,
            vec![
                MembershipEvent::MemberDown {
                    member: summary(3, 1),
                    reason: DownReason::Disconnected
                },
                MembershipEvent::HeadChanged {
                    old: Some(id(3)),
                    new: Some(id(5))
                },
            ]
        );
    }

    #[test]
    fn all_nodes_agree_on_the_head() {
        // Three nodes that all see each other compute the same head.
        let c = Clock(Instant::now());
        let ids = [8u8, 2, 5];
        let mut tables: Vec<Membership> = ids
            .iter()
            .map(|&b| Membership::new(summary(b, 1), res(1), T, 16, c.at(0.0)))
            .collect();
        for t in tables.iter_mut() {
            for &b in &ids {
                if b != t.me().0[0] {
                    t.on_connected(summary(b, 1), c.at(0.0)).unwrap();
                    t.on_heartbeat(id(b), Incarnation(1), res(1), s(0), c.at(0.1));
                }
            }
        }
        assert!(tables.iter().all(|t| t.head() == Some(id(2))));
    }

    #[test]
    fn down_members_are_forgotten_and_table_limit() {
        let c = Clock(Instant::now());
        let mut m = Membership::new(summary(1, 1), res(1), T, 3, c.at(0.0));
        m.on_connected(summary(2, 1), c.at(0.0)).unwrap();
        m.on_connected(summary(3, 1), c.at(0.0)).unwrap();
        assert_eq!(
            m.on_connected(summary(4, 1), c.at(0.0)),
            Err(MembershipError::Full(3))
        );
        m.on_goodbye(id(2), Incarnation(1), c.at(1.0));
        // A Down member makes room for a new one.
        m.on_connected(summary(4, 1), c.at(2.0)).unwrap();
        assert!(m.get(&id(2)).is_none());
        m.on_goodbye(id(3), Incarnation(1), c.at(3.0));
        assert!(
            m.tick(c.at(62.9))
                .iter()
                .all(|e| !matches!(e, MembershipEvent::MemberRemoved(_)))
        );
        let ev = m.tick(c.at(63.0));
        assert!(
            ev.contains(&MembershipEvent::MemberRemoved(summary(3, 1))),
            "{ev:?}"
        );
        assert!(m.get(&id(3)).is_none());
        assert_eq!(
            m.on_connected(summary(1, 9), c.at(64.0)),
            Err(MembershipError::OwnId)
        );
    }

    #[test]
    fn self_is_never_suspected() {
        let (mut m, c) = setup(5);
        assert!(m.tick(c.at(1000.0)).is_empty());
        assert_eq!(state(&m, 5), Some(MemberState::Up));
        assert!(m.on_goodbye(id(5), Incarnation(1), c.at(1.0)).is_empty());
    }

    #[test]
    fn gossip_and_candidates() {
        let (mut a, c) = setup(1);
        a.on_connected(summary(2, 1), c.at(0.0)).unwrap();
        a.on_heartbeat(id(2), Incarnation(1), res(1), s(0), c.at(0.0));
        a.on_connected(summary(3, 1), c.at(0.0)).unwrap();
        a.on_goodbye(id(3), Incarnation(1), c.at(0.5));
        let g = a.gossip();
        assert_eq!(
            g.iter().map(|e| e.node_id).collect::<Vec<_>>(),
            vec![id(1), id(2)],
            "Down members are not gossiped"
        );
        // Node 4 knows only itself and node 2 (other incarnation): it should dial 1 and 2.
        let (b, _) = setup(4);
        let mut g2 = g.clone();
        g2.push(GossipEntry {
            node_id: id(4),
            incarnation: Incarnation(1),
            name: "n4".into(),
            addr: summary(4, 1).addr.unwrap(),
            state: MemberState::Up,
        });
        let cands = b.dial_candidates(&g2);
        assert_eq!(
            cands,
            vec![
                (id(1), summary(1, 1).addr.unwrap()),
                (id(2), summary(2, 1).addr.unwrap())
            ]
        );
        // Known members with the same incarnation are not candidates; Down ones are.
        assert!(a.dial_candidates(&g).is_empty());
        let g3 = vec![GossipEntry {
            node_id: id(3),
            incarnation: Incarnation(1),
            name: "n3".into(),
            addr: summary(3, 1).addr.unwrap(),
            state: MemberState::Up,
        }];
        assert_eq!(a.dial_candidates(&g3).len(), 1);
    }
}
