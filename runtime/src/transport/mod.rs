//! Secure QUIC transport: one quinn endpoint per node, mutual TLS against the cluster CA, a
//! hello exchange that binds the certificate's node id to the announced one, one connection per
//! node pair, peer events, control messages and typed streams for upper layers.
//!
//! See [`Transport`] for the life cycle and `/work/team/api-r1.md` for a usage guide.

pub mod config;
pub mod endpoint;
pub mod events;

pub use config::{CONTROL_LIMITS, TransportConfig};
pub use endpoint::{Transport, TransportError};
pub use events::{
    CLOSE_DUPLICATE, CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR, CLOSE_REFUSED, CLOSE_REPLACED,
    ControlMessage, DisconnectReason, IncomingStream, PeerEvent, PeerInfo, STREAM_REFUSED,
};
