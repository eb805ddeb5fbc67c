//! The public entry point of the actor system: [`Cluster`] spawns actors (locally, on a chosen
//! node, or wherever the placement function finds room), looks them up by name, messages them
//! through [`ActorRef`]s and watches them die.

use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use crate::actor::local::{LocalActors, LocalSpawn, OnStop};
use crate::actor::placement::{Budget, Candidate, Ledger, SpawnPlacement};
use crate::actor::remote::{Remote, RpcRequest, RpcResponse};
use crate::actor::{
    ActorId, ActorRef, AskError, Envelope, FirstFit, Registry, RemoteActor, Resources, SpawnError,
    StopReason, TellError, ThreadsError,
};
use crate::identity::NodeId;
use crate::membership::{Member, MembershipEvent};
use crate::node::{Node, NodeHandle};
use crate::transport::Transport;

/// Where to spawn an actor and with what.
#[derive(Debug, Clone, Default)]
pub struct SpawnOptions {
    /// A cluster-wide lookup name (unique per node).
    pub name: Option<String>,
    /// An explicit node; wins over placement. `None` = let the placement function choose.
    pub node: Option<NodeId>,
    /// Resources reserved on the node while the actor lives.
    pub resources: Resources,
    /// Mailbox capacity (0 = [`crate::actor::DEFAULT_MAILBOX`]).
    pub mailbox: usize,
}

impl SpawnOptions {
    /// Default options (placement chooses, no name, no resource needs).
    pub fn new() -> Self {
        SpawnOptions::default()
    }
    /// Sets the lookup name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    /// Pins the actor to a node.
    pub fn on(mut self, node: NodeId) -> Self {
        self.node = Some(node);
        self
    }
    /// Sets the resource needs.
    pub fn resources(mut self, r: Resources) -> Self {
        self.resources = r;
        self
    }
    /// Sets the mailbox capacity.
    pub fn mailbox(mut self, capacity: usize) -> Self {
        self.mailbox = capacity;
        self
    }
}

/// Errors starting a cluster handle.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The actor threads could not start.
    #[error(transparent)]
    Threads(#[from] ThreadsError),
    /// The node (config, identity, transport, discovery) could not start.
    #[error(transparent)]
    Node(#[from] crate::node::NodeError),
}

/// Settings of the local actor system.
#[derive(Clone)]
pub struct ActorSystemConfig {
    /// Actor worker threads (actix arbiters).
    pub workers: usize,
    /// What this node offers to actors' resource reservations.
    pub capacity: Resources,
    /// The placement function.
    pub placement: Arc<dyn SpawnPlacement>,
}

impl std::fmt::Debug for ActorSystemConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorSystemConfig")
            .field("workers", &self.workers)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl ActorSystemConfig {
    /// Defaults, with the capacity taken from a node's configuration: `memory_budget` (else the
    /// measured free memory) and `power_budget` (else unlimited).
    pub fn from_cluster_config(config: &crate::config::ClusterConfig) -> Self {
        let report = crate::resources::measure(config, 0.0);
        let capacity = Resources {
            memory_bytes: report.memory_budget,
            power_watts: config.power_budget.map_or(f64::INFINITY, |p| p.watts()),
            ..Default::default()
        };
        ActorSystemConfig {
            capacity,
            ..Default::default()
        }
    }
}

impl Default for ActorSystemConfig {
    fn default() -> Self {
        ActorSystemConfig {
            workers: std::thread::available_parallelism()
                .map(|n| n.get().min(4))
                .unwrap_or(2),
            capacity: Resources {
                memory_bytes: u64::MAX,
                power_watts: f64::INFINITY,
                ..Default::default()
            },
            placement: Arc::new(FirstFit),
        }
    }
}

/// A node's handle on the cluster's actor system. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    pub(crate) inner: Arc<Inner>,
}

/// Future of a death watch: resolves with the reason the actor is gone.
pub type WatchFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = StopReason> + Send + 'static>>;

/// A weak [`Cluster`] (held by actor contexts to avoid reference cycles).
#[derive(Clone, Debug)]
pub struct WeakCluster(Weak<Inner>);

impl WeakCluster {
    /// The cluster, if it is still alive.
    pub fn upgrade(&self) -> Option<Cluster> {
        self.0.upgrade().map(|inner| Cluster { inner })
    }
}

pub(crate) struct Inner {
    pub(crate) node: NodeId,
    pub(crate) registry: Registry,
    pub(crate) locals: LocalActors,
    pub(crate) ledger: Arc<Mutex<Ledger>>,
    pub(crate) placement: Arc<dyn SpawnPlacement>,
    pub(crate) remote: Option<Arc<Remote>>,
    membership: std::sync::OnceLock<NodeHandle>,
    /// This node's process-group table.
    pub(crate) groups: Arc<crate::actor::group::Groups>,
    /// This node's part of the cluster-wide names.
    pub(crate) names: Arc<crate::actor::names::Names>,
    /// Set by [`Cluster::drain`]: no new actors here, not a placement candidate.
    pub(crate) draining: std::sync::atomic::AtomicBool,
    next_ticket: std::sync::atomic::AtomicU64,
    /// Stop requests refused because they came from a node that did not spawn the actor.
    pub(crate) refused_stops: std::sync::atomic::AtomicU64,
    /// Node-local state shared by the actors of this node, one value per type.
    extensions: dashmap::DashMap<std::any::TypeId, Arc<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl Cluster {
    /// A [`ClusterBuilder`](crate::actor::ClusterBuilder): actor kinds and settings, then
    /// `local()`, `with_transport(..)` or `start(config)`.
    pub fn builder() -> crate::actor::ClusterBuilder {
        crate::actor::ClusterBuilder::new()
    }

    /// A single-node actor system (no networking) with a random node id: for tests and
    /// programs that only need local actors.
    pub fn local(registry: Registry, config: ActorSystemConfig) -> Result<Cluster, ClusterError> {
        Self::build(NodeId(rand::random()), registry, config, None)
    }

    /// An actor system reachable over `transport` (R1's QUIC endpoint): registers the actor
    /// stream handlers, then starts the transport accepting connections. Connecting to peers
    /// stays the transport's (or the node's) job; every connected peer is a possible placement
    /// target. Must run inside a tokio runtime.
    pub fn with_transport(
        transport: Transport,
        registry: Registry,
        config: ActorSystemConfig,
    ) -> Result<Cluster, ClusterError> {
        let node = transport.node_id();
        let remote = Arc::new(Remote::new(transport.clone()));
        let cluster = Self::build(node, registry, config, Some(remote.clone()))?;
        remote.serve(Arc::downgrade(&cluster.inner));
        remote.follow_transport(transport.subscribe());
        transport.start();
        Ok(cluster)
    }

    /// Starts a full cluster node from its configuration (R2's [`Node`]: identity, mTLS QUIC,
    /// mDNS/seeds, membership) with this actor registry, and joins the cluster. Placement
    /// candidates and lookups cover the Up members.
    pub async fn start(
        config: crate::config::ClusterConfig,
        registry: Registry,
        actors: ActorSystemConfig,
    ) -> Result<Cluster, ClusterError> {
        let node = Node::bind(config).await?;
        Self::start_node(node, registry, actors).await
    }

    /// Like [`Cluster::start`] with a node already bound (e.g. to register more handlers on its
    /// transport first).
    pub async fn start_node(
        node: Node,
        registry: Registry,
        actors: ActorSystemConfig,
    ) -> Result<Cluster, ClusterError> {
        let transport = node.transport().clone();
        let remote = Arc::new(Remote::new(transport));
        let cluster = Self::build(
            node.handle().node_id(),
            registry,
            actors,
            Some(remote.clone()),
        )?;
        remote.serve(Arc::downgrade(&cluster.inner));
        let events = node.handle().subscribe();
        let handle = node.run().await?;
        let _ = cluster.inner.membership.set(handle);
        remote.follow_membership(events);
        Ok(cluster)
    }

    pub(crate) fn from_weak(w: &Weak<Inner>) -> Option<Cluster> {
        w.upgrade().map(|inner| Cluster { inner })
    }

    fn build(
        node: NodeId,
        registry: Registry,
        config: ActorSystemConfig,
        remote: Option<Arc<Remote>>,
    ) -> Result<Cluster, ClusterError> {
        let locals = LocalActors::start(config.workers)?;
        Ok(Cluster {
            inner: Arc::new(Inner {
                node,
                registry,
                locals,
                ledger: Arc::new(Mutex::new(Ledger::new(config.capacity))),
                placement: config.placement,
                remote,
                membership: std::sync::OnceLock::new(),
                draining: std::sync::atomic::AtomicBool::new(false),
                groups: Arc::default(),
                names: Arc::default(),
                next_ticket: std::sync::atomic::AtomicU64::new(1 << 63),
                refused_stops: std::sync::atomic::AtomicU64::new(0),
                extensions: dashmap::DashMap::new(),
            }),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.node
    }

    /// The kinds this node can create.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Stores a value of type `T` as node-local state that this node's actors reach through
    /// [`Cluster::extension`] (or [`crate::actor::ActorCtx::extension`]): settings an actor
    /// built from serde arguments cannot carry (a cache folder, a routing table). Replaces and
    /// returns the previous value of that type.
    pub fn insert_extension<T: Send + Sync + 'static>(&self, value: T) -> Option<Arc<T>> {
        self.inner
            .extensions
            .insert(std::any::TypeId::of::<T>(), Arc::new(value))
            .and_then(|old| old.downcast::<T>().ok())
    }

    /// The node-local value of type `T`, if one was inserted.
    pub fn extension<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.inner
            .extensions
            .get(&std::any::TypeId::of::<T>())
            .and_then(|v| v.value().clone().downcast::<T>().ok())
    }

    /// The node-local value of type `T`, inserted by `init` on first use.
    pub fn extension_or_insert_with<T: Send + Sync + 'static>(
        &self,
        init: impl FnOnce() -> T,
    ) -> Arc<T> {
        let v = self
            .inner
            .extensions
            .entry(std::any::TypeId::of::<T>())
            .or_insert_with(|| Arc::new(init()))
            .value()
            .clone();
        v.downcast::<T>()
            .expect("an extension is stored under its own type id")
    }

    /// A weak handle.
    pub fn downgrade(&self) -> WeakCluster {
        WeakCluster(Arc::downgrade(&self.inner))
    }

    /// This node's resource budget (capacity and current reservations).
    pub fn local_budget(&self) -> Budget {
        self.inner.ledger.lock().budget()
    }

    /// Stop requests for this node's actors that were refused because they came from a node
    /// other than the one that spawned the actor (since the node started).
    pub fn refused_stops(&self) -> u64 {
        self.inner
            .refused_stops
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Number of live actors on this node.
    pub fn local_actor_count(&self) -> usize {
        self.inner.locals.len()
    }

    /// Spawns an actor of kind `A`: on `opts.node` if given, else on the node the placement
    /// function picks among this node (first) and the reachable nodes that know the kind. When
    /// the picked node refuses (no room any more, draining, down), the placement function picks
    /// again among the remaining candidates; the last refusal is returned when none is left. Its
    /// resources stay reserved on that node until it stops.
    pub async fn spawn<A: RemoteActor>(
        &self,
        args: A::Args,
        opts: SpawnOptions,
    ) -> Result<ActorRef<A>, SpawnError> {
        if let Some(node) = opts.node {
            return if node == self.inner.node {
                self.spawn_here::<A>(args, &opts).await
            } else {
                let args = encode_args(&args)?;
                self.spawn_there::<A>(node, args, &opts).await
            };
        }
        let mut candidates = self.candidates(A::kind()).await;
        let mut args = Some(args);
        let mut encoded: Option<Vec<u8>> = None;
        let mut refused: Option<SpawnError> = None;
        loop {
            let Some(target) = self.inner.placement.place(&opts.resources, &candidates) else {
                return Err(refused
                    .unwrap_or_else(|| SpawnError::NoNodeFits(format!("{:?}", opts.resources))));
            };
            // The arguments are encoded once, before the local try consumes them, whenever
            // another node may still need them.
            let remote_next = target != self.inner.node || candidates.len() > 1;
            if remote_next
                && encoded.is_none()
                && let Some(a) = &args
            {
                encoded = Some(encode_args(a)?);
            }
            let r = match (target == self.inner.node, args.take()) {
                (true, Some(a)) => self.spawn_here::<A>(a, &opts).await,
                (_, a) => {
                    args = a;
                    let Some(bytes) = encoded.clone() else {
                        return Err(SpawnError::Codec("arguments already consumed".into()));
                    };
                    self.spawn_there::<A>(target, bytes, &opts).await
                }
            };
            match r {
                Err(
                    e @ (SpawnError::NoNodeFits(_)
                    | SpawnError::Draining
                    | SpawnError::NodeDown(_)
                    | SpawnError::Shutdown
                    | SpawnError::UnknownKind(_)),
                ) => {
                    tracing::debug!(kind = A::kind(), node = %target.short(), error = %e,
                        "spawn refused; trying the next candidate");
                    candidates.retain(|c| c.node != target);
                    refused = Some(e);
                }
                other => return other,
            }
        }
    }

    /// Spawns on another node from encoded arguments.
    async fn spawn_there<A: RemoteActor>(
        &self,
        node: NodeId,
        args: Vec<u8>,
        opts: &SpawnOptions,
    ) -> Result<ActorRef<A>, SpawnError> {
        let local = self.remote_spawn(node, A::kind(), args, opts).await?;
        Ok(ActorRef::new(ActorId { node, local }, None, self.clone()))
    }

    async fn spawn_here<A: RemoteActor>(
        &self,
        args: A::Args,
        opts: &SpawnOptions,
    ) -> Result<ActorRef<A>, SpawnError> {
        if let Some(name) = &opts.name {
            self.inner.registry.check_name(name, A::kind())?;
        }
        let on_stop = self.reserve(&opts.resources)?;
        let actor = self
            .inner
            .locals
            .spawn::<A>(args, self.local_spawn(opts, None), Some(on_stop))
            .await?;
        let id = ActorId {
            node: self.inner.node,
            local: actor.local_id(),
        };
        Ok(ActorRef::new(id, Some(actor), self.clone()))
    }

    /// Spawns by kind name with encoded args (the remote side of a spawn request, asked for by
    /// the peer `from`).
    pub(crate) async fn spawn_encoded(
        &self,
        kind: &str,
        args: &[u8],
        opts: &SpawnOptions,
        from: Option<NodeId>,
    ) -> Result<u64, SpawnError> {
        let entry = self
            .inner
            .registry
            .get(kind)
            .ok_or_else(|| SpawnError::UnknownKind(kind.to_string()))?;
        if let Some(name) = &opts.name {
            self.inner.registry.check_name(name, kind)?;
        }
        let on_stop = self.reserve(&opts.resources)?;
        entry
            .spawn_encoded(
                &self.inner.locals,
                args,
                self.local_spawn(opts, from),
                Some(on_stop),
            )
            .await
    }

    fn local_spawn(&self, opts: &SpawnOptions, spawned_by: Option<NodeId>) -> LocalSpawn {
        LocalSpawn {
            spawned_by,
            name: opts.name.clone(),
            mailbox: opts.mailbox,
            node: Some(self.inner.node),
            cluster: Some(self.downgrade()),
        }
    }

    /// Reserves resources under a fresh ticket; the returned callback releases them. Refused
    /// while the node drains.
    fn reserve(&self, need: &Resources) -> Result<OnStop, SpawnError> {
        if self.is_draining() {
            return Err(SpawnError::Draining);
        }
        let ticket = self
            .inner
            .next_ticket
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner
            .ledger
            .lock()
            .reserve(ticket, need)
            .map_err(|e| SpawnError::NoNodeFits(e.to_string()))?;
        let ledger = self.inner.ledger.clone();
        Ok(Box::new(move |_reason: &StopReason| {
            ledger.lock().release(ticket)
        }))
    }

    /// Placement candidates: this node first, then the reachable remote nodes.
    pub(crate) async fn candidates(&self, kind: &str) -> Vec<Candidate> {
        let mut out = Vec::new();
        if self.inner.registry.contains(kind) && !self.is_draining() {
            out.push(Candidate {
                node: self.inner.node,
                budget: self.local_budget(),
            });
        }
        out.extend(self.remote_budgets(kind).await);
        out
    }

    /// A reference to an actor known by id (e.g. received inside a message). The kind is not
    /// checked until the first message.
    pub fn actor_ref<A: RemoteActor>(&self, id: ActorId) -> ActorRef<A> {
        let local = if id.node == self.inner.node {
            self.inner.locals.typed::<A>(id.local)
        } else {
            None
        };
        ActorRef::new(id, local, self.clone())
    }

    /// Finds an actor of kind `A` registered under `name`: on this node first, then on the
    /// other nodes.
    pub async fn lookup<A: RemoteActor>(&self, name: &str) -> Option<ActorRef<A>> {
        if let Some(cell) = self.inner.locals.by_name(name)
            && cell.kind() == A::kind()
        {
            return Some(self.actor_ref::<A>(ActorId {
                node: self.inner.node,
                local: cell.local_id(),
            }));
        }
        let id = self.remote_lookup(name, A::kind()).await?;
        Some(ActorRef::new(id, None, self.clone()))
    }

    /// Finds an actor of kind `A` registered under `name` on `node` only (this node or one
    /// peer); `None` when it is not there or the node does not answer.
    pub async fn lookup_on<A: RemoteActor>(&self, node: NodeId, name: &str) -> Option<ActorRef<A>> {
        if node == self.inner.node {
            let cell = self.inner.locals.by_name(name)?;
            if cell.kind() != A::kind() {
                return None;
            }
            return Some(self.actor_ref::<A>(ActorId {
                node,
                local: cell.local_id(),
            }));
        }
        let remote = self.inner.remote.as_ref()?;
        let req = RpcRequest::Lookup {
            name: name.to_string(),
            kind: A::kind().to_string(),
        };
        match remote.rpc(node, &req).await {
            Ok(RpcResponse::Found(Some(local))) => {
                Some(ActorRef::new(ActorId { node, local }, None, self.clone()))
            }
            _ => None,
        }
    }

    /// Resolves when the actor with this id stops or its node goes down.
    pub fn watch(&self, id: ActorId) -> WatchFuture {
        if id.node == self.inner.node {
            return match self.inner.locals.get(id.local) {
                Some(cell) => Box::pin(cell.life().wait()),
                None => Box::pin(std::future::ready(
                    self.inner
                        .locals
                        .stop_reason(id.local)
                        .unwrap_or(StopReason::NotFound),
                )),
            };
        }
        match self.inner.remote.as_ref() {
            // Registered at once (not when first polled), so a stop right after is seen.
            Some(r) => Box::pin(r.watch(id)),
            None => Box::pin(std::future::ready(StopReason::NodeDown)),
        }
    }

    /// Stops every local actor and the actor threads; with a node ([`Cluster::start`]) also
    /// leaves the cluster and closes the endpoint. A transport passed to
    /// [`Cluster::with_transport`] stays open (shut it down yourself).
    pub async fn shutdown(&self) {
        self.inner.locals.shutdown();
        if let Some(r) = &self.inner.remote {
            r.shutdown();
        }
        if let Some(n) = self.node() {
            n.shutdown().await;
        }
    }

    /// The transport, when this cluster is networked.
    pub fn transport(&self) -> Option<&Transport> {
        self.inner.remote.as_ref().map(|r| r.transport())
    }

    /// The connected remote nodes.
    pub fn peers(&self) -> Vec<NodeId> {
        if let Some(n) = self.node() {
            return n
                .up_members()
                .into_iter()
                .filter(|m| !m.is_self)
                .map(|m| m.node_id)
                .collect();
        }
        self.transport()
            .map(|t| t.peers().into_iter().map(|p| p.node_id).collect())
            .unwrap_or_default()
    }

    /// The node handle (membership, status), when started with [`Cluster::start`].
    pub fn node(&self) -> Option<&NodeHandle> {
        self.inner.membership.get()
    }

    /// The cluster members (this node included; Down ones until forgotten). Empty without a node.
    pub fn members(&self) -> Vec<Member> {
        self.node().map(|n| n.members()).unwrap_or_default()
    }

    /// Membership events from now on (`None` without a node).
    pub fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<MembershipEvent>> {
        self.node().map(|n| n.subscribe())
    }

    fn remote(&self, node: NodeId) -> Result<&Arc<Remote>, String> {
        self.inner
            .remote
            .as_ref()
            .ok_or_else(|| format!("{} is not reachable: no transport", node.short()))
    }

    // ---- remote operations (see crate::actor::remote) ----

    pub(crate) async fn remote_tell<A: RemoteActor>(
        &self,
        id: ActorId,
        env: Envelope<A::Msg>,
    ) -> Result<(), TellError> {
        if id.node == self.inner.node {
            return match self.inner.locals.typed::<A>(id.local) {
                Some(l) => l.tell(env).await,
                None => Err(TellError::ActorDead),
            };
        }
        let remote = self.remote(id.node).map_err(TellError::NodeDown)?;
        let body = crate::codec::encode(&env.msg).map_err(|e| TellError::Codec(e.to_string()))?;
        remote.tell(id, body, env.tail).await
    }

    pub(crate) async fn remote_try_tell<A: RemoteActor>(
        &self,
        id: ActorId,
        env: Envelope<A::Msg>,
    ) -> Result<(), TellError> {
        if id.node == self.inner.node {
            return match self.inner.locals.typed::<A>(id.local) {
                Some(l) => l.try_tell(env),
                None => Err(TellError::ActorDead),
            };
        }
        let remote = self.remote(id.node).map_err(TellError::NodeDown)?;
        let body = crate::codec::encode(&env.msg).map_err(|e| TellError::Codec(e.to_string()))?;
        remote.try_tell(id, body, env.tail).await
    }

    pub(crate) async fn remote_ask<A: RemoteActor>(
        &self,
        id: ActorId,
        env: Envelope<A::Msg>,
        timeout: Duration,
    ) -> Result<Envelope<A::Reply>, AskError> {
        if id.node == self.inner.node {
            return match self.inner.locals.typed::<A>(id.local) {
                Some(l) => l.ask(env, timeout).await,
                None => Err(AskError::ActorDead),
            };
        }
        let remote = self.remote(id.node).map_err(AskError::NodeDown)?;
        let body = crate::codec::encode(&env.msg).map_err(|e| AskError::Codec(e.to_string()))?;
        let (body, tail) = tokio::time::timeout(timeout, remote.ask(id, body, env.tail))
            .await
            .unwrap_or(Err(AskError::Timeout))?;
        let msg = crate::codec::decode(&body).map_err(|e| AskError::Codec(e.to_string()))?;
        Ok(Envelope::with_tail(msg, tail))
    }

    pub(crate) async fn remote_stop(&self, id: ActorId) {
        if id.node == self.inner.node {
            if let Some(c) = self.inner.locals.get(id.local) {
                c.stop();
            }
            return;
        }
        if let Ok(r) = self.remote(id.node)
            && let Ok(RpcResponse::StopRefused) =
                r.rpc(id.node, &RpcRequest::Stop { local: id.local }).await
        {
            tracing::warn!(actor = %id,
                "stop refused: only the node that spawned an actor may stop it from afar");
        }
    }

    async fn remote_spawn(
        &self,
        node: NodeId,
        kind: &str,
        args: Vec<u8>,
        opts: &SpawnOptions,
    ) -> Result<u64, SpawnError> {
        let remote = self.remote(node).map_err(SpawnError::NodeDown)?;
        let req = RpcRequest::Spawn {
            kind: kind.to_string(),
            args,
            name: opts.name.clone(),
            resources: opts.resources.clone(),
            mailbox: u32::try_from(opts.mailbox).unwrap_or(u32::MAX),
        };
        match remote.rpc(node, &req).await {
            Ok(RpcResponse::Spawned(r)) => r,
            Ok(other) => Err(SpawnError::NodeDown(format!("unexpected answer {other:?}"))),
            Err(e) => Err(SpawnError::NodeDown(format!("{}: {e}", node.short()))),
        }
    }

    /// Budgets of the connected nodes that know `kind` (asked in parallel).
    async fn remote_budgets(&self, kind: &str) -> Vec<Candidate> {
        let Some(remote) = self.inner.remote.as_ref() else {
            return Vec::new();
        };
        let mut peers = self.peers();
        peers.sort();
        let asks = peers.into_iter().map(|node| async move {
            match remote
                .rpc(
                    node,
                    &RpcRequest::Budget {
                        kind: kind.to_string(),
                    },
                )
                .await
            {
                Ok(RpcResponse::Budget(Some(budget))) => Some(Candidate { node, budget }),
                _ => None,
            }
        });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    async fn remote_lookup(&self, name: &str, kind: &str) -> Option<ActorId> {
        let remote = self.inner.remote.as_ref()?;
        let mut peers = self.peers();
        peers.sort();
        let asks = peers.into_iter().map(|node| async move {
            let req = RpcRequest::Lookup {
                name: name.to_string(),
                kind: kind.to_string(),
            };
            match remote.rpc(node, &req).await {
                Ok(RpcResponse::Found(Some(local))) => Some(ActorId { node, local }),
                _ => None,
            }
        });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .next()
    }
}

fn encode_args<T: serde::Serialize>(args: &T) -> Result<Vec<u8>, SpawnError> {
    crate::codec::encode(args).map_err(|e| SpawnError::Codec(e.to_string()))
}
