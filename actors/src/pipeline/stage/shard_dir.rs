//! Where a node keeps its shard cache, and how much disk it may use.
//!
//! Actors are created from serde arguments on the node that runs them, so a node's cache folder
//! is node-local state of its actor system (a [`ShardDir`] extension of its
//! [`Cluster`]); several nodes may live in one process (the embedded cluster, tests), each with
//! its own.

use edgeray_runtime::cluster::Cluster;
use std::path::PathBuf;

use super::shard_store::{ShardStore, ShardStoreError};

/// The shard cache folder of one node (a [`Cluster`] extension).
#[derive(Debug, Clone)]
pub struct ShardDir(pub PathBuf);

/// Sets the shard cache folder of the node `cluster` runs on.
pub fn set_shard_dir(cluster: &Cluster, dir: PathBuf) {
    cluster.insert_extension(ShardDir(dir));
}

/// The shard cache budget of one node in bytes (a [`Cluster`] extension; `limits.shard_cache`).
#[derive(Debug, Clone, Copy)]
pub struct ShardCacheBudget(pub u64);

/// Sets the shard cache budget of the node `cluster` runs on (else
/// [`edgeray_runtime::config::DEFAULT_SHARD_CACHE`]).
pub fn set_shard_cache_budget(cluster: &Cluster, bytes: u64) {
    cluster.insert_extension(ShardCacheBudget(bytes));
}

/// The key this node's cached shards are encrypted with (a cluster extension; absent: shards
/// are stored in plain).
#[derive(Debug, Clone)]
pub struct ShardEncryption(pub super::shard_store::ShardKey);

/// Stores the node's shards encrypted under `key` (`limits.encrypt_shards`), or in plain.
pub fn set_shard_encryption(cluster: &Cluster, key: Option<super::shard_store::ShardKey>) {
    if let Some(k) = key {
        cluster.insert_extension(ShardEncryption(k));
    }
}

/// Opens the shard cache of the node `cluster` runs on: its folder ([`shard_dir`]) bounded by
/// its budget ([`set_shard_cache_budget`]), encrypting what arrives when the node was told to
/// ([`set_shard_encryption`]).
pub fn open_shard_store(cluster: &Cluster) -> Result<ShardStore, ShardStoreError> {
    let budget = cluster
        .extension::<ShardCacheBudget>()
        .map_or(edgeray_runtime::config::DEFAULT_SHARD_CACHE.0, |b| b.0);
    let key = cluster.extension::<ShardEncryption>().map(|k| k.0.clone());
    Ok(ShardStore::with_budget(shard_dir(cluster), budget)?.with_encryption(key))
}

/// The shard cache folder of the node `cluster` runs on: the one set with [`set_shard_dir`],
/// else `$EDGERAY_SHARD_DIR`, else `$XDG_CACHE_HOME/edgeray/shards`, else
/// `~/.cache/edgeray/shards`.
pub fn shard_dir(cluster: &Cluster) -> PathBuf {
    if let Some(d) = cluster.extension::<ShardDir>() {
        return d.0.clone();
    }
    if let Some(d) = std::env::var_os("EDGERAY_SHARD_DIR") {
        return PathBuf::from(d);
    }
    user_cache_dir().join("shards")
}

/// edgeray's per-user cache folder: `$XDG_CACHE_HOME/edgeray`, else `~/.cache/edgeray`, else
/// the temporary directory's `edgeray`.
pub fn user_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("edgeray")
}
