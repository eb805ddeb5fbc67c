//! The [`Transport`]: one quinn endpoint (one UDP socket) that listens and dials, admits peers
//! after mutual TLS and the hello exchange, keeps one connection per peer, and carries control
//! messages and typed streams for upper layers.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use quinn::{Connection, ConnectionError, RecvStream, SendStream, VarInt};
use tokio::sync::{Mutex as AsyncMutex, OwnedSemaphorePermit, Semaphore, broadcast, mpsc};
use tracing::{debug, info, warn};

use super::config::TransportConfig;
use super::events::*;
use crate::identity::{Incarnation, NodeId};
use crate::protocol::{Hello, HelloReply, StreamOpen, check_hello};
use crate::security::{ClusterId, ClusterSecurity, SecurityError, peer_node_id, server_name_for};
use crate::wire::{Frame, FrameReader, FrameWriter, TypeSet, WireError, WireMessage};

/// How long the loser of the one-connection-per-pair tie-break stays open, so that the peer
/// can switch to the winner before the loser's close arrives.
const DUPLICATE_GRACE: Duration = Duration::from_millis(1000);
/// Capacity of the event broadcast channel.
const EVENT_CAPACITY: usize = 1024;

/// Errors of the transport API.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Binding the UDP socket failed.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The configuration is invalid (name too long, no protocol version).
    #[error("invalid transport configuration: {0}")]
    InvalidConfig(String),
    /// Building the TLS configuration failed.
    #[error(transparent)]
    Security(#[from] SecurityError),
    /// Starting a connection failed (bad address, endpoint closed).
    #[error("cannot connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The QUIC/TLS handshake or the connection failed (wrong secret, unexpected node, timeout).
    #[error("connection to {addr} failed: {reason}")]
    Handshake {
        /// The remote address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The peer was refused in the hello exchange (by it or by us).
    #[error("peer at {addr} refused: {reason}")]
    Refused {
        /// The remote address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// No connection to that peer.
    #[error("peer {0:?} is not connected")]
    NotConnected(NodeId),
    /// Opening a stream failed because the connection is gone.
    #[error("connection lost: {0}")]
    Connection(#[from] ConnectionError),
    /// Reading/writing a frame failed.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// Encoding a message failed.
    #[error(transparent)]
    Frame(#[from] crate::wire::FrameError),
}

struct PeerEntry {
    conn: Connection,
    conn_id: u64,
    dialer: NodeId,
    info: PeerInfo,
    control: Arc<AsyncMutex<FrameWriter>>,
}

struct StreamHandler {
    types: TypeSet,
    tx: mpsc::Sender<IncomingStream>,
}

struct Inner {
    endpoint: quinn::Endpoint,
    /// This node's security context (replaced when the certificate is renewed).
    security: RwLock<ClusterSecurity>,
    config: TransportConfig,
    server_config: RwLock<quinn::ServerConfig>,
    client_config: RwLock<quinn::ClientConfig>,
    hello: Hello,
    local_addr: SocketAddr,
    peers: Mutex<HashMap<NodeId, PeerEntry>>,
    events: broadcast::Sender<PeerEvent>,
    control_handlers: RwLock<Vec<(RangeInclusive<u16>, mpsc::Sender<ControlMessage>)>>,
    stream_handlers: RwLock<HashMap<u16, StreamHandler>>,
    handshakes: Arc<Semaphore>,
    /// Pending handshakes per source IP.
    pending: PendingBySource,
    /// Node ids refused after the handshake and disconnected (lock order: `peers` first).
    revoked: RwLock<HashSet<NodeId>>,
    started: AtomicBool,
    next_conn: AtomicU64,
}

/// The secure transport of one node. Cheap to clone (all clones share the endpoint).
///
/// Life cycle: [`Transport::bind`] → register handlers ([`Transport::subscribe`],
/// [`Transport::control_messages`], [`Transport::register_streams`]) → [`Transport::start`]
/// (accept incoming connections) → [`Transport::connect`] to peers → [`Transport::shutdown`].
/// Dropping the handles does not close the endpoint; call `shutdown`.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("node", &self.inner.hello.node_id)
            .field("addr", &self.inner.local_addr)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Binds the UDP socket and prepares the endpoint. Incoming connections are refused until
    /// [`Transport::start`]; dialling works at once. Must run inside a tokio runtime.
    pub async fn bind(
        config: TransportConfig,
        security: ClusterSecurity,
        incarnation: Incarnation,
    ) -> Result<Transport, TransportError> {
        if config.name.len() > crate::protocol::MAX_NAME_LEN {
            return Err(TransportError::InvalidConfig(format!(
                "node name longer than {} bytes",
                crate::protocol::MAX_NAME_LEN
            )));
        }
        if config.versions.is_empty() {
            return Err(TransportError::InvalidConfig("no protocol version".into()));
        }
        let server_config = config.quinn_server(&security)?;
        let client_config = config.quinn_client(&security)?;
        let socket =
            std::net::UdpSocket::bind(config.listen).map_err(|source| TransportError::Bind {
                addr: config.listen,
                source,
            })?;
        let runtime = quinn::default_runtime().ok_or_else(|| TransportError::Bind {
            addr: config.listen,
            source: std::io::Error::other("no async runtime"),
        })?;
        let mut endpoint =
            quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime).map_err(
                |source| TransportError::Bind {
                    addr: config.listen,
                    source,
                },
            )?;
        endpoint.set_default_client_config(client_config.clone());
        let local_addr = endpoint
            .local_addr()
            .map_err(|source| TransportError::Bind {
                addr: config.listen,
                source,
            })?;
        let advertise = config
            .advertise
            .or((!local_addr.ip().is_unspecified()).then_some(local_addr));
        let hello = Hello {
            versions: config.versions.clone(),
            cluster_id: security.cluster_id(),
            node_id: security.node_id(),
            incarnation,
            name: config.name.clone(),
            listen_addr: advertise,
        };
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let handshakes = Arc::new(Semaphore::new(config.max_pending_handshakes.max(1)));
        let config_pending_per_source = config.max_pending_per_source.max(1);
        info!(node = %hello.node_id.short(), addr = %local_addr, cluster = %hello.cluster_id.short(), "transport bound");
        Ok(Transport {
            inner: Arc::new(Inner {
                endpoint,
                security: RwLock::new(security),
                config,
                server_config: RwLock::new(server_config),
                client_config: RwLock::new(client_config),
                hello,
                local_addr,
                peers: Mutex::new(HashMap::new()),
                events,
                control_handlers: RwLock::new(Vec::new()),
                stream_handlers: RwLock::new(HashMap::new()),
                handshakes,
                pending: PendingBySource::new(config_pending_per_source),
                revoked: RwLock::new(HashSet::new()),
                started: AtomicBool::new(false),
                next_conn: AtomicU64::new(1),
            }),
        })
    }

    /// Starts accepting incoming connections (idempotent). Register handlers first: control
    /// frames of a type nobody handles are a protocol violation and close the connection.
    pub fn start(&self) {
        if self.inner.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let server = self.inner.server_config.read().clone();
        self.inner.endpoint.set_server_config(Some(server));
        let inner = self.inner.clone();
        tokio::spawn(async move { inner.accept_loop().await });
        // Renew this node's certificate at a third of its lifetime, so a node that runs for
        // months keeps a valid one (peers refuse an expired certificate).
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(crate::security::NODE_CERT_LIFETIME / 3).await;
                let Some(inner) = weak.upgrade() else { return };
                let t = Transport { inner };
                match t.security().renewed(crate::security::NODE_CERT_LIFETIME) {
                    Ok(s) => {
                        if let Err(e) = t.set_security(s) {
                            warn!(error = %e, "cannot renew this node's certificate");
                        }
                    }
                    Err(e) => warn!(error = %e, "cannot renew this node's certificate"),
                }
            }
        });
    }

    /// Uses `security` for every handshake from now on — the same node with a newer
    /// certificate ([`ClusterSecurity::renewed`]) or with another secret and trust
    /// ([`ClusterSecurity::rekeyed`], a step of a secret rotation); established connections
    /// keep theirs, so nothing in flight is lost.
    pub fn set_security(&self, security: ClusterSecurity) -> Result<(), TransportError> {
        if security.node_id() != self.node_id() {
            return Err(TransportError::InvalidConfig(
                "new security settings must be for the same node".into(),
            ));
        }
        let server = self.inner.config.quinn_server(&security)?;
        let client = self.inner.config.quinn_client(&security)?;
        *self.inner.client_config.write() = client;
        if self.inner.started.load(Ordering::Acquire) {
            self.inner.endpoint.set_server_config(Some(server.clone()));
        }
        *self.inner.server_config.write() = server;
        let until = security.validity().not_after;
        *self.inner.security.write() = security;
        info!(valid_until = ?until, cluster = %self.cluster_id().short(), "node certificate replaced");
        Ok(())
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.hello.node_id
    }

    /// The public cluster id.
    pub fn cluster_id(&self) -> ClusterId {
        self.inner.security.read().cluster_id()
    }

    /// The security context (cluster id, node certificate).
    pub fn security(&self) -> ClusterSecurity {
        self.inner.security.read().clone()
    }

    /// This node's hello (what peers receive).
    pub fn local_hello(&self) -> Hello {
        self.inner.current_hello()
    }

    /// The frame limits in force on every stream.
    pub fn limits(&self) -> crate::wire::FrameLimits {
        self.inner.config.limits
    }

    /// Subscribes to peer events. Events emitted before subscribing are not replayed (use
    /// [`Transport::peers`] for the current state). A receiver that falls more than 1024
    /// events behind gets `RecvError::Lagged`.
    pub fn subscribe(&self) -> broadcast::Receiver<PeerEvent> {
        self.inner.events.subscribe()
    }

    /// Receives the control frames whose type is in `types`, from every peer. The channel is
    /// bounded (`capacity`): when it is full, the peer's control stream is not read further
    /// and QUIC flow control pushes back on it.
    pub fn control_messages(
        &self,
        types: RangeInclusive<u16>,
        capacity: usize,
    ) -> mpsc::Receiver<ControlMessage> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.inner.control_handlers.write().push((types, tx));
        rx
    }

    /// Receives the streams peers open with `kind` (replacing an earlier registration). Their
    /// readers accept message types in `types`. Bounded by `capacity` like
    /// [`Transport::control_messages`]. Streams of a kind nobody registered are refused (stream
    /// error [`STREAM_REFUSED`]), the connection stays up.
    pub fn register_streams(
        &self,
        kind: u16,
        types: TypeSet,
        capacity: usize,
    ) -> mpsc::Receiver<IncomingStream> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.inner
            .stream_handlers
            .write()
            .insert(kind, StreamHandler { types, tx });
        rx
    }

    /// The currently connected peers.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.inner
            .peers
            .lock()
            .values()
            .map(|e| e.info.clone())
            .collect()
    }

    /// One connected peer.
    pub fn peer(&self, id: NodeId) -> Option<PeerInfo> {
        self.inner.peers.lock().get(&id).map(|e| e.info.clone())
    }

    /// Smoothed round-trip time of the connection to `id` (quinn's estimate).
    pub fn rtt(&self, id: NodeId) -> Option<Duration> {
        self.inner.peers.lock().get(&id).map(|e| e.conn.rtt())
    }

    /// The raw quinn connection to `id` (low level; prefer the stream API).
    pub fn connection(&self, id: NodeId) -> Option<Connection> {
        self.inner.peers.lock().get(&id).map(|e| e.conn.clone())
    }

    /// Dials `addr` and runs the hello exchange; returns the admitted peer. With
    /// `expected = Some(id)` the TLS handshake fails unless the server is node `id`, and an
    /// existing connection to `id` is returned without dialling. Without it, if the TLS
    /// handshake reveals a node that is already connected, the new connection is dropped and
    /// the existing one returned (re-dialling a seed never disturbs a live connection).
    pub async fn connect(
        &self,
        addr: SocketAddr,
        expected: Option<NodeId>,
    ) -> Result<PeerInfo, TransportError> {
        if let Some(id) = expected
            && let Some(p) = self.peer(id)
        {
            return Ok(p);
        }
        let r = self.inner.clone().dial(addr, expected).await;
        if let Err(e) = &r {
            self.inner.reject(addr, e.to_string());
        }
        r
    }

    /// Sends a typed control message (with a raw tail) on the peer's control stream. Messages
    /// to one peer are delivered in order.
    pub async fn send_control<M: WireMessage>(
        &self,
        peer: NodeId,
        msg: &M,
        tail: Bytes,
    ) -> Result<(), TransportError> {
        let frame = Frame::from_message(msg, tail)?;
        self.send_control_frame(peer, &frame).await
    }

    /// Sends a pre-built frame on the peer's control stream.
    pub async fn send_control_frame(
        &self,
        peer: NodeId,
        frame: &Frame,
    ) -> Result<(), TransportError> {
        let writer = self
            .inner
            .peers
            .lock()
            .get(&peer)
            .map(|e| e.control.clone())
            .ok_or(TransportError::NotConnected(peer))?;
        writer.lock().await.write_frame(frame).await?;
        Ok(())
    }

    /// Opens a bidirectional stream to `peer` for the handler of `kind` there, addressed to
    /// `target`. The returned reader accepts the message types in `reply_types`. Waits if the
    /// peer's concurrent stream limit is reached.
    pub async fn open_bi(
        &self,
        peer: NodeId,
        kind: u16,
        target: u64,
        reply_types: TypeSet,
    ) -> Result<(FrameWriter, FrameReader), TransportError> {
        let conn = self
            .connection(peer)
            .ok_or(TransportError::NotConnected(peer))?;
        let (send, recv) = conn.open_bi().await?;
        let limits = self.inner.config.limits;
        let mut writer = FrameWriter::new(send, limits);
        writer
            .send(&StreamOpen { kind, target }, Bytes::new())
            .await?;
        Ok((
            writer,
            FrameReader::new(recv, limits, reply_types, Some(conn)),
        ))
    }

    /// Opens a unidirectional stream to `peer` for the handler of `kind`, addressed to `target`.
    pub async fn open_uni(
        &self,
        peer: NodeId,
        kind: u16,
        target: u64,
    ) -> Result<FrameWriter, TransportError> {
        let conn = self
            .connection(peer)
            .ok_or(TransportError::NotConnected(peer))?;
        let send = conn.open_uni().await?;
        let mut writer = FrameWriter::new(send, self.inner.config.limits);
        writer
            .send(&StreamOpen { kind, target }, Bytes::new())
            .await?;
        Ok(writer)
    }

    /// Replaces the set of revoked node ids: their current connections are closed at once
    /// (code [`CLOSE_REFUSED`], reason `revoked`) and every later connection from or to them is
    /// refused right after the TLS handshake, where the certificate proves the node id.
    /// Returns the connected peers that were closed.
    pub fn set_revoked(&self, ids: impl IntoIterator<Item = NodeId>) -> Vec<NodeId> {
        let peers = self.inner.peers.lock();
        let mut revoked = self.inner.revoked.write();
        *revoked = ids.into_iter().collect();
        let mut closed = Vec::new();
        for (id, e) in peers.iter() {
            if revoked.contains(id) {
                warn!(peer = %id.short(), name = %e.info.name, "closing the connection of a revoked node");
                e.conn
                    .close(VarInt::from_u32(CLOSE_REFUSED), REVOKED_REASON.as_bytes());
                closed.push(*id);
            }
        }
        closed
    }

    /// Whether `id` is revoked (see [`Transport::set_revoked`]).
    pub fn is_revoked(&self, id: NodeId) -> bool {
        self.inner.revoked.read().contains(&id)
    }

    /// Closes the connection to `peer` (the peer sees `ClosedByPeer` with `reason`).
    pub fn disconnect(&self, peer: NodeId, reason: &str) {
        if let Some(c) = self.connection(peer) {
            c.close(VarInt::from_u32(CLOSE_NORMAL), reason.as_bytes());
        }
    }

    /// Closes every connection and the endpoint, waiting up to 1 s for the close to be sent.
    pub async fn shutdown(&self) {
        self.inner
            .endpoint
            .close(VarInt::from_u32(CLOSE_NORMAL), b"shutdown");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.endpoint.wait_idle()).await;
    }
}

fn handshake_reason(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ApplicationClosed(c)
            if c.error_code == VarInt::from_u32(CLOSE_REFUSED) =>
        {
            format!("refused: {}", String::from_utf8_lossy(&c.reason))
        }
        other => other.to_string(),
    }
}

impl Inner {
    fn reject(&self, addr: SocketAddr, reason: String) {
        warn!(%addr, %reason, "peer connection rejected");
        let _ = self.events.send(PeerEvent::Rejected { addr, reason });
    }

    fn cert_node_id(conn: &Connection) -> Result<NodeId, String> {
        let ident = conn
            .peer_identity()
            .ok_or("peer presented no certificate")?;
        let certs = ident
            .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
            .map_err(|_| "unexpected peer identity type")?;
        let first = certs.first().ok_or("empty certificate chain")?;
        peer_node_id(first).map_err(|e| e.to_string())
    }

    /// This node's hello with the cluster id of its current certificate.
    fn current_hello(&self) -> Hello {
        let mut h = self.hello.clone();
        h.cluster_id = self.security.read().cluster_id();
        h
    }

    async fn accept_loop(self: Arc<Self>) {
        let max = self.config.max_pending_handshakes.max(1);
        while let Some(incoming) = self.endpoint.accept().await {
            let addr = incoming.remote_address();
            let pending = max - self.handshakes.available_permits().min(max);
            if pending >= self.config.retry_above_pending
                && !incoming.remote_address_validated()
                && incoming.may_retry()
            {
                // Address validation: only a client that receives our packets comes back.
                debug!(%addr, pending, "handshakes pending; asking for address validation (retry)");
                if let Err(e) = incoming.retry() {
                    e.into_incoming().refuse();
                }
                continue;
            }
            let Some(slot) = self.pending.try_acquire(addr.ip()) else {
                warn!(%addr, "too many pending handshakes from this address; refusing");
                incoming.refuse();
                continue;
            };
            let Ok(permit) = self.handshakes.clone().try_acquire_owned() else {
                warn!(%addr, "too many connections in handshake; refusing");
                incoming.refuse();
                continue;
            };
            let inner = self.clone();
            tokio::spawn(async move {
                let result = inner.clone().accept_one(incoming, permit).await;
                drop(slot);
                if let Err(reason) = result {
                    inner.reject(addr, reason);
                }
            });
        }
        debug!("accept loop ended");
    }

    async fn accept_one(
        self: Arc<Self>,
        incoming: quinn::Incoming,
        permit: OwnedSemaphorePermit,
    ) -> Result<(), String> {
        let addr = incoming.remote_address();
        let timeout = self.config.hello_timeout;
        let connecting = incoming
            .accept()
            .map_err(|e| format!("handshake failed: {e}"))?;
        let conn = match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(format!("TLS handshake failed: {}", handshake_reason(&e))),
            Err(_) => return Err("TLS handshake timed out".into()),
        };
        let refuse = |conn: &Connection, reason: String| {
            conn.close(VarInt::from_u32(CLOSE_REFUSED), reason.as_bytes());
            reason
        };
        let cert_id = Self::cert_node_id(&conn).map_err(|r| refuse(&conn, r))?;
        if self.revoked.read().contains(&cert_id) {
            return Err(refuse(
                &conn,
                format!("node {} is {REVOKED_REASON}", cert_id.short()),
            ));
        }
        let (send, recv) = match tokio::time::timeout(timeout, conn.accept_bi()).await {
            Ok(Ok(s)) => s,
            Ok(Err(ConnectionError::ApplicationClosed(c)))
                if c.error_code == VarInt::from_u32(CLOSE_DUPLICATE) =>
            {
                debug!(%addr, "dialler was already connected; duplicate connection dropped");
                return Ok(());
            }
            Ok(Err(e)) => return Err(format!("connection lost before hello: {e}")),
            Err(_) => return Err(refuse(&conn, "no hello received in time".into())),
        };
        let limits = self.config.control_limits;
        let mut reader = FrameReader::new(
            recv,
            limits,
            TypeSet::single(Hello::TYPE),
            Some(conn.clone()),
        );
        let mut writer = FrameWriter::new(send, limits);
        let hello = match tokio::time::timeout(timeout, reader.read_message::<Hello>()).await {
            Ok(Ok(Some((h, _)))) => h,
            Ok(Ok(None)) => return Err(refuse(&conn, "control stream closed before hello".into())),
            Ok(Err(e)) => return Err(refuse(&conn, format!("bad hello: {e}"))),
            Err(_) => return Err(refuse(&conn, "no hello received in time".into())),
        };
        let clusters = self.security.read().trusted_cluster_ids();
        let version = match check_hello(
            &hello,
            cert_id,
            &clusters,
            self.hello.node_id,
            &self.config.versions,
        ) {
            Ok(v) => v,
            Err(reason) => {
                let _ = tokio::time::timeout(
                    Duration::from_millis(500),
                    writer.send(
                        &HelloReply::Refuse {
                            reason: reason.clone(),
                        },
                        Bytes::new(),
                    ),
                )
                .await;
                return Err(refuse(&conn, reason));
            }
        };
        reader.set_types(TypeSet::all());
        let info = PeerInfo {
            node_id: hello.node_id,
            incarnation: hello.incarnation,
            name: hello.name.clone(),
            listen_addr: hello.listen_addr,
            remote_addr: addr,
            version,
            outbound: false,
        };
        let control = Arc::new(AsyncMutex::new(writer));
        // Hold the control writer until the Accept is written, so no control message overtakes it.
        let mut guard = control.clone().lock_owned().await;
        self.admit(conn.clone(), info, hello.node_id, control, reader);
        let accept = HelloReply::Accept {
            version,
            hello: self.current_hello(),
        };
        if let Err(e) = guard.send(&accept, Bytes::new()).await {
            debug!(%addr, error = %e, "sending hello reply failed");
        }
        drop(guard);
        drop(permit);
        Ok(())
    }

    async fn dial(
        self: Arc<Self>,
        addr: SocketAddr,
        expected: Option<NodeId>,
    ) -> Result<PeerInfo, TransportError> {
        let timeout = self.config.hello_timeout;
        let connecting = self.endpoint.connect_with(
            self.client_config.read().clone(),
            addr,
            &server_name_for(expected),
        )?;
        let hs = |reason: String| TransportError::Handshake { addr, reason };
        let conn = match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Err(hs(format!(
                    "TLS handshake failed: {}",
                    handshake_reason(&e)
                )));
            }
            Err(_) => return Err(hs("TLS handshake timed out".into())),
        };
        let refuse = |reason: String| {
            conn.close(VarInt::from_u32(CLOSE_REFUSED), reason.as_bytes());
            TransportError::Refused { addr, reason }
        };
        let cert_id = Self::cert_node_id(&conn).map_err(refuse)?;
        if self.revoked.read().contains(&cert_id) {
            return Err(refuse(format!(
                "node {} is {REVOKED_REASON}",
                cert_id.short()
            )));
        }
        if cert_id == self.hello.node_id {
            return Err(refuse("connected to itself".into()));
        }
        // Already connected to that node (dialled by address, or it dialled us meanwhile): keep
        // the existing connection; the acceptor drops this one silently before any hello.
        if let Some(existing) = self.peers.lock().get(&cert_id).map(|e| e.info.clone()) {
            conn.close(VarInt::from_u32(CLOSE_DUPLICATE), b"already connected");
            return Ok(existing);
        }
        let limits = self.config.control_limits;
        let (send, recv) = conn.open_bi().await.map_err(|e| hs(e.to_string()))?;
        let mut writer = FrameWriter::new(send, limits);
        let mut reader = FrameReader::new(
            recv,
            limits,
            TypeSet::single(HelloReply::TYPE),
            Some(conn.clone()),
        );
        writer
            .send(&self.current_hello(), Bytes::new())
            .await
            .map_err(|e| hs(e.to_string()))?;
        let reply = match tokio::time::timeout(timeout, reader.read_message::<HelloReply>()).await {
            Ok(Ok(Some((r, _)))) => r,
            Ok(Ok(None)) => return Err(refuse("control stream closed before hello reply".into())),
            Ok(Err(WireError::Read(quinn::ReadError::ConnectionLost(e)))) => {
                return Err(TransportError::Refused {
                    addr,
                    reason: handshake_reason(&e),
                });
            }
            Ok(Err(e)) => return Err(refuse(format!("bad hello reply: {e}"))),
            Err(_) => return Err(refuse("no hello reply in time".into())),
        };
        let (version, hello) = match reply {
            HelloReply::Accept { version, hello } => (version, hello),
            HelloReply::Refuse { reason } => {
                return Err(TransportError::Refused {
                    addr,
                    reason: format!("refused by peer: {reason}"),
                });
            }
        };
        let clusters = self.security.read().trusted_cluster_ids();
        let ours = check_hello(
            &hello,
            cert_id,
            &clusters,
            self.hello.node_id,
            &self.config.versions,
        )
        .map_err(refuse)?;
        if version != ours {
            return Err(refuse(format!(
                "peer chose protocol version {version}, expected {ours}"
            )));
        }
        reader.set_types(TypeSet::all());
        let info = PeerInfo {
            node_id: hello.node_id,
            incarnation: hello.incarnation,
            name: hello.name.clone(),
            listen_addr: hello.listen_addr,
            remote_addr: addr,
            version,
            outbound: true,
        };
        let control = Arc::new(AsyncMutex::new(writer));
        Ok(self.admit(conn, info, self.hello.node_id, control, reader))
    }

    /// Registers a verified connection (tie-break with an existing one), emits events, and
    /// starts the connection's tasks. Returns the info of the peer's registered connection.
    fn admit(
        self: &Arc<Self>,
        conn: Connection,
        info: PeerInfo,
        dialer: NodeId,
        control: Arc<AsyncMutex<FrameWriter>>,
        reader: FrameReader,
    ) -> PeerInfo {
        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let peer = info.node_id;
        let registered = {
            let mut peers = self.peers.lock();
            // Revoked while its handshake ran: never registered.
            if self.revoked.read().contains(&peer) {
                conn.close(VarInt::from_u32(CLOSE_REFUSED), REVOKED_REASON.as_bytes());
                return info;
            }
            let existing = peers.get(&peer).map(|e| (e.info.incarnation, e.dialer));
            let verdict = admit(
                existing,
                (info.incarnation, dialer),
                self.hello.node_id,
                peer,
            );
            let entry = PeerEntry {
                conn: conn.clone(),
                conn_id,
                dialer,
                info: info.clone(),
                control,
            };
            match verdict {
                Admission::New => {
                    peers.insert(peer, entry);
                    info!(peer = %peer.short(), name = %info.name, addr = %info.remote_addr, outbound = info.outbound, "peer connected");
                    let _ = self.events.send(PeerEvent::Connected(info.clone()));
                    info.clone()
                }
                Admission::Swap => {
                    if let Some(old) = peers.insert(peer, entry) {
                        debug!(peer = %peer.short(), "duplicate connection: keeping the new one");
                        close_later(old.conn, CLOSE_DUPLICATE, "duplicate connection");
                    }
                    info.clone()
                }
                Admission::Restarted => {
                    if let Some(old) = peers.insert(peer, entry) {
                        old.conn.close(
                            VarInt::from_u32(CLOSE_REPLACED),
                            b"replaced by a new incarnation",
                        );
                        info!(peer = %peer.short(), "peer restarted (new incarnation)");
                        let _ = self.events.send(PeerEvent::Disconnected {
                            node_id: peer,
                            incarnation: old.info.incarnation,
                            reason: DisconnectReason::Restarted,
                        });
                    }
                    let _ = self.events.send(PeerEvent::Connected(info.clone()));
                    info.clone()
                }
                Admission::KeepExisting => {
                    debug!(peer = %peer.short(), "duplicate connection: keeping the existing one");
                    close_later(conn.clone(), CLOSE_DUPLICATE, "duplicate connection");
                    peers
                        .get(&peer)
                        .map(|e| e.info.clone())
                        .unwrap_or_else(|| info.clone())
                }
            }
        };
        let inner = self.clone();
        tokio::spawn(inner.clone().control_loop(peer, reader));
        tokio::spawn(inner.clone().bi_loop(peer, conn.clone()));
        tokio::spawn(inner.clone().uni_loop(peer, conn.clone()));
        tokio::spawn(inner.watch(peer, conn_id, conn));
        registered
    }

    async fn watch(self: Arc<Self>, peer: NodeId, conn_id: u64, conn: Connection) {
        let err = conn.closed().await;
        let reason = DisconnectReason::from_connection_error(&err);
        let mut peers = self.peers.lock();
        if peers.get(&peer).is_some_and(|e| e.conn_id == conn_id) {
            let entry = peers.remove(&peer).expect("checked above");
            match &reason {
                DisconnectReason::ClosedLocally | DisconnectReason::ClosedByPeer { .. } => {
                    info!(peer = %peer.short(), ?reason, "peer disconnected")
                }
                _ => warn!(peer = %peer.short(), ?reason, "peer connection lost"),
            }
            let _ = self.events.send(PeerEvent::Disconnected {
                node_id: peer,
                incarnation: entry.info.incarnation,
                reason,
            });
        }
    }

    async fn control_loop(self: Arc<Self>, peer: NodeId, mut reader: FrameReader) {
        loop {
            let frame = match reader.read_frame().await {
                Ok(Some(f)) => f,
                Ok(None) => {
                    debug!(peer = %peer.short(), "control stream finished by peer");
                    return;
                }
                Err(e) => {
                    debug!(peer = %peer.short(), error = %e, "control stream ended");
                    return;
                }
            };
            let tx = self
                .control_handlers
                .read()
                .iter()
                .find(|(r, _)| r.contains(&frame.msg_type))
                .map(|(_, tx)| tx.clone());
            let Some(tx) = tx else {
                let reason = format!("unknown control message type 0x{:04x}", frame.msg_type);
                warn!(peer = %peer.short(), %reason, "protocol violation; closing connection");
                if let Some(c) = self.peers.lock().get(&peer).map(|e| e.conn.clone()) {
                    c.close(VarInt::from_u32(CLOSE_PROTOCOL_ERROR), reason.as_bytes());
                }
                reader.stop(CLOSE_PROTOCOL_ERROR);
                return;
            };
            if tx.send(ControlMessage { from: peer, frame }).await.is_err() {
                debug!(peer = %peer.short(), "control handler gone; message dropped");
            }
        }
    }

    async fn bi_loop(self: Arc<Self>, peer: NodeId, conn: Connection) {
        while let Ok((send, recv)) = conn.accept_bi().await {
            tokio::spawn(
                self.clone()
                    .incoming_stream(peer, conn.clone(), Some(send), recv),
            );
        }
    }

    async fn uni_loop(self: Arc<Self>, peer: NodeId, conn: Connection) {
        while let Ok(recv) = conn.accept_uni().await {
            tokio::spawn(self.clone().incoming_stream(peer, conn.clone(), None, recv));
        }
    }

    async fn incoming_stream(
        self: Arc<Self>,
        peer: NodeId,
        conn: Connection,
        send: Option<SendStream>,
        recv: RecvStream,
    ) {
        let limits = self.config.limits;
        let mut reader =
            FrameReader::new(recv, limits, TypeSet::single(StreamOpen::TYPE), Some(conn));
        let mut writer = send.map(|s| FrameWriter::new(s, limits));
        let open = match tokio::time::timeout(
            self.config.hello_timeout,
            reader.read_message::<StreamOpen>(),
        )
        .await
        {
            Ok(Ok(Some((o, _)))) => o,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                debug!(peer = %peer.short(), error = %e, "stream failed before its header");
                return;
            }
            Err(_) => {
                warn!(peer = %peer.short(), "stream header not received in time; stream refused");
                reader.stop(STREAM_REFUSED);
                if let Some(w) = writer.as_mut() {
                    w.reset(STREAM_REFUSED);
                }
                return;
            }
        };
        let handler = self
            .stream_handlers
            .read()
            .get(&open.kind)
            .map(|h| (h.types.clone(), h.tx.clone()));
        let Some((types, tx)) = handler else {
            warn!(peer = %peer.short(), kind = open.kind, "no handler for stream kind; stream refused");
            reader.stop(STREAM_REFUSED);
            if let Some(w) = writer.as_mut() {
                w.reset(STREAM_REFUSED);
            }
            return;
        };
        reader.set_types(types);
        let stream = IncomingStream {
            peer,
            kind: open.kind,
            target: open.target,
            reader,
            writer,
        };
        if let Err(mpsc::error::SendError(mut s)) = tx.send(stream).await {
            debug!(peer = %peer.short(), kind = open.kind, "stream handler gone; stream refused");
            s.reader.stop(STREAM_REFUSED);
            if let Some(w) = s.writer.as_mut() {
                w.reset(STREAM_REFUSED);
            }
        }
    }
}

/// Counts pending handshakes per source IP address, up to a cap each.
#[derive(Debug, Clone)]
pub(crate) struct PendingBySource {
    cap: usize,
    counts: Arc<Mutex<HashMap<std::net::IpAddr, usize>>>,
}

/// One pending handshake of a source; released when dropped.
#[derive(Debug)]
pub(crate) struct PendingSlot {
    ip: std::net::IpAddr,
    counts: Arc<Mutex<HashMap<std::net::IpAddr, usize>>>,
}

impl PendingBySource {
    pub(crate) fn new(cap: usize) -> Self {
        PendingBySource {
            cap: cap.max(1),
            counts: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A slot for `ip`, or `None` when it already has `cap` handshakes pending.
    pub(crate) fn try_acquire(&self, ip: std::net::IpAddr) -> Option<PendingSlot> {
        let mut c = self.counts.lock();
        let n = c.entry(ip).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(PendingSlot {
            ip,
            counts: self.counts.clone(),
        })
    }

    /// Sources with handshakes pending.
    #[cfg(test)]
    fn sources(&self) -> usize {
        self.counts.lock().len()
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut c = self.counts.lock();
        if let Some(n) = c.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.remove(&self.ip);
            }
        }
    }
}

/// Close reason sent to a revoked node.
const REVOKED_REASON: &str = "revoked";

/// Closes `conn` after [`DUPLICATE_GRACE`].
fn close_later(conn: Connection, code: u32, reason: &'static str) {
    tokio::spawn(async move {
        tokio::time::sleep(DUPLICATE_GRACE).await;
        conn.close(VarInt::from_u32(code), reason.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_handshakes_are_capped_per_source() {
        let p = PendingBySource::new(2);
        let a: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let b: std::net::IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = p.try_acquire(a).unwrap();
        let a2 = p.try_acquire(a).unwrap();
        assert!(p.try_acquire(a).is_none(), "third from the same source");
        let b1 = p.try_acquire(b).expect("other sources are not affected");
        drop(a1);
        let a3 = p.try_acquire(a).expect("a slot came back");
        drop((a2, a3, b1));
        assert_eq!(p.sources(), 0, "no entry left behind");
    }
}
