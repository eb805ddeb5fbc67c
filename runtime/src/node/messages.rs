//! Messages nodes exchange on the control stream (types `0x0100..=0x01FF`) and the status
//! request stream.

use crate::identity::Incarnation;
use crate::membership::GossipEntry;
use crate::membership::status::ClusterStatus;
use crate::resources::ResourceReport;
use crate::wire::{TypeSet, WireMessage};
use serde::{Deserialize, Serialize};

/// Stream kind of status queries (`edgeray status`): the client opens a bidirectional stream of
/// this kind, sends [`StatusRequest`] and reads one [`StatusReply`].
pub const STATUS_STREAM_KIND: u16 = 0x0100;

/// "I am a member": sent by every node to every peer right after the connection is admitted.
/// Peers that never send it (e.g. `edgeray status` clients) are not members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Join {
    /// The sender's incarnation.
    pub incarnation: Incarnation,
    /// The sender's uptime in milliseconds.
    pub uptime_ms: u64,
}
impl WireMessage for Join {
    const TYPE: u16 = 0x0101;
}

/// Periodic liveness + resource report (every `timing.heartbeat`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The sender's incarnation.
    pub incarnation: Incarnation,
    /// Sequence number (per sender incarnation).
    pub seq: u64,
    /// The sender's uptime in milliseconds.
    pub uptime_ms: u64,
    /// The sender's resources.
    pub resources: ResourceReport,
}
impl WireMessage for Heartbeat {
    const TYPE: u16 = 0x0102;
}

/// The members the sender knows (every `timing.gossip`), so nodes learn members they cannot
/// discover themselves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gossip {
    /// Non-Down members with known addresses.
    pub members: Vec<GossipEntry>,
}
impl WireMessage for Gossip {
    const TYPE: u16 = 0x0103;
}

/// Graceful leave: the sender is shutting down.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Goodbye {
    /// The sender's incarnation.
    pub incarnation: Incarnation,
}
impl WireMessage for Goodbye {
    const TYPE: u16 = 0x0104;
}

/// Request for the member table (on a [`STATUS_STREAM_KIND`] stream).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusRequest {
    /// Schema version the client understands.
    pub schema: u32,
}
impl WireMessage for StatusRequest {
    const TYPE: u16 = 0x0110;
}

/// The member table of the answering node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReply {
    /// The table.
    pub status: ClusterStatus,
}
impl WireMessage for StatusReply {
    const TYPE: u16 = 0x0111;
}

/// Stream kind of bandwidth probes: the prober opens a bidirectional stream of this kind,
/// sends [`ProbeData`] frames (the payload in their tails) and one [`ProbeEnd`], and reads one
/// [`ProbeAck`].
pub const PROBE_STREAM_KIND: u16 = 0x0101;

/// A chunk of probe payload (in the frame's tail).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeData {}
impl WireMessage for ProbeData {
    const TYPE: u16 = 0x0112;
}

/// The end of a probe's payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeEnd {
    /// Payload bytes sent.
    pub bytes: u64,
}
impl WireMessage for ProbeEnd {
    const TYPE: u16 = 0x0113;
}

/// The receiver got the whole payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeAck {
    /// Payload bytes received.
    pub bytes: u64,
}
impl WireMessage for ProbeAck {
    const TYPE: u16 = 0x0114;
}

/// Types accepted on a probe stream by the receiving node.
pub fn probe_request_types() -> TypeSet {
    TypeSet::new([ProbeData::TYPE..=ProbeEnd::TYPE])
}

/// Types accepted on a probe stream by the prober.
pub fn probe_reply_types() -> TypeSet {
    TypeSet::single(ProbeAck::TYPE)
}

/// Control message types the node handles.
pub const CONTROL_TYPES: std::ops::RangeInclusive<u16> = Join::TYPE..=Goodbye::TYPE;

/// Types accepted on the status stream by the node.
pub fn status_request_types() -> TypeSet {
    TypeSet::single(StatusRequest::TYPE)
}

/// Types accepted on the status stream by the client.
pub fn status_reply_types() -> TypeSet {
    TypeSet::single(StatusReply::TYPE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MEMBERSHIP_TYPES;
    use crate::wire::Frame;

    #[test]
    fn types_are_in_the_membership_range_and_roundtrip() {
        for t in [
            Join::TYPE,
            Heartbeat::TYPE,
            Gossip::TYPE,
            Goodbye::TYPE,
            StatusRequest::TYPE,
            StatusReply::TYPE,
        ] {
            assert!(MEMBERSHIP_TYPES.contains(&t));
        }
        let hb = Heartbeat {
            incarnation: Incarnation(3),
            seq: 9,
            uptime_ms: 1234,
            resources: ResourceReport {
                memory_total: 1 << 30,
                memory_free: 1 << 29,
                memory_budget: 1 << 28,
                power_budget_mw: None,
                load1: 0.25,
                temperature_c: Some(40.0),
                compute_score: 7.5,
                backend: crate::config::ComputeBackend::Cpu,
                cpus: 2,
                roles: vec!["stage 1/2 layers 0..9 gemma-3-270m (coordinator a)".into()],
            },
        };
        let f = Frame::from_message(&hb, bytes::Bytes::new()).unwrap();
        assert_eq!(f.decode::<Heartbeat>().unwrap(), hb);
        assert!(f.decode::<Join>().is_err());
    }
}
