//! `edgeray generate`: run a GGUF model on this machine alone and stream the continuation.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use edgeray_model::arch::{GenerateOptions, Generator};
use indicatif::{ProgressBar, ProgressStyle};

/// Arguments of `edgeray generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// GGUF model file.
    #[arg(long)]
    pub model: PathBuf,
    /// The prompt(s).
    #[command(flatten)]
    pub prompts: super::prompt_args::PromptArgs,
    /// Maximum number of new tokens.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Sampling.
    #[command(flatten)]
    pub sampling: super::sampling_args::SamplingArgs,
    /// Kernel threads (default: available cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Apply the model's chat template to the prompt (as one user message).
    #[arg(long)]
    pub chat: bool,
    /// Context length in tokens (default: min(model context, 4096)).
    #[arg(long)]
    pub ctx: Option<usize>,
    /// Print the K most likely tokens (and their log-probabilities) at every generated step
    /// on stderr, one line per token.
    #[arg(long, value_name = "K")]
    pub logprobs: Option<usize>,
}

/// Default thread count: the available cores.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Loads a model with an indicatif progress bar on stderr.
pub fn load_with_progress(
    model: &PathBuf,
    threads: usize,
    ctx: Option<usize>,
) -> anyhow::Result<Generator> {
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} layers")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(format!("loading {}", model.display()));
    let generator = Generator::load(model, threads, ctx, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .with_context(|| format!("cannot load {}", model.display()));
    bar.finish_and_clear();
    generator
}

/// One stderr line of `--logprobs K`: the step, the chosen token and its log-probability, then
/// the K most likely tokens with theirs (`logprob` is ln p, from the logits the sampler saw).
fn logprobs_line(
    generator: &Generator,
    step: usize,
    id: u32,
    logits: &[f32],
    k: usize,
) -> Result<String, edgeray_model::scoring::LogProbError> {
    use edgeray_model::scoring::{LogSoftmax, top_logprobs};
    let norm = LogSoftmax::new(logits)?;
    let piece = |t: u32| {
        let bytes = generator
            .tokenizer
            .token_bytes(t, true)
            .unwrap_or(&b"?"[..]);
        format!("{:?}", String::from_utf8_lossy(bytes))
    };
    let mut line = format!(
        "[logprobs] step {step}: {} {id} {:.4} |",
        piece(id),
        norm.log_prob(logits, id)?
    );
    for (t, lp) in top_logprobs(logits, &norm, k) {
        line.push_str(&format!(" {} {t} {lp:.4}", piece(t)));
    }
    Ok(line)
}

/// Run the subcommand.
pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let threads = args.threads.unwrap_or_else(default_threads).max(1);
    let t0 = Instant::now();
    let generator = load_with_progress(&args.model, threads, args.ctx)?;
    let load_time = t0.elapsed();
    let sampling = args.sampling.params()?;
    let prompts = args.prompts.prompts()?;
    let json_lines = args.prompts.json_lines();
    let opts = GenerateOptions {
        max_tokens: args.max_tokens,
        sampling,
    };
    for text in &prompts {
        let prompt = if args.chat {
            generator.encode_chat(text)?
        } else {
            generator.encode(text)?
        };
        let stats = (load_time, threads);
        answer(
            &generator,
            &args,
            &prompt,
            &opts,
            json_lines.then_some(text.as_str()),
            stats,
        )?;
    }
    Ok(())
}

/// Generates the answer to one prompt: streamed to stdout, or (`json_prompt`, from a prompt
/// file) printed as one JSON line once complete; statistics on stderr.
fn answer(
    generator: &Generator,
    args: &GenerateArgs,
    prompt: &[u32],
    opts: &GenerateOptions,
    json_prompt: Option<&str>,
    (load_time, threads): (std::time::Duration, usize),
) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut write_err = None;
    let mut step = 0usize;
    let mut text = String::new();
    let generation = generator.generate_tokens(prompt, opts, |e| {
        if json_prompt.is_some() {
            text.push_str(e.text);
        } else if let Err(err) = out.write_all(e.text.as_bytes()).and_then(|_| out.flush()) {
            write_err = Some(err);
            return false;
        }
        if let Some(k) = args.logprobs
            && !e.logits.is_empty()
        {
            match logprobs_line(generator, step, e.id, e.logits, k) {
                Ok(line) => eprintln!("{line}"),
                Err(err) => eprintln!("logprobs: {err}"),
            }
            step += 1;
        }
        true
    })?;
    if let Some(err) = write_err {
        return Err(err).context("cannot write to stdout");
    }
    if let Some(p) = json_prompt {
        writeln!(out, "{}", super::prompt_args::answer_line(p, &text))?;
    }
    out.flush()?;
    eprintln!();
    eprintln!(
        "load {:.2} s | prompt {} tokens, {:.1} tokens/s | generated {} tokens, {:.1} tokens/s | stop: {:?} | threads {}",
        load_time.as_secs_f64(),
        generation.prompt_tokens.len(),
        generation.prompt_tokens_per_s(),
        generation.tokens.len(),
        generation.gen_tokens_per_s(),
        generation.stop,
        threads
    );
    Ok(())
}
