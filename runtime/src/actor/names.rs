//! Cluster-wide names: at most one actor per name in the reachable cluster
//! ([`Cluster::register_global`], [`Cluster::lookup_global`]).
//!
//! The name is held by the actor's own node (like a group membership) and dropped when the actor
//! stops, so a name lives exactly as long as its actor and its node. Registrations go through the
//! head (the lowest node id among this node and the ones it reaches — the membership head rule),
//! which takes them one at a time and refuses a name that any reachable node already holds for
//! another actor. Lookups ask every reachable node.
//!
//! Under node loss: the names of the lost node's actors disappear with it; the others are not
//! affected, also when the head is the node lost (the next head has nothing to rebuild). Under a
//! partition: each side has its own head and checks only its side, so both sides may register
//! the same name; once the sides reach each other again, [`Cluster::lookup_global`] answers with
//! the holder with the lowest [`ActorId`] (the same on every node) until the other holder stops.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::actor_ref::{ActorId, ActorRef};
use super::cluster::Cluster;
use super::kind::RemoteActor;
use super::remote::{RpcRequest, RpcResponse};
use crate::identity::NodeId;

/// Why a cluster-wide name could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum NameError {
    /// Another live actor holds the name.
    #[error("name is held by {0}")]
    Taken(ActorId),
    /// The actor to name does not exist (any more) on its node.
    #[error("the actor is not alive on its node")]
    ActorGone,
    /// The head or the actor's node did not answer.
    #[error("node is down: {0}")]
    NodeDown(String),
    /// The name is reserved ([`crate::actor::Registry::reserve_name`]) for actors of another
    /// kind, or for an actor on the head, and this actor is not one.
    #[error("name is reserved for a `{0}` actor on the head node")]
    Reserved(String),
}

/// This node's part of the cluster-wide names: names held by its own actors, and (when it is
/// the head) the lock that takes registrations one at a time.
#[derive(Debug, Default)]
pub(crate) struct Names {
    held: Mutex<HashMap<String, (u64, &'static str)>>,
    claims: tokio::sync::Mutex<()>,
}

impl Names {
    /// The local actor holding `name`, with its kind.
    pub(crate) fn holder(&self, name: &str) -> Option<(u64, String)> {
        self.held
            .lock()
            .get(name)
            .map(|(id, kind)| (*id, kind.to_string()))
    }
}

/// Makes a local actor hold `name` until it stops; `false` if it is not alive.
pub(crate) fn hold_local(cluster: &Cluster, name: &str, local: u64) -> bool {
    let Some(cell) = cluster.inner.locals.get(local) else {
        return false;
    };
    if cluster
        .inner
        .registry
        .check_name(name, cell.kind())
        .is_err()
    {
        return false;
    }
    let names: Arc<Names> = cluster.inner.names.clone();
    let fresh = names
        .held
        .lock()
        .insert(name.to_string(), (local, cell.kind()))
        .is_none_or(|(id, _)| id != local);
    if fresh {
        let stopped = cell.life().wait();
        let name = name.to_string();
        tokio::spawn(async move {
            stopped.await;
            names
                .held
                .lock()
                .retain(|n, (id, _)| !(n == &name && *id == local));
        });
    }
    true
}

/// The head's side of a registration: checks every reachable node, then has the actor's node
/// hold the name. Registrations through this head run one at a time.
pub(crate) async fn claim(cluster: &Cluster, name: &str, id: ActorId) -> Result<(), NameError> {
    if let Some(kind) = cluster.inner.registry.reserved_for(name) {
        let here = id.node == cluster.node_id();
        let fits = here
            && cluster
                .inner
                .locals
                .get(id.local)
                .is_some_and(|c| c.kind() == kind);
        if !fits {
            tracing::warn!(%name, actor = %id,
                "refused a cluster-wide name reserved for the head's own actor");
            return Err(NameError::Reserved(kind.to_string()));
        }
    }
    let names = cluster.inner.names.clone();
    let _one_at_a_time = names.claims.lock().await;
    if let Some((holder, _)) = holders(cluster, name).await.into_iter().next() {
        return if holder == id {
            Ok(())
        } else {
            Err(NameError::Taken(holder))
        };
    }
    let held = if id.node == cluster.node_id() {
        hold_local(cluster, name, id.local)
    } else {
        let req = RpcRequest::HoldName {
            name: name.to_string(),
            local: id.local,
        };
        match rpc(cluster, id.node, &req).await? {
            RpcResponse::Held(held) => held,
            other => return Err(NameError::NodeDown(format!("unexpected answer {other:?}"))),
        }
    };
    held.then_some(()).ok_or(NameError::ActorGone)
}

/// Every reachable holder of `name` (with its kind), lowest id first.
async fn holders(cluster: &Cluster, name: &str) -> Vec<(ActorId, String)> {
    let here = cluster.node_id();
    let mut out: Vec<(ActorId, String)> = cluster
        .inner
        .names
        .holder(name)
        .map(|(local, kind)| (ActorId { node: here, local }, kind))
        .into_iter()
        .collect();
    if let Some(remote) = cluster.inner.remote.as_ref() {
        let asks = cluster.peers().into_iter().map(|node| async move {
            let req = RpcRequest::NameHolder {
                name: name.to_string(),
            };
            match remote.rpc(node, &req).await {
                Ok(RpcResponse::NameHeld(Some((local, kind)))) => {
                    Some((ActorId { node, local }, kind))
                }
                _ => None,
            }
        });
        out.extend(futures::future::join_all(asks).await.into_iter().flatten());
    }
    out.sort();
    out
}

async fn rpc(cluster: &Cluster, node: NodeId, req: &RpcRequest) -> Result<RpcResponse, NameError> {
    let remote = cluster
        .inner
        .remote
        .as_ref()
        .ok_or_else(|| NameError::NodeDown("no transport".into()))?;
    remote
        .rpc(node, req)
        .await
        .map_err(|e| NameError::NodeDown(format!("{}: {e}", node.short())))
}

impl Cluster {
    /// The node that takes cluster-wide name registrations: the membership head when this
    /// cluster runs a node, else the lowest id among this node and its connected peers.
    pub fn name_head(&self) -> NodeId {
        if let Some(head) = self.node().and_then(|n| n.head()) {
            return head;
        }
        self.peers()
            .into_iter()
            .chain([self.node_id()])
            .min()
            .unwrap_or(self.node_id())
    }

    /// Registers `actor` (on any node) under the cluster-wide `name`, through the head. Fails
    /// with [`NameError::Taken`] while another live actor on a reachable node holds it;
    /// registering the same actor again succeeds. A name reserved with
    /// [`crate::actor::Registry::reserve_name`] is only given to an actor of its kind on the
    /// head ([`NameError::Reserved`] otherwise). The name is dropped when the actor stops or
    /// its node is lost. See the module docs for partitions.
    pub async fn register_global<A: RemoteActor>(
        &self,
        name: &str,
        actor: &ActorRef<A>,
    ) -> Result<(), NameError> {
        let head = self.name_head();
        if head == self.node_id() {
            return claim(self, name, actor.id()).await;
        }
        let req = RpcRequest::ClaimName {
            name: name.to_string(),
            id: actor.id(),
        };
        match rpc(self, head, &req).await? {
            RpcResponse::Claimed(r) => r,
            other => Err(NameError::NodeDown(format!("unexpected answer {other:?}"))),
        }
    }

    /// The actor of kind `A` holding the cluster-wide `name` on a reachable node (after a
    /// healed partition, the holder with the lowest id).
    pub async fn lookup_global<A: RemoteActor>(&self, name: &str) -> Option<ActorRef<A>> {
        // A reserved name counts only where the head holds it: another member's claim to
        // hold it is not believed.
        let head = self
            .inner
            .registry
            .reserved_for(name)
            .map(|_| self.name_head());
        holders(self, name)
            .await
            .into_iter()
            .filter(|(id, _)| head.is_none_or(|h| id.node == h))
            .find(|(_, kind)| kind == A::kind())
            .map(|(id, _)| self.actor_ref::<A>(id))
    }
}
