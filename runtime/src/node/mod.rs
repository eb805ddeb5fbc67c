//! A cluster node: identity + secure transport + mDNS discovery + seeds + membership +
//! heartbeats + gossip, driven by one event loop.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use edgeray_runtime::config::ClusterConfig;
//! use edgeray_runtime::node::Node;
//! let config = ClusterConfig::load("cluster.toml".as_ref())?;
//! let node = Node::start(config).await?;          // or Node::bind + register handlers + start
//! let mut events = node.subscribe();              // MemberUp, MemberDown, HeadChanged, ...
//! println!("{} members, head {:?}", node.members().len(), node.head());
//! # let _ = events.recv().await;
//! node.shutdown().await;                          // goodbye to peers, close the endpoint
//! # Ok(()) }
//! ```
//!
//! Life of a peer: discovery (mDNS candidate, seed, gossip) → dial → mTLS + hello (transport) →
//! both sides send [`messages::Join`] → `Joining` → first [`messages::Heartbeat`] → `Up`.
//! Heartbeats every `timing.heartbeat` carry resource reports (including the node's roles, see
//! [`NodeHandle::set_roles`]); silence makes a member Suspect
//! then Down; a transport disconnect (QUIC idle timeout, close) makes it Down at once; a
//! [`messages::Goodbye`] makes it Down (`left`). Peers that connect without sending `Join`
//! (`edgeray status` clients) are never members.
//!
//! Log lines (target `edgeray_runtime::node`, level info unless noted) that tests can wait for:
//! `node started name=… id=… listen=… cluster=…`, `member joining name=… id=…`,
//! `member up name=… id=… inc=… addr=…`, `member suspect name=…`,
//! `member down name=… id=… reason=…`, `head changed to name=… id=…`,
//! `rejected peer ADDR: REASON` (warn), `goodbye sent to N peers`, `node stopped`.

pub mod bandwidth;
pub mod dial_order;
pub mod dialer;
pub mod messages;
mod probe;
pub mod status_client;

use crate::config::{ClusterConfig, ConfigError};
use crate::discovery::{Announcement, Candidate, DiscoveryError, Interfaces, MdnsDiscovery};
use crate::identity::{IdentityError, Incarnation, NodeId, NodeIdentity};
use crate::membership::status::ClusterStatus;
use crate::membership::{Member, MemberSummary, Membership, MembershipEvent, MembershipTiming};
use crate::protocol::SUPPORTED_VERSIONS;
use crate::resources::{self, ResourceReport};
use crate::security::{ClusterId, ClusterSecret, ClusterSecurity, SecurityError};
use crate::state_lock::{StateLock, StateLockError};
use crate::transport::{DisconnectReason, PeerEvent, Transport, TransportConfig, TransportError};
use crate::wire::{FrameLimits, WireMessage};
use bytes::Bytes;
use dialer::{DialJob, Dialer, TargetKey};
use messages::{Goodbye, Gossip, Heartbeat, Join, StatusReply, StatusRequest};
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{debug, info, warn};

/// Errors starting a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The node key could not be loaded or created.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Certificates could not be derived.
    #[error(transparent)]
    Security(#[from] SecurityError),
    /// The QUIC endpoint could not be bound.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// mDNS could not start.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// Another process (or node) already runs from this state directory.
    #[error(transparent)]
    StateLocked(#[from] StateLockError),
}

/// How often [`NodeHandle::watch_config_file`] checks the config file for changes.
pub const CONFIG_POLL: Duration = Duration::from_secs(2);

/// Capacity of the membership event channel (slow subscribers miss old events: `Lagged`).
pub const EVENT_CAPACITY: usize = 256;

struct Shared {
    config: ClusterConfig,
    node_id: NodeId,
    incarnation: Incarnation,
    cluster_id: ClusterId,
    name: String,
    transport: Transport,
    membership: Mutex<Membership>,
    /// What this node hosts (see [`NodeHandle::set_roles`]); read by the heartbeat builder.
    /// Lock order: `membership` before `roles`.
    roles: Mutex<Vec<String>>,
    events: broadcast::Sender<MembershipEvent>,
    started: Instant,
    shutdown_tx: Mutex<Option<oneshot::Sender<oneshot::Sender<()>>>>,
    stopped: watch::Sender<bool>,
    /// Revoked node ids (also enforced by the transport); flagged in `status`.
    revoked: Mutex<Vec<NodeId>>,
    /// The exclusive lock on `state_dir`, released when the node stops.
    state_lock: Mutex<Option<StateLock>>,
    /// When this node last warned that its own id is announced by another process.
    impostor_warned: Mutex<Option<Instant>>,
    /// The last sign that another process holds this node's identity.
    identity_conflict: Mutex<Option<String>>,
}

/// A node whose endpoint is bound but not yet accepting: register extra transport handlers
/// (actor streams, application control messages) on [`Node::transport`], then [`Node::start`].
pub struct Node {
    shared: Arc<Shared>,
    control: mpsc::Receiver<crate::transport::ControlMessage>,
    status_streams: mpsc::Receiver<crate::transport::IncomingStream>,
    probe_streams: mpsc::Receiver<crate::transport::IncomingStream>,
    peer_events: broadcast::Receiver<PeerEvent>,
}

/// Handle to a running node. Cheap to clone.
#[derive(Clone)]
pub struct NodeHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("name", &self.shared.name)
            .field("id", &self.shared.node_id)
            .finish()
    }
}

impl Node {
    /// Validate the config, load or create the node key in `state_dir`, derive the cluster
    /// certificates and bind the QUIC endpoint (not yet accepting).
    pub async fn bind(config: ClusterConfig) -> Result<Node, NodeError> {
        config.validate()?;
        let secret = ClusterSecret::from_bytes(config.secret_bytes()?);
        // One process per identity: lock the folder before reading the key in it.
        let state_lock = StateLock::acquire(&config.state_dir)?;
        let identity = NodeIdentity::load_or_create(&config.state_dir)?;
        let trusted: Vec<ClusterSecret> = config
            .trusted_secret_bytes()?
            .into_iter()
            .map(ClusterSecret::from_bytes)
            .collect();
        let security = ClusterSecurity::with_trust(&secret, &trusted, &identity)?;
        let incarnation = Incarnation::random();
        let name = config.node_name();
        let mut tc = TransportConfig::new(config.listen, name.clone());
        tc.keep_alive = config.timing.keep_alive;
        tc.idle_timeout = config.timing.idle_timeout;
        tc.versions = SUPPORTED_VERSIONS.to_vec();
        tc.limits = stream_limits(&config.limits);
        tc.control_limits = crate::transport::CONTROL_LIMITS;
        let transport = Transport::bind(tc, security, incarnation).await?;
        let revoked: Vec<NodeId> = config
            .revoked_ids()?
            .into_iter()
            .filter(|id| *id != identity.node_id())
            .collect();
        transport.set_revoked(revoked.iter().copied());
        let control = transport.control_messages(messages::CONTROL_TYPES, 1024);
        let status_streams = transport.register_streams(
            messages::STATUS_STREAM_KIND,
            messages::status_request_types(),
            16,
        );
        let probe_streams = transport.register_streams(
            messages::PROBE_STREAM_KIND,
            messages::probe_request_types(),
            4,
        );
        let peer_events = transport.subscribe();
        let node_id = transport.node_id();
        let cluster_id = transport.cluster_id();
        let now = Instant::now();
        let self_addr = advertised_addr(&transport);
        let me = MemberSummary {
            node_id,
            incarnation,
            name: name.clone(),
            addr: self_addr,
        };
        // Until the compute score is measured the self report carries the configured values.
        let initial = resources::measure(&config, config.resources.compute_score.unwrap_or(0.0));
        let membership = Membership::new(
            me,
            initial,
            MembershipTiming::from(&config.timing),
            config.limits.max_members,
            now,
        );
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let (stopped, _) = watch::channel(false);
        Ok(Node {
            shared: Arc::new(Shared {
                config,
                node_id,
                incarnation,
                cluster_id,
                name,
                transport,
                membership: Mutex::new(membership),
                roles: Mutex::new(Vec::new()),
                events,
                started: now,
                shutdown_tx: Mutex::new(None),
                stopped,
                revoked: Mutex::new(revoked),
                state_lock: Mutex::new(Some(state_lock)),
                impostor_warned: Mutex::new(None),
                identity_conflict: Mutex::new(None),
            }),
            control,
            status_streams,
            probe_streams,
            peer_events,
        })
    }

    /// The bound transport: register additional handlers here before [`Node::start`].
    pub fn transport(&self) -> &Transport {
        &self.shared.transport
    }

    /// The handle (usable before start, e.g. to subscribe to events from the very beginning).
    pub fn handle(&self) -> NodeHandle {
        NodeHandle {
            shared: self.shared.clone(),
        }
    }

    /// Bind and start in one step.
    pub async fn start(config: ClusterConfig) -> Result<NodeHandle, NodeError> {
        Node::bind(config).await?.run().await
    }

    /// Start accepting, announcing (mDNS), dialing seeds, heartbeats and gossip.
    pub async fn run(self) -> Result<NodeHandle, NodeError> {
        let shared = self.shared.clone();
        let cfg = &shared.config;
        let mdns = if cfg.mdns {
            let ann = Announcement {
                cluster_id: shared.cluster_id,
                node_id: shared.node_id,
                port: shared.transport.local_addr().port(),
                versions: SUPPORTED_VERSIONS.to_vec(),
                incarnation: Some(shared.incarnation),
            };
            let (d, rx) = MdnsDiscovery::start(
                Some(&ann),
                &Interfaces::from_names(&cfg.interfaces),
                shared.node_id,
                shared.cluster_id,
            )?;
            Some((d, rx))
        } else {
            None
        };
        shared.transport.start();
        info!(
            "node started name={} id={} inc={} listen={} cluster={} ({}) mdns={} seeds={}",
            shared.name,
            shared.node_id.short(),
            shared.incarnation,
            shared.transport.local_addr(),
            cfg.cluster_name,
            shared.cluster_id.short(),
            if cfg.mdns {
                if cfg.interfaces.is_empty() {
                    "all-non-loopback".to_string()
                } else {
                    cfg.interfaces.join(",")
                }
            } else {
                "off".to_string()
            },
            cfg.seeds.len(),
        );
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        *shared.shutdown_tx.lock() = Some(shutdown_tx);
        let (mdns, candidates) = match mdns {
            Some((d, rx)) => (Some(d), Some(rx)),
            None => (None, None),
        };
        let score = cfg.resources.compute_score;
        let status_task = tokio::spawn(serve_status(shared.clone(), self.status_streams));
        // Bandwidth probes: answered for peers, and sent to peers (the prober ends with the node).
        let probe_task = tokio::spawn(probe::serve_probes(self.probe_streams));
        tokio::spawn(probe::run_prober(shared.clone()));
        let event_loop = EventLoop {
            shared: shared.clone(),
            dialer: Dialer::new(
                cfg.timing.seed_retry_min,
                cfg.timing.seed_retry_max,
                cfg.timing.forget_after,
            ),
            control: self.control,
            peer_events: self.peer_events,
            candidates,
            mdns,
            compute_score: score,
            seq: 0,
        };
        tokio::spawn(event_loop.run(shutdown_rx, vec![status_task, probe_task]));
        Ok(NodeHandle { shared })
    }
}

/// Frame limits of application streams (actor messages, status, probes, weight chunks): a
/// body is a codec-encoded message, never larger than [`crate::codec::MAX_BODY`] (1 MiB: the
/// codec refuses more anyway); bulk data (tensors, weight chunks) travels in the raw tail,
/// bounded by the configured `limits.max_message`. The control stream has its own, smaller
/// bounds ([`crate::transport::CONTROL_LIMITS`]).
pub fn stream_limits(limits: &crate::config::Limits) -> FrameLimits {
    FrameLimits {
        max_body: crate::codec::MAX_BODY as u32,
        max_tail: limits.max_message.0.min(u32::MAX as u64) as u32,
    }
}

/// The address this node announces: the bound address when it is specific.
fn advertised_addr(t: &Transport) -> Option<SocketAddr> {
    let a = t.local_addr();
    (!a.ip().is_unspecified()).then_some(a)
}

impl NodeHandle {
    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.shared.node_id
    }
    /// This process's incarnation.
    pub fn incarnation(&self) -> Incarnation {
        self.shared.incarnation
    }
    /// Public cluster id (of this node's certificate in force: it changes when a rotation
    /// switches this node to a new secret).
    pub fn cluster_id(&self) -> ClusterId {
        self.shared.transport.cluster_id()
    }
    /// Display name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }
    /// The configuration the node runs with.
    pub fn config(&self) -> &ClusterConfig {
        &self.shared.config
    }
    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.transport.local_addr()
    }
    /// The secure transport (streams and control messages to peers).
    pub fn transport(&self) -> &Transport {
        &self.shared.transport
    }
    /// Every member, this node included (Down ones until forgotten), ordered by id.
    pub fn members(&self) -> Vec<Member> {
        self.shared.membership.lock().members().cloned().collect()
    }
    /// Members in state Up, this node included.
    pub fn up_members(&self) -> Vec<Member> {
        self.shared
            .membership
            .lock()
            .up_members()
            .cloned()
            .collect()
    }
    /// One member.
    pub fn member(&self, id: NodeId) -> Option<Member> {
        self.shared.membership.lock().get(&id).cloned()
    }
    /// The head (scheduler) node: lowest id among live members.
    pub fn head(&self) -> Option<NodeId> {
        self.shared.membership.lock().head()
    }
    /// Whether this node is the head.
    pub fn is_head(&self) -> bool {
        self.head() == Some(self.shared.node_id)
    }
    /// Membership events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<MembershipEvent> {
        self.shared.events.subscribe()
    }
    /// Advertise what this node hosts: short role strings such as
    /// `stage 1/3 layers 6..12 gemma-3-270m (coordinator local-0)`. Replaces the previous roles
    /// (an empty list clears them). Bounded by [`resources::bound_roles`] (at most
    /// [`resources::MAX_ROLES`] roles of at most [`resources::MAX_ROLE_CHARS`] characters;
    /// longer input is truncated). This node's own member entry shows them at once; peers see
    /// them with the next heartbeat (every `timing.heartbeat`).
    pub fn set_roles(&self, roles: Vec<String>) {
        let roles = resources::bound_roles(roles);
        let mut m = self.shared.membership.lock();
        m.set_self_roles(roles.clone());
        *self.shared.roles.lock() = roles;
    }
    /// Adds one role to those this node advertises (see [`NodeHandle::set_roles`]); concurrent
    /// callers do not lose each other's roles.
    pub fn add_role(&self, role: impl Into<String>) {
        let mut m = self.shared.membership.lock();
        let mut roles = self.shared.roles.lock();
        let mut next = roles.clone();
        next.push(role.into());
        let next = resources::bound_roles(next);
        m.set_self_roles(next.clone());
        *roles = next;
    }
    /// Removes one occurrence of `role` from those this node advertises.
    pub fn remove_role(&self, role: &str) {
        let mut m = self.shared.membership.lock();
        let mut roles = self.shared.roles.lock();
        if let Some(i) = roles.iter().position(|r| r == role) {
            let mut next = roles.clone();
            next.remove(i);
            m.set_self_roles(next.clone());
            *roles = next;
        }
    }
    /// The roles this node currently advertises (as bounded by [`NodeHandle::set_roles`]).
    pub fn roles(&self) -> Vec<String> {
        self.shared.roles.lock().clone()
    }
    /// Replaces the revoked node ids (`revoked` in cluster.toml): their connections are closed
    /// at once, they are never admitted or dialed again, and `status` flags them. Returns the
    /// connected peers that were closed.
    pub fn set_revoked(&self, ids: Vec<NodeId>) -> Vec<NodeId> {
        let mut ids = ids;
        ids.retain(|id| *id != self.shared.node_id);
        let closed = self.shared.transport.set_revoked(ids.iter().copied());
        *self.shared.revoked.lock() = ids;
        closed
    }
    /// The revoked node ids in force.
    pub fn revoked(&self) -> Vec<NodeId> {
        self.shared.revoked.lock().clone()
    }
    /// Re-reads `path` (this node's cluster.toml) on SIGHUP and whenever it changes (checked
    /// every [`CONFIG_POLL`]) and applies its `revoked` list ([`NodeHandle::set_revoked`]) and
    /// its secrets ([`NodeHandle::reload_secrets`]).
    /// A file that does not parse is reported (warn) and changes nothing. Ends with the node.
    pub fn watch_config_file(&self, path: std::path::PathBuf) -> tokio::task::JoinHandle<()> {
        let node = self.clone();
        tokio::spawn(async move { node.watch_config_loop(path).await })
    }

    async fn watch_config_loop(self, path: std::path::PathBuf) {
        let stamp = |p: &std::path::Path| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.modified().ok(), m.len()))
        };
        let mut last = stamp(&path);
        #[cfg(unix)]
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(
                    "cannot listen for SIGHUP ({e}); {} is still polled",
                    path.display()
                );
                None
            }
        };
        let mut stopped = self.shared.stopped.subscribe();
        let mut tick = tokio::time::interval(CONFIG_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<()>();
            let reason = tokio::select! {
                _ = stopped.wait_for(|s| *s) => return,
                _ = hangup => "SIGHUP",
                _ = tick.tick() => {
                    let now = stamp(&path);
                    if now == last {
                        continue;
                    }
                    last = now;
                    "file changed"
                }
            };
            self.reload_revoked(&path, reason);
            self.reload_secrets(&path, reason);
        }
    }

    /// Applies `secret` and `trusted_secrets` of the config file at `path` when they differ
    /// from those in force: this node's certificate and the CAs it accepts change for every new
    /// handshake, established connections stay (a secret rotation loses no request; README,
    /// "Rotating the cluster secret").
    pub fn reload_secrets(&self, path: &std::path::Path, reason: &str) {
        let parsed = ClusterConfig::load(path).and_then(|c| {
            let secret = ClusterSecret::from_bytes(c.secret_bytes()?);
            let trusted: Vec<ClusterSecret> = c
                .trusted_secret_bytes()?
                .into_iter()
                .map(ClusterSecret::from_bytes)
                .collect();
            Ok((secret, trusted))
        });
        let (secret, trusted) = match parsed {
            Ok(p) => p,
            Err(e) => {
                warn!(
                    "cannot reload {} ({reason}): {e}; the secrets in force are unchanged",
                    path.display()
                );
                return;
            }
        };
        let current = self.shared.transport.security();
        let next = match current.rekeyed(&secret, &trusted) {
            Ok(n) => n,
            Err(e) => {
                warn!(
                    "cannot use the secrets of {} ({reason}): {e}",
                    path.display()
                );
                return;
            }
        };
        if next.cluster_id() == current.cluster_id()
            && next.trusted_cluster_ids() == current.trusted_cluster_ids()
        {
            return;
        }
        let ids: Vec<String> = next
            .trusted_cluster_ids()
            .iter()
            .map(|c| c.short())
            .collect();
        match self.shared.transport.set_security(next) {
            Ok(()) => info!(
                "secrets reloaded from {} ({reason}): cluster {} (accepting {})",
                path.display(),
                self.shared.transport.cluster_id().short(),
                ids.join(", ")
            ),
            Err(e) => warn!(
                "cannot apply the secrets of {} ({reason}): {e}",
                path.display()
            ),
        }
    }

    /// Applies the `revoked` list of the config file at `path` (see
    /// [`NodeHandle::watch_config_file`]).
    pub fn reload_revoked(&self, path: &std::path::Path, reason: &str) {
        let ids = ClusterConfig::load(path).and_then(|c| c.revoked_ids());
        match ids {
            Ok(ids) => {
                let before = self.revoked();
                let closed = self.set_revoked(ids.clone());
                if before != ids {
                    info!(
                        "revoked nodes reloaded from {} ({reason}): {} revoked, {} connection(s) closed",
                        path.display(),
                        ids.len(),
                        closed.len()
                    );
                }
            }
            Err(e) => warn!(
                "cannot reload {} ({reason}): {e}; the revoked list in force is unchanged",
                path.display()
            ),
        }
    }
    /// The last sign that another process runs with this node's identity (a copied state
    /// directory, a cloned SD card): a peer replaced our connection with that process's, or a
    /// peer's gossip shows this id with another incarnation. Each is also logged (warn, at
    /// most every 30 s), as are mDNS records announcing this id with another incarnation.
    pub fn identity_conflict(&self) -> Option<String> {
        self.shared.identity_conflict.lock().clone()
    }
    /// The member table as `edgeray status` shows it.
    pub fn status(&self) -> ClusterStatus {
        status_snapshot(&self.shared)
    }
    /// Wait until at least `n` members (this node included) are Up; false on timeout.
    pub async fn wait_for_up(&self, n: usize, timeout: Duration) -> bool {
        let mut rx = self.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.up_members().len() >= n {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Err(_) => return self.up_members().len() >= n,
                Ok(Err(broadcast::error::RecvError::Closed)) => return false,
                Ok(_) => {}
            }
        }
    }
    /// Whether the node has stopped.
    pub fn is_stopped(&self) -> bool {
        *self.shared.stopped.borrow()
    }
    /// Wait until the node has stopped (after [`NodeHandle::shutdown`] from any clone).
    pub async fn stopped(&self) {
        let mut rx = self.shared.stopped.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }
    /// Graceful stop: goodbye to every peer, mDNS goodbye, close the endpoint. Idempotent;
    /// returns when done.
    pub async fn shutdown(&self) {
        let tx = self.shared.shutdown_tx.lock().take();
        if let Some(tx) = tx {
            let (done_tx, done_rx) = oneshot::channel();
            if tx.send(done_tx).is_ok() {
                let _ = done_rx.await;
                return;
            }
        }
        self.stopped().await;
    }
}

fn status_snapshot(shared: &Shared) -> ClusterStatus {
    let mut m = shared.membership.lock();
    let ids: Vec<NodeId> = m
        .members()
        .filter(|x| !x.is_self)
        .map(|x| x.node_id)
        .collect();
    for id in ids {
        if let Some(rtt) = shared.transport.rtt(id) {
            m.set_rtt(id, rtt);
        }
    }
    let mut st = ClusterStatus::from_membership(
        &m,
        &shared.config.cluster_name,
        &shared.cluster_id.to_hex(),
        Instant::now(),
    );
    drop(m);
    let revoked = shared.revoked.lock();
    for row in &mut st.members {
        row.revoked = revoked.iter().any(|id| id.to_hex() == row.node_id);
    }
    st
}

/// Answers `edgeray status` queries.
async fn serve_status(
    shared: Arc<Shared>,
    mut streams: mpsc::Receiver<crate::transport::IncomingStream>,
) {
    while let Some(mut s) = streams.recv().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let req = tokio::time::timeout(
                Duration::from_secs(5),
                s.reader.read_message::<StatusRequest>(),
            )
            .await;
            let Ok(Ok(Some((_req, _)))) = req else {
                debug!(peer = %s.peer.short(), "status stream without a request");
                return;
            };
            let reply = StatusReply {
                status: status_snapshot(&shared),
            };
            if let Some(mut w) = s.writer.take() {
                if let Err(e) = w.send(&reply, Bytes::new()).await {
                    debug!("status reply failed: {e}");
                }
                let _ = w.finish();
                // Keep the stream open until the client has read the reply.
                let _ = tokio::time::timeout(Duration::from_secs(2), s.reader.read_frame()).await;
            }
        });
    }
}

/// Outcome of one dial job.
struct DialOutcome {
    key: TargetKey,
    result: Result<NodeId, String>,
}

struct EventLoop {
    shared: Arc<Shared>,
    dialer: Dialer,
    control: mpsc::Receiver<crate::transport::ControlMessage>,
    peer_events: broadcast::Receiver<PeerEvent>,
    candidates: Option<mpsc::Receiver<Candidate>>,
    mdns: Option<MdnsDiscovery>,
    compute_score: Option<f64>,
    seq: u64,
}

impl EventLoop {
    async fn run(
        mut self,
        mut shutdown: oneshot::Receiver<oneshot::Sender<()>>,
        tasks: Vec<tokio::task::JoinHandle<()>>,
    ) {
        let cfg = self.shared.config.clone();
        let now = Instant::now();
        for seed in &cfg.seeds {
            self.dialer.add_seed(seed, now);
        }
        // The compute score is the hosting application's measurement (configured before the
        // node starts); without one the node reports 0, "not measured".
        let (score_tx, mut score_rx) = oneshot::channel::<f64>();
        let _ = score_tx.send(self.compute_score.unwrap_or(0.0));
        let mut score_pending = true;
        let (dial_tx, mut dial_rx) = mpsc::channel::<DialOutcome>(64);
        let tick_every =
            (cfg.timing.heartbeat / 4).clamp(Duration::from_millis(50), Duration::from_millis(250));
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_heartbeat = Instant::now();
        let mut next_gossip = Instant::now() + cfg.timing.gossip;
        let done = loop {
            tokio::select! {
                biased;
                done = &mut shutdown => break done.ok(),
                score = &mut score_rx, if score_pending => {
                    score_pending = false;
                    if let Ok(s) = score {
                        info!("compute score {s:.1} (weight MB/s of quantized matrix-vector products; 0: not measured)");
                        self.compute_score = Some(s);
                        next_heartbeat = Instant::now();
                    }
                }
                ev = self.peer_events.recv() => match ev {
                    Ok(ev) => self.on_peer_event(ev).await,
                    Err(broadcast::error::RecvError::Lagged(n)) => warn!("missed {n} transport events"),
                    Err(broadcast::error::RecvError::Closed) => break None,
                },
                Some(msg) = self.control.recv() => self.on_control(msg),
                Some(c) = recv_opt(&mut self.candidates) => {
                    debug!("mdns candidate id={} addrs={:?}", c.node_id.short(), c.addrs);
                    if self.shared.transport.is_revoked(c.node_id) {
                        debug!("mdns candidate id={} is revoked; ignored", c.node_id.short());
                    } else if !self.dialer.add_node(c.node_id, c.addrs, Instant::now()) {
                        debug!("dial list full; mdns candidate id={} ignored", c.node_id.short());
                    }
                    self.dial_due(&dial_tx);
                }
                Some(out) = dial_rx.recv() => self.on_dial_outcome(out),
                _ = tick.tick() => {
                    let now = Instant::now();
                    let events = self.shared.membership.lock().tick(now);
                    self.publish(events);
                    if now >= next_heartbeat && self.compute_score.is_some() {
                        next_heartbeat = now + cfg.timing.heartbeat;
                        self.send_heartbeats(now);
                    }
                    if now >= next_gossip {
                        next_gossip = now + cfg.timing.gossip;
                        self.send_gossip();
                    }
                    self.dial_due(&dial_tx);
                }
            }
        };
        self.goodbye().await;
        for t in &tasks {
            t.abort();
        }
        if let Some(m) = self.mdns.take() {
            m.shutdown().await;
        }
        self.shared.transport.shutdown().await;
        info!(
            "node stopped name={} id={}",
            self.shared.name,
            self.shared.node_id.short()
        );
        // The state directory is free for the next process (or a restart in this one).
        drop(self.shared.state_lock.lock().take());
        let _ = self.shared.stopped.send(true);
        if let Some(done) = done {
            let _ = done.send(());
        }
    }

    fn publish(&self, events: Vec<MembershipEvent>) {
        for ev in events {
            log_event(&self.shared, &ev);
            let _ = self.shared.events.send(ev);
        }
    }

    async fn on_peer_event(&mut self, ev: PeerEvent) {
        match ev {
            PeerEvent::Connected(p) => {
                debug!(
                    "peer connected id={} name={} remote={} outbound={}",
                    p.node_id.short(),
                    p.name,
                    p.remote_addr,
                    p.outbound
                );
                let join = Join {
                    incarnation: self.shared.incarnation,
                    uptime_ms: self.uptime_ms(),
                };
                let t = self.shared.transport.clone();
                let hb = self.heartbeat(Instant::now());
                tokio::spawn(async move {
                    if let Err(e) = t.send_control(p.node_id, &join, Bytes::new()).await {
                        debug!("join to {} failed: {e}", p.node_id.short());
                        return;
                    }
                    if let Some(hb) = hb {
                        let _ = t.send_control(p.node_id, &hb, Bytes::new()).await;
                    }
                });
            }
            PeerEvent::Disconnected {
                node_id,
                incarnation,
                reason,
            } => {
                debug!("peer disconnected id={} reason={reason:?}", node_id.short());
                // A peer replaces a connection only for a newer incarnation of the same node
                // id: while this process runs, that is another process holding its identity.
                if matches!(&reason, DisconnectReason::ClosedByPeer { code, .. }
                    if *code == u64::from(crate::transport::CLOSE_REPLACED))
                {
                    warn_impostor(
                        &self.shared,
                        format!(
                            "(peer {} replaced our connection with another process presenting this node's id)",
                            node_id.short()
                        ),
                    );
                }
                let now = Instant::now();
                let mut m = self.shared.membership.lock();
                let addr = m.get(&node_id).and_then(|x| x.addr);
                // A peer that closes with the normal code on shutdown has left (its Goodbye may
                // still be in flight on the control stream): report it as such.
                let left = matches!(&reason, DisconnectReason::ClosedByPeer { code, reason }
                    if *code == u64::from(crate::transport::CLOSE_NORMAL) && reason == "shutdown");
                let events = if left {
                    m.on_goodbye(node_id, incarnation, now)
                } else {
                    m.on_disconnected(node_id, incarnation, now)
                };
                drop(m);
                if !events.is_empty() && !self.shared.transport.is_revoked(node_id) {
                    // Keep trying the lost member until it is forgotten (cable cut and healed).
                    if let Some(a) = addr {
                        self.dialer.add_verified(node_id, vec![a], now);
                    }
                }
                self.publish(events);
            }
            PeerEvent::Rejected { addr, reason } => {
                warn!("rejected peer {addr}: {reason}");
            }
        }
    }

    fn on_control(&mut self, msg: crate::transport::ControlMessage) {
        let now = Instant::now();
        let from = msg.from;
        match msg.frame.msg_type {
            t if t == Join::TYPE => {
                let Ok(join) = msg.frame.decode::<Join>() else {
                    return warn!("bad join from {}", from.short());
                };
                let Some(peer) = self.shared.transport.peer(from) else {
                    return;
                };
                if peer.incarnation != join.incarnation {
                    return;
                }
                let addr = peer.listen_addr.or(Some(peer.remote_addr));
                let summary = MemberSummary {
                    node_id: from,
                    incarnation: join.incarnation,
                    name: peer.name,
                    addr,
                };
                let res = self.shared.membership.lock().on_connected(summary, now);
                match res {
                    Ok(events) => {
                        // Tell every member about a newcomer at once rather than at the next
                        // gossip round, so that nodes that only know a seed find each other
                        // before the seed can leave.
                        let newcomer = events
                            .iter()
                            .any(|e| matches!(e, MembershipEvent::MemberJoining(_)));
                        self.publish(events);
                        if newcomer {
                            self.send_gossip();
                        }
                    }
                    Err(e) => {
                        warn!("rejected peer {}: {e}", peer.remote_addr);
                        self.shared.transport.disconnect(from, &e.to_string());
                    }
                }
            }
            t if t == Heartbeat::TYPE => {
                let Ok(hb) = msg.frame.decode::<Heartbeat>() else {
                    return warn!("bad heartbeat from {}", from.short());
                };
                let mut m = self.shared.membership.lock();
                if let Some(rtt) = self.shared.transport.rtt(from) {
                    m.set_rtt(from, rtt);
                }
                let events = m.on_heartbeat(
                    from,
                    hb.incarnation,
                    hb.resources,
                    Duration::from_millis(hb.uptime_ms),
                    now,
                );
                drop(m);
                self.publish(events);
            }
            t if t == Gossip::TYPE => {
                let Ok(g) = msg.frame.decode::<Gossip>() else {
                    return warn!("bad gossip from {}", from.short());
                };
                if let Some(e) = g.members.iter().find(|e| {
                    e.node_id == self.shared.node_id && e.incarnation != self.shared.incarnation
                }) {
                    warn_impostor(
                        &self.shared,
                        format!(
                            "at {} (incarnation {}, ours {}; gossip from {})",
                            e.addr,
                            e.incarnation,
                            self.shared.incarnation,
                            from.short()
                        ),
                    );
                }
                let cands = self.shared.membership.lock().dial_candidates(&g.members);
                for (id, addr) in cands {
                    if self.shared.transport.peer(id).is_none()
                        && !self.shared.transport.is_revoked(id)
                    {
                        debug!(
                            "gossip candidate id={} addr={addr} (from {})",
                            id.short(),
                            from.short()
                        );
                        self.dialer.add_node(id, vec![addr], now);
                    }
                }
            }
            t if t == Goodbye::TYPE => {
                let Ok(g) = msg.frame.decode::<Goodbye>() else {
                    return;
                };
                let events = self
                    .shared
                    .membership
                    .lock()
                    .on_goodbye(from, g.incarnation, now);
                self.publish(events);
            }
            other => debug!(
                "unexpected control message type {other:#06x} from {}",
                from.short()
            ),
        }
    }

    fn uptime_ms(&self) -> u64 {
        self.shared.started.elapsed().as_millis() as u64
    }

    /// Refresh our own report; `None` until the compute score is known.
    fn heartbeat(&mut self, _now: Instant) -> Option<Heartbeat> {
        let score = self.compute_score?;
        let mut res: ResourceReport = resources::measure(&self.shared.config, score);
        res.roles = self.shared.roles.lock().clone();
        self.seq += 1;
        Some(Heartbeat {
            incarnation: self.shared.incarnation,
            seq: self.seq,
            uptime_ms: self.uptime_ms(),
            resources: res,
        })
    }

    fn send_heartbeats(&mut self, now: Instant) {
        let Some(mut hb) = self.heartbeat(now) else {
            return;
        };
        {
            // Re-read the roles under the membership lock so a concurrent `set_roles` (which
            // takes both locks) is never overwritten by the older value.
            let mut m = self.shared.membership.lock();
            hb.resources.roles = self.shared.roles.lock().clone();
            m.update_self(hb.resources.clone(), self.shared.started.elapsed(), now);
        }
        let peers = self.member_peers();
        self.broadcast(peers, hb);
    }

    fn send_gossip(&mut self) {
        let g = Gossip {
            members: self.shared.membership.lock().gossip(),
        };
        let peers = self.member_peers();
        self.broadcast(peers, g);
    }

    /// Connected peers that are members (sent a Join), excluding Down ones.
    fn member_peers(&self) -> Vec<NodeId> {
        let m = self.shared.membership.lock();
        self.shared
            .transport
            .peers()
            .into_iter()
            .filter(|p| {
                m.get(&p.node_id)
                    .is_some_and(|x| x.incarnation == p.incarnation)
            })
            .map(|p| p.node_id)
            .collect()
    }

    fn broadcast<M: crate::wire::WireMessage + Send + Sync + 'static>(
        &self,
        peers: Vec<NodeId>,
        msg: M,
    ) {
        let t = self.shared.transport.clone();
        let timeout = self.shared.config.timing.heartbeat;
        for p in peers {
            let t = t.clone();
            let frame = match crate::wire::Frame::from_message(&msg, Bytes::new()) {
                Ok(f) => f,
                Err(e) => return warn!("cannot encode message: {e}"),
            };
            tokio::spawn(async move {
                match tokio::time::timeout(timeout, t.send_control_frame(p, &frame)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => debug!("send to {} failed: {e}", p.short()),
                    Err(_) => debug!("send to {} timed out", p.short()),
                }
            });
        }
    }

    fn dial_due(&mut self, tx: &mpsc::Sender<DialOutcome>) {
        let t = self.shared.transport.clone();
        // Revoked nodes are never dialed (and refused if they answer a seed's address).
        let jobs = self.dialer.due(Instant::now(), |id| {
            t.peer(id).is_some() || t.is_revoked(id)
        });
        for job in jobs {
            let t = t.clone();
            let tx = tx.clone();
            let limit = self.shared.config.timing.idle_timeout + Duration::from_secs(2);
            tokio::spawn(async move {
                let key = job.key.clone();
                let result = dial(&t, job, limit).await;
                let _ = tx.send(DialOutcome { key, result }).await;
            });
        }
    }

    fn on_dial_outcome(&mut self, out: DialOutcome) {
        let now = Instant::now();
        match out.result {
            Ok(id) => self.dialer.report(&out.key, Ok(id), now),
            Err(e) if e.contains("itself") => {
                debug!("dial target {:?} is this node; dropped", out.key);
                self.dialer.remove(&out.key);
            }
            Err(e) => {
                debug!("dial {:?} failed: {e}", out.key);
                self.dialer.report(&out.key, Err(()), now);
            }
        }
    }

    async fn goodbye(&self) {
        let peers = self.member_peers();
        let g = Goodbye {
            incarnation: self.shared.incarnation,
        };
        let t = &self.shared.transport;
        let sends = peers.iter().map(|p| {
            tokio::time::timeout(
                Duration::from_millis(500),
                t.send_control(*p, &g, Bytes::new()),
            )
        });
        let results = futures::future::join_all(sends).await;
        let ok = results.iter().filter(|r| matches!(r, Ok(Ok(())))).count();
        info!("goodbye sent to {ok} peers");
    }
}

async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// Run one dial job: resolve a seed's host, try each address in order.
async fn dial(t: &Transport, job: DialJob, limit: Duration) -> Result<NodeId, String> {
    let addrs = match &job.key {
        TargetKey::Seed(host) => match tokio::net::lookup_host(host.as_str()).await {
            Ok(a) => {
                let own = t.local_addr();
                a.filter(|a| !is_own_addr(*a, own)).collect::<Vec<_>>()
            }
            Err(e) => return Err(format!("cannot resolve seed {host}: {e}")),
        },
        TargetKey::Node(_) => job.addrs.clone(),
    };
    if addrs.is_empty() {
        if matches!(job.key, TargetKey::Seed(_)) {
            return Err("seed is this node itself".to_string());
        }
        return Err("no address".to_string());
    }
    let mut last = String::new();
    for a in addrs {
        match tokio::time::timeout(limit, t.connect(a, job.expected)).await {
            Ok(Ok(p)) => return Ok(p.node_id),
            Ok(Err(e)) => last = format!("{a}: {e}"),
            Err(_) => last = format!("{a}: timed out"),
        }
    }
    Err(last)
}

/// Whether `a` is this node's own endpoint (`own` may be bound to the unspecified address).
fn is_own_addr(a: SocketAddr, own: SocketAddr) -> bool {
    a.port() == own.port()
        && (a.ip() == own.ip() || (own.ip().is_unspecified() && a.ip().is_loopback()))
}

/// Logs (at most every [`crate::discovery::IMPOSTOR_WARN_EVERY`]) that a peer's gossip shows
/// this node's id held by another process (another incarnation): two nodes share one identity.
fn warn_impostor(shared: &Shared, detail: String) {
    *shared.identity_conflict.lock() = Some(detail.clone());
    let mut last = shared.impostor_warned.lock();
    if last.is_some_and(|t| t.elapsed() < crate::discovery::IMPOSTOR_WARN_EVERY) {
        return;
    }
    *last = Some(Instant::now());
    warn!(
        "THIS NODE'S ID {} IS HELD BY ANOTHER PROCESS {detail}: two nodes share one identity and only one of them can be a member. Was the state directory copied (a cloned SD card)? Give each node its own state_dir",
        shared.node_id.short(),
    );
}

fn log_event(shared: &Shared, ev: &MembershipEvent) {
    match ev {
        MembershipEvent::MemberJoining(s) => info!("member joining {s}"),
        MembershipEvent::MemberUp(s) => info!("member up {s}"),
        MembershipEvent::MemberSuspect(s) => info!("member suspect {s}"),
        MembershipEvent::MemberDown { member, reason } => {
            info!("member down {member} reason={reason}")
        }
        MembershipEvent::MemberRemoved(s) => info!("member removed {s}"),
        MembershipEvent::HeadChanged { new, .. } => {
            let m = shared.membership.try_lock();
            let name =
                new.and_then(|id| m.as_ref().and_then(|m| m.get(&id).map(|x| x.name.clone())));
            match new {
                Some(id) => info!(
                    "head changed to name={} id={}",
                    name.as_deref().unwrap_or("?"),
                    id.short()
                ),
                None => info!("head changed to none"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_bounds_per_message_kind() {
        use crate::config::{ByteSize, Limits};
        let mut l = Limits::default();
        let s = stream_limits(&l);
        assert_eq!(s.max_body, 1 << 20, "bodies: what the codec decodes");
        assert_eq!(s.max_tail, 16 << 20, "tails: the configured max_message");
        l.max_message = ByteSize(64 << 10);
        assert_eq!(stream_limits(&l).max_tail, 64 << 10);
        assert_eq!(
            stream_limits(&l).max_body,
            1 << 20,
            "independent of max_message"
        );
        l.max_message = ByteSize(u64::MAX);
        assert_eq!(stream_limits(&l).max_tail, u32::MAX);
        let c = crate::transport::CONTROL_LIMITS;
        assert_eq!((c.max_body, c.max_tail), (256 << 10, 64 << 10));
    }

    #[test]
    fn own_addr_detection() {
        let own: SocketAddr = "0.0.0.0:7070".parse().unwrap();
        assert!(is_own_addr("127.0.0.1:7070".parse().unwrap(), own));
        assert!(!is_own_addr("127.0.0.1:7071".parse().unwrap(), own));
        assert!(!is_own_addr("10.0.0.2:7070".parse().unwrap(), own));
        let own: SocketAddr = "127.0.0.1:7100".parse().unwrap();
        assert!(is_own_addr("127.0.0.1:7100".parse().unwrap(), own));
    }
}
