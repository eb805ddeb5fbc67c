//! `edgeray sim`: place a model on a (synthetic) cluster with a policy and simulate the
//! deployment with the discrete-event simulator ([`crate::sim`]): tokens/s, time between
//! tokens, energy per token, stage utilisation, failures.

use super::placement::cluster_from_file;
use crate::pipeline::head::{PolicySpec, schedule};
use crate::placement::{ClusterView, Placement};
use crate::sim::calibrate::{NodeCurve, fit, parse_trace};
use crate::sim::{
    SimFailure, SimModel, SimParams, SimPipeline, SimReport, Workload, pipeline_with_groups,
    simulate, tensor_groups,
};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// Arguments of `edgeray sim`.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Cluster description (the nodes file of `edgeray placement preview`); with `--sweep`,
    /// several (repeat the flag or separate with commas).
    #[arg(long, required = true, value_delimiter = ',')]
    pub nodes: Vec<PathBuf>,
    /// Model profile JSON (`edgeray model profile MODEL.gguf > model.json`, or one under
    /// `profiles/models/`).
    #[arg(long, required_unless_present = "model", conflicts_with = "model")]
    pub model_profile: Option<PathBuf>,
    /// A GGUF model file instead of a profile.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Context length the KV cache is sized for (default: the profile's); with `--sweep`,
    /// several.
    #[arg(long, value_delimiter = ',')]
    pub ctx: Vec<usize>,
    /// Exactly this many pipeline stages (default: the policy decides).
    #[arg(long)]
    pub stages: Option<usize>,
    /// Make every stage a tensor-parallel group of this many boards (unused nodes join).
    #[arg(long, default_value_t = 1)]
    pub tp: usize,
    /// Placement policy: memory, power, throughput or a registered one; with `--sweep`,
    /// several.
    #[arg(long, default_value = "throughput", value_delimiter = ',')]
    pub policy: Vec<String>,
    /// Hidden states between stages: f32 (the runtime's default) or f16; sets the activation
    /// bytes per token (hidden size × 4 or × 2).
    #[arg(long, default_value = "f32")]
    pub wire_dtype: crate::pipeline::WireDtype,
    /// Concurrent streams; with `--sweep`, several.
    #[arg(long, default_value = "1", value_delimiter = ',')]
    pub streams: Vec<usize>,
    /// Prompt tokens per stream.
    #[arg(long, default_value_t = 16)]
    pub prompt_tokens: usize,
    /// Tokens generated per stream.
    #[arg(long, default_value_t = 64)]
    pub gen_tokens: usize,
    /// A node fails at this time: `NODE@SECONDS` (repeatable; NODE is a name or id).
    #[arg(long = "fail", value_name = "NODE@SECONDS")]
    pub fail: Vec<String>,
    /// Seconds from a failure to its detection (default: the runtime's suspect_after).
    #[arg(long, default_value_t = 3.0)]
    pub detect_s: f64,
    /// Seconds to redeploy after a detected failure.
    #[arg(long, default_value_t = 5.0)]
    pub redeploy_s: f64,
    /// Batching: a forward over k positions costs 1 + B × (k − 1) single-position forwards.
    #[arg(long, default_value_t = 0.1)]
    pub batch_cost: f64,
    /// Most sequences per forward.
    #[arg(long, default_value_t = 16)]
    pub max_batch: usize,
    /// Run-time noise: each forward's time is scaled by 1 ± this (uniform, seeded).
    #[arg(long, default_value_t = 0.0)]
    pub jitter: f64,
    /// Idle power as a fraction of each board's compute power.
    #[arg(long, default_value_t = 0.0)]
    pub idle_power_fraction: f64,
    /// Seed of the simulator's generator.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Calibrate first: fit each node's cost curve to this trace (`edgeray bench ... --trace
    /// FILE`) and simulate with the fitted compute scores, batch costs and KV read speeds
    /// (every traced node must be in the nodes file, by name).
    #[arg(long, value_name = "TRACE.jsonl")]
    pub calibrate: Option<PathBuf>,
    /// Simulate every combination of `--nodes` × `--policy` × `--streams` × `--ctx` and print
    /// one CSV row each (configurations that cannot be placed get their error).
    #[arg(long, conflicts_with_all = ["json", "fail"])]
    pub sweep: bool,
    /// With `--sweep`: also write an SVG chart of tokens/s against joules/token with the
    /// Pareto front.
    #[arg(long, requires = "sweep", value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Machine-readable JSON output (the report, plus `policy` and `placement`).
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// One CSV header and row.
    #[arg(long)]
    pub csv: bool,
}

/// A parsed `--fail NODE@SECONDS`.
#[derive(Debug, Clone, PartialEq)]
pub struct FailArg {
    /// Node name or id.
    pub node: String,
    /// Seconds from the start.
    pub at_s: f64,
}

/// Parse `NODE@SECONDS`.
pub fn parse_fail(s: &str) -> Result<FailArg> {
    let Some((node, at)) = s.rsplit_once('@') else {
        bail!("--fail `{s}`: expected NODE@SECONDS, e.g. pi-02@30");
    };
    let at_s: f64 = at
        .parse()
        .ok()
        .filter(|x: &f64| x.is_finite() && *x >= 0.0)
        .with_context(|| format!("--fail `{s}`: `{at}` is not a time in seconds ≥ 0"))?;
    if node.is_empty() {
        bail!("--fail `{s}`: no node name");
    }
    Ok(FailArg {
        node: node.to_string(),
        at_s,
    })
}

/// Read a model profile: JSON from `edgeray model profile` (or a plain placement profile).
pub fn read_model_profile(path: &Path) -> Result<SimModel> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read model profile {}", path.display()))?;
    let m: SimModel = serde_json::from_str(&text)
        .with_context(|| format!("invalid model profile {}", path.display()))?;
    if m.profile.layer_bytes.is_empty() {
        bail!("model profile {} has no layers", path.display());
    }
    Ok(m)
}

/// The model of the command line, its KV cache sized for `ctx` when given.
pub fn load_model(
    profile: Option<&Path>,
    gguf: Option<&Path>,
    ctx: Option<usize>,
) -> Result<SimModel> {
    let mut m = match (profile, gguf) {
        (Some(p), _) => read_model_profile(p)?,
        (None, Some(g)) => super::model_profile::sim_model_from_gguf(g, ctx)?,
        (None, None) => bail!("give --model-profile FILE or --model FILE.gguf"),
    };
    if let Some(c) = ctx {
        m.profile.context_length = c;
    }
    Ok(m)
}

/// One deployment to simulate: the placement and its pipeline.
pub struct Planned {
    /// The policy's placement.
    pub placement: Placement,
    /// Its boards per stage (tensor groups included).
    pub pipeline: SimPipeline,
}

/// Place `model` on `cluster` with `policy` (exactly `stages` when given; `tp`-wide groups,
/// `strict` about having enough nodes) and build its pipeline.
pub fn plan(
    model: &SimModel,
    cluster: &ClusterView,
    policy: &PolicySpec,
    stages: Option<usize>,
    tp: usize,
    strict: bool,
) -> Result<Planned> {
    let p = policy.build()?;
    let placement = schedule(p.as_ref(), &model.profile, cluster, stages)?;
    let groups = tensor_groups(&placement, cluster, tp, strict)?;
    let pipeline = pipeline_with_groups(&placement, &model.profile, cluster, &groups)?;
    Ok(Planned {
        placement,
        pipeline,
    })
}

/// The failures of `--fail`, each with the pipeline the policy redeploys once the failed
/// nodes so far are down (the same number of stages when it still fits, else its best).
pub fn plan_failures(
    fails: &[FailArg],
    model: &SimModel,
    cluster: &ClusterView,
    policy: &PolicySpec,
    stages: Option<usize>,
    tp: usize,
) -> Result<Vec<SimFailure>> {
    let mut sorted = fails.to_vec();
    sorted.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    let mut view = cluster.clone();
    let mut out = Vec::new();
    for f in sorted {
        let Some(n) = view
            .nodes
            .iter_mut()
            .find(|n| n.name == f.node || n.id.0 == f.node)
        else {
            let names: Vec<&str> = cluster.nodes.iter().map(|n| n.name.as_str()).collect();
            bail!(
                "--fail names unknown node `{}`; the nodes file has: {}",
                f.node,
                names.join(", ")
            );
        };
        n.up = false;
        let name = n.name.clone();
        let replacement = plan(model, &view, policy, stages, tp, false)
            .or_else(|_| plan(model, &view, policy, None, tp, false))
            .ok()
            .map(|p| p.pipeline);
        out.push(SimFailure {
            node: name,
            at_s: f.at_s,
            replacement,
        });
    }
    Ok(out)
}

/// The simulator parameters of the command line.
pub fn sim_params(args: &SimArgs) -> Result<SimParams> {
    for (name, v) in [
        ("--detect-s", args.detect_s),
        ("--redeploy-s", args.redeploy_s),
        ("--batch-cost", args.batch_cost),
        ("--jitter", args.jitter),
        ("--idle-power-fraction", args.idle_power_fraction),
    ] {
        if !v.is_finite() || v < 0.0 {
            bail!("{name} must be a finite number ≥ 0 (got {v})");
        }
    }
    if args.jitter >= 1.0 {
        bail!("--jitter must be below 1 (got {})", args.jitter);
    }
    Ok(SimParams {
        batch_cost: args.batch_cost,
        max_batch: args.max_batch.max(1),
        jitter: args.jitter,
        seed: args.seed,
        idle_power_fraction: args.idle_power_fraction,
        detect_s: args.detect_s,
        redeploy_s: args.redeploy_s,
        ..SimParams::default()
    })
}

/// Run `edgeray sim`.
pub fn run(args: SimArgs) -> Result<()> {
    if args.streams.contains(&0) || args.gen_tokens == 0 {
        bail!("--streams and --gen-tokens must be at least 1");
    }
    if args.tp == 0 {
        bail!("--tp must be at least 1");
    }
    if args.sweep {
        return super::sim_sweep::run(&args);
    }
    for (flag, n) in [
        ("--nodes", args.nodes.len()),
        ("--policy", args.policy.len()),
        ("--streams", args.streams.len()),
        ("--ctx", args.ctx.len()),
    ] {
        if n > 1 {
            bail!("{flag} takes one value without --sweep (got {n})");
        }
    }
    let nodes_file = &args.nodes[0];
    let policy_name = args.policy[0].clone();
    let streams = args.streams[0];
    let ctx = args.ctx.first().copied();
    let fails = args
        .fail
        .iter()
        .map(|s| parse_fail(s))
        .collect::<Result<Vec<_>>>()?;
    let model = load_model(args.model_profile.as_deref(), args.model.as_deref(), ctx)?;
    let mut model = model;
    model.profile.activation_bytes_per_token =
        (model.profile.hidden_size * args.wire_dtype.size()) as u64;
    let mut cluster = cluster_from_file(nodes_file)?;
    let curves = match &args.calibrate {
        Some(path) => {
            let curves = calibrate(path)?;
            apply_to_cluster(&mut cluster, &curves)?;
            curves
        }
        None => Vec::new(),
    };
    let spec = PolicySpec::named(policy_name.clone());
    let mut planned = plan(&model, &cluster, &spec, args.stages, args.tp, true)?;
    let mut failures = plan_failures(&fails, &model, &cluster, &spec, args.stages, args.tp)?;
    apply_to_pipeline(&mut planned.pipeline, &curves);
    for f in &mut failures {
        if let Some(p) = &mut f.replacement {
            apply_to_pipeline(p, &curves);
        }
    }
    let work = Workload {
        streams,
        prompt_tokens: args.prompt_tokens,
        gen_tokens: args.gen_tokens,
    };
    let params = sim_params(&args)?;
    let report = simulate(&model, &planned.pipeline, work, &params, &failures);
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        v["model"] = model.profile.name.clone().into();
        v["policy"] = policy_name.clone().into();
        v["placement"] = serde_json::to_value(&planned.placement)?;
        v["pipeline"] = serde_json::to_value(&planned.pipeline)?;
        if args.calibrate.is_some() {
            v["calibration"] = serde_json::to_value(&curves)?;
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if args.csv {
        println!("model,policy,stages,tp,{}", SimReport::CSV_HEADER);
        println!(
            "{},{},{},{},{}",
            csv_field(&model.profile.name),
            csv_field(&policy_name),
            planned.pipeline.stages.len(),
            planned.pipeline.stages[0].nodes.len(),
            report.csv_row()
        );
    } else {
        if !curves.is_empty() {
            print!("{}", render_curves(&curves));
        }
        print!("{}", render(&model, &planned, &report));
    }
    Ok(())
}

/// Read and fit a trace.
pub fn calibrate(path: &Path) -> Result<Vec<NodeCurve>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read trace {}", path.display()))?;
    let records =
        parse_trace(&text).map_err(|e| anyhow::anyhow!("invalid trace {}: {e}", path.display()))?;
    fit(&records).with_context(|| format!("cannot calibrate from {}", path.display()))
}

/// Put the fitted compute scores into the cluster the policy places on.
pub fn apply_to_cluster(cluster: &mut ClusterView, curves: &[NodeCurve]) -> Result<()> {
    for c in curves {
        let Some(n) = cluster
            .nodes
            .iter_mut()
            .find(|n| n.name == c.node || n.id.0 == c.node)
        else {
            let names: Vec<&str> = cluster.nodes.iter().map(|n| n.name.as_str()).collect();
            bail!(
                "the trace measured node `{}`, which the nodes file does not have (it has: {})",
                c.node,
                names.join(", ")
            );
        };
        n.compute_bytes_per_s = c.compute_bytes_per_s;
    }
    Ok(())
}

/// Give the pipeline's boards their fitted batch costs and KV read speeds.
pub fn apply_to_pipeline(p: &mut SimPipeline, curves: &[NodeCurve]) {
    for n in p.stages.iter_mut().flat_map(|s| s.nodes.iter_mut()) {
        if let Some(c) = curves.iter().find(|c| c.node == n.name) {
            n.compute_bytes_per_s = c.compute_bytes_per_s;
            n.batch_cost = c.batch_cost;
            n.kv_bytes_per_s = c.kv_bytes_per_s;
        }
    }
}

fn render_curves(curves: &[NodeCurve]) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("calibrated cost curves:\n");
    let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("unknown".into(), f);
    for c in curves {
        let _ = writeln!(
            out,
            "  {:<16} {:>9.1} MiB/s, batch cost {}, KV reads {}, {} records, rms {:.2} ms",
            c.node,
            c.compute_bytes_per_s / (1024.0 * 1024.0),
            opt(c.batch_cost, &|b| format!("{b:.3}")),
            opt(c.kv_bytes_per_s, &|k| format!(
                "{:.1} MiB/s",
                k / (1024.0 * 1024.0)
            )),
            c.samples,
            c.rms_error_s * 1e3
        );
    }
    out.push('\n');
    out
}

/// `s` quoted for CSV when it holds a comma or quote.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn render(model: &SimModel, planned: &Planned, r: &SimReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "model {} ({} layers), policy `{}`:",
        model.profile.name,
        model.profile.n_layers(),
        planned.placement.policy
    );
    let _ = write!(out, "{}", planned.placement);
    let w = r.workload;
    let _ = writeln!(
        out,
        "\n\nsimulated {} stream(s) × ({} prompt + {} generated tokens):",
        w.streams, w.prompt_tokens, w.gen_tokens
    );
    let _ = writeln!(
        out,
        "  tokens/s        {:.3} aggregate ({} tokens in {:.3} s), decode {:.3}",
        r.tokens_per_s, r.tokens, r.duration_s, r.decode_tokens_per_s
    );
    let _ = writeln!(out, "  first token     {:.3} s (mean)", r.ttft_mean_s);
    let _ = writeln!(
        out,
        "  between tokens  p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        r.tbt.p50_s * 1e3,
        r.tbt.p99_s * 1e3,
        r.tbt.max_s * 1e3
    );
    let _ = writeln!(
        out,
        "  energy          {:.3} J/token ({:.1} J)",
        r.joules_per_token, r.energy_j
    );
    for s in &r.stages {
        let _ = writeln!(
            out,
            "  deployment {} stage {}: {:<24} {:>3} layers, {:>5.1} % busy, mean batch {:.2}",
            s.deployment,
            s.stage,
            s.nodes.join("+"),
            s.layers,
            s.utilisation * 100.0,
            s.mean_batch
        );
    }
    for f in &r.failures {
        let _ = match (f.in_pipeline, f.detected_at_s, f.redeployed_at_s) {
            (false, ..) => writeln!(
                out,
                "  failure of {} at {:.2} s: not in the pipeline",
                f.node, f.at_s
            ),
            (true, d, Some(up)) => writeln!(
                out,
                "  failure of {} at {:.2} s: detected {:.2} s, redeployed {:.2} s, {} positions replayed",
                f.node,
                f.at_s,
                d.unwrap_or(f.at_s),
                up,
                f.replayed_tokens
            ),
            (true, ..) => writeln!(
                out,
                "  failure of {} at {:.2} s: no placement left",
                f.node, f.at_s
            ),
        };
    }
    if r.stalled {
        let _ = writeln!(out, "  STALLED: some streams did not finish");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fail_specs() {
        assert_eq!(
            parse_fail("pi-02@30.5").unwrap(),
            FailArg {
                node: "pi-02".into(),
                at_s: 30.5
            }
        );
        assert!(parse_fail("pi-02").is_err());
        assert!(parse_fail("pi-02@-1").is_err());
        assert!(parse_fail("@3").is_err());
        assert!(parse_fail("a@x").is_err());
    }
}
