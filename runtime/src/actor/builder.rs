//! [`ClusterBuilder`]: the actor kinds and actor-system settings of a node, then one call that
//! starts it standalone, on a transport, or as a full cluster node.

use std::sync::Arc;

use super::cluster::{ActorSystemConfig, Cluster, ClusterError};
use super::kind::RemoteActor;
use super::placement::{Resources, SpawnPlacement};
use super::registry::Registry;
use crate::config::ClusterConfig;
use crate::transport::Transport;

/// Builds a [`Cluster`] handle; start with [`Cluster::builder`].
///
/// ```
/// # use edgeray_runtime::actor::{ActorCtx, ActorError, Envelope, RemoteActor};
/// # struct Echo;
/// # impl RemoteActor for Echo {
/// #     type Args = (); type Msg = String; type Reply = String;
/// #     fn kind() -> &'static str { "doc.echo" }
/// #     fn create(_: (), _: ActorCtx) -> Result<Self, ActorError> { Ok(Echo) }
/// #     async fn handle(&mut self, m: Envelope<String>) -> Result<Envelope<String>, ActorError> {
/// #         Ok(m)
/// #     }
/// # }
/// use edgeray_runtime::cluster::{Cluster, SpawnOptions};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cluster = Cluster::builder().register::<Echo>().workers(1).local().unwrap();
/// let echo = cluster.spawn::<Echo>((), SpawnOptions::new()).await.unwrap();
/// let t = std::time::Duration::from_secs(5);
/// assert_eq!(echo.ask("hi".to_string(), t).await.unwrap().msg, "hi");
/// cluster.shutdown().await;
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ClusterBuilder {
    registry: Registry,
    actors: ActorSystemConfig,
}

impl ClusterBuilder {
    /// A builder with no actor kinds and default settings ([`ActorSystemConfig::default`]).
    pub fn new() -> Self {
        ClusterBuilder::default()
    }

    /// Adds actor kind `A` to the kinds this node can create.
    pub fn register<A: RemoteActor>(mut self) -> Self {
        self.registry.register::<A>();
        self
    }

    /// Replaces the kinds this node can create.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Replaces all actor-system settings.
    pub fn config(mut self, actors: ActorSystemConfig) -> Self {
        self.actors = actors;
        self
    }

    /// Number of actor threads.
    pub fn workers(mut self, workers: usize) -> Self {
        self.actors.workers = workers;
        self
    }

    /// What this node offers to actors' resource reservations.
    pub fn capacity(mut self, capacity: Resources) -> Self {
        self.actors.capacity = capacity;
        self
    }

    /// The placement function used by spawns without an explicit node.
    pub fn placement(mut self, placement: impl SpawnPlacement + 'static) -> Self {
        self.actors.placement = Arc::new(placement);
        self
    }

    /// A standalone actor system, no networking ([`Cluster::local`]).
    pub fn local(self) -> Result<Cluster, ClusterError> {
        Cluster::local(self.registry, self.actors)
    }

    /// An actor system reachable over `transport` ([`Cluster::with_transport`]).
    pub fn with_transport(self, transport: Transport) -> Result<Cluster, ClusterError> {
        Cluster::with_transport(transport, self.registry, self.actors)
    }

    /// A full cluster node from its configuration ([`Cluster::start`]).
    pub async fn start(self, config: ClusterConfig) -> Result<Cluster, ClusterError> {
        Cluster::start(config, self.registry, self.actors).await
    }
}
