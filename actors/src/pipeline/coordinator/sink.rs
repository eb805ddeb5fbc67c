//! The coordinator's sink: the actor the last stage sends sampled tokens to (and any stage its
//! failures), routing each to the waiting sequence's channel.
//!
//! Actors are built from serde arguments, so the routing table a sink serves is node-local state
//! of the coordinator's actor system (a [`SinkTables`] extension of its cluster) under a key
//! passed as the argument: a sink can only be spawned on its coordinator's own node.
//!
//! A sink takes messages only from its pipeline's stages ([`SinkSenders`]): tokens, scores and
//! embeddings from the last stage's node, failures from any stage's node. The runtime names
//! the sending node ([`Envelope::sender`]); anything else is refused, logged and counted
//! ([`sink_refusals`]), so another member of the cluster cannot write into someone's answer.

use dashmap::DashMap;
use edgeray_runtime::actor::{ActorCtx, ActorError, Envelope, RemoteActor};
use edgeray_runtime::cluster::Cluster;
use edgeray_runtime::identity::NodeId;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

use crate::pipeline::protocol::{SeqId, SinkMsg};

/// Sequence → channel of its driver.
pub type Routes = DashMap<SeqId, mpsc::Sender<SinkMsg>>;

/// The nodes a sink takes messages from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkSenders {
    /// The last stage's node (its leader's, for a tensor-parallel group): tokens, prompt
    /// scores and embeddings come from there.
    pub last: NodeId,
    /// Every stage's nodes (group members included): any of them may report a failure.
    pub stages: Vec<NodeId>,
}

impl SinkSenders {
    /// Whether `from` may send `msg`; `Err` says who may.
    pub fn check(&self, msg: &SinkMsg, from: NodeId) -> Result<(), &'static str> {
        match msg {
            SinkMsg::Failed { .. } if self.stages.contains(&from) || from == self.last => Ok(()),
            SinkMsg::Failed { .. } => Err("failures only from the pipeline's stages"),
            _ if from == self.last => Ok(()),
            _ => Err("tokens, scores and embeddings only from the pipeline's last stage"),
        }
    }
}

/// One pipeline's table: its routes, who may send to its sink, refusals so far.
struct SinkTable {
    routes: Arc<Routes>,
    senders: SinkSenders,
    refused: Arc<AtomicU64>,
}

/// The routing tables of the pipelines a node coordinates, by key (a [`Cluster`] extension).
#[derive(Default)]
pub struct SinkTables {
    tables: DashMap<u64, SinkTable>,
    next_key: AtomicU64,
}

/// Registers a routing table on the coordinator's node, with the nodes its sink takes
/// messages from; returns the key to spawn a [`SinkActor`] with (random, so another pipeline's
/// table cannot be guessed).
pub fn register_routes(cluster: &Cluster, routes: Arc<Routes>, senders: SinkSenders) -> u64 {
    let t = cluster.extension_or_insert_with(SinkTables::default);
    let key = loop {
        let k = t.next_key.fetch_add(1, Ordering::Relaxed) ^ rand::random::<u64>();
        if k != 0 && !t.tables.contains_key(&k) {
            break k;
        }
    };
    t.tables.insert(
        key,
        SinkTable {
            routes,
            senders,
            refused: Arc::new(AtomicU64::new(0)),
        },
    );
    key
}

/// Messages the sink of table `key` refused (from nodes that are not its pipeline's stages).
pub fn sink_refusals(cluster: &Cluster, key: u64) -> u64 {
    cluster
        .extension::<SinkTables>()
        .and_then(|t| {
            t.tables
                .get(&key)
                .map(|e| e.refused.load(Ordering::Relaxed))
        })
        .unwrap_or(0)
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
    senders: SinkSenders,
    refused: Arc<AtomicU64>,
    here: NodeId,
}

impl RemoteActor for SinkActor {
    type Args = u64;
    type Msg = SinkMsg;
    type Reply = ();

    fn kind() -> &'static str {
        "edgeray.sink"
    }

    fn create(key: u64, ctx: ActorCtx) -> Result<Self, ActorError> {
        let here = ctx
            .cluster()
            .map(|c| c.node_id())
            .ok_or_else(|| ActorError::new("a sink needs a cluster"))?;
        let no_table = || ActorError::new("a sink can only be spawned by its own coordinator");
        if ctx.spawned_by().is_some() {
            return Err(no_table());
        }
        let (routes, senders, refused) = ctx
            .extension::<SinkTables>()
            .and_then(|t| {
                t.tables
                    .get(&key)
                    .map(|e| (e.routes.clone(), e.senders.clone(), e.refused.clone()))
            })
            .ok_or_else(no_table)?;
        Ok(SinkActor {
            routes,
            senders,
            refused,
            here,
        })
    }

    async fn handle(&mut self, msg: Envelope<SinkMsg>) -> Result<Envelope<()>, ActorError> {
        let from = msg.sent_by(self.here);
        if let Err(why) = self.senders.check(&msg.msg, from) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(from = %from.short(), "sink refused a message: {why}");
            return Err(ActorError::new(format!(
                "refused from node {}: {why}",
                from.short()
            )));
        }
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
