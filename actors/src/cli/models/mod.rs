//! `edgeray models list|rm|gc`: the shard cache of a board (or of the coordinator, or any
//! folder): list the cached stage shards with their size and last use, remove one, or evict
//! the least recently used ones down to a budget. Shards a running stage holds are never
//! removed (the same lock eviction respects).

mod render;

use std::path::PathBuf;

use anyhow::Context;
use edgeray_runtime::config::{ByteSize, ClusterConfig, DEFAULT_SHARD_CACHE};

use crate::pipeline::stage::{RemoveOutcome, ShardStore};
pub use render::{age, listing_json, listing_table, resolve_prefix};

/// `edgeray models ...`
#[derive(Debug, clap::Subcommand)]
pub enum ModelsCommand {
    /// Cached shards, least recently used first: hash, size, last use, whether a stage holds it.
    List {
        /// Where the cache is.
        #[command(flatten)]
        at: CacheLocation,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove one cached shard (by its hash or a unique prefix of at least 6 characters).
    Rm {
        /// Where the cache is.
        #[command(flatten)]
        at: CacheLocation,
        /// The shard's hash or a unique prefix of it.
        shard: String,
    },
    /// Evict least recently used shards no stage holds until the cache fits its budget.
    Gc {
        /// Where the cache is.
        #[command(flatten)]
        at: CacheLocation,
        /// The budget to shrink to, e.g. `2GiB` (default: `limits.shard_cache` of the config).
        #[arg(long)]
        budget: Option<ByteSize>,
    },
}

/// Which shard cache: a folder, or the one a cluster config's node (or coordinator) uses.
#[derive(Debug, Clone, clap::Args)]
pub struct CacheLocation {
    /// The cluster configuration: the cache is `state_dir/shards`, its budget
    /// `limits.shard_cache`.
    #[arg(long, default_value = "cluster.toml")]
    pub config: PathBuf,
    /// The cache of the coordinator (`run`/`serve` with this config: `state_dir/coordinator/shards`)
    /// instead of the node's.
    #[arg(long)]
    pub coordinator: bool,
    /// The cache folder itself (overrides `--config`; budget: the default 8 GiB unless given).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

impl CacheLocation {
    /// The folder and the configured budget.
    pub fn resolve(&self) -> anyhow::Result<(PathBuf, u64)> {
        if let Some(d) = &self.dir {
            anyhow::ensure!(d.is_dir(), "{} is not a folder", d.display());
            return Ok((d.clone(), DEFAULT_SHARD_CACHE.0));
        }
        let config = ClusterConfig::load(&self.config).with_context(|| {
            format!(
                "cannot read {} (give --config, or --dir for a cache folder)",
                self.config.display()
            )
        })?;
        let mut dir = config.state_dir.clone();
        if self.coordinator {
            dir = dir.join("coordinator");
        }
        let dir = dir.join("shards");
        anyhow::ensure!(
            dir.is_dir(),
            "no shard cache at {} (nothing was shipped to this {} yet)",
            dir.display(),
            if self.coordinator {
                "coordinator"
            } else {
                "node"
            }
        );
        Ok((dir, config.limits.shard_cache.0))
    }
}

/// Run the subcommand.
pub fn run(cmd: ModelsCommand) -> anyhow::Result<()> {
    match cmd {
        ModelsCommand::List { at, json } => {
            let (dir, budget) = at.resolve()?;
            let store = ShardStore::with_budget(&dir, budget)?;
            let listing = store.list()?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&listing_json(&dir, budget, &listing))?
                );
            } else {
                print!("{}", listing_table(&dir, budget, &listing));
            }
        }
        ModelsCommand::Rm { at, shard } => {
            let (dir, budget) = at.resolve()?;
            let store = ShardStore::with_budget(&dir, budget)?;
            let hash = resolve_prefix(&store.list()?, &shard)?;
            match store.remove(&hash)? {
                RemoveOutcome::Removed(bytes) => {
                    println!("removed {hash} ({})", ByteSize(bytes))
                }
                RemoveOutcome::InUse => anyhow::bail!(
                    "shard {hash} is held by a running stage; stop the pipeline using it first"
                ),
            }
        }
        ModelsCommand::Gc { at, budget } => {
            let (dir, configured) = at.resolve()?;
            let budget = budget.map_or(configured, |b| b.0);
            let store = ShardStore::with_budget(&dir, configured)?;
            let report = store.gc(budget)?;
            for s in &report.evicted {
                println!(
                    "evicted {} ({}, last used {})",
                    s.hash,
                    ByteSize(s.bytes),
                    age(s.last_used)
                );
            }
            println!(
                "{} shard(s) evicted; the cache holds {} of its {} budget",
                report.evicted.len(),
                ByteSize(report.remaining_bytes),
                ByteSize(budget)
            );
            anyhow::ensure!(
                report.within_budget(),
                "the cache is still over its budget: running stages hold the rest"
            );
        }
    }
    Ok(())
}
