//! Typed, location-transparent actor references.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::envelope::Envelope;
use super::error::{AskError, TellError};
use super::kind::RemoteActor;
use super::local::LocalActor;
use crate::actor::cluster::Cluster;
use crate::identity::NodeId;

/// Cluster-wide identity of an actor: its node and its id on that node. Serializable, so it can
/// travel inside messages; turn it back into a reference with [`Cluster::actor_ref`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ActorId {
    /// The node hosting the actor.
    pub node: NodeId,
    /// The actor's id on that node.
    pub local: u64,
}

impl fmt::Debug for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorId({}/{})", self.node.short(), self.local)
    }
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.node.short(), self.local)
    }
}

/// A reference to an actor of kind `A`, local or on another node. Cheap to clone.
pub struct ActorRef<A: RemoteActor> {
    id: ActorId,
    local: Option<LocalActor<A>>,
    cluster: Cluster,
    _kind: PhantomData<fn() -> A>,
}

impl<A: RemoteActor> Clone for ActorRef<A> {
    fn clone(&self) -> Self {
        ActorRef {
            id: self.id,
            local: self.local.clone(),
            cluster: self.cluster.clone(),
            _kind: PhantomData,
        }
    }
}

impl<A: RemoteActor> fmt::Debug for ActorRef<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorRef<{}>({})", A::kind(), self.id)
    }
}

impl<A: RemoteActor> ActorRef<A> {
    pub(crate) fn new(id: ActorId, local: Option<LocalActor<A>>, cluster: Cluster) -> Self {
        ActorRef {
            id,
            local,
            cluster,
            _kind: PhantomData,
        }
    }

    /// The actor's cluster-wide id.
    pub fn id(&self) -> ActorId {
        self.id
    }

    /// The node hosting the actor.
    pub fn node(&self) -> NodeId {
        self.id.node
    }

    /// Whether the actor runs in this process.
    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    /// Sends a message without a reply. Waits while the actor's mailbox is full (also across
    /// nodes: the remote side reads the next message only when the mailbox has room, so QUIC flow
    /// control holds this call back). Never drops the message silently.
    pub async fn tell(&self, msg: impl Into<Envelope<A::Msg>>) -> Result<(), TellError> {
        let env = msg.into();
        match &self.local {
            Some(l) => l.tell(env).await,
            None => self.cluster.remote_tell::<A>(self.id, env).await,
        }
    }

    /// Sends a message only if there is room for it right now; fails with
    /// [`TellError::MailboxFull`] instead of waiting. For a local actor "room" is a free mailbox
    /// slot. For a remote actor the sender cannot see the mailbox: it fails when the stream to
    /// the actor is still busy with an earlier message (held back by QUIC flow control because
    /// the remote mailbox has been full long enough to fill the stream window). The first message
    /// to a remote actor waits for its stream to open. A message accepted by a remote
    /// `try_tell` is lost if the node goes down before reading it (as with `tell`).
    pub async fn try_tell(&self, msg: impl Into<Envelope<A::Msg>>) -> Result<(), TellError> {
        let env = msg.into();
        match &self.local {
            Some(l) => l.try_tell(env),
            None => self.cluster.remote_try_tell::<A>(self.id, env).await,
        }
    }

    /// [`tell`](Self::tell) that gives up with [`TellError::Timeout`] after `timeout`. A local
    /// message that timed out was not queued; a remote one may already be on its way (it is
    /// then delivered, like any message the transport accepted).
    pub async fn tell_timeout(
        &self,
        msg: impl Into<Envelope<A::Msg>>,
        timeout: Duration,
    ) -> Result<(), TellError> {
        tokio::time::timeout(timeout, self.tell(msg))
            .await
            .unwrap_or(Err(TellError::Timeout))
    }

    /// Sends a message and waits for the reply, at most `timeout` in all (mailbox wait included).
    pub async fn ask(
        &self,
        msg: impl Into<Envelope<A::Msg>>,
        timeout: Duration,
    ) -> Result<Envelope<A::Reply>, AskError> {
        let env = msg.into();
        match &self.local {
            Some(l) => l.ask(env, timeout).await,
            None => self.cluster.remote_ask::<A>(self.id, env, timeout).await,
        }
    }

    /// Resolves when the actor stops or its node goes down, with the reason.
    pub fn watch(&self) -> crate::actor::cluster::WatchFuture {
        match &self.local {
            Some(l) => Box::pin(l.life().wait()),
            None => self.cluster.watch(self.id),
        }
    }

    /// Asks the actor to stop (after the message it is handling). Best effort for remote
    /// actors on unreachable nodes.
    pub async fn stop(&self) {
        match &self.local {
            Some(l) => l.stop(),
            None => self.cluster.remote_stop(self.id).await,
        }
    }

    /// Messages queued or being handled, for a local actor (`None` for a remote one).
    pub fn mailbox_in_flight(&self) -> Option<usize> {
        self.local.as_ref().map(|l| l.mailbox().in_flight())
    }

    /// The largest number of in-flight messages seen, for a local actor.
    pub fn mailbox_high_water(&self) -> Option<usize> {
        self.local.as_ref().map(|l| l.mailbox().high_water())
    }
}
