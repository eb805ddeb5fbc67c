//! What runs on a board that hosts stages: the stage actor (a contiguous range of transformer
//! blocks with one KV cache per sequence) and the rules by which it batches the sequences
//! waiting for it, the weight receiver and the shard cache it fills, and the compute score the
//! board reports.

mod actor;
mod batching;
mod claims;
mod compute_score;
mod constraint;
mod group;
mod logprobs;
mod senders;
mod shard_dir;
pub(crate) mod shard_store;
mod tp_link;
pub(crate) mod weights;

pub use actor::{StageActor, capped_threads};
pub use batching::{BatchPlan, MAX_BATCH_ROWS, compute_shares};
pub use claims::{ClaimError, StageClaim, check_claim};
pub use compute_score::measure_compute_score;
pub use senders::{Refused, Senders, StageMsgKind};
pub use shard_dir::{
    ShardCacheBudget, ShardDir, ShardEncryption, open_shard_store, set_shard_cache_budget,
    set_shard_dir, set_shard_encryption, shard_dir, user_cache_dir,
};
pub use shard_store::{
    CacheListing, CachedShard, GcReport, Refusal, RemoveOutcome, ShardKey, ShardLease, ShardOpener,
    ShardStore, ShardStoreError, chunk_digest, content_hash, validate_hash,
};
pub use weights::{CHUNK_BYTES, WeightsActor, WeightsMsg, WeightsReply};
