//! `edgeray perplexity`: score a text the way llama.cpp's `llama-perplexity` does (chunks of
//! `--ctx` tokens, second half of each scored; see [`edgeray_model::scoring::perplexity`]),
//! print its perplexity or, with `--json`, every scored position's log-probability and top
//! alternatives; with `--kld-base`, compare the distribution with llama-perplexity's own.

use std::io::BufReader;
use std::path::PathBuf;

use anyhow::Context;
use edgeray_model::scoring::{
    BaseSource, LogitsReader, PerplexityOptions, PerplexityReport, score_tokens, tokenize_text,
};

/// Arguments of `edgeray perplexity`.
#[derive(Debug, clap::Args)]
pub struct PerplexityArgs {
    /// GGUF model file.
    #[arg(long)]
    pub model: PathBuf,
    /// The text to score (UTF-8; one trailing newline is dropped, as llama-perplexity's `-f`).
    #[arg(long)]
    pub text_file: PathBuf,
    /// Chunk length in tokens; the text needs at least two chunks [default: 512, or the
    /// context of the --kld-base file].
    #[arg(long)]
    pub ctx: Option<usize>,
    /// Positions per forward pass. Below 32 every size gives the same bits (the one-token
    /// attention path, as generation's decode steps); forwards of 32 or more take llama.cpp's
    /// tiled prompt path, which differs from it by llama.cpp's own batch-vs-sequential noise.
    #[arg(long, default_value_t = 512)]
    pub batch: usize,
    /// Alternatives listed per scored position in `--json`.
    #[arg(long, default_value_t = 5)]
    pub top_logprobs: usize,
    /// Kernel threads (default: available cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print one JSON object: `tokens`, `ppl`, `positions` (`index`, `token`, `logprob`,
    /// `top_logprobs`), and `kld` with --kld-base.
    #[arg(long)]
    pub json: bool,
    /// A file written by `llama-perplexity --kl-divergence-base FILE` for the same model and
    /// text: report the KL divergence, top-1 agreement and PPL ratio against it.
    #[arg(long)]
    pub kld_base: Option<PathBuf>,
}

/// Run the subcommand.
pub fn run(args: PerplexityArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.text_file)
        .with_context(|| format!("cannot read {}", args.text_file.display()))?;
    let mut base = match &args.kld_base {
        Some(path) => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            Some(
                LogitsReader::new(BufReader::with_capacity(1 << 20, file))
                    .with_context(|| format!("cannot read {}", path.display()))?,
            )
        }
        None => None,
    };
    let ctx = args
        .ctx
        .or_else(|| base.as_ref().map(|b| b.header().n_ctx))
        .unwrap_or(512);
    let opts = PerplexityOptions {
        ctx,
        batch: args.batch,
        top_logprobs: args.top_logprobs,
    };
    let threads = args
        .threads
        .unwrap_or_else(super::generate::default_threads)
        .max(1);
    let generator = super::generate::load_with_progress(&args.model, threads, Some(ctx))?;
    let tokenizer = &generator.tokenizer;
    let tokens = tokenize_text(tokenizer, &text)?;
    let bos = if tokenizer.adds_bos() {
        tokenizer.bos_id()
    } else {
        None
    };
    let t0 = std::time::Instant::now();
    let report = score_tokens(
        &generator.stage,
        bos,
        &tokens,
        &opts,
        base.as_mut().map(|b| b as &mut dyn BaseSource),
        |done, total| {
            if !args.json {
                eprint!("\rchunk {done}/{total}");
                if done == total {
                    eprintln!();
                }
            }
        },
    )
    .with_context(|| format!("cannot score {}", args.text_file.display()))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", summary(&report));
        eprintln!(
            "{} tokens in {:.1} s ({} threads)",
            report.chunks * report.ctx,
            t0.elapsed().as_secs_f64(),
            threads
        );
    }
    Ok(())
}

/// The human-readable result.
fn summary(r: &PerplexityReport) -> String {
    let mut s = format!(
        "PPL = {:.4} over {} scored tokens ({} chunks of {}, second halves; batch {})\n",
        r.ppl,
        r.positions.len(),
        r.chunks,
        r.ctx,
        r.batch
    );
    if let Some(k) = &r.kld {
        s.push_str(&format!(
            "against the base: PPL(base) = {:.4}, PPL ratio = {:.6}, mean KLD = {:.6}, max KLD = {:.6}, top-1 agreement = {:.2} % ({} positions)\n",
            k.ppl_base,
            k.ppl_ratio,
            k.kld_mean,
            k.kld_max,
            100.0 * k.top1_agreement,
            k.positions
        ));
    }
    s
}
