//! `edgeray node`: run a cluster node on this board until SIGTERM/SIGINT.
//!
//! Boards on the same LAN find each other by mDNS within about 2 s; where multicast does not
//! work, `seeds` in `cluster.toml` join the same way. Logs go to stderr (`--log info` shows
//! membership changes: `member up name=… id=…`, `member down … reason=…`).
//!
//! On SIGTERM or SIGINT the node drains: it stops the stages it hosts at once, so each
//! coordinator's death watch fires and its service fails over immediately (no idle timeout),
//! replaying its sequences on the other nodes; then it says goodbye to its peers (membership
//! `left`: nobody places work on it any more), closes its endpoint and exits 0. A second signal
//! while draining exits at once (status 130).
//!
//! The node re-reads its config file on SIGHUP and whenever it changes, and applies its
//! `revoked` list (see `edgeray revoke`): a revoked node is disconnected within seconds.
//! Only one node runs per state directory: a second one exits at once naming the other.
//!
//! `--http ADDR` serves the board's `/metrics` and `/health` ([`super::node_http`]).

use anyhow::Context;
use edgeray_runtime::config::{ByteSize, ClusterConfig, Power, validate_node_name};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Arguments of `edgeray node`. Flags override the values in the config file.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// The cluster configuration written by `edgeray init`.
    #[arg(long, default_value = "cluster.toml")]
    pub config: PathBuf,
    /// This node's display name (default: `name` in the config, else the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// UDP address of the QUIC endpoint, e.g. `0.0.0.0:7070`.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Memory offered to the cluster, e.g. `3GiB`.
    #[arg(long)]
    pub memory_budget: Option<ByteSize>,
    /// Power budget of this board, e.g. `6W`.
    #[arg(long)]
    pub power_budget: Option<Power>,
    /// Folder for the node identity key.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// mDNS interface (repeatable), e.g. `--interface eth0`; replaces `interfaces` in the config.
    #[arg(long = "interface")]
    pub interfaces: Vec<String>,
    /// Additional seed `host:port` (repeatable), added to `seeds` in the config.
    #[arg(long = "seed")]
    pub seeds: Vec<String>,
    /// Disable mDNS (seeds only).
    #[arg(long)]
    pub no_mdns: bool,
    /// Kernel threads of the stages this node hosts (default: available cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Serve `GET /metrics` (Prometheus) and `GET /health` for this board on this TCP address,
    /// e.g. `0.0.0.0:9100` (read-only, no key).
    #[arg(long)]
    pub http: Option<SocketAddr>,
}

impl NodeArgs {
    /// The config file with the flags applied, validated.
    pub fn effective_config(&self) -> anyhow::Result<ClusterConfig> {
        let mut c = ClusterConfig::load(&self.config)?;
        if let Some(n) = &self.name {
            validate_node_name(n)?;
            c.name = Some(n.clone());
        }
        if let Some(l) = self.listen {
            c.listen = l;
        }
        if let Some(m) = self.memory_budget {
            c.memory_budget = Some(m);
        }
        if let Some(p) = self.power_budget {
            c.power_budget = Some(p);
        }
        if let Some(s) = &self.state_dir {
            c.state_dir = s.clone();
        }
        if !self.interfaces.is_empty() {
            c.interfaces = self.interfaces.clone();
        }
        c.seeds.extend(self.seeds.iter().cloned());
        if self.no_mdns {
            c.mdns = false;
        }
        c.validate()?;
        Ok(c)
    }
}

/// Longest a drain may take before the process exits anyway.
const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Run the subcommand.
pub fn run(args: NodeArgs) -> anyhow::Result<()> {
    let config = args.effective_config()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let threads = args
        .threads
        .unwrap_or_else(super::generate::default_threads);
    rt.block_on(async move {
        let cluster = crate::pipeline::start_hosting_node(config.clone(), threads).await?;
        let http = match args.http {
            Some(addr) => match super::node_http::NodeHttp::start(addr, cluster.clone(), config).await {
                Ok(h) => Some(h),
                Err(e) => {
                    cluster.shutdown().await;
                    return Err(e.into());
                }
            },
            None => None,
        };
        let node = cluster
            .node()
            .context("the actor system has no node")?
            .clone();
        node.watch_config_file(args.config.clone());
        eprintln!(
            "edgeray node {} ({}) listening on {}; Ctrl-C to leave the cluster",
            node.name(),
            node.node_id().short(),
            node.local_addr()
        );
        if let Some(h) = &http {
            // The line scripts and tests wait for.
            eprintln!("metrics at http://{}/metrics", h.local_addr);
        }
        wait_for_signal().await?;
        let roles = node.roles();
        eprintln!(
            "draining: stopping {} stage(s) (their coordinators fail over now), leaving the cluster",
            roles.len()
        );
        tokio::select! {
            _ = cluster.shutdown() => {}
            _ = wait_for_signal() => {
                eprintln!("second signal: exiting without a goodbye");
                std::process::exit(130);
            }
            _ = tokio::time::sleep(DRAIN_LIMIT) => {
                eprintln!("draining took over {DRAIN_LIMIT:?}; exiting");
            }
        }
        if let Some(h) = http {
            h.stop();
        }
        eprintln!("left the cluster");
        anyhow::Ok(())
    })
}

/// Resolves on SIGTERM or SIGINT.
#[cfg(unix)]
pub async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// Resolves on Ctrl-C.
#[cfg(not(unix))]
pub async fn wait_for_signal() -> anyhow::Result<()> {
    tokio::signal::ctrl_c().await?;
    Ok(())
}
