//! The user-facing actor trait: a named kind with serde arguments, message and reply types.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::envelope::Envelope;
use super::error::ActorError;

/// An actor kind that can be spawned by name on any node whose [`Registry`](super::Registry)
/// knows it, and addressed with [`ActorRef`](super::ActorRef) from anywhere in the cluster.
///
/// The actor runs on one of its node's actor threads; messages are handled one at a time (the
/// next message is taken only when `handle`'s future has finished). Heavy computation inside
/// `handle` should go to `tokio::task::spawn_blocking` so the actor thread stays responsive.
pub trait RemoteActor: Sized + 'static {
    /// Constructor arguments (sent to the node that creates the actor).
    type Args: Serialize + DeserializeOwned + Send + 'static;
    /// Message type.
    type Msg: Serialize + DeserializeOwned + Send + 'static;
    /// Reply type (for `ask`; a `tell` discards it).
    type Reply: Serialize + DeserializeOwned + Send + 'static;

    /// The kind's cluster-wide name (the same on every node).
    fn kind() -> &'static str;

    /// Builds the actor from its arguments, on the actor thread that will run it.
    fn create(args: Self::Args, ctx: ActorCtx) -> Result<Self, ActorError>;

    /// Handles one message. An `Err` is returned to an `ask` caller as `AskError::Remote`; the
    /// actor keeps running. A panic stops the actor.
    fn handle(
        &mut self,
        msg: Envelope<Self::Msg>,
    ) -> impl Future<Output = Result<Envelope<Self::Reply>, ActorError>>;

    /// Called once when the actor stops (for any reason).
    fn stopped(&mut self) {}
}

/// Context handed to an actor at creation: its identity and a way to stop itself.
#[derive(Clone, Debug)]
pub struct ActorCtx {
    inner: Arc<CtxInner>,
}

#[derive(Debug)]
struct CtxInner {
    local_id: u64,
    name: Option<String>,
    stop: AtomicBool,
    cluster: Option<crate::actor::cluster::WeakCluster>,
    node: Option<crate::identity::NodeId>,
    spawned_by: Option<crate::identity::NodeId>,
}

impl ActorCtx {
    pub(crate) fn new(
        local_id: u64,
        name: Option<String>,
        node: Option<crate::identity::NodeId>,
        cluster: Option<crate::actor::cluster::WeakCluster>,
        spawned_by: Option<crate::identity::NodeId>,
    ) -> Self {
        ActorCtx {
            inner: Arc::new(CtxInner {
                local_id,
                name,
                stop: AtomicBool::new(false),
                cluster,
                node,
                spawned_by,
            }),
        }
    }

    /// The peer node that asked for this actor, as the runtime authenticated it (the node
    /// whose spawn request created it, e.g. a coordinator deploying a stage); `None` when it
    /// was spawned by its own node. Only that node may stop the actor from afar.
    pub fn spawned_by(&self) -> Option<crate::identity::NodeId> {
        self.inner.spawned_by
    }

    /// The actor's id, unique on its node (random, so not guessable by other members).
    pub fn local_id(&self) -> u64 {
        self.inner.local_id
    }

    /// The name the actor was spawned under, if any.
    pub fn name(&self) -> Option<&str> {
        self.inner.name.as_deref()
    }

    /// Asks the actor system to stop this actor after the current message.
    pub fn stop(&self) {
        self.inner.stop.store(true, Ordering::Release);
    }

    pub(crate) fn stop_requested(&self) -> bool {
        self.inner.stop.load(Ordering::Acquire)
    }

    /// The node this actor runs on (absent in a standalone local actor system).
    pub fn node(&self) -> Option<crate::identity::NodeId> {
        self.inner.node
    }

    /// The cluster this actor lives in, to spawn, look up or message other actors (absent in a
    /// standalone local actor system, or once the cluster has shut down).
    pub fn cluster(&self) -> Option<crate::actor::cluster::Cluster> {
        self.inner.cluster.as_ref().and_then(|w| w.upgrade())
    }

    /// The node-local value of type `T` (see [`crate::actor::Cluster::insert_extension`]).
    pub fn extension<T: Send + Sync + 'static>(&self) -> Option<std::sync::Arc<T>> {
        self.cluster().and_then(|c| c.extension::<T>())
    }
}
