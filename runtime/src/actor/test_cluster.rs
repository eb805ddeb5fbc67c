//! [`TestCluster`]: N actor-system nodes in one process, each with its own mutual-TLS QUIC
//! endpoint on 127.0.0.1, all connected to each other: for tests and examples that need a real
//! multi-node cluster without starting processes.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cluster::{ActorSystemConfig, Cluster, ClusterError};
use super::kind::RemoteActor;
use super::placement::{Resources, SpawnPlacement};
use super::registry::Registry;
use crate::identity::{Incarnation, NodeId, NodeIdentity};
use crate::security::{ClusterSecret, ClusterSecurity};
use crate::transport::{Transport, TransportConfig};

/// How long [`TestCluster`] waits for every pair of nodes to see each other.
const CONNECT_WITHIN: Duration = Duration::from_secs(10);

/// Why a [`TestCluster`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum TestClusterError {
    /// A node identity could not be generated.
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Security(#[from] crate::security::SecurityError),
    /// An endpoint could not bind or connect.
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
    /// An actor system could not start.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// Two nodes did not see each other in time.
    #[error("nodes {0} and {1} did not connect within {CONNECT_WITHIN:?}")]
    NotConnected(usize, usize),
}

/// One node of a [`TestCluster`].
struct TestNode {
    cluster: Cluster,
    transport: Transport,
    alive: std::sync::atomic::AtomicBool,
}

/// N nodes in one process over real loopback QUIC (one shared cluster secret, a fresh identity
/// per node, every node connected to every other). Nodes are numbered from 0.
///
/// ```
/// # use edgeray_runtime::actor::{ActorCtx, ActorError, Envelope, RemoteActor, TestCluster};
/// # use edgeray_runtime::cluster::SpawnOptions;
/// # struct Echo;
/// # impl RemoteActor for Echo {
/// #     type Args = (); type Msg = u32; type Reply = u32;
/// #     fn kind() -> &'static str { "doc.echo" }
/// #     fn create(_: (), _: ActorCtx) -> Result<Self, ActorError> { Ok(Echo) }
/// #     async fn handle(&mut self, m: Envelope<u32>) -> Result<Envelope<u32>, ActorError> {
/// #         Ok(m)
/// #     }
/// # }
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let tc = TestCluster::start(2).register::<Echo>().await?;
/// let on_1 = SpawnOptions::new().on(tc.node_id(1));
/// let echo = tc.node(0).spawn::<Echo>((), on_1).await?;
/// assert_eq!(echo.ask(7, std::time::Duration::from_secs(5)).await?.msg, 7);
/// tc.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub struct TestCluster {
    nodes: Vec<TestNode>,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.nodes
                    .iter()
                    .map(|n| (n.cluster.node_id().short(), n.is_alive())),
            )
            .finish()
    }
}

impl TestCluster {
    /// Starts `n` nodes: `.await` it directly (no actor kinds), or configure it first
    /// ([`TestClusterBuilder::register`], capacities, ...) and then `.await` it.
    pub fn start(n: usize) -> TestClusterBuilder {
        TestClusterBuilder {
            registry: Registry::new(),
            nodes: vec![NodeSpec::default(); n],
            workers: 2,
            placement: None,
            secret: None,
        }
    }

    /// Node `i`'s actor system (also after [`TestCluster::kill`]: it is then shut down).
    pub fn node(&self, i: usize) -> &Cluster {
        &self.nodes[i].cluster
    }

    /// Node `i`'s id.
    pub fn node_id(&self, i: usize) -> NodeId {
        self.nodes[i].cluster.node_id()
    }

    /// The index of the node with this id.
    pub fn index_of(&self, node: NodeId) -> Option<usize> {
        self.nodes.iter().position(|n| n.cluster.node_id() == node)
    }

    /// Number of nodes (killed ones included).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether node `i` has not been killed.
    pub fn is_alive(&self, i: usize) -> bool {
        self.nodes[i].is_alive()
    }

    /// Node `i`'s transport.
    pub fn transport(&self, i: usize) -> &Transport {
        &self.nodes[i].transport
    }

    /// Takes node `i` down the way a crashed process goes: its actors stop and its endpoint
    /// closes, so the other nodes see the connection end (their watches of its actors resolve
    /// with `NodeDown`).
    pub async fn kill(&self, i: usize) {
        let n = &self.nodes[i];
        if n.alive.swap(false, std::sync::atomic::Ordering::AcqRel) {
            n.cluster.shutdown().await;
            n.transport.shutdown().await;
        }
    }

    /// Shuts every node down.
    pub async fn shutdown(self) {
        for i in 0..self.nodes.len() {
            self.kill(i).await;
        }
    }
}

impl TestNode {
    fn is_alive(&self) -> bool {
        self.alive.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Per-node settings of a [`TestCluster`].
#[derive(Debug, Clone)]
struct NodeSpec {
    capacity: Resources,
    registry: Option<Registry>,
    stream_window: Option<u32>,
}

impl Default for NodeSpec {
    fn default() -> Self {
        NodeSpec {
            capacity: Resources {
                memory_bytes: u64::MAX,
                power_watts: f64::INFINITY,
                ..Default::default()
            },
            registry: None,
            stream_window: None,
        }
    }
}

/// Settings of a [`TestCluster`] before it starts; `.await` it to start the nodes.
#[derive(Clone)]
pub struct TestClusterBuilder {
    registry: Registry,
    nodes: Vec<NodeSpec>,
    workers: usize,
    placement: Option<Arc<dyn SpawnPlacement>>,
    secret: Option<ClusterSecret>,
}

impl std::fmt::Debug for TestClusterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestClusterBuilder")
            .field("registry", &self.registry)
            .field("nodes", &self.nodes)
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

impl TestClusterBuilder {
    /// Registers actor kind `A` on every node (except nodes given their own registry).
    pub fn register<A: RemoteActor>(mut self) -> Self {
        self.registry.register::<A>();
        self
    }

    /// The kinds node `i` can create, instead of the shared ones.
    pub fn node_registry(mut self, i: usize, registry: Registry) -> Self {
        self.nodes[i].registry = Some(registry);
        self
    }

    /// What node `i` offers to resource reservations (default: unlimited).
    pub fn capacity(mut self, i: usize, capacity: Resources) -> Self {
        self.nodes[i].capacity = capacity;
        self
    }

    /// Node `i`'s QUIC receive window per stream (small windows make back-pressure visible).
    pub fn stream_window(mut self, i: usize, bytes: u32) -> Self {
        self.nodes[i].stream_window = Some(bytes);
        self
    }

    /// The placement function of every node (default [`FirstFit`](super::FirstFit)).
    pub fn placement(mut self, placement: impl SpawnPlacement + 'static) -> Self {
        self.placement = Some(Arc::new(placement));
        self
    }

    /// The cluster secret (default: a random one).
    pub fn secret(mut self, secret: ClusterSecret) -> Self {
        self.secret = Some(secret);
        self
    }

    /// Actor threads per node (default 2).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    async fn build(self) -> Result<TestCluster, TestClusterError> {
        let secret = self.secret.clone().unwrap_or_else(ClusterSecret::random);
        let mut nodes = Vec::with_capacity(self.nodes.len());
        for (i, spec) in self.nodes.into_iter().enumerate() {
            let identity = NodeIdentity::generate()?;
            let security = ClusterSecurity::new(&secret, &identity)?;
            let mut tc = TransportConfig::new(([127, 0, 0, 1], 0).into(), format!("node{i}"));
            if let Some(w) = spec.stream_window {
                tc.stream_receive_window = w;
            }
            let transport = Transport::bind(tc, security, Incarnation::random()).await?;
            let mut config = ActorSystemConfig {
                workers: self.workers,
                capacity: spec.capacity,
                ..Default::default()
            };
            if let Some(p) = &self.placement {
                config.placement = p.clone();
            }
            let registry = spec.registry.unwrap_or_else(|| self.registry.clone());
            let cluster = Cluster::with_transport(transport.clone(), registry, config)?;
            nodes.push(TestNode {
                cluster,
                transport,
                alive: std::sync::atomic::AtomicBool::new(true),
            });
        }
        for j in 0..nodes.len() {
            for i in 0..j {
                let (a, b) = (&nodes[i].transport, &nodes[j].transport);
                b.connect(a.local_addr(), Some(a.node_id())).await?;
            }
        }
        let deadline = Instant::now() + CONNECT_WITHIN;
        for (i, a) in nodes.iter().enumerate() {
            for (j, b) in nodes.iter().enumerate() {
                while i != j && a.transport.peer(b.transport.node_id()).is_none() {
                    if Instant::now() > deadline {
                        return Err(TestClusterError::NotConnected(i, j));
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        Ok(TestCluster { nodes })
    }
}

impl IntoFuture for TestClusterBuilder {
    type Output = Result<TestCluster, TestClusterError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.build())
    }
}
