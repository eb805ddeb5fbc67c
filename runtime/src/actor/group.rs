//! Process groups: actors join a named group; anyone in the cluster lists the members or sends
//! to all of them ([`Group`]).
//!
//! Membership is kept by each member's own node (like Erlang's `pg`, scoped per node): joining
//! records the actor in its node's table, and the entry goes when the actor stops. Listing a
//! group asks this node and every reachable peer. So a group never lists an actor on a node that
//! cannot be reached; during a network partition each side sees the members on its side, and
//! after it heals the union again.

use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;
use std::sync::Arc;

use parking_lot::Mutex;

use super::actor_ref::{ActorId, ActorRef};
use super::cluster::Cluster;
use super::envelope::Envelope;
use super::error::TellError;
use super::kind::RemoteActor;
use super::payload::Request;
use super::remote::{RpcRequest, RpcResponse};
use super::typed::{Handler, Message, TypedActor};

/// Why joining or leaving a group failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The actor does not exist (any more) on its node.
    #[error("the actor is not alive on its node")]
    ActorGone,
    /// The actor's node did not answer.
    #[error("node is down: {0}")]
    NodeDown(String),
}

/// This node's group table: group name → local actor id → its kind.
#[derive(Debug, Default)]
pub(crate) struct Groups {
    table: Mutex<HashMap<String, BTreeMap<u64, &'static str>>>,
}

impl Groups {
    /// Records a local actor in a group; `false` if it already was there.
    fn insert(&self, group: &str, local: u64, kind: &'static str) -> bool {
        self.table
            .lock()
            .entry(group.to_string())
            .or_default()
            .insert(local, kind)
            .is_none()
    }

    /// Removes a local actor from a group.
    pub(crate) fn remove(&self, group: &str, local: u64) {
        let mut t = self.table.lock();
        if let Some(members) = t.get_mut(group) {
            members.remove(&local);
            if members.is_empty() {
                t.remove(group);
            }
        }
    }

    /// The local members of a group that are of `kind`.
    pub(crate) fn members(&self, group: &str, kind: &str) -> Vec<u64> {
        self.table
            .lock()
            .get(group)
            .map(|m| {
                m.iter()
                    .filter(|(_, k)| **k == kind)
                    .map(|(id, _)| *id)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Adds a local actor to a group on its node; the entry is removed when the actor stops.
pub(crate) fn join_local(cluster: &Cluster, group: &str, local: u64) -> bool {
    let Some(cell) = cluster.inner.locals.get(local) else {
        return false;
    };
    let groups: Arc<Groups> = cluster.inner.groups.clone();
    if groups.insert(group, local, cell.kind()) {
        let stopped = cell.life().wait();
        let group = group.to_string();
        tokio::spawn(async move {
            stopped.await;
            groups.remove(&group, local);
        });
    }
    true
}

/// The result of sending to every member of a group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Broadcast {
    /// Members the message was queued for.
    pub sent: usize,
    /// Members it could not be sent to, with the reason.
    pub failed: Vec<(ActorId, TellError)>,
}

/// A named group of actors of kind `A`, from [`Cluster::group`]. Cheap to create; holds no
/// state of its own.
pub struct Group<A: RemoteActor> {
    cluster: Cluster,
    name: String,
    _kind: PhantomData<fn() -> A>,
}

impl<A: RemoteActor> std::fmt::Debug for Group<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Group<{}>({})", A::kind(), self.name)
    }
}

impl Cluster {
    /// The group `name` of actors of kind `A` (see [`Group`]).
    pub fn group<A: RemoteActor>(&self, name: impl Into<String>) -> Group<A> {
        Group {
            cluster: self.clone(),
            name: name.into(),
            _kind: PhantomData,
        }
    }
}

impl<A: RemoteActor> Group<A> {
    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds `member` (on any node) to the group, until it stops or [`leave`](Self::leave)s.
    pub async fn join(&self, member: &ActorRef<A>) -> Result<(), GroupError> {
        let id = member.id();
        if id.node == self.cluster.node_id() {
            return join_local(&self.cluster, &self.name, id.local)
                .then_some(())
                .ok_or(GroupError::ActorGone);
        }
        let req = RpcRequest::JoinGroup {
            group: self.name.clone(),
            local: id.local,
        };
        match self.rpc(id, &req).await? {
            RpcResponse::Joined(true) => Ok(()),
            _ => Err(GroupError::ActorGone),
        }
    }

    /// Removes `member` from the group (nothing happens if it was not in it).
    pub async fn leave(&self, member: &ActorRef<A>) -> Result<(), GroupError> {
        let id = member.id();
        if id.node == self.cluster.node_id() {
            self.cluster.inner.groups.remove(&self.name, id.local);
            return Ok(());
        }
        let req = RpcRequest::LeaveGroup {
            group: self.name.clone(),
            local: id.local,
        };
        self.rpc(id, &req).await.map(|_| ())
    }

    async fn rpc(&self, id: ActorId, req: &RpcRequest) -> Result<RpcResponse, GroupError> {
        let remote = self
            .cluster
            .inner
            .remote
            .as_ref()
            .ok_or_else(|| GroupError::NodeDown("no transport".into()))?;
        remote
            .rpc(id.node, req)
            .await
            .map_err(|e| GroupError::NodeDown(format!("{}: {e}", id.node.short())))
    }

    /// The members on this node and on every peer that answers, ordered by id.
    pub async fn members(&self) -> Vec<ActorRef<A>> {
        let c = &self.cluster;
        let here = c.node_id();
        let mut ids: Vec<ActorId> = c
            .inner
            .groups
            .members(&self.name, A::kind())
            .into_iter()
            .map(|local| ActorId { node: here, local })
            .collect();
        if let Some(remote) = c.inner.remote.as_ref() {
            let asks = c.peers().into_iter().map(|node| async move {
                let req = RpcRequest::GroupMembers {
                    group: self.name.clone(),
                    kind: A::kind().to_string(),
                };
                match remote.rpc(node, &req).await {
                    Ok(RpcResponse::Members(locals)) => locals
                        .into_iter()
                        .map(|local| ActorId { node, local })
                        .collect(),
                    _ => Vec::new(),
                }
            });
            ids.extend(futures::future::join_all(asks).await.into_iter().flatten());
        }
        ids.sort();
        ids.into_iter().map(|id| c.actor_ref::<A>(id)).collect()
    }

    /// Sends `msg` to every current member ([`members`](Self::members)), concurrently; each send
    /// waits for room in its member's mailbox like [`ActorRef::tell`].
    pub async fn tell_all(&self, msg: impl Into<Envelope<A::Msg>>) -> Broadcast
    where
        A::Msg: Clone,
    {
        let env = msg.into();
        self.send_all(|| env.clone()).await
    }

    async fn send_all(&self, make: impl Fn() -> Envelope<A::Msg>) -> Broadcast {
        let members = self.members().await;
        let sends = members.iter().map(|m| {
            let env = make();
            async move { (m.id(), m.tell(env).await) }
        });
        let mut out = Broadcast::default();
        for (id, r) in futures::future::join_all(sends).await {
            match r {
                Ok(()) => out.sent += 1,
                Err(e) => out.failed.push((id, e)),
            }
        }
        out
    }
}

impl<A: TypedActor> Group<A> {
    /// Casts `msg` to every current member (see [`tell_all`](Self::tell_all)).
    pub async fn cast_all<M: Message + Clone>(&self, msg: M) -> Broadcast
    where
        A: Handler<M>,
    {
        self.send_all(|| Envelope::new(Request::new(msg.clone())))
            .await
    }
}
