//! The coordinator's sink: the actor the last stage sends sampled tokens to (and any stage its
//! failures), routing each to the waiting sequence's channel.
//!
//! Actors are built from serde arguments, so the routing table a sink serves is node-local state
//! of the coordinator's actor system (a [`SinkTables`] extension of its cluster) under a key
//! passed as the argument: a sink can only be spawned on its coordinator's own node.

use dashmap::DashMap;
use edgeray_runtime::actor::{ActorCtx, ActorError, Envelope, RemoteActor};
use edgeray_runtime::cluster::Cluster;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

use crate::pipeline::protocol::{SeqId, SinkMsg};

/// Sequence → channel of its driver.
pub type Routes = DashMap<SeqId, mpsc::Sender<SinkMsg>>;

/// The routing tables of the pipelines a node coordinates, by key (a [`Cluster`] extension).
#[derive(Default)]
pub struct SinkTables {
    tables: DashMap<u64, Arc<Routes>>,
    next_key: AtomicU64,
}

/// Registers a routing table on the coordinator's node; returns the key to spawn a
/// [`SinkActor`] with.
pub fn register_routes(cluster: &Cluster, routes: Arc<Routes>) -> u64 {
    let t = cluster.extension_or_insert_with(SinkTables::default);
    let key = t.next_key.fetch_add(1, Ordering::Relaxed) + 1;
    t.tables.insert(key, routes);
    key
}

/// Forgets a routing table.
pub fn unregister_routes(cluster: &Cluster, key: u64) {
    if let Some(t) = cluster.extension::<SinkTables>() {
        t.tables.remove(&key);
    }
}

/// Receives tokens for the sequences of one pipeline (actor kind `edgeray.sink`; spawn it only
/// on the coordinator's own node).
pub struct SinkActor {
    routes: Arc<Routes>,
}

impl RemoteActor for SinkActor {
    type Args = u64;
    type Msg = SinkMsg;
    type Reply = ();

    fn kind() -> &'static str {
        "edgeray.sink"
    }

    fn create(key: u64, ctx: ActorCtx) -> Result<Self, ActorError> {
        let routes = ctx
            .extension::<SinkTables>()
            .and_then(|t| t.tables.get(&key).map(|r| r.clone()))
            .ok_or_else(|| ActorError::new("a sink can only be spawned by its own coordinator"))?;
        Ok(SinkActor { routes })
    }

    async fn handle(&mut self, msg: Envelope<SinkMsg>) -> Result<Envelope<()>, ActorError> {
        let seq = match &msg.msg {
            SinkMsg::Token { seq, .. }
            | SinkMsg::PromptLogprobs { seq, .. }
            | SinkMsg::Embedding { seq, .. }
            | SinkMsg::Failed { seq, .. } => *seq,
        };
        let tx = self.routes.get(&seq).map(|t| t.clone());
        if let Some(tx) = tx {
            // A sequence has at most one batch in flight, so its channel never fills; a closed
            // channel means the request was cancelled (its driver releases the stages).
            let _ = tx.send(msg.msg).await;
        }
        Ok(Envelope::new(()))
    }
}
