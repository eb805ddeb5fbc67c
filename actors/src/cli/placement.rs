//! `edgeray placement preview`: show where each policy would put a GGUF model's layers on a
//! cluster, offline.
//!
//! The cluster comes from a nodes file (`--nodes FILE.toml`, format in
//! [`crate::placement::nodes_file`]) or from the live cluster (`--config cluster.toml`: this
//! process joins it briefly, as `edgeray run` would, and asks the scheduler actor on the head
//! node, which places from every member's reported memory, power, compute score and RTT); the
//! model profile from the GGUF tensor table (per-layer bytes = the sizes of the tensors named
//! `blk.<i>.*`).

use crate::pipeline::head::{PlaceAnswer, PlaceAsk, PolicySpec, ask_placement};
use crate::placement::{
    self, CandidateOutcome, ClusterView, ModelProfile, PlacementBench,
    units::{fmt_bytes, fmt_secs},
};
use anyhow::{Context, Result, bail};
use edgeray_model::gguf::GgufFile;
use std::path::{Path, PathBuf};

/// Arguments of `edgeray placement`.
#[derive(Debug, clap::Args)]
pub struct PlacementArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: PlacementCommand,
}

/// `edgeray placement ...`
#[derive(Debug, clap::Subcommand)]
pub enum PlacementCommand {
    /// Print every candidate placement of a policy (and optionally compare all policies).
    Preview(PreviewArgs),
}

/// Arguments of `edgeray placement preview`.
#[derive(Debug, clap::Args)]
#[command(after_help = NODES_HELP)]
pub struct PreviewArgs {
    /// GGUF model file.
    #[arg(long)]
    pub model: PathBuf,
    /// Synthetic cluster description (TOML, see below).
    #[arg(long, required_unless_present = "config", conflicts_with = "config")]
    pub nodes: Option<PathBuf>,
    /// The live cluster of this configuration (this process joins it as `edgeray run` would,
    /// so it appears as a member too).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// With `--config`: how long to wait for members.
    #[arg(long, default_value = "3s", value_parser = edgeray_runtime::config::parse_duration)]
    pub discover: std::time::Duration,
    /// Placement policy: memory, power or throughput.
    #[arg(long, default_value = "throughput")]
    pub policy: String,
    /// Context length the KV cache is sized for (default: the model's training context).
    #[arg(long)]
    pub ctx: Option<usize>,
    /// Fixed memory overhead per stage, MiB.
    #[arg(long, default_value_t = 48)]
    pub overhead_mib: u64,
    /// Power policy: latency target as a multiple of the fastest placement's latency.
    #[arg(long)]
    pub latency_factor: Option<f64>,
    /// Power policy: absolute per-token latency target, milliseconds.
    #[arg(long, conflicts_with = "latency_factor")]
    pub latency_target_ms: Option<f64>,
    /// Also run every policy (built-in and registered; the one of --policy with its settings)
    /// and print a comparison table.
    #[arg(long)]
    pub compare: bool,
    /// Machine-readable JSON output.
    #[arg(long)]
    pub json: bool,
}

const NODES_HELP: &str = "\
Nodes file (TOML):
  [default_link]            # optional; default 1 ms RTT, 100 Mbit/s
  rtt_ms = 1.0
  bandwidth_mbit = 100.0
  [[node]]
  name = \"pi-01\"            # id = \"...\" optional (defaults to the name)
  memory_mib = 2048         # budget; free_mib optional (defaults to memory_mib)
  power_w = 6.5             # watts while computing (needed by the power policy)
  compute_mib_s = 900       # measured weight MiB/s the node streams
  up = true                 # optional; backend = \"flex\" optional
  [[link]]                  # optional, symmetric
  a = \"pi-01\"
  b = \"pi-02\"
  rtt_ms = 0.4
  bandwidth_mbit = 940.0";

/// Run `edgeray placement`.
pub fn run(args: PlacementArgs) -> Result<()> {
    match args.command {
        PlacementCommand::Preview(a) => preview(a),
    }
}

/// Opens `path` and reads its placement profile ([`placement::profile_from_gguf`]).
pub fn profile_from_gguf(
    path: &Path,
    ctx: Option<usize>,
    overhead_bytes: u64,
) -> Result<ModelProfile> {
    let file =
        GgufFile::open(path).with_context(|| format!("cannot open model {}", path.display()))?;
    placement::profile_from_gguf(&file, ctx, overhead_bytes)
        .with_context(|| format!("cannot profile {}", path.display()))
}

/// Read a nodes file.
pub fn cluster_from_file(path: &Path) -> Result<ClusterView> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read nodes file {}", path.display()))?;
    placement::parse_nodes_toml(&text).with_context(|| format!("in {}", path.display()))
}

/// The policy of the command line, as the scheduler is asked for it.
fn policy_spec(args: &PreviewArgs) -> PolicySpec {
    PolicySpec {
        name: args.policy.clone(),
        latency_factor: args.latency_factor,
        latency_target_s: args.latency_target_ms.map(|ms| ms / 1e3),
    }
}

fn preview(args: PreviewArgs) -> Result<()> {
    let spec = policy_spec(&args);
    let policy = spec.build()?;
    let model = profile_from_gguf(&args.model, args.ctx, args.overhead_mib << 20)?;
    let (cluster, candidates) = match (&args.nodes, &args.config) {
        (Some(nodes), _) => {
            let cluster = cluster_from_file(nodes)?;
            let candidates = policy.candidates(&model, &cluster);
            (cluster, candidates)
        }
        (None, Some(config)) => {
            let ask = PlaceAsk {
                profile: model.clone(),
                policy: spec.clone(),
                stages: None,
                known: Vec::new(),
            };
            let answer = live_placement(config, args.discover, &ask)?;
            eprintln!(
                "placement by the scheduler on the head node {}",
                answer.head
            );
            (answer.view, answer.candidates)
        }
        (None, None) => bail!("give --nodes FILE or --config cluster.toml"),
    };
    // every registered policy; the one of --policy with the settings given
    let bench = args.compare.then(|| {
        let policies: Vec<_> = placement::all_policies()
            .into_iter()
            .map(|p| {
                if p.name() == policy.name() {
                    spec.build().unwrap_or(p)
                } else {
                    p
                }
            })
            .collect();
        PlacementBench::run(&policies, &model, &cluster)
    });
    if args.json {
        let json = serde_json::json!({
            "model": model,
            "policy": policy.name(),
            "candidates": candidates,
            "comparison": bench,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!(
            "{}",
            render(&model, &cluster, policy.name(), &candidates, bench.as_ref())
        );
    }
    if !candidates.iter().any(|c| c.chosen) {
        if candidates.len() == 1
            && let Some(CandidateOutcome::Unplaceable(e)) = candidates.first().map(|c| &c.outcome)
        {
            bail!("the model cannot be placed: {e}");
        }
        bail!("policy `{}` found no placement", policy.name());
    }
    Ok(())
}

/// Joins the cluster of `config` on an ephemeral port, waits `discover`, and asks the head
/// node's scheduler (as `edgeray run` does) for the candidates of `ask`.
fn live_placement(
    config: &Path,
    discover: std::time::Duration,
    ask: &PlaceAsk,
) -> Result<PlaceAnswer> {
    let mut c = edgeray_runtime::config::ClusterConfig::load(config)?;
    c.listen = "0.0.0.0:0".parse().expect("literal address");
    c.name = Some(format!(
        "{}-preview",
        c.node_name().chars().take(40).collect::<String>()
    ));
    c.state_dir = c.state_dir.join("coordinator");
    c.validate()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let cluster =
            crate::pipeline::start_hosting_node(c, super::generate::default_threads()).await?;
        let deadline = tokio::time::Instant::now() + discover;
        tokio::time::sleep_until(deadline).await;
        let answer = ask_placement(&cluster, ask).await;
        cluster.shutdown().await;
        Ok(answer?)
    })
}

/// The human-readable preview.
pub fn render(
    model: &ModelProfile,
    cluster: &ClusterView,
    policy: &str,
    candidates: &[placement::Candidate],
    bench: Option<&PlacementBench>,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "model {}: {} layers, weights {}, KV cache {} at ctx {}, overhead {} per stage",
        model.name,
        model.n_layers(),
        fmt_bytes(model.total_weight_bytes()),
        fmt_bytes(model.kv_bytes(model.n_layers())),
        model.context_length,
        fmt_bytes(model.stage_overhead_bytes)
    );
    let _ = writeln!(out, "cluster: {} nodes", cluster.nodes.len());
    for n in &cluster.nodes {
        let _ = writeln!(
            out,
            "  {:<12} {:>9} usable, {:>6.1} W, {:>9}/s{}",
            n.name,
            fmt_bytes(n.usable_bytes()),
            n.power_watts,
            fmt_bytes(n.compute_bytes_per_s as u64),
            if n.up { "" } else { "  (down)" }
        );
    }
    let _ = writeln!(
        out,
        "\npolicy `{policy}`: {} candidate(s)",
        candidates.len()
    );
    for c in candidates {
        let mark = if c.chosen { "  <= chosen" } else { "" };
        match &c.outcome {
            CandidateOutcome::Placed(p) => {
                let cost = if c.cost_name.ends_with("(s)") {
                    fmt_secs(c.cost)
                } else {
                    format!("{:.4}", c.cost)
                };
                let _ = writeln!(out, "\n[{}] {} = {cost}{mark}", c.label, c.cost_name);
                let _ = writeln!(out, "{p}");
            }
            CandidateOutcome::Unplaceable(e) => {
                let _ = writeln!(out, "\n[{}] unplaceable: {e}", c.label);
            }
        }
        for x in &c.excluded {
            let _ = writeln!(out, "  left out {}: {}", x.name, x.reason);
        }
    }
    if let Some(b) = bench {
        let _ = writeln!(out, "\ncomparison of all policies:\n{}", b.table());
    }
    out
}
