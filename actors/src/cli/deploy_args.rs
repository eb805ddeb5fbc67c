//! What `edgeray run`, `edgeray serve` and `edgeray bench --local` share: where the cluster comes
//! from and how the model is deployed on it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use edgeray_runtime::cluster::Cluster;
use edgeray_runtime::config::{ClusterConfig, parse_duration};

use super::member_wait::{members_needed, wait_for_needed_members};
use crate::pipeline::coordinator::Service;
use crate::pipeline::{DeployOptions, Pipeline, WireDtype, deploy};
use crate::pipeline::{default_local_dir, embedded_cluster, start_hosting_node};

/// Default model of the embedded demo cluster.
pub const DEFAULT_MODEL: &str = "models/gemma-3-270m-q4_k_m.gguf";

/// Cluster and deployment options.
#[derive(Debug, Clone, clap::Args)]
pub struct DeployArgs {
    /// Cluster configuration (`edgeray init`); this process joins that cluster as the
    /// coordinator. Without it, an embedded cluster of `--local` nodes runs in this process
    /// (separate actor systems talking QUIC over loopback).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// GGUF model file (only the coordinator needs it: stages receive their shards).
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: PathBuf,
    /// Placement policy: throughput, memory or power.
    #[arg(long, default_value = "throughput")]
    pub policy: String,
    /// Exactly this many pipeline stages (the policy's best such placement). Default: the
    /// policy decides; with the embedded cluster, one stage per node.
    #[arg(long)]
    pub stages: Option<usize>,
    /// Boards per pipeline stage: every stage becomes a tensor-parallel group of N nodes that
    /// compute each token together, each holding a slice of every weight matrix (answers stay
    /// bit-identical to one node). The embedded cluster needs `--local` >= stages × N.
    #[arg(long, default_value_t = 1)]
    pub tp: usize,
    /// Nodes of the embedded cluster (without `--config`).
    #[arg(long = "local", default_value_t = 2)]
    pub local_nodes: usize,
    /// Folder of the embedded cluster's node state and shard caches.
    #[arg(long)]
    pub local_dir: Option<PathBuf>,
    /// With `--config`: wait until this many members (this process included) are up; at least
    /// `--stages` × `--tp` when `--stages` is given.
    #[arg(long, default_value_t = 1)]
    pub min_nodes: usize,
    /// With `--config`: the longest wait for the members the placement needs (`--min-nodes`,
    /// `--stages` × `--tp`) to join, with a line on stderr saying which are up and which are
    /// awaited; past it the command fails naming them.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub discover: Duration,
    /// With `--config`: this process's QUIC address (default: an ephemeral port, so a node
    /// running on the same board keeps its own).
    #[arg(long, default_value = "0.0.0.0:0")]
    pub listen: SocketAddr,
    /// Context length per sequence.
    #[arg(long, default_value_t = 2048)]
    pub ctx: usize,
    /// Kernel threads per stage (default: available cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Hidden states between stages: f32 (default: every answer bit-identical to one node) or
    /// f16 (half the bytes, lossy: answers may depend on the placement).
    #[arg(long, default_value = "f32")]
    pub wire_dtype: WireDtype,
    /// Sequences generated at once.
    #[arg(long, default_value_t = 4)]
    pub max_sequences: usize,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// A deployed pipeline and the cluster nodes this process runs.
pub struct Deployment {
    /// The pipeline.
    pub pipeline: Pipeline,
    /// Nodes of this process (the coordinator first).
    pub nodes: Vec<Cluster>,
}

impl Deployment {
    /// Stops the pipeline and this process's nodes.
    pub async fn shutdown(self) {
        self.pipeline.shutdown().await;
        for n in self.nodes.into_iter().rev() {
            n.shutdown().await;
        }
    }
}

impl DeployArgs {
    /// Kernel threads per stage.
    pub fn threads(&self) -> usize {
        self.threads
            .unwrap_or_else(super::generate::default_threads)
    }

    /// Starts (or joins) the cluster: this process's nodes (the coordinator first) and the
    /// stage count to ask for.
    pub async fn start_cluster(&self) -> anyhow::Result<(Vec<Cluster>, Option<usize>)> {
        anyhow::ensure!(
            self.model.is_file(),
            "model file {} not found (run scripts/fetch-models.sh, or pass --model)",
            self.model.display()
        );
        let threads = self.threads();
        Ok(match &self.config {
            Some(path) => {
                let mut config = ClusterConfig::load(path)?;
                config.listen = self.listen;
                config.name = Some(format!(
                    "{}-coordinator",
                    config.node_name().chars().take(40).collect::<String>()
                ));
                // The coordinator keeps its own identity beside the node's.
                config.state_dir = config.state_dir.join("coordinator");
                config.validate()?;
                let cluster = start_hosting_node(config, threads).await?;
                // Revocations in the file reach this coordinator too.
                if let Some(node) = cluster.node() {
                    node.watch_config_file(path.clone());
                }
                let need = members_needed(self.min_nodes, self.stages, self.tp);
                if let Err(e) = wait_for_needed_members(&cluster, need, self.discover).await {
                    cluster.shutdown().await;
                    return Err(e.into());
                }
                (vec![cluster], self.stages)
            }
            None => {
                let dir = self.local_dir.clone().unwrap_or_else(default_local_dir);
                let nodes = embedded_cluster(self.local_nodes, &dir, threads).await?;
                let stages = self
                    .stages
                    .unwrap_or((self.local_nodes / self.tp.max(1)).max(1));
                (nodes, Some(stages))
            }
        })
    }

    /// Prints one line on stderr when the chosen wire is lossy (`run` and `serve` call it).
    pub fn warn_if_lossy(&self) {
        if let Some(w) = self.wire_dtype.lossy_warning() {
            eprintln!("{w}");
        }
    }

    /// Deployment options for `stages`.
    pub fn options(&self, stages: Option<usize>) -> DeployOptions {
        DeployOptions {
            policy: self.policy.clone(),
            stages,
            ctx: self.ctx,
            threads: self.threads(),
            dtype: self.wire_dtype,
            max_sequences: self.max_sequences,
            max_queued: self.max_sequences * 4,
            progress: !self.quiet,
            tp: self.tp.max(1),
            tp_strict: true,
        }
    }

    /// Starts (or joins) the cluster and deploys the model.
    pub async fn deploy(&self) -> anyhow::Result<Deployment> {
        let (nodes, stages) = self.start_cluster().await?;
        let opts = self.options(stages);
        let pipeline = match deploy(&nodes[0], &self.model, &opts).await {
            Ok(p) => p,
            Err(e) => {
                for n in nodes.into_iter().rev() {
                    n.shutdown().await;
                }
                return Err(e).context("deployment failed");
            }
        };
        Ok(Deployment { pipeline, nodes })
    }
}

/// A supervised deployment started by `run` or `serve`.
pub struct ServiceDeployment {
    /// Keeps the model deployed, redeploying on a node loss.
    pub service: std::sync::Arc<Service>,
    /// The first pipeline (its placement was printed).
    pub first: Pipeline,
    /// The nodes started by this process (the embedded cluster's, or this coordinator).
    pub nodes: Vec<Cluster>,
}

impl DeployArgs {
    /// Starts (or joins) the cluster and a supervised deployment of the model with the
    /// options `tune` adjusts, failover plans kept ready when `spares`; prints the placement.
    /// On failure the nodes started here are shut down.
    pub async fn start_service(
        &self,
        spares: bool,
        tune: impl FnOnce(&mut DeployOptions),
    ) -> anyhow::Result<ServiceDeployment> {
        let (nodes, stages) = self.start_cluster().await?;
        let mut opts = self.options(stages);
        tune(&mut opts);
        let service =
            match Service::start_with(nodes[0].clone(), self.model.clone(), opts, spares).await {
                Ok(s) => s,
                Err(e) => {
                    for n in nodes.into_iter().rev() {
                        n.shutdown().await;
                    }
                    return Err(e).context("deployment failed");
                }
            };
        let first = service.current().context("no pipeline after deployment")?;
        eprint!("{}", describe_placement(&first));
        Ok(ServiceDeployment {
            service,
            first,
            nodes,
        })
    }
}

/// One line per stage: layers, node, memory.
pub fn describe_placement(p: &Pipeline) -> String {
    let pl = p.placement();
    let mut s = format!(
        "placement ({} policy, {} stage{}, hidden states {:?} on the wire):\n",
        pl.policy,
        pl.stages.len(),
        if pl.stages.len() == 1 { "" } else { "s" },
        p.wire_dtype()
    );
    for (k, st) in pl.stages.iter().enumerate() {
        s.push_str(&format!(
            "  stage {k}: layers {:>2}..{:<2} on {:<24} {:>6.1} MiB weights{}{}\n",
            st.layers.start,
            st.layers.end,
            st.node_name,
            st.weight_bytes as f64 / (1 << 20) as f64,
            if st.embed { " +embed" } else { "" },
            if st.head { " +head" } else { "" },
        ));
        for g in &st.group {
            s.push_str(&format!(
                "    tp member {} on {:<24} q heads {:?} kv heads {:?} ffn rows {:?} down rows {:?}{} ~{:.1} MiB\n",
                g.member,
                g.node_name,
                g.q_heads,
                g.kv_heads,
                g.ffn_rows,
                g.down_rows,
                g.vocab_rows
                    .as_ref()
                    .map(|r| format!(" vocab rows {r:?}"))
                    .unwrap_or_default(),
                g.weight_bytes as f64 / (1 << 20) as f64,
            ));
        }
    }
    s
}
