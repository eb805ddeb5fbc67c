//! `edgeray status`: print every member of the cluster.
//!
//! A short-lived client: it authenticates with the secret from `cluster.toml` under a throw-away
//! identity, asks one node (the local one, `--node`, a seed, or one found by mDNS) for its member
//! table and prints it: one row per member, then one indented `role: ...` line per role the
//! member advertises (what it hosts, e.g. `stage 1/3 layers 6..12 gemma-3-270m (coordinator
//! local-0)`, set with `NodeHandle::set_roles` and carried in heartbeats), so any node's answer
//! shows the whole pipeline placement. `--json` prints
//! [`edgeray_runtime::membership::status::ClusterStatus`] (schema documented there; stable,
//! fields only ever added; roles are in each member's `roles`).

use anyhow::Context;
use edgeray_runtime::config::{ClusterConfig, parse_duration};
use edgeray_runtime::node::status_client::{StatusTarget, query_status};
use std::path::PathBuf;

/// Arguments of `edgeray status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The cluster configuration (for the secret, seeds and mDNS settings).
    #[arg(long, default_value = "cluster.toml")]
    pub config: PathBuf,
    /// Ask this node (`host:port`) instead of searching.
    #[arg(long)]
    pub node: Option<String>,
    /// Print JSON (schema version 1, members' roles in `roles`) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Per-node timeout, e.g. `3s`.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    /// How long to search by mDNS when no local node, seed or `--node` answers, e.g. `3s`.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub discover: std::time::Duration,
    /// mDNS interface (repeatable); overrides `interfaces` in the config.
    #[arg(long = "interface")]
    pub interfaces: Vec<String>,
}

/// Run the subcommand.
pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    let mut config = ClusterConfig::load(&args.config)?;
    if !args.interfaces.is_empty() {
        config.interfaces = args.interfaces.clone();
    }
    let target = StatusTarget {
        node: args.node.clone(),
        discovery_timeout: args.discover,
        timeout: args.timeout,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let status = rt
        .block_on(query_status(&config, &target))
        .context("cannot reach the cluster")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        // One row per member, each followed by its `role:` lines (the current placement).
        print!("{}", status.render_table());
    }
    Ok(())
}
