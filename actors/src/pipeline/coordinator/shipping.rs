//! Weight shipping, the coordinator's side: each stage node gets only its shard, streamed in
//! checksummed chunks to the node's [`WeightsActor`], resuming after a dropped connection; a
//! node that already has the shard (by content hash) receives nothing.

use bytes::Bytes;
use edgeray_runtime::actor::{AskError, Envelope};
use edgeray_runtime::cluster::{Cluster, SpawnOptions};
use edgeray_runtime::identity::NodeId;
use futures::stream::{FuturesOrdered, StreamExt};
use std::time::Duration;

use crate::pipeline::stage::shard_store::chunk_digest;
use crate::pipeline::stage::weights::{CHUNK_BYTES, WeightsActor, WeightsMsg, WeightsReply};

/// Chunks in flight per transfer.
const WINDOW: usize = 4;
/// Attempts before a transfer is given up (each resumes where the last stopped).
const ATTEMPTS: usize = 8;
const ASK_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a shard could not be shipped.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    /// The receiver refused (a corrupt chunk, a hostile or inconsistent transfer, an I/O
    /// error): retrying would not help.
    #[error("node {node} refused shard {hash}: {reason}")]
    Refused {
        /// Target node.
        node: String,
        /// Shard hash.
        hash: String,
        /// Its reason.
        reason: String,
    },
    /// The node has no room for the shard (its `limits.shard_cache` budget, its free disk
    /// space, or a disk that filled up during the transfer): final, not retried.
    #[error("node {node} has no room for shard {hash}: {reason}")]
    NoRoom {
        /// Target node.
        node: String,
        /// Shard hash.
        hash: String,
        /// The node's reason.
        reason: String,
    },
    /// The node stayed unreachable through every attempt.
    #[error("shard {hash} could not be shipped to node {node} after {attempts} attempts: {last}")]
    Unreachable {
        /// Target node.
        node: String,
        /// Shard hash.
        hash: String,
        /// Attempts made.
        attempts: usize,
        /// The last error.
        last: String,
    },
}

/// What a transfer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShipReport {
    /// Shard bytes sent over the network (0 when the node had it cached).
    pub bytes_sent: u64,
    /// Attempts needed (1 without interruption).
    pub attempts: usize,
    /// Bytes the node already had when the first attempt started.
    pub cached_bytes: u64,
}

enum AttemptError {
    Retry(String),
    Fatal(String),
    NoRoom(String),
}

fn classify(e: AskError) -> AttemptError {
    match e {
        AskError::Remote(s) | AskError::Codec(s) => AttemptError::Fatal(s),
        other => AttemptError::Retry(other.to_string()),
    }
}

/// Whether `node` holds shard `hash` (`len` bytes) complete in its cache; nothing is sent.
pub async fn node_has_shard(
    cluster: &Cluster,
    node: NodeId,
    hash: &str,
    len: u64,
) -> Result<bool, ShipError> {
    let receiver = cluster
        .spawn::<WeightsActor>((), SpawnOptions::new().on(node).mailbox(2))
        .await
        .map_err(|e| ShipError::Unreachable {
            node: node.short(),
            hash: hash.into(),
            attempts: 1,
            last: e.to_string(),
        })?;
    let reply = receiver
        .ask(
            WeightsMsg::Offer {
                hash: hash.into(),
                len,
                chunk: CHUNK_BYTES as u64,
            },
            ASK_TIMEOUT,
        )
        .await;
    receiver.stop().await;
    match reply {
        Ok(r) => match r.msg {
            WeightsReply::NoRoom(reason) => Err(ShipError::NoRoom {
                node: node.short(),
                hash: hash.into(),
                reason,
            }),
            m => Ok(matches!(m, WeightsReply::Have(h) if h >= len)),
        },
        Err(AskError::Remote(reason) | AskError::Codec(reason)) => Err(ShipError::Refused {
            node: node.short(),
            hash: hash.into(),
            reason,
        }),
        Err(e) => Err(ShipError::Unreachable {
            node: node.short(),
            hash: hash.into(),
            attempts: 1,
            last: e.to_string(),
        }),
    }
}

/// Ships shard `data` (content hash `hash`) into `node`'s cache. `progress(stored, total)` is
/// called as chunks are acknowledged. Interrupted transfers resume from the last stored chunk.
pub async fn ship_shard(
    cluster: &Cluster,
    node: NodeId,
    hash: &str,
    data: Bytes,
    progress: impl FnMut(u64, u64),
) -> Result<ShipReport, ShipError> {
    ship_shard_windowed(cluster, node, hash, data, WINDOW, progress).await
}

/// Like [`ship_shard`] with at most `window` chunks in flight (1 for a background transfer
/// that should leave the link to the pipeline's hidden states).
pub async fn ship_shard_windowed(
    cluster: &Cluster,
    node: NodeId,
    hash: &str,
    data: Bytes,
    window: usize,
    mut progress: impl FnMut(u64, u64),
) -> Result<ShipReport, ShipError> {
    let window = window.max(1);
    let mut report = ShipReport::default();
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        report.attempts = attempt;
        match ship_once(
            cluster,
            node,
            hash,
            &data,
            window,
            &mut report,
            &mut progress,
        )
        .await
        {
            Ok(()) => return Ok(report),
            Err(AttemptError::Fatal(reason)) => {
                return Err(ShipError::Refused {
                    node: node.short(),
                    hash: hash.into(),
                    reason,
                });
            }
            Err(AttemptError::NoRoom(reason)) => {
                return Err(ShipError::NoRoom {
                    node: node.short(),
                    hash: hash.into(),
                    reason,
                });
            }
            Err(AttemptError::Retry(e)) => {
                tracing::warn!(node = %node.short(), attempt, error = %e, "shard transfer interrupted; resuming");
                last = e;
                tokio::time::sleep(Duration::from_millis(250 * attempt as u64)).await;
            }
        }
    }
    Err(ShipError::Unreachable {
        node: node.short(),
        hash: hash.into(),
        attempts: ATTEMPTS,
        last,
    })
}

async fn ship_once(
    cluster: &Cluster,
    node: NodeId,
    hash: &str,
    data: &Bytes,
    window: usize,
    report: &mut ShipReport,
    progress: &mut impl FnMut(u64, u64),
) -> Result<(), AttemptError> {
    let len = data.len() as u64;
    let receiver = cluster
        .spawn::<WeightsActor>((), SpawnOptions::new().on(node).mailbox(window + 2))
        .await
        .map_err(|e| match e {
            edgeray_runtime::actor::SpawnError::NodeDown(s) => AttemptError::Retry(s),
            other => AttemptError::Fatal(other.to_string()),
        })?;
    let result = async {
        let have = match receiver
            .ask(
                WeightsMsg::Offer {
                    hash: hash.into(),
                    len,
                    chunk: CHUNK_BYTES as u64,
                },
                ASK_TIMEOUT,
            )
            .await
            .map_err(classify)?
            .msg
        {
            WeightsReply::Have(h) => h.min(len),
            WeightsReply::NoRoom(reason) => return Err(AttemptError::NoRoom(reason)),
            other => return Err(AttemptError::Fatal(format!("unexpected reply {other:?}"))),
        };
        if report.attempts == 1 {
            report.cached_bytes = have;
        }
        progress(have, len);
        let mut inflight = FuturesOrdered::new();
        let mut offset = have;
        loop {
            while inflight.len() < window && offset < len {
                let end = (offset + CHUNK_BYTES as u64).min(len);
                let chunk = data.slice(offset as usize..end as usize);
                let msg = WeightsMsg::Chunk {
                    hash: hash.into(),
                    len,
                    offset,
                    digest: chunk_digest(&chunk),
                };
                let r = receiver.clone();
                let n = chunk.len() as u64;
                inflight.push_back(async move {
                    r.ask(Envelope::with_tail(msg, chunk), ASK_TIMEOUT)
                        .await
                        .map(|rep| (rep.msg, n))
                });
                offset = end;
            }
            match inflight.next().await {
                None => break,
                Some(Ok((WeightsReply::Stored(stored), n))) => {
                    report.bytes_sent += n;
                    progress(stored, len);
                }
                Some(Ok((WeightsReply::NoRoom(reason), _))) => {
                    return Err(AttemptError::NoRoom(reason));
                }
                Some(Ok((other, _))) => {
                    return Err(AttemptError::Fatal(format!("unexpected reply {other:?}")));
                }
                Some(Err(e)) => return Err(classify(e)),
            }
        }
        match receiver
            .ask(
                WeightsMsg::Finish {
                    hash: hash.into(),
                    len,
                },
                ASK_TIMEOUT,
            )
            .await
            .map_err(classify)?
            .msg
        {
            WeightsReply::Done => Ok(()),
            WeightsReply::NoRoom(reason) => Err(AttemptError::NoRoom(reason)),
            other => Err(AttemptError::Fatal(format!("unexpected reply {other:?}"))),
        }
    }
    .await;
    receiver.stop().await;
    result
}
