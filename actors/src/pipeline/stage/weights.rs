//! The weight receiver every stage node runs: shards arrive in checksummed chunks into the
//! node's shard cache (the sending side is [`crate::pipeline::coordinator`]'s shipping).
//!
//! A receiver takes chunks only for the shard (and length) of the offer it accepted: the
//! offer is where the cache budget and the free disk space are checked, so no sender can
//! write past them by skipping it.

use edgeray_runtime::actor::{ActorCtx, ActorError, Envelope, RemoteActor};
use serde::{Deserialize, Serialize};

use super::shard_dir::open_shard_store;
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
    /// The node has no room for the shard (cache budget, free disk space, or the disk filled
    /// up during the upload): a final refusal, the reason in words.
    NoRoom(String),
}

/// Receives shards into its node's cache (actor kind `edgeray.weights`).
pub struct WeightsActor {
    store: ShardStore,
    /// The accepted offer: (hash, length).
    offer: Option<(String, u64)>,
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
        let store = open_shard_store(&cluster).map_err(|e| ActorError::new(e.to_string()))?;
        Ok(WeightsActor { store, offer: None })
    }

    async fn handle(
        &mut self,
        msg: Envelope<WeightsMsg>,
    ) -> Result<Envelope<WeightsReply>, ActorError> {
        let store = self.store.clone();
        let (msg, tail) = msg.into_parts();
        let offered = |hash: &str, len: u64| {
            self.offer
                .as_ref()
                .is_some_and(|(h, l)| h == hash && *l == len)
        };
        match &msg {
            WeightsMsg::Offer { .. } => self.offer = None,
            WeightsMsg::Chunk { hash, len, .. } | WeightsMsg::Finish { hash, len }
                if !offered(hash, *len) =>
            {
                return Err(ActorError::new(format!(
                    "shard {hash} ({len} bytes) was not offered to this receiver first"
                )));
            }
            _ => {}
        }
        // File I/O and hashing off the actor thread.
        let (accepted, reply) = tokio::task::spawn_blocking(move || match msg {
            WeightsMsg::Offer { hash, len, chunk } => {
                let r = store.begin(&hash, len, chunk).map(WeightsReply::Have);
                (r.is_ok().then_some((hash, len)), r)
            }
            WeightsMsg::Chunk {
                hash,
                len,
                offset,
                digest,
            } => (
                None,
                store
                    .write_chunk(&hash, len, offset, &tail, &digest)
                    .map(WeightsReply::Stored),
            ),
            WeightsMsg::Finish { hash, len } => {
                (None, store.finish(&hash, len).map(|_| WeightsReply::Done))
            }
        })
        .await
        .map_err(|e| ActorError::new(format!("weight receiver panicked: {e}")))?;
        if accepted.is_some() {
            self.offer = accepted;
        }
        match reply {
            Ok(r) => Ok(Envelope::new(r)),
            Err(e) => match e.no_room() {
                Some(reason) => {
                    self.offer = None;
                    tracing::warn!(error = %e, "shard refused");
                    Ok(Envelope::new(WeightsReply::NoRoom(reason)))
                }
                None => Err(ActorError::new(e.to_string())),
            },
        }
    }
}
