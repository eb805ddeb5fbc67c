//! Discovery: finds candidate peers on the LAN with mDNS (service `_edgeray._udp.local.`).
//!
//! Discovery only produces candidate addresses ([`Candidate`]); a peer is admitted by the node
//! after the mutually authenticated QUIC handshake succeeds and the certificate's node id matches.
//! mDNS removals and goodbyes are never taken as proof of death. TXT records carry only public
//! data ([`txt`]).

pub mod mdns;
pub mod txt;

pub use mdns::{DiscoveryError, IMPOSTOR_WARN_EVERY, Interfaces, MdnsDiscovery};
pub use txt::{Announcement, Candidate, Ignored, SERVICE_TYPE, TxtError};
