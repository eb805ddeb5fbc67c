//! `edgeray bench --local N` / `--config FILE`: single node vs the pipeline, measured in the same
//! run — decode tokens/s of one stream on one node (the baseline) and across the stages, their
//! ratio, hidden-state bytes per token per hop, and aggregate tokens/s at 1 and 4 streams.

use anyhow::Context as _;
use std::path::PathBuf;
use std::time::Instant;

use edgeray_model::arch::{GenerateOptions, Generator};
use edgeray_model::sampling::SamplingParams;
use tokio::sync::mpsc;

use super::deploy_args::{DeployArgs, describe_placement};
use crate::pipeline::{GenOptions, Pipeline};

/// Prompts of the streams (long enough continuations: none of them ends early greedily);
/// stream `i` uses prompt `i % 4`, numbered from the fifth on so no two are the same.
const PROMPTS: [&str; 4] = [
    "The history of the Roman Empire began",
    "Here is a long story about a dragon and a knight:",
    "The following is a detailed guide to growing tomatoes.",
    "In the year 2050, cities will",
];

/// The prompt of stream `i`.
fn prompt(i: usize) -> String {
    match i / PROMPTS.len() {
        0 => PROMPTS[i].to_string(),
        k => format!("{} (part {})", PROMPTS[i % PROMPTS.len()], k + 1),
    }
}

/// Aggregate tokens/s of `n` concurrent streams of `tokens` tokens on `p`, and the mean
/// sequences per stage run during them.
async fn concurrent(p: &Pipeline, n: usize, tokens: usize) -> anyhow::Result<(f64, Vec<f64>)> {
    let runs_before = stage_counters(p).await;
    let t = Instant::now();
    let runs: Vec<_> = (0..n)
        .map(|i| {
            let p = p.clone();
            tokio::spawn(async move { stream(&p, &prompt(i), tokens).await })
        })
        .collect();
    let mut total = 0usize;
    for r in runs {
        total += r.await??.0;
    }
    let agg = total as f64 / t.elapsed().as_secs_f64();
    let mean_batch: Vec<f64> = stage_counters(p)
        .await
        .iter()
        .zip(&runs_before)
        .map(|(a, b)| (a.forwards - b.forwards) as f64 / (a.batches - b.batches).max(1) as f64)
        .collect();
    Ok((agg, mean_batch))
}

/// What the pipeline benchmark measures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PipelineBench {
    /// Model file.
    pub model: String,
    /// Pipeline stages.
    pub stages: usize,
    /// Hidden-state element type on the wire.
    pub wire_dtype: String,
    /// Kernel threads per stage (and of the single-node baseline).
    pub threads: usize,
    /// Tokens generated per stream.
    pub gen_tokens: usize,
    /// Baseline: one stream on one node, in this process.
    pub single_node_tokens_per_s: f64,
    /// One stream across the pipeline.
    pub pipeline_tokens_per_s: f64,
    /// `pipeline / single node` (target >= 0.95).
    pub pipeline_vs_single_node: f64,
    /// Aggregate tokens/s of 4 concurrent streams across the pipeline.
    pub pipeline_4_streams_tokens_per_s: f64,
    /// `4 streams / 1 stream` (target >= 1.7).
    pub four_streams_vs_one: f64,
    /// Concurrent streams of the aggregate measurement (`--streams`, default 4).
    pub streams: usize,
    /// Aggregate tokens/s of `streams` concurrent streams across the cluster: all generated
    /// tokens over the wall time.
    pub cluster_aggregate_tokens_per_s: f64,
    /// With `--long-prompt N`: a running stream's gaps while an N-token prompt is prefilled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefill_interference: Option<PrefillInterference>,
    /// Hidden-state bytes per generated token per hop.
    pub bytes_per_token_per_hop: f64,
    /// Mean per-stage compute per decode batch, ms.
    pub stage_compute_ms: Vec<f64>,
    /// During the 4 streams: mean sequences per stage run, per stage (1.0: no batching).
    pub four_streams_mean_batch: Vec<f64>,
    /// The interface a check reads: the whole model on one board (= `single_node_tokens_per_s`).
    pub baseline_tokens_per_s: f64,
    /// The chosen placement, one stream (= `pipeline_tokens_per_s`).
    pub cluster_tokens_per_s: f64,
    /// The simulator's prediction ([`crate::sim`]) of `cluster_tokens_per_s` for the placement
    /// that ran, from the coordinator's view of the cluster (compute scores, measured RTTs);
    /// `null` when the view lacks a node of the placement.
    pub predicted_tokens_per_s: Option<f64>,
    /// The simulator's prediction of `cluster_aggregate_tokens_per_s` (`streams` streams).
    pub predicted_aggregate_tokens_per_s: Option<f64>,
    /// Boards per stage (`--tp`).
    pub tp: usize,
    /// The placement: stages, each with its board(s) and, for groups, every board's slice.
    pub placement: serde_json::Value,
    /// Tensor-parallel synchronisation during the one-stream run, per group member (stage,
    /// member order): `(sync points, µs per sync point, sync points per token, bytes sent
    /// per token)`.
    pub tp_sync: Vec<TpSync>,
}

/// One group member's synchronisation figures over the one-stream run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TpSync {
    /// Stage index.
    pub stage: u16,
    /// Synchronisation points passed.
    pub syncs: u64,
    /// Mean µs from handing its piece out to holding every piece (includes waiting for the
    /// slowest member).
    pub us_per_sync: f64,
    /// Synchronisation points per token (decode).
    pub syncs_per_token: f64,
    /// Bytes it sent per token (to all other members).
    pub bytes_per_token: f64,
}

/// Every stage's counters (an unreachable stage counts as empty).
async fn stage_counters(p: &Pipeline) -> Vec<crate::pipeline::protocol::StageStats> {
    p.stage_stats()
        .await
        .into_iter()
        .map(|s| s.unwrap_or_default())
        .collect()
}

async fn stream(p: &Pipeline, prompt: &str, tokens: usize) -> anyhow::Result<(usize, f64)> {
    let ids = p.encode(prompt)?;
    let (tx, mut rx) = mpsc::channel(64);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let opts = GenOptions {
        max_tokens: tokens,
        sampling: SamplingParams::greedy(),
        ..Default::default()
    };
    let t = Instant::now();
    let s = p.generate(ids, &opts, &tx).await?;
    drop(tx);
    let _ = drain.await;
    Ok((s.tokens.len(), t.elapsed().as_secs_f64()))
}

/// Time between tokens of a running stream while another request's long prompt is prefilled.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PrefillInterference {
    /// Tokens of the long prompt.
    pub long_prompt_tokens: usize,
    /// Median gap between the running stream's tokens before the long prompt arrived, ms.
    pub tbt_undisturbed_ms: f64,
    /// 99th percentile (nearest rank) of its gaps from the long prompt's arrival to the long
    /// request's first token, ms.
    pub tbt_during_prefill_p99_ms: f64,
    /// Largest of those gaps, ms.
    pub tbt_during_prefill_max_ms: f64,
    /// `p99 / undisturbed` (target <= 3).
    pub p99_vs_undisturbed: f64,
    /// Time to the long request's first token, ms.
    pub long_prompt_ttft_ms: f64,
}

/// Runs one stream of `tokens` tokens, starts a request with a `long`-token prompt once it has
/// produced 16 tokens, and measures the running stream's gaps before and during that prefill.
async fn prefill_interference(
    p: &Pipeline,
    long: usize,
    tokens: usize,
) -> anyhow::Result<PrefillInterference> {
    let ids = p.encode(PROMPTS[1])?;
    let (tx, mut rx) = mpsc::channel::<crate::pipeline::GenToken>(256);
    let opts = GenOptions {
        max_tokens: tokens.max(64),
        sampling: SamplingParams::greedy(),
        ..Default::default()
    };
    let runner = {
        let p = p.clone();
        tokio::spawn(async move { p.generate(ids, &opts, &tx).await })
    };
    let mut times = Vec::new();
    while times.len() < 16 {
        match rx.recv().await {
            Some(_) => times.push(Instant::now()),
            None => anyhow::bail!("the running stream ended before 16 tokens"),
        }
    }
    // A long prompt of ordinary text, cut to `long` tokens.
    let mut text = String::new();
    let mut prompt = Vec::new();
    while prompt.len() < long {
        text.push_str(PROMPTS[2]);
        text.push(' ');
        prompt = p.encode(&text)?;
    }
    prompt.truncate(long);
    let arrived = Instant::now();
    let (ltx, mut lrx) = mpsc::channel::<crate::pipeline::GenToken>(8);
    let long_req = {
        let p = p.clone();
        tokio::spawn(async move {
            let o = GenOptions {
                max_tokens: 1,
                sampling: SamplingParams::greedy(),
                ..Default::default()
            };
            p.generate(prompt, &o, &ltx).await
        })
    };
    let mut first_long = None;
    loop {
        tokio::select! {
            t = rx.recv() => match t {
                Some(_) => times.push(Instant::now()),
                None => break,
            },
            l = lrx.recv(), if first_long.is_none() => {
                if l.is_some() { first_long = Some(Instant::now()); }
            }
        }
        if first_long.is_some_and(|f| times.last().is_some_and(|&t| t > f)) {
            break;
        }
    }
    runner.abort();
    let _ = long_req.await;
    let first_long = first_long.ok_or_else(|| anyhow::anyhow!("the long prompt gave no token"))?;
    let gaps = |range: &[Instant]| -> Vec<f64> {
        range
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64() * 1e3)
            .collect()
    };
    let split = times
        .iter()
        .position(|&t| t > arrived)
        .unwrap_or(times.len());
    let mut before = gaps(&times[..split]);
    // Gaps that end after the long prompt arrived, up to its first token.
    let end = times
        .iter()
        .position(|&t| t > first_long)
        .map_or(times.len(), |i| i + 1);
    let mut during = gaps(&times[split.saturating_sub(1)..end]);
    anyhow::ensure!(
        !before.is_empty() && !during.is_empty(),
        "too few tokens to measure"
    );
    before.sort_by(f64::total_cmp);
    during.sort_by(f64::total_cmp);
    let undisturbed = before[before.len() / 2];
    let rank = ((0.99 * during.len() as f64).ceil() as usize).clamp(1, during.len());
    let p99 = during[rank - 1];
    Ok(PrefillInterference {
        long_prompt_tokens: long,
        tbt_undisturbed_ms: undisturbed,
        tbt_during_prefill_p99_ms: p99,
        tbt_during_prefill_max_ms: *during.last().expect("not empty"),
        p99_vs_undisturbed: p99 / undisturbed,
        long_prompt_ttft_ms: (first_long - arrived).as_secs_f64() * 1e3,
    })
}

/// Calibration experiments: `streams` ∈ {1, 4} × generation ∈ {`gen_tokens`, 3 × that}; per stage
/// and experiment the mean stage run from the stages' own counters. The KV bytes a run reads
/// are estimated from its positions at the experiment's mean context (prompt + half the
/// generation).
async fn trace_runs(
    p: &Pipeline,
    model: &std::path::Path,
    ctx: usize,
    prompt_tokens: usize,
    gen_tokens: usize,
) -> anyhow::Result<Vec<crate::sim::calibrate::TraceRecord>> {
    let profile = super::placement::profile_from_gguf(model, Some(ctx), 0)?;
    let placement = p.placement().clone();
    let mut out = Vec::new();
    for streams in [1, 4] {
        for tokens in [gen_tokens, 3 * gen_tokens] {
            // the stage's KV cache must hold the prompt and the generation
            let tokens = tokens.min(ctx.saturating_sub(prompt_tokens + 8)).max(1);
            let before = stage_counters(p).await;
            concurrent(p, streams, tokens).await?;
            let after = stage_counters(p).await;
            let mean_ctx = prompt_tokens as f64 + tokens as f64 / 2.0;
            for (i, s) in placement.stages.iter().enumerate() {
                let (Some(a), Some(b)) = (after.get(i), before.get(i)) else {
                    continue;
                };
                let runs = a.batches.saturating_sub(b.batches);
                if runs == 0 {
                    continue;
                }
                let positions = (a.tokens - b.tokens) as f64 / runs as f64;
                let kv_per_position =
                    (s.layers.len() as u64 * profile.kv_bytes_per_token_per_layer) as f64;
                out.push(crate::sim::calibrate::TraceRecord {
                    node: s.node_name.clone(),
                    stage: i,
                    layers: s.layers.len(),
                    layer_bytes: profile.layer_bytes[s.layers.clone()].iter().sum(),
                    head_bytes: if s.head { profile.head_bytes } else { 0 },
                    positions,
                    sequences: (a.forwards - b.forwards) as f64 / runs as f64,
                    kv_read_bytes: positions * mean_ctx * kv_per_position,
                    compute_s: (a.compute_us - b.compute_us) as f64 / runs as f64 / 1e6,
                    runs,
                    experiment: format!("{streams} streams, {tokens} tokens"),
                });
            }
        }
    }
    Ok(out)
}

/// The simulator's `(one stream decode, streams aggregate)` tokens/s for the placement `p`
/// runs, on the coordinator's view of the cluster; `None` (with a warning) when it cannot be
/// built.
fn predict(
    coordinator: &edgeray_runtime::cluster::Cluster,
    p: &crate::pipeline::Pipeline,
    model: &std::path::Path,
    ctx: usize,
    prompt_tokens: usize,
    gen_tokens: usize,
    streams: usize,
) -> Option<(f64, f64)> {
    use crate::sim::{SimParams, Workload, pipeline_from_placement, simulate};
    let built = (|| {
        let mut m = super::model_profile::sim_model_from_gguf(model, Some(ctx))?;
        m.profile.activation_bytes_per_token =
            (m.profile.hidden_size * p.wire_dtype().size()) as u64;
        let view = crate::pipeline::head::cluster_view(coordinator);
        let pipeline = pipeline_from_placement(p.placement(), &m.profile, &view)?;
        anyhow::Ok((m, pipeline))
    })();
    let (m, pipeline) = match built {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!("no prediction: {e:#}");
            return None;
        }
    };
    let run = |streams| {
        let work = Workload {
            streams,
            prompt_tokens,
            gen_tokens,
        };
        simulate(&m, &pipeline, work, &SimParams::default(), &[])
    };
    Some((run(1).decode_tokens_per_s, run(streams.max(1)).tokens_per_s))
}

/// Runs the benchmark on `deploy` (stages default to one per embedded node).
/// `streams` concurrent requests give `cluster_aggregate_tokens_per_s` (4 are always measured).
/// With `long_prompt` > 0, also the running stream's gaps while a prompt of that many tokens
/// is prefilled (`prefill_interference`).
pub fn run(
    deploy: DeployArgs,
    gen_tokens: usize,
    streams: usize,
    long_prompt: usize,
    trace: Option<&std::path::Path>,
    json: bool,
) -> anyhow::Result<()> {
    if trace.is_some() && deploy.tp > 1 {
        anyhow::bail!("--trace fits one-board stages; run it without --tp");
    }
    // The same kernel threads per board as the stages use (capped to this process's CPUs).
    let threads = crate::pipeline::stage::capped_threads(deploy.threads());
    let model: PathBuf = deploy.model.clone();
    // Baseline first, alone on the machine.
    let g = Generator::load(&model, threads, Some(deploy.ctx), |_, _| {})?;
    let ids = g.encode(PROMPTS[0])?;
    let opts = GenerateOptions {
        max_tokens: gen_tokens,
        ..Default::default()
    };
    let out = g.generate_tokens(&ids, &opts, |_| true)?;
    let single = out.gen_tokens_per_s();
    drop(g);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        let d = deploy.deploy().await?;
        if !json {
            eprint!("{}", describe_placement(&d.pipeline));
        }
        let result = async {
            let p = &d.pipeline;
            let before = p.hop_totals();
            let tp_before = p.member_stats().await;
            // One stream: tokens after the first, over the time after the first.
            let (n1, _) = stream(p, PROMPTS[0], 1).await?;
            anyhow::ensure!(n1 == 1, "the pipeline produced no token");
            let ids = p.encode(PROMPTS[0])?;
            let ids_len = ids.len();
            let (tx, mut rx) = mpsc::channel(64);
            let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
            let s = p
                .generate(
                    ids,
                    &GenOptions {
                        max_tokens: gen_tokens,
                        sampling: SamplingParams::greedy(),
                        ..Default::default()
                    },
                    &tx,
                )
                .await?;
            drop(tx);
            let _ = drain.await;
            let one = s.gen_tokens_per_s();
            let after = p.hop_totals();
            let tp_after = p.member_stats().await;
            // Four streams at once, then `--streams` if it asked for another count.
            let (four, mean_batch) = concurrent(p, 4, gen_tokens).await?;
            let aggregate = if streams == 4 {
                four
            } else {
                concurrent(p, streams, gen_tokens).await?.0
            };
            let interference = if long_prompt > 0 {
                Some(prefill_interference(p, long_prompt, gen_tokens).await?)
            } else {
                None
            };
            let hops = p.placement().stages.len().saturating_sub(1);
            // Tokens that crossed each hop (prompt and generated) and the bytes they took.
            let (bytes, tokens) = after
                .iter()
                .zip(&before)
                .take(hops)
                .fold((0u64, 0u64), |(b, t), (a, z)| {
                    (b + a.bytes_out - z.bytes_out, t + a.tokens - z.tokens)
                });
            let per_token_per_hop = if tokens == 0 {
                0.0
            } else {
                bytes as f64 / tokens as f64
            };
            let compute: Vec<f64> = after
                .iter()
                .zip(&before)
                .map(|(a, b)| {
                    let n = (a.batches - b.batches).max(1) as f64;
                    (a.compute_us - b.compute_us) as f64 / n / 1e3
                })
                .collect();
            let tp_sync: Vec<TpSync> = tp_after
                .iter()
                .zip(&tp_before)
                .filter(|(a, _)| a.tp_syncs > 0)
                .map(|(a, b)| {
                    let syncs = a.tp_syncs - b.tp_syncs;
                    let toks = (a.tokens - b.tokens).max(1) as f64;
                    let batches = (a.batches - b.batches).max(1) as f64;
                    TpSync {
                        stage: a.index,
                        syncs,
                        us_per_sync: (a.tp_sync_us - b.tp_sync_us) as f64 / syncs.max(1) as f64,
                        // Decode batches hold one token each; the prompt batch counts once.
                        syncs_per_token: syncs as f64 / batches,
                        bytes_per_token: (a.tp_bytes_sent - b.tp_bytes_sent) as f64 / toks,
                    }
                })
                .collect();
            if let Some(path) = trace {
                let records = trace_runs(p, &model, deploy.ctx, ids_len, gen_tokens).await?;
                let mut text = String::new();
                for r in &records {
                    text.push_str(&serde_json::to_string(r)?);
                    text.push('\n');
                }
                std::fs::write(path, text)
                    .with_context(|| format!("cannot write trace {}", path.display()))?;
                if !json {
                    eprintln!(
                        "{} trace records written to {}",
                        records.len(),
                        path.display()
                    );
                }
            }
            let predicted = predict(
                &d.nodes[0],
                p,
                &model,
                deploy.ctx,
                ids_len,
                gen_tokens,
                streams,
            );
            anyhow::Ok(PipelineBench {
                baseline_tokens_per_s: single,
                cluster_tokens_per_s: one,
                predicted_tokens_per_s: predicted.map(|p| p.0),
                predicted_aggregate_tokens_per_s: predicted.map(|p| p.1),
                tp: deploy.tp,
                placement: serde_json::to_value(p.placement())?,
                tp_sync,
                model: model.display().to_string(),
                stages: p.placement().stages.len(),
                wire_dtype: p.wire_dtype().to_string(),
                threads,
                gen_tokens,
                single_node_tokens_per_s: single,
                pipeline_tokens_per_s: one,
                pipeline_vs_single_node: one / single,
                pipeline_4_streams_tokens_per_s: four,
                four_streams_vs_one: four / one,
                streams,
                cluster_aggregate_tokens_per_s: aggregate,
                prefill_interference: interference,
                bytes_per_token_per_hop: per_token_per_hop,
                stage_compute_ms: compute,
                four_streams_mean_batch: mean_batch,
            })
        }
        .await;
        d.shutdown().await;
        result
    })?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("model:                      {}", report.model);
        println!(
            "stages:                     {} ({} on the wire, {} kernel threads each)",
            report.stages, report.wire_dtype, report.threads
        );
        println!(
            "single node, 1 stream:      {:.2} tokens/s (baseline, same run)",
            report.single_node_tokens_per_s
        );
        println!(
            "pipeline, 1 stream:         {:.2} tokens/s = {:.2}x single node (target >= 0.95x)",
            report.pipeline_tokens_per_s, report.pipeline_vs_single_node
        );
        println!(
            "pipeline, 4 streams:        {:.2} tokens/s = {:.2}x one stream (target >= 1.7x)",
            report.pipeline_4_streams_tokens_per_s, report.four_streams_vs_one
        );
        if report.streams != 4 {
            println!(
                "pipeline, {} streams:       {:.2} tokens/s = {:.2}x one stream",
                report.streams,
                report.cluster_aggregate_tokens_per_s,
                report.cluster_aggregate_tokens_per_s / report.cluster_tokens_per_s
            );
        }
        if let (Some(pred), Some(agg)) = (
            report.predicted_tokens_per_s,
            report.predicted_aggregate_tokens_per_s,
        ) {
            println!(
                "simulator's prediction:     {pred:.2} tokens/s one stream ({:+.0} % off the measurement), {agg:.2} aggregate over {} streams",
                (pred / report.cluster_tokens_per_s - 1.0) * 100.0,
                report.streams
            );
        }
        if let Some(i) = &report.prefill_interference {
            println!(
                "{}-token prompt arriving:  gaps of a running stream p99 {:.1} ms, max {:.1} ms = {:.2}x its undisturbed {:.1} ms (target <= 3x); the prompt's first token after {:.0} ms",
                i.long_prompt_tokens,
                i.tbt_during_prefill_p99_ms,
                i.tbt_during_prefill_max_ms,
                i.p99_vs_undisturbed,
                i.tbt_undisturbed_ms,
                i.long_prompt_ttft_ms
            );
        }
        println!(
            "bytes per token per hop:    {:.0}",
            report.bytes_per_token_per_hop
        );
        println!(
            "stage compute per token:    {}",
            report
                .stage_compute_ms
                .iter()
                .map(|m| format!("{m:.1} ms"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "4 streams, sequences/run:   {}",
            report
                .four_streams_mean_batch
                .iter()
                .map(|m| format!("{m:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}
