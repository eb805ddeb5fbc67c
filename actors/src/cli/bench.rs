//! `edgeray bench`: prompt-processing and generation speed (median of repetitions) and peak RSS.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use edgeray_model::arch::{BatchItem, Generator, LogitsFor, StageInput, StageOutput};
use edgeray_model::sampling::argmax;

use super::generate::{default_threads, load_with_progress};

/// Arguments of `edgeray bench`.
///
/// Without `--local`/`--config`: one node, prompt processing and generation speed. With them:
/// single node vs the pipeline in the same run (see [`super::bench_pipeline`]).
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// GGUF model file.
    #[arg(long)]
    pub model: PathBuf,
    /// Benchmark the pipeline on an embedded cluster of N nodes in this process.
    #[arg(long = "local")]
    pub local_nodes: Option<usize>,
    /// Benchmark the pipeline on the cluster of this configuration.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Pipeline stages (default: one per embedded node; the policy decides with `--config`).
    #[arg(long)]
    pub stages: Option<usize>,
    /// Boards per stage (tensor-parallel groups; see `edgeray run --tp`).
    #[arg(long, default_value_t = 1)]
    pub tp: usize,
    /// Hidden states between stages: f32 (default, exact) or f16 (lossy, half the bytes).
    #[arg(long, default_value = "f32")]
    pub wire_dtype: crate::pipeline::WireDtype,
    /// With `--config`: wait until this many members are up (at least `--stages` × `--tp`).
    #[arg(long, default_value_t = 1)]
    pub min_nodes: usize,
    /// With `--config`: the longest wait for the members the placement needs to join.
    #[arg(long, default_value = "60s", value_parser = edgeray_runtime::config::parse_duration)]
    pub discover: std::time::Duration,
    /// Tokens of the prompt-processing test (one batch).
    #[arg(long, default_value_t = 512)]
    pub prompt_tokens: usize,
    /// Tokens of the generation test (one token per step).
    #[arg(long, default_value_t = 128)]
    pub gen_tokens: usize,
    /// Kernel threads (default: available cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Repetitions; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Concurrent streams: also measure the aggregate generation speed of this many sequences
    /// decoded together (one node: every step runs all of them as one batched forward, like
    /// `llama-batched-bench`; pipeline: this many concurrent requests).
    #[arg(long)]
    pub streams: Option<usize>,
    /// With `--local`/`--config`: also measure a running stream's time between tokens while a
    /// prompt of this many tokens arrives and is prefilled (`prefill_interference`).
    #[arg(long, default_value_t = 0)]
    pub long_prompt: usize,
    /// With `--local`/`--config`: also run calibration experiments (1 and 4 streams, a short
    /// and a 3× longer generation) and write one JSON line per stage and experiment — the
    /// stage's mean run (positions, sequences, compute time, estimated KV bytes read) — for
    /// `edgeray sim --calibrate`.
    #[arg(long, value_name = "TRACE.jsonl")]
    pub trace: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The memory target of a single-node run: 1.1 × the GGUF file + the KV cache + 64 MiB.
pub fn rss_budget_bytes(gguf_bytes: u64, kv_cache_bytes: u64) -> u64 {
    gguf_bytes + gguf_bytes / 10 + kv_cache_bytes + (64 << 20)
}

/// Peak resident set size of this process (`VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Deterministic pseudo-random token ids below `vocab` (like llama-bench's random prompt).
fn synthetic_tokens(n: usize, vocab: usize, salt: u64) -> Vec<u32> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ salt;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % vocab as u64) as u32
        })
        .collect()
}

/// Prompt tokens of each concurrent stream (distinct per stream, prefilled before timing).
const STREAM_PROMPT: usize = 16;

/// Aggregate generation tokens/s of `streams` sequences decoded together: each step is one
/// batched forward over all of them (every weight block read once per step), after each was
/// prefilled with its own prompt. Returns tokens/s over all streams.
fn batched_decode_tokens_per_s(
    g: &Generator,
    streams: usize,
    gen_tokens: usize,
    ctx: usize,
    salt: u64,
) -> anyhow::Result<f64> {
    let vocab = g.config().vocab_size;
    let mut caches: Vec<_> = (0..streams).map(|_| g.stage.new_cache(ctx)).collect();
    let mut next = Vec::with_capacity(streams);
    for (i, cache) in caches.iter_mut().enumerate() {
        let prompt = synthetic_tokens(STREAM_PROMPT, vocab, salt * 1000 + i as u64);
        let l = logits(g, StageInput::Tokens(prompt), cache)?;
        next.push(argmax(&l).context("empty logits")? as u32);
    }
    let t = Instant::now();
    for _ in 0..gen_tokens {
        let items = caches
            .iter_mut()
            .zip(&next)
            .map(|(cache, &tok)| BatchItem {
                input: StageInput::Tokens(vec![tok]),
                cache,
                logits: LogitsFor::Last,
            })
            .collect();
        let outs = g.stage.forward_batch(items)?;
        for (out, tok) in outs.into_iter().zip(next.iter_mut()) {
            let StageOutput::Logits(l) = out else {
                bail!("full model returned hidden states");
            };
            let l = l
                .into_data()
                .try_into_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            *tok = argmax(&l).context("empty logits")? as u32;
        }
    }
    Ok((streams * gen_tokens) as f64 / t.elapsed().as_secs_f64())
}

fn logits(
    g: &Generator,
    input: StageInput,
    cache: &mut edgeray_model::arch::KvCache,
) -> anyhow::Result<Vec<f32>> {
    match g.stage.forward(input, cache, LogitsFor::Last)? {
        StageOutput::Logits(l) => l
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("{e:?}")),
        StageOutput::Hidden(_) => bail!("full model returned hidden states"),
    }
}

/// Run the subcommand.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.reps == 0 || args.prompt_tokens == 0 || args.gen_tokens == 0 {
        bail!("--reps, --prompt-tokens and --gen-tokens must be at least 1");
    }
    if args.streams == Some(0) {
        bail!("--streams must be at least 1");
    }
    if args.local_nodes.is_some() || args.config.is_some() {
        let deploy = super::deploy_args::DeployArgs {
            config: args.config.clone(),
            model: args.model.clone(),
            policy: "throughput".into(),
            stages: args.stages,
            tp: args.tp,
            local_nodes: args.local_nodes.unwrap_or(2),
            local_dir: None,
            min_nodes: args.min_nodes,
            discover: args.discover,
            listen: "0.0.0.0:0".parse().expect("literal address"),
            ctx: (args.gen_tokens + 64)
                .max(256)
                .max(args.long_prompt + 64)
                .max(if args.trace.is_some() {
                    3 * args.gen_tokens + 64
                } else {
                    0
                }),
            threads: args.threads,
            wire_dtype: args.wire_dtype,
            max_sequences: args.streams.unwrap_or(4).max(4),
            quiet: args.json,
        };
        return super::bench_pipeline::run(
            deploy,
            args.gen_tokens,
            args.streams.unwrap_or(4),
            args.long_prompt,
            args.trace.as_deref(),
            args.json,
        );
    }
    if args.trace.is_some() {
        anyhow::bail!("--trace records stage runs of a pipeline: give --local N or --config");
    }
    let threads = args.threads.unwrap_or_else(default_threads).max(1);
    let ctx = args.prompt_tokens.max(args.gen_tokens + STREAM_PROMPT) + 1;
    let g = load_with_progress(&args.model, threads, Some(ctx))?;
    let vocab = g.config().vocab_size;
    let gguf_bytes = std::fs::metadata(&args.model)
        .context("cannot stat the model")?
        .len();
    let mut pp = Vec::new();
    let mut tg = Vec::new();
    let mut agg = Vec::new();
    // The largest KV cache held at once (the prompt's and the generation's are separate).
    let mut kv_bytes = 0usize;
    for rep in 0..args.reps {
        let prompt = synthetic_tokens(args.prompt_tokens, vocab, rep as u64);
        let mut cache = g.stage.new_cache(ctx);
        let t = Instant::now();
        let l = logits(&g, StageInput::Tokens(prompt), &mut cache)?;
        pp.push(args.prompt_tokens as f64 / t.elapsed().as_secs_f64());
        kv_bytes = kv_bytes.max(cache.allocated_bytes());
        drop(l);

        let mut cache = g.stage.new_cache(ctx);
        let mut tok = synthetic_tokens(1, vocab, 1000 + rep as u64)[0];
        let t = Instant::now();
        for _ in 0..args.gen_tokens {
            let l = logits(&g, StageInput::Tokens(vec![tok]), &mut cache)?;
            tok = argmax(&l).context("empty logits")? as u32;
        }
        tg.push(args.gen_tokens as f64 / t.elapsed().as_secs_f64());
        kv_bytes = kv_bytes.max(cache.allocated_bytes());
        drop(cache);
        if let Some(n) = args.streams {
            agg.push(batched_decode_tokens_per_s(
                &g,
                n,
                args.gen_tokens,
                ctx,
                rep as u64,
            )?);
        }
        if !args.json {
            let streams = match (args.streams, agg.last()) {
                (Some(n), Some(a)) => format!(", {n} streams {a:.1} t/s"),
                _ => String::new(),
            };
            eprintln!(
                "rep {}: pp {:.1} t/s, tg {:.1} t/s{streams}",
                rep + 1,
                pp[rep],
                tg[rep]
            );
        }
    }
    let (pp_m, tg_m) = (median(pp), median(tg));
    let agg_m = (!agg.is_empty()).then(|| median(agg));
    let rss = peak_rss_bytes().unwrap_or(0);
    let budget = rss_budget_bytes(gguf_bytes, kv_bytes as u64);
    let model = args.model.display().to_string();
    if args.json {
        let mut v = serde_json::json!({
            "model": model,
            "threads": threads,
            "gguf_bytes": gguf_bytes,
            "prompt_tokens": args.prompt_tokens,
            "gen_tokens": args.gen_tokens,
            "reps": args.reps,
            "pp_tokens_per_s": pp_m,
            "tg_tokens_per_s": tg_m,
            "peak_rss_bytes": rss,
            "kv_cache_bytes": kv_bytes,
            "rss_budget_bytes": budget,
        });
        if let (Some(n), Some(a)) = (args.streams, agg_m) {
            v["streams"] = n.into();
            v["tg_aggregate_tokens_per_s"] = a.into();
            v["aggregate_vs_one_stream"] = (a / tg_m).into();
        }
        println!("{v}");
    } else {
        println!("model:       {model} ({} bytes)", gguf_bytes);
        println!("threads:     {threads}");
        println!(
            "pp{}:       {pp_m:.1} tokens/s (median of {})",
            args.prompt_tokens, args.reps
        );
        println!(
            "tg{}:       {tg_m:.1} tokens/s (median of {})",
            args.gen_tokens, args.reps
        );
        if let (Some(n), Some(a)) = (args.streams, agg_m) {
            println!(
                "tg{} x {n}:  {a:.1} tokens/s aggregate = {:.2}x one stream (batched decode, median of {})",
                args.gen_tokens,
                a / tg_m,
                args.reps
            );
        }
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        println!(
            "peak RSS:    {:.1} MiB ({:.2}x the budget of 1.1x GGUF + KV cache {:.1} MiB + 64 MiB = {:.1} MiB)",
            mib(rss),
            rss as f64 / budget as f64,
            mib(kv_bytes as u64),
            mib(budget)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::rss_budget_bytes;

    #[test]
    fn rss_budget_is_gguf_plus_a_tenth_plus_kv_plus_64_mib() {
        let mib = 1u64 << 20;
        assert_eq!(
            rss_budget_bytes(1000 * mib, 10 * mib),
            (1100 + 10 + 64) * mib
        );
        assert_eq!(rss_budget_bytes(0, 0), 64 * mib);
    }
}
