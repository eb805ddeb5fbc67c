//! `edgeray run`: generate across the cluster's nodes and stream the answer to stdout.
//!
//! Without `--config`, an embedded cluster of two nodes (separate actor systems talking QUIC
//! over loopback) serves the default model, so the distributed path runs with one command.

use std::io::Write;

use tokio::sync::mpsc;

use std::time::Instant;

use anyhow::Context;

use super::deploy_args::{DeployArgs, ServiceDeployment};
use crate::pipeline::{Finish, GenOptions, Service};

/// Arguments of `edgeray run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Cluster and deployment.
    #[command(flatten)]
    pub deploy: DeployArgs,
    /// The prompt(s).
    #[command(flatten)]
    pub prompts: super::prompt_args::PromptArgs,
    /// Apply the model's chat template to the prompt (as one user message).
    #[arg(long)]
    pub chat: bool,
    /// Maximum number of new tokens.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Sampling.
    #[command(flatten)]
    pub sampling: super::sampling_args::SamplingArgs,
    /// Print the generated token ids (one line, on stderr) at the end.
    #[arg(long)]
    pub print_ids: bool,
    /// Failover plans (the placement without each stage node, its shards shipped ahead so a
    /// lost node costs no shipping): `off` (one answer rarely pays for them), `background`
    /// while answering, `wait` until they are in place before answering.
    #[arg(long, value_enum, default_value = "off")]
    pub spares: Spares,
}

/// When `edgeray run` prepares failover plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Spares {
    /// While the answer streams.
    Background,
    /// Before the answer starts.
    Wait,
    /// Not at all.
    Off,
}

/// Run the subcommand.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let sampling = args.sampling.params()?;
    let prompts = args.prompts.prompts()?;
    let json_lines = args.prompts.json_lines();
    args.deploy.warn_if_lossy();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let spares = args.spares;
        let ServiceDeployment {
            service: svc,
            first,
            nodes,
        } = args
            .deploy
            .start_service(spares != Spares::Off, |_| {})
            .await?;
        if first.shipped_bytes() == 0 {
            eprintln!("weights: every stage node had its shard cached (nothing sent)");
        } else {
            eprintln!(
                "weights: {:.1} MiB shipped to stage nodes",
                first.shipped_bytes() as f64 / (1 << 20) as f64
            );
        }
        if spares == Spares::Wait {
            let t = Instant::now();
            match svc.wait_failover_plans(std::time::Duration::from_secs(600)).await {
                Some(n) => eprintln!(
                    "failover: {n} plan(s) ready, spare shards in place after {:.1} s",
                    t.elapsed().as_secs_f64()
                ),
                None => eprintln!("failover: no plans (a failover will ship shards)"),
            }
        }
        let mut answers = Vec::with_capacity(prompts.len());
        let mut failed = None;
        for prompt in &prompts {
            let t0 = Instant::now();
            let r = answer(&svc, &args, prompt, sampling.clone(), json_lines).await;
            match r {
                Ok((s, prompt_tokens, first_at)) => {
                    answers.push((s, prompt_tokens, first_at, t0, Instant::now()))
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let hops = first.hop_totals();
        svc.shutdown().await;
        for n in nodes.into_iter().rev() {
            n.shutdown().await;
        }
        for a in answers {
            report(&args, a);
        }
        if let Some(e) = failed {
            return Err(e);
        }
        for (k, h) in hops.iter().enumerate() {
            if h.batches > 0 {
                eprintln!(
                    "  stage {k}: compute {:.1} ms/batch, queue+transfer {:.1} ms, hand-off {:.1} ms, {:.0} bytes/batch out",
                    h.compute_us as f64 / h.batches as f64 / 1e3,
                    h.wait_us as f64 / h.batches as f64 / 1e3,
                    h.send_us as f64 / h.batches as f64 / 1e3,
                    h.bytes_out as f64 / h.batches as f64
                );
            }
        }
        anyhow::Ok(())
    })
}

/// One answer: its result, prompt tokens, when its first token came, start and end.
type Answered = (
    crate::pipeline::Resumable,
    usize,
    Option<Instant>,
    Instant,
    Instant,
);

/// Generates the answer to one prompt on `svc`: streamed to stdout, or (a prompt file) printed
/// as one JSON line once complete.
async fn answer(
    svc: &Service,
    args: &RunArgs,
    prompt: &str,
    sampling: edgeray_model::sampling::SamplingParams,
    json_lines: bool,
) -> anyhow::Result<(crate::pipeline::Resumable, usize, Option<Instant>)> {
    let first = svc.current().context("no pipeline")?;
    let ids = if args.chat {
        first.encode_chat(&[edgeray_model::chat::ChatMessage::user(prompt.to_string())])?
    } else {
        first.encode(prompt)?
    };
    let prompt_tokens = ids.len();
    let (tx, mut rx) = mpsc::channel(8);
    let line_prompt = json_lines.then(|| prompt.to_string());
    let printer = tokio::spawn(async move {
        let mut first_at = None;
        let mut text = String::new();
        while let Some(t) = rx.recv().await {
            let t: crate::pipeline::GenToken = t;
            first_at.get_or_insert_with(Instant::now);
            if line_prompt.is_some() {
                text.push_str(&t.text);
            } else {
                let mut out = std::io::stdout();
                let _ = out.write_all(t.text.as_bytes());
                let _ = out.flush();
            }
        }
        let mut out = std::io::stdout();
        if let Some(p) = line_prompt {
            let _ = out.write_all(super::prompt_args::answer_line(&p, &text).as_bytes());
        }
        let _ = out.write_all(b"\n");
        let _ = out.flush();
        first_at
    });
    let opts = GenOptions {
        max_tokens: args.max_tokens,
        sampling,
        ..Default::default()
    };
    let r = svc.generate(None, ids, &opts, &tx).await;
    drop(tx);
    let first_at = printer.await.ok().flatten();
    anyhow::Ok((r?, prompt_tokens, first_at))
}

/// The statistics of one answer, on stderr.
fn report(args: &RunArgs, (s, prompt_tokens, first_at, t0, end): Answered) {
    let (ttft, rate) = match first_at {
        Some(f) => (
            (f - t0).as_secs_f64(),
            s.tokens.len().saturating_sub(1) as f64 / (end - f).as_secs_f64().max(1e-9),
        ),
        None => (0.0, 0.0),
    };
    eprintln!(
        "{} prompt tokens, {} generated ({}{}); first token after {:.0} ms, {:.2} tokens/s",
        prompt_tokens,
        s.tokens.len(),
        match s.finish {
            Finish::EndOfGeneration => "end of text",
            Finish::MaxTokens => "max tokens",
            Finish::ContextFull => "context full",
            Finish::Cancelled => "cancelled",
        },
        if s.resumed > 0 {
            format!(", resumed after {} failover(s)", s.resumed)
        } else {
            String::new()
        },
        ttft * 1e3,
        rate
    );
    for st in &s.stalls {
        eprintln!("failover: {st}");
    }
    if args.print_ids {
        eprintln!("ids: {:?}", s.tokens);
    }
}
