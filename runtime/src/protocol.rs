//! Protocol constants shared by every layer: message type ranges, protocol versions, and the
//! transport's own messages (hello exchange, stream opening).
//!
//! Message type numbers (the `u16` in every frame header, [`crate::wire::WireMessage::TYPE`])
//! are allocated in ranges, one per layer, so layers never collide:
//!
//! | range             | owner                                  |
//! |-------------------|----------------------------------------|
//! | `0x0001..=0x00FF` | transport (this module)                |
//! | `0x0100..=0x01FF` | membership / discovery / node (R2)     |
//! | `0x0200..=0x02FF` | actors (R3)                            |
//! | `0x0300..=0x0FFF` | applications (edgeray actors, models)  |

use std::net::SocketAddr;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use crate::identity::{Incarnation, NodeId};
use crate::security::ClusterId;
use crate::wire::WireMessage;

/// Message types of the transport itself.
pub const TRANSPORT_TYPES: RangeInclusive<u16> = 0x0001..=0x00FF;
/// Message types reserved for membership, discovery and node orchestration.
pub const MEMBERSHIP_TYPES: RangeInclusive<u16> = 0x0100..=0x01FF;
/// Message types reserved for the actor system.
pub const ACTOR_TYPES: RangeInclusive<u16> = 0x0200..=0x02FF;
/// Message types for applications built on the runtime.
pub const APP_TYPES: RangeInclusive<u16> = 0x0300..=0x0FFF;

/// Protocol versions this build speaks, oldest first. The highest common one is used.
pub const SUPPORTED_VERSIONS: &[u16] = &[1];

/// First message on a new connection, sent by the dialer on the control stream; the acceptor
/// answers with [`HelloReply`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol versions the sender supports.
    pub versions: Vec<u16>,
    /// The sender's cluster id (hash of its CA; must equal ours).
    pub cluster_id: ClusterId,
    /// The sender's node id (must match its certificate).
    pub node_id: NodeId,
    /// The sender's incarnation (random per process start).
    pub incarnation: Incarnation,
    /// The sender's display name.
    pub name: String,
    /// Where the sender accepts connections (`None` if not known / not listening publicly).
    pub listen_addr: Option<SocketAddr>,
}

impl WireMessage for Hello {
    const TYPE: u16 = 0x0001;
}

/// The acceptor's answer to a [`Hello`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// Admitted: the chosen version and the acceptor's own hello.
    Accept {
        /// The negotiated protocol version.
        version: u16,
        /// The acceptor's hello.
        hello: Hello,
    },
    /// Refused, with a human-readable reason (the connection is then closed).
    Refuse {
        /// Why.
        reason: String,
    },
}

impl WireMessage for HelloReply {
    const TYPE: u16 = 0x0002;
}

/// First frame on every stream opened with [`crate::transport::Transport::open_bi`] /
/// `open_uni`: what the stream is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamOpen {
    /// Stream kind (selects the registered handler).
    pub kind: u16,
    /// Target within the kind (e.g. the local id of the destination actor).
    pub target: u64,
}

impl WireMessage for StreamOpen {
    const TYPE: u16 = 0x0003;
}

/// Maximum length of a node name in a hello.
pub const MAX_NAME_LEN: usize = 64;

/// Picks the highest version both lists contain.
pub fn negotiate_version(ours: &[u16], theirs: &[u16]) -> Option<u16> {
    ours.iter().copied().filter(|v| theirs.contains(v)).max()
}

/// Validates a received hello against what is known about the connection. Pure; returns the
/// negotiated version or the reason to refuse.
pub fn check_hello(
    hello: &Hello,
    cert_node_id: NodeId,
    our_clusters: &[ClusterId],
    our_node: NodeId,
    our_versions: &[u16],
) -> Result<u16, String> {
    if !our_clusters.contains(&hello.cluster_id) {
        let ours: Vec<String> = our_clusters.iter().map(|c| c.short()).collect();
        return Err(format!(
            "cluster id mismatch: peer {} vs ours {}",
            hello.cluster_id.short(),
            ours.join(", ")
        ));
    }
    if hello.node_id != cert_node_id {
        return Err(format!(
            "node id mismatch: hello announces {} but the certificate is for {}",
            hello.node_id.short(),
            cert_node_id.short()
        ));
    }
    if hello.node_id == our_node {
        return Err("connected to itself".to_string());
    }
    if hello.name.len() > MAX_NAME_LEN {
        return Err(format!("node name longer than {MAX_NAME_LEN} bytes"));
    }
    negotiate_version(our_versions, &hello.versions).ok_or_else(|| {
        format!(
            "no common protocol version: peer supports {:?}, we support {:?}",
            hello.versions, our_versions
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(node: NodeId) -> Hello {
        Hello {
            versions: vec![1, 2],
            cluster_id: ClusterId([1; 32]),
            node_id: node,
            incarnation: Incarnation(5),
            name: "a".into(),
            listen_addr: None,
        }
    }

    #[test]
    fn negotiation_picks_highest_common() {
        assert_eq!(negotiate_version(&[1, 2, 3], &[2, 3, 4]), Some(3));
        assert_eq!(negotiate_version(&[1], &[2]), None);
        assert_eq!(negotiate_version(&[1], &[]), None);
    }

    #[test]
    fn hello_checks() {
        let peer = NodeId([2; 32]);
        let me = NodeId([3; 32]);
        let c = ClusterId([1; 32]);
        assert_eq!(check_hello(&hello(peer), peer, &[c], me, &[1]), Ok(1));
        assert!(
            check_hello(&hello(peer), NodeId([9; 32]), &[c], me, &[1])
                .unwrap_err()
                .contains("node id mismatch")
        );
        assert!(
            check_hello(&hello(peer), peer, &[ClusterId([0; 32])], me, &[1])
                .unwrap_err()
                .contains("cluster id")
        );
        assert!(
            check_hello(&hello(me), me, &[c], me, &[1])
                .unwrap_err()
                .contains("itself")
        );
        assert!(
            check_hello(&hello(peer), peer, &[c], me, &[7])
                .unwrap_err()
                .contains("no common protocol version")
        );
        let mut long = hello(peer);
        long.name = "x".repeat(65);
        assert!(check_hello(&long, peer, &[c], me, &[1]).is_err());
    }

    #[test]
    fn ranges_do_not_overlap() {
        let r = [TRANSPORT_TYPES, MEMBERSHIP_TYPES, ACTOR_TYPES, APP_TYPES];
        for (i, a) in r.iter().enumerate() {
            for b in &r[i + 1..] {
                assert!(a.end() < b.start());
            }
        }
        assert!(TRANSPORT_TYPES.contains(&Hello::TYPE));
        assert!(TRANSPORT_TYPES.contains(&StreamOpen::TYPE));
    }
}
