//! `edgeray sim --sweep`: every combination of nodes files × policies × streams × contexts,
//! one CSV row each, and optionally an SVG chart of tokens/s against joules/token with the
//! Pareto front.

use super::placement::cluster_from_file;
use super::sim::{
    SimArgs, apply_to_cluster, apply_to_pipeline, calibrate, csv_field, load_model, plan,
    sim_params,
};
use crate::pipeline::head::PolicySpec;
use crate::sim::plot::{Point, pareto_svg};
use crate::sim::{SimReport, Workload, simulate};
use anyhow::{Context, Result};

/// Run the sweep of `args` (its `--sweep` is set).
pub fn run(args: &SimArgs) -> Result<()> {
    let params = sim_params(args)?;
    let curves = match &args.calibrate {
        Some(path) => calibrate(path)?,
        None => Vec::new(),
    };
    // no --ctx: the profile's own context
    let contexts: Vec<Option<usize>> = if args.ctx.is_empty() {
        vec![None]
    } else {
        args.ctx.iter().map(|&c| Some(c)).collect()
    };
    println!(
        "nodes,policy,ctx,model,stages,tp,{},error",
        SimReport::CSV_HEADER
    );
    let blanks = ",".repeat(SimReport::CSV_HEADER.matches(',').count());
    let mut points = Vec::new();
    for nodes in &args.nodes {
        let mut cluster = cluster_from_file(nodes)?;
        if !curves.is_empty() {
            apply_to_cluster(&mut cluster, &curves)?;
        }
        let nodes_name = nodes.file_stem().map_or_else(
            || nodes.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        for ctx in &contexts {
            let mut model = load_model(args.model_profile.as_deref(), args.model.as_deref(), *ctx)?;
            model.profile.activation_bytes_per_token =
                (model.profile.hidden_size * args.wire_dtype.size()) as u64;
            let ctx_shown = model.profile.context_length;
            for policy in &args.policy {
                let head = format!(
                    "{},{},{ctx_shown},{}",
                    csv_field(&nodes_name),
                    csv_field(policy),
                    csv_field(&model.profile.name)
                );
                let spec = PolicySpec::named(policy.clone());
                let mut planned = match plan(&model, &cluster, &spec, args.stages, args.tp, true) {
                    Ok(p) => p,
                    Err(e) => {
                        // one row per configuration, even the ones that cannot be placed
                        for _ in &args.streams {
                            println!("{head},,,{blanks},{}", csv_field(&format!("{e:#}")));
                        }
                        continue;
                    }
                };
                apply_to_pipeline(&mut planned.pipeline, &curves);
                let stages = planned.pipeline.stages.len();
                let tp = planned.pipeline.stages[0].nodes.len();
                for &streams in &args.streams {
                    let work = Workload {
                        streams,
                        prompt_tokens: args.prompt_tokens,
                        gen_tokens: args.gen_tokens,
                    };
                    let r = simulate(&model, &planned.pipeline, work, &params, &[]);
                    println!("{head},{stages},{tp},{},", r.csv_row());
                    points.push(Point {
                        label: format!("{nodes_name} {policy} ×{streams} ctx {ctx_shown}"),
                        tokens_per_s: r.tokens_per_s,
                        joules_per_token: r.joules_per_token,
                    });
                }
            }
        }
    }
    if let Some(path) = &args.plot {
        let svg = pareto_svg("edgeray sim: tokens/s against joules/token", &points)
            .map_err(|e| anyhow::anyhow!("cannot draw the chart: {e}"))?;
        std::fs::write(path, svg).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!(
            "chart of {} configurations written to {}",
            points.len(),
            path.display()
        );
    }
    Ok(())
}
