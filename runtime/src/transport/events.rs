//! What the transport reports to upper layers, and the pure rules behind it: peer events,
//! disconnect reasons, close codes, and the one-connection-per-pair tie-break.

use std::net::SocketAddr;

use bytes::Bytes;

use crate::identity::{Incarnation, NodeId};
use crate::wire::{Frame, FrameReader, FrameWriter};

/// Application close code: normal shutdown of the endpoint or an explicit disconnect.
pub const CLOSE_NORMAL: u32 = 0;
/// Application close code: this connection lost the one-connection-per-pair tie-break.
pub const CLOSE_DUPLICATE: u32 = 1;
/// Application close code: replaced by a connection from a newer incarnation of the peer.
pub const CLOSE_REPLACED: u32 = 2;
/// Application close code: protocol violation (garbage, oversized or unknown frame).
pub const CLOSE_PROTOCOL_ERROR: u32 = crate::wire::io::CLOSE_PROTOCOL_ERROR;
/// Application close code: the hello was refused (version, node id, cluster mismatch).
pub const CLOSE_REFUSED: u32 = 4;
/// Stream error code: no handler for the stream kind, or the handler is gone.
pub const STREAM_REFUSED: u32 = 16;

/// A connected, verified peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its node id (verified: certificate key hash = hello).
    pub node_id: NodeId,
    /// Its incarnation.
    pub incarnation: Incarnation,
    /// Its display name.
    pub name: String,
    /// Where it says it accepts connections.
    pub listen_addr: Option<SocketAddr>,
    /// The UDP address the connection actually uses.
    pub remote_addr: SocketAddr,
    /// Negotiated protocol version.
    pub version: u16,
    /// Whether this node dialled the connection.
    pub outbound: bool,
}

/// Why a peer's connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    /// Nothing was received for the idle timeout (the peer vanished or the network is cut).
    IdleTimeout,
    /// The peer closed the connection (code, reason text).
    ClosedByPeer {
        /// Application close code (see the `CLOSE_*` constants).
        code: u64,
        /// Reason text sent by the peer.
        reason: String,
    },
    /// This node closed it (shutdown, [`super::Transport::disconnect`], or a protocol violation
    /// by the peer, logged at warn level).
    ClosedLocally,
    /// The peer restarted: a connection from a new incarnation replaced this one.
    Restarted,
    /// The peer reset the connection (e.g. it restarted and lost the connection state).
    Reset,
    /// A transport-level error.
    Transport(String),
}

impl DisconnectReason {
    /// Maps a quinn connection error to a reason.
    pub fn from_connection_error(e: &quinn::ConnectionError) -> DisconnectReason {
        use quinn::ConnectionError as E;
        match e {
            E::TimedOut => DisconnectReason::IdleTimeout,
            E::ApplicationClosed(c) => DisconnectReason::ClosedByPeer {
                code: c.error_code.into_inner(),
                reason: String::from_utf8_lossy(&c.reason).into_owned(),
            },
            E::LocallyClosed => DisconnectReason::ClosedLocally,
            E::Reset => DisconnectReason::Reset,
            other => DisconnectReason::Transport(other.to_string()),
        }
    }
}

/// Events for upper layers ([`super::Transport::subscribe`]).
#[derive(Clone, Debug)]
pub enum PeerEvent {
    /// A peer passed mTLS and the hello check; it is now reachable. Emitted once per peer
    /// incarnation (a silent connection swap by the tie-break emits nothing).
    Connected(PeerInfo),
    /// The peer's connection ended.
    Disconnected {
        /// The peer.
        node_id: NodeId,
        /// The incarnation that was connected.
        incarnation: Incarnation,
        /// Why.
        reason: DisconnectReason,
    },
    /// A connection attempt (either direction) was refused: TLS failure (wrong secret, wrong
    /// node), hello refused, or timeout. Also logged at warn level.
    Rejected {
        /// Remote UDP address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// A frame received on a peer's control stream ([`super::Transport::control_messages`]).
#[derive(Debug)]
pub struct ControlMessage {
    /// The sender.
    pub from: NodeId,
    /// The frame (decode with [`Frame::decode`]).
    pub frame: Frame,
}

impl ControlMessage {
    /// The raw tail of the frame.
    pub fn tail(&self) -> &Bytes {
        &self.frame.tail
    }
}

/// A stream opened by a peer with [`super::Transport::open_bi`] / `open_uni`, delivered to the
/// handler registered for its kind.
#[derive(Debug)]
pub struct IncomingStream {
    /// The peer that opened it.
    pub peer: NodeId,
    /// Stream kind.
    pub kind: u16,
    /// Target within the kind.
    pub target: u64,
    /// Frames from the peer (accepting the types given at registration).
    pub reader: FrameReader,
    /// Frames to the peer (`None` for a unidirectional stream).
    pub writer: Option<FrameWriter>,
}

/// Outcome of admitting a verified connection for a peer that may already be connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// No connection to that peer yet: register it, emit `Connected`.
    New,
    /// Same incarnation, and the new connection wins the tie-break (or the same side dialled
    /// again): swap silently, close the old one.
    Swap,
    /// The peer restarted (new incarnation): close the old one, emit `Disconnected(Restarted)`
    /// then `Connected`.
    Restarted,
    /// The existing connection wins: close the new one.
    KeepExisting,
}

/// The one-connection-per-pair rule. `existing` / `new` are `(incarnation, dialer)` of the two
/// connections to the same peer; `local` and `peer` are the two node ids.
///
/// Both sides reach the same verdict: between connections dialled by different nodes, the one
/// dialled by the lower node id is kept; a second dial by the same side replaces the first (the
/// dialer only redials when it considers the old connection gone).
pub fn admit(
    existing: Option<(Incarnation, NodeId)>,
    new: (Incarnation, NodeId),
    local: NodeId,
    peer: NodeId,
) -> Admission {
    let Some((old_inc, old_dialer)) = existing else {
        return Admission::New;
    };
    if old_inc != new.0 {
        return Admission::Restarted;
    }
    if old_dialer == new.1 {
        return Admission::Swap;
    }
    let preferred = local.min(peer);
    if new.1 == preferred {
        Admission::Swap
    } else {
        Admission::KeepExisting
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tie_break_is_symmetric() {
        let a = NodeId([1; 32]);
        let b = NodeId([2; 32]);
        let inc = Incarnation(7);
        // On A: existing conn dialled by B, new dialled by A (lower) -> swap.
        assert_eq!(admit(Some((inc, b)), (inc, a), a, b), Admission::Swap);
        // On B: existing dialled by A, new dialled by B -> keep existing (A's).
        assert_eq!(
            admit(Some((inc, a)), (inc, b), b, a),
            Admission::KeepExisting
        );
        // Opposite arrival order: on A existing=A's, new=B's -> keep A's; on B existing=B's,
        // new=A's -> swap to A's. Either way A's dial survives on both sides.
        assert_eq!(
            admit(Some((inc, a)), (inc, b), a, b),
            Admission::KeepExisting
        );
        assert_eq!(admit(Some((inc, b)), (inc, a), b, a), Admission::Swap);
    }

    #[test]
    fn restart_and_redial() {
        let a = NodeId([1; 32]);
        let b = NodeId([2; 32]);
        assert_eq!(admit(None, (Incarnation(1), a), b, a), Admission::New);
        assert_eq!(
            admit(Some((Incarnation(1), b)), (Incarnation(2), b), a, b),
            Admission::Restarted
        );
        assert_eq!(
            admit(Some((Incarnation(1), b)), (Incarnation(1), b), a, b),
            Admission::Swap
        );
    }

    #[test]
    fn reasons_from_quinn_errors() {
        assert_eq!(
            DisconnectReason::from_connection_error(&quinn::ConnectionError::TimedOut),
            DisconnectReason::IdleTimeout
        );
        assert_eq!(
            DisconnectReason::from_connection_error(&quinn::ConnectionError::LocallyClosed),
            DisconnectReason::ClosedLocally
        );
    }
}
