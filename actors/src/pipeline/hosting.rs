//! Starting this process as a cluster node that can host pipeline stages (used by `edgeray
//! node`, `run` and `serve`, and by library users and tests), and the embedded cluster of
//! several such nodes in one process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edgeray_runtime::cluster::{ActorSystemConfig, Cluster};
use edgeray_runtime::config::{ByteSize, ClusterConfig};
use edgeray_runtime::node::Node;

use super::head::cluster_view;
use super::registry;
use super::stage::{measure_compute_score, set_shard_cache_budget, set_shard_dir, user_cache_dir};

/// Why a hosting node or an embedded cluster could not be started.
#[derive(Debug, thiserror::Error)]
pub enum HostingError {
    /// The QUIC node could not be bound.
    #[error("cannot start the node: {0}")]
    Node(String),
    /// The actor system could not start on the node.
    #[error("cannot start the actor system: {0}")]
    ActorSystem(String),
    /// A file of the embedded cluster could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The embedded cluster's configuration is invalid.
    #[error("embedded node config: {0}")]
    Config(String),
    /// An embedded cluster of no nodes was asked for.
    #[error("an embedded cluster needs at least one node")]
    NoNodes,
    /// The embedded nodes did not find each other in time.
    #[error("embedded node {node} sees only {seen} of {want} nodes after 20 s")]
    NotFormed {
        /// The node that did not see all.
        node: usize,
        /// Members it saw.
        seen: usize,
        /// Members expected.
        want: usize,
    },
}

/// Starts a node hosting the pipeline's actor kinds. Its compute score is measured with the
/// quantized kernels (unless `resources.compute_score` is configured); its shard cache is
/// `state_dir/shards`, bounded by `limits.shard_cache`.
pub async fn start_hosting_node(
    mut config: ClusterConfig,
    threads: usize,
) -> Result<Cluster, HostingError> {
    if config.resources.compute_score.is_none() {
        config.resources.compute_score = tokio::task::spawn_blocking(move || {
            measure_compute_score(threads, Duration::from_millis(150))
        })
        .await
        .ok()
        .flatten();
    }
    let node = Node::bind(config.clone())
        .await
        .map_err(|e| HostingError::Node(format!("{e:#}")))?;
    let actors = ActorSystemConfig::from_cluster_config(&config);
    let cluster = Cluster::start_node(node, registry(), actors)
        .await
        .map_err(|e| HostingError::ActorSystem(format!("{e:#}")))?;
    // Before any peer can know this node (it joins only after start): the node's actors find
    // their shard cache here.
    set_shard_dir(&cluster, config.state_dir.join("shards"));
    set_shard_cache_budget(&cluster, config.limits.shard_cache.0);
    if config.limits.encrypt_shards {
        let secret = edgeray_runtime::security::ClusterSecret::from_bytes(
            config
                .secret_bytes()
                .map_err(|e| HostingError::Config(e.to_string()))?,
        );
        crate::pipeline::stage::set_shard_encryption(
            &cluster,
            Some(crate::pipeline::stage::ShardKey::from_secret(&secret)),
        );
    }
    Ok(cluster)
}

/// Waits until `want` members (this node included) are Up and have reported their resources,
/// or `timeout` passes; returns how many were seen.
pub async fn wait_for_members(cluster: &Cluster, want: usize, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let n = cluster_view(cluster).nodes.len();
        if n >= want || Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An embedded cluster of `n` nodes in this process: separate actor systems talking mutual-TLS
/// QUIC over loopback, seeded to each other (no mDNS), each with its own state and shard cache
/// under `dir` (kept, so a second run finds its shards cached).
pub async fn embedded_cluster(
    n: usize,
    dir: &Path,
    threads: usize,
) -> Result<Vec<Cluster>, HostingError> {
    if n == 0 {
        return Err(HostingError::NoNodes);
    }
    std::fs::create_dir_all(dir).map_err(|source| HostingError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let secret_file = dir.join("secret");
    let secret: [u8; 32] = match std::fs::read(&secret_file) {
        Ok(b) if b.len() == 32 => b.try_into().unwrap_or([7u8; 32]),
        _ => {
            let s: [u8; 32] = rand::random();
            std::fs::write(&secret_file, s).map_err(|source| HostingError::Io {
                path: secret_file.clone(),
                source,
            })?;
            s
        }
    };
    let mut nodes: Vec<Cluster> = Vec::new();
    let mut first_addr: Option<SocketAddr> = None;
    for i in 0..n {
        let mut c = ClusterConfig::with_secret(secret);
        c.cluster_name = "edgeray-local".into();
        c.name = Some(format!("local-{i}"));
        c.listen = "127.0.0.1:0".parse().expect("literal address");
        c.mdns = false;
        c.state_dir = dir.join(format!("node-{i}"));
        if let Some(a) = first_addr {
            c.seeds = vec![a.to_string()];
        }
        // Each embedded node offers an equal share of this machine's memory.
        let total = edgeray_runtime::resources::measure(&c, 0.0).memory_budget;
        c.memory_budget = Some(ByteSize(total / n as u64));
        c.validate()
            .map_err(|e| HostingError::Config(format!("{e:#}")))?;
        let cluster = start_hosting_node(c, threads).await?;
        if first_addr.is_none() {
            first_addr = cluster.node().map(|h| h.local_addr());
        }
        nodes.push(cluster);
    }
    // Every node must see every other (not only the first, which all of them seed to): a node
    // that knows only the seed would be cut off if the seed left.
    let deadline = Instant::now() + Duration::from_secs(20);
    for (i, node) in nodes.iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        let seen = wait_for_members(node, n, left).await;
        if seen < n {
            return Err(HostingError::NotFormed {
                node: i,
                seen,
                want: n,
            });
        }
    }
    Ok(nodes)
}

/// Default folder of the embedded cluster: `$XDG_CACHE_HOME/edgeray/local` or
/// `~/.cache/edgeray/local`.
pub fn default_local_dir() -> PathBuf {
    user_cache_dir().join("local")
}
