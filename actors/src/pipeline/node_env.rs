//! Where each node of this process keeps its shard cache.
//!
//! Actors are created from serde arguments on the node that runs them, so a node's local
//! settings (its cache directory) are looked up here by node id. Several nodes may live in one
//! process (the embedded local cluster, tests): each registers its own directory.

use dashmap::DashMap;
use edgeray_runtime::identity::NodeId;
use std::path::PathBuf;
use std::sync::LazyLock;

static SHARD_DIRS: LazyLock<DashMap<NodeId, PathBuf>> = LazyLock::new(DashMap::new);

/// Sets the shard cache directory of `node` (a node in this process).
pub fn set_shard_dir(node: NodeId, dir: PathBuf) {
    SHARD_DIRS.insert(node, dir);
}

/// The shard cache directory of `node`: the registered one, else `$EDGERAY_SHARD_DIR`, else
/// `$XDG_CACHE_HOME/edgeray/shards`, else `~/.cache/edgeray/shards`.
pub fn shard_dir(node: Option<&NodeId>) -> PathBuf {
    if let Some(d) = node.and_then(|n| SHARD_DIRS.get(n)) {
        return d.clone();
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
