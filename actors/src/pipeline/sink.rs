//! The coordinator's sink: the actor the last stage sends sampled tokens to (and any stage its
//! failures), routing each to the waiting sequence's channel.
//!
//! Actors are built from serde arguments, so the routing table a sink serves lives in a
//! process-wide map under a key passed as the argument.

use dashmap::DashMap;
use edgeray_runtime::actor::{ActorCtx, ActorError, Envelope, RemoteActor};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use tokio::sync::mpsc;

use super::protocol::{SeqId, SinkMsg};

/// Sequence → channel of its driver.
pub type Routes = DashMap<SeqId, mpsc::Sender<SinkMsg>>;

static TABLES: LazyLock<DashMap<u64, Arc<Routes>>> = LazyLock::new(DashMap::new);
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// Registers a routing table; returns the key to spawn a [`SinkActor`] with.
pub fn register_routes(routes: Arc<Routes>) -> u64 {
    let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
    TABLES.insert(key, routes);
    key
}

/// Forgets a routing table.
pub fn unregister_routes(key: u64) {
    TABLES.remove(&key);
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

    fn create(key: u64, _ctx: ActorCtx) -> Result<Self, ActorError> {
        let routes = TABLES
            .get(&key)
            .map(|r| r.clone())
            .ok_or_else(|| ActorError::new("a sink can only be spawned by its own coordinator"))?;
        Ok(SinkActor { routes })
    }

    async fn handle(&mut self, msg: Envelope<SinkMsg>) -> Result<Envelope<()>, ActorError> {
        let seq = match &msg.msg {
            SinkMsg::Token { seq, .. } | SinkMsg::Failed { seq, .. } => *seq,
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
