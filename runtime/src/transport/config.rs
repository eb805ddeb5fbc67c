//! Transport settings and the quinn configurations built from them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, VarInt};

use crate::protocol::SUPPORTED_VERSIONS;
use crate::security::{ClusterSecurity, SecurityError};
use crate::wire::FrameLimits;

/// Frame limits of the control stream: hello, join, heartbeat, gossip and goodbye are small
/// codec bodies (a gossip of hundreds of members fits in 256 KiB) without a raw tail;
/// application control messages may carry a small tail (64 KiB). Bulk data (tensors, weight
/// chunks) travels on streams, whose tails are bounded by `limits.max_message`.
pub const CONTROL_LIMITS: FrameLimits = FrameLimits {
    max_body: 256 << 10,
    max_tail: 64 << 10,
};

/// Settings of a [`super::Transport`]. `Default` gives the documented values.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// UDP address to bind (one socket for listening and dialling). Default `0.0.0.0:7070`.
    pub listen: SocketAddr,
    /// Address announced to peers in the hello. Default: the bound address if it is not the
    /// unspecified address, else none (peers then use the address they see).
    pub advertise: Option<SocketAddr>,
    /// This node's display name (at most 64 bytes).
    pub name: String,
    /// QUIC keep-alive interval (default 1 s).
    pub keep_alive: Duration,
    /// QUIC idle timeout (default 6 s; the lower of both sides applies).
    pub idle_timeout: Duration,
    /// Time allowed for the hello exchange and for a new stream's first frame (default 5 s).
    pub hello_timeout: Duration,
    /// Per-stream receive window, bytes (default 4 MiB).
    pub stream_receive_window: u32,
    /// Per-connection receive window, bytes (default 16 MiB).
    pub receive_window: u32,
    /// Per-connection send window, bytes (default 16 MiB).
    pub send_window: u64,
    /// Concurrent bidirectional streams a peer may open (default 1024).
    pub max_bidi_streams: u32,
    /// Concurrent unidirectional streams a peer may open (default 1024).
    pub max_uni_streams: u32,
    /// Incoming connections allowed in the handshake + hello phase at once; more are refused
    /// (default 64).
    pub max_pending_handshakes: usize,
    /// Incoming connections in the handshake phase from one IP address at once; more from it
    /// are refused (default 8), so one source cannot take every slot.
    pub max_pending_per_source: usize,
    /// Once this many handshakes are pending, a new connection from an address that has not
    /// proven it receives our packets is answered with a QUIC Retry (address validation)
    /// instead of a handshake slot: spoofed ClientHellos then hold nothing (default 16; 0 =
    /// always).
    pub retry_above_pending: usize,
    /// Frame limits on application streams (actor messages, status, probes, weight chunks):
    /// default 1 MiB body (all the codec decodes), 64 MiB tail (tensors, weight chunks).
    pub limits: FrameLimits,
    /// Frame limits on each connection's control stream (hello and membership messages):
    /// default [`CONTROL_LIMITS`].
    pub control_limits: FrameLimits,
    /// Protocol versions offered (default [`SUPPORTED_VERSIONS`]).
    pub versions: Vec<u16>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 7070)),
            advertise: None,
            name: "edgeray".to_string(),
            keep_alive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(6),
            hello_timeout: Duration::from_secs(5),
            stream_receive_window: 4 << 20,
            receive_window: 16 << 20,
            send_window: 16 << 20,
            max_bidi_streams: 1024,
            max_uni_streams: 1024,
            max_pending_handshakes: 64,
            max_pending_per_source: 8,
            retry_above_pending: 16,
            limits: FrameLimits::default(),
            control_limits: CONTROL_LIMITS,
            versions: SUPPORTED_VERSIONS.to_vec(),
        }
    }
}

impl TransportConfig {
    /// Defaults with the given bind address and name (tests: `127.0.0.1:0`).
    pub fn new(listen: SocketAddr, name: impl Into<String>) -> Self {
        TransportConfig {
            listen,
            name: name.into(),
            ..Default::default()
        }
    }

    /// The quinn transport parameters (same on both sides).
    pub fn quinn_transport(&self) -> Result<quinn::TransportConfig, SecurityError> {
        let mut t = quinn::TransportConfig::default();
        t.keep_alive_interval(Some(self.keep_alive));
        let idle = IdleTimeout::try_from(self.idle_timeout)
            .map_err(|e| SecurityError::Cert(format!("idle timeout out of range: {e}")))?;
        t.max_idle_timeout(Some(idle));
        t.stream_receive_window(VarInt::from_u32(self.stream_receive_window));
        t.receive_window(VarInt::from_u32(self.receive_window));
        t.send_window(self.send_window);
        t.max_concurrent_bidi_streams(VarInt::from_u32(self.max_bidi_streams));
        t.max_concurrent_uni_streams(VarInt::from_u32(self.max_uni_streams));
        Ok(t)
    }

    /// quinn server configuration (mTLS, limits on incoming connections).
    pub fn quinn_server(
        &self,
        security: &ClusterSecurity,
    ) -> Result<quinn::ServerConfig, SecurityError> {
        let tls = QuicServerConfig::try_from(security.server_config()?)
            .map_err(|e| SecurityError::Tls(rustls::Error::General(e.to_string())))?;
        let mut s = quinn::ServerConfig::with_crypto(Arc::new(tls));
        s.transport_config(Arc::new(self.quinn_transport()?));
        // Connections quinn buffers before the accept loop sees them, and their buffered data.
        s.max_incoming(self.max_pending_handshakes.max(1) * 2);
        s.incoming_buffer_size(64 << 10);
        s.incoming_buffer_size_total(self.max_pending_handshakes.max(1) as u64 * (64 << 10));
        Ok(s)
    }

    /// quinn client configuration (mTLS).
    pub fn quinn_client(
        &self,
        security: &ClusterSecurity,
    ) -> Result<quinn::ClientConfig, SecurityError> {
        let tls = QuicClientConfig::try_from(security.client_config()?)
            .map_err(|e| SecurityError::Tls(rustls::Error::General(e.to_string())))?;
        let mut c = quinn::ClientConfig::new(Arc::new(tls));
        c.transport_config(Arc::new(self.quinn_transport()?));
        Ok(c)
    }
}
