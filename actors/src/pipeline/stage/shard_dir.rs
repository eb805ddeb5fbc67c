//! Where a node keeps its shard cache.
//!
//! Actors are created from serde arguments on the node that runs them, so a node's cache folder
//! is node-local state of its actor system (a [`ShardDir`] extension of its
//! [`Cluster`]); several nodes may live in one process (the embedded cluster, tests), each with
//! its own.

use edgeray_runtime::cluster::Cluster;
use std::path::PathBuf;

/// The shard cache folder of one node (a [`Cluster`] extension).
#[derive(Debug, Clone)]
pub struct ShardDir(pub PathBuf);

/// Sets the shard cache folder of the node `cluster` runs on.
pub fn set_shard_dir(cluster: &Cluster, dir: PathBuf) {
    cluster.insert_extension(ShardDir(dir));
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
