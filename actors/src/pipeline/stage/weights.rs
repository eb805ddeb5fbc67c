//! The weight receiver every stage node runs: shards arrive in checksummed chunks into the
//! node's shard cache (the sending side is [`crate::pipeline::coordinator`]'s shipping).

use edgeray_runtime::actor::{ActorCtx, ActorError, Envelope, RemoteActor};
use serde::{Deserialize, Serialize};

use super::shard_dir::shard_dir;
use super::shard_store::ShardStore;

/// Chunk size on the wire.
pub const CHUNK_BYTES: usize = 4 << 20;

/// Messages to a node's weight receiver.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WeightsMsg {
    /// "I am about to send shard `hash` of `len` bytes in `chunk`-byte chunks."
    Offer {
        /// Content hash.
        hash: String,
        /// Total bytes.
        len: u64,
        /// Chunk size.
        chunk: u64,
    },
    /// One chunk in the tail.
    Chunk {
        /// Content hash.
        hash: String,
        /// Total bytes.
        len: u64,
        /// Offset of the chunk.
        offset: u64,
        /// SHA-256 of the chunk.
        digest: [u8; 32],
    },
    /// All chunks sent: check and keep.
    Finish {
        /// Content hash.
        hash: String,
        /// Total bytes.
        len: u64,
    },
}

/// Replies of the weight receiver.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WeightsReply {
    /// Bytes of the shard already stored (`len`: complete, send nothing).
    Have(u64),
    /// Stored length after a chunk.
    Stored(u64),
    /// The shard is in the cache.
    Done,
}

/// Receives shards into its node's cache (actor kind `edgeray.weights`).
pub struct WeightsActor {
    store: ShardStore,
}

impl RemoteActor for WeightsActor {
    type Args = ();
    type Msg = WeightsMsg;
    type Reply = WeightsReply;

    fn kind() -> &'static str {
        "edgeray.weights"
    }

    fn create(_: (), ctx: ActorCtx) -> Result<Self, ActorError> {
        let cluster = ctx
            .cluster()
            .ok_or_else(|| ActorError::new("a weight receiver needs a cluster"))?;
        let store =
            ShardStore::open(shard_dir(&cluster)).map_err(|e| ActorError::new(e.to_string()))?;
        Ok(WeightsActor { store })
    }

    async fn handle(
        &mut self,
        msg: Envelope<WeightsMsg>,
    ) -> Result<Envelope<WeightsReply>, ActorError> {
        let store = self.store.clone();
        let Envelope { msg, tail } = msg;
        // File I/O and hashing off the actor thread.
        let reply = tokio::task::spawn_blocking(move || match msg {
            WeightsMsg::Offer { hash, len, chunk } => {
                store.begin(&hash, len, chunk).map(WeightsReply::Have)
            }
            WeightsMsg::Chunk {
                hash,
                len,
                offset,
                digest,
            } => store
                .write_chunk(&hash, len, offset, &tail, &digest)
                .map(WeightsReply::Stored),
            WeightsMsg::Finish { hash, len } => {
                store.finish(&hash, len).map(|_| WeightsReply::Done)
            }
        })
        .await
        .map_err(|e| ActorError::new(format!("weight receiver panicked: {e}")))?
        .map_err(|e| ActorError::new(e.to_string()))?;
        Ok(Envelope::new(reply))
    }
}
