//! Perplexity of a text, scored the way llama.cpp's `llama-perplexity` scores it, with the
//! log-probabilities of every scored position and, optionally, a comparison with the
//! log-probabilities llama-perplexity wrote with `--kl-divergence-base`.
//!
//! What is scored (llama.cpp `tools/perplexity/perplexity.cpp`, `perplexity()`):
//! - the text loses one trailing `\n` (as `-f FILE` reads it) and is tokenized with the model's
//!   special tokens added (BOS when the metadata asks for it) and control tokens written in the
//!   text *not* recognised (they are plain text);
//! - it needs at least `2 * ctx` tokens; the first `n_chunk = tokens / ctx` chunks of `ctx`
//!   tokens are each evaluated from an empty cache, the first token of every chunk replaced by
//!   BOS when the model adds one (the remainder of the text is not used);
//! - in each chunk only the second half is scored: the logits at positions `ctx/2 ..= ctx-2`
//!   predict tokens `ctx/2 + 1 ..= ctx-1`, i.e. `ctx - 1 - ctx/2` tokens per chunk, so every
//!   scored token has at least `ctx/2` tokens of context;
//! - perplexity is `exp(mean(-ln p(next)))` over all scored tokens.
//!
//! Each chunk runs through the model `batch` positions per forward pass. Like llama.cpp, the
//! attention of a forward of fewer than 32 positions takes the one-token path (ggml's one-chunk
//! flash attention, what generation's decode steps use) and a forward of 32 or more the tiled
//! prompt path (f32 GEMMs): batch sizes below 32 all give the same bits, as do batch sizes whose
//! forwards all hold 32 or more positions (the default 512 with a chunk of 512, like
//! llama-perplexity's default), and the two families differ at the level of llama.cpp's own
//! batch-vs-sequential noise (gemma3: mean KL ~7e-3).

use std::io::Read;

use serde::Serialize;

use super::kld::{KldStats, KldSummary};
use super::logits_file::{LogitsFileError, LogitsReader, scored_per_chunk};
use super::logprobs::{LogProbError, LogSoftmax, top_logprobs};
use crate::arch::{ArchError, LogitsFor, Stage, StageInput, StageOutput};
use crate::tokenizer::{Tokenizer, TokenizerError};

/// Errors of scoring a text.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// Options that cannot work.
    #[error("{0}")]
    BadOptions(String),
    /// The text is too short for the context.
    #[error(
        "the text has {tokens} tokens; scoring with a context of {ctx} needs at least {} (two chunks): use a longer text or a smaller --ctx",
        2 * ctx
    )]
    TooFewTokens {
        /// Tokens of the text.
        tokens: usize,
        /// Context length.
        ctx: usize,
    },
    /// The model adds an end-of-sequence token to every text (llama-perplexity refuses too).
    #[error("the model's tokenizer appends EOS to every text; perplexity is undefined here")]
    AddsEos,
    /// The base file was made with another context.
    #[error("the base file was scored with a context of {base}, not {ours}: pass --ctx {base}")]
    CtxMismatch {
        /// Ours.
        ours: usize,
        /// The file's.
        base: usize,
    },
    /// The base file was made with another vocabulary.
    #[error("the base file has a vocabulary of {base} tokens, the model {ours}: another model?")]
    VocabMismatch {
        /// Ours.
        ours: usize,
        /// The file's.
        base: usize,
    },
    /// The base file scored other tokens than ours.
    #[error(
        "token {index} differs: the base file has id {base}, our tokenization {}; \
         the base was made from another text or model, or the tokenizers disagree",
        ours.map_or("ends before it".to_string(), |t| format!("has id {t}"))
    )]
    TokenMismatch {
        /// Index of the first differing token.
        index: usize,
        /// The file's token.
        base: u32,
        /// Ours (`None` when our text has fewer tokens).
        ours: Option<u32>,
    },
    /// The base file ended early.
    #[error("the base file holds fewer records than its header announces")]
    BaseTooShort,
    /// Forward pass.
    #[error(transparent)]
    Arch(#[from] ArchError),
    /// Tokenization.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// A logits row.
    #[error(transparent)]
    LogProb(#[from] LogProbError),
    /// The base file.
    #[error(transparent)]
    LogitsFile(#[from] LogitsFileError),
}

/// How to score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerplexityOptions {
    /// Chunk length in tokens (llama-perplexity's `-c`, default 512).
    pub ctx: usize,
    /// Positions per forward pass (1 = the one-token path).
    pub batch: usize,
    /// Alternatives listed per scored position.
    pub top_logprobs: usize,
}

impl Default for PerplexityOptions {
    fn default() -> Self {
        Self {
            ctx: 512,
            batch: 512,
            top_logprobs: 5,
        }
    }
}

/// One scored position: the log-probability of the token that actually follows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PositionScore {
    /// Index of the predicted token in [`PerplexityReport::tokens`].
    pub index: usize,
    /// The predicted (actual next) token.
    pub token: u32,
    /// Its log-probability (natural log, computed in f64).
    pub logprob: f64,
    /// The most likely tokens and their log-probabilities, best first: `[[id, logprob], ...]`.
    pub top_logprobs: Vec<(u32, f64)>,
}

/// The scores of a text (what `edgeray perplexity --json` prints).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerplexityReport {
    /// The `chunks * ctx` evaluated token ids, BOS included (as the text tokenizes; the model
    /// sees BOS instead of the first token of each later chunk when it adds one).
    pub tokens: Vec<u32>,
    /// Chunk length.
    pub ctx: usize,
    /// Chunks scored.
    pub chunks: usize,
    /// Positions per forward pass.
    pub batch: usize,
    /// Perplexity over the scored positions.
    pub ppl: f64,
    /// One entry per scored position, in order.
    pub positions: Vec<PositionScore>,
    /// The comparison with a llama-perplexity base file, when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kld: Option<KldSummary>,
}

/// Tokenizes `text` as llama-perplexity does (see the module documentation).
pub fn tokenize_text(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>, ScoreError> {
    if tokenizer.adds_eos() {
        return Err(ScoreError::AddsEos);
    }
    let text = text.strip_suffix('\n').unwrap_or(text);
    Ok(tokenizer.encode_with(text, true, false)?)
}

/// Checks that `ours` starts with the `base` tokens another implementation scored.
pub(super) fn same_tokens(base: &[u32], ours: &[u32]) -> Result<(), ScoreError> {
    match (0..base.len()).find(|&i| ours.get(i) != Some(&base[i])) {
        Some(index) => Err(ScoreError::TokenMismatch {
            index,
            base: base[index],
            ours: ours.get(index).copied(),
        }),
        None => Ok(()),
    }
}

/// Another implementation's log-probabilities of the same text, compared position by position
/// while scoring: a llama-perplexity `--kl-divergence-base` file ([`LogitsReader`]) or a
/// compact reference ([`super::reference::ReferenceCursor`]).
pub trait BaseSource {
    /// Checks that it was made with context `ctx`, a vocabulary of `vocab` and the same
    /// `tokens`; returns the number of chunks it holds.
    fn chunks(&self, ctx: usize, vocab: usize, tokens: &[u32]) -> Result<usize, ScoreError>;

    /// Compares the next scored position — our logits `row`, predicting token `next` at
    /// `index` of the tokens — and adds it to `stats`.
    fn add_next(
        &mut self,
        stats: &mut KldStats,
        row: &[f32],
        index: usize,
        next: u32,
    ) -> Result<(), ScoreError>;
}

impl<R: Read> BaseSource for LogitsReader<R> {
    fn chunks(&self, ctx: usize, vocab: usize, tokens: &[u32]) -> Result<usize, ScoreError> {
        let h = self.header();
        if h.n_ctx != ctx {
            return Err(ScoreError::CtxMismatch {
                ours: ctx,
                base: h.n_ctx,
            });
        }
        if h.n_vocab != vocab {
            return Err(ScoreError::VocabMismatch {
                ours: vocab,
                base: h.n_vocab,
            });
        }
        same_tokens(&h.tokens, tokens)?;
        Ok(h.n_chunk)
    }

    fn add_next(
        &mut self,
        stats: &mut KldStats,
        row: &[f32],
        _index: usize,
        next: u32,
    ) -> Result<(), ScoreError> {
        let rec = self.next_record()?.ok_or(ScoreError::BaseTooShort)?;
        stats.add(row, &rec, next)?;
        Ok(())
    }
}

/// Scores `tokens` (from [`tokenize_text`]) with a full-model `stage`; `bos` replaces the first
/// token of every chunk when the model adds one. With `base`, every position is also compared
/// with its log-probabilities (same context, vocabulary and tokens required; its chunk count is
/// used). `progress(done, total)` is called after each chunk.
pub fn score_tokens(
    stage: &Stage,
    bos: Option<u32>,
    tokens: &[u32],
    opts: &PerplexityOptions,
    mut base: Option<&mut dyn BaseSource>,
    mut progress: impl FnMut(usize, usize),
) -> Result<PerplexityReport, ScoreError> {
    let ctx = opts.ctx;
    if ctx < 4 {
        return Err(ScoreError::BadOptions(format!(
            "--ctx {ctx} is too small (at least 4)"
        )));
    }
    if ctx > stage.config.context_length {
        return Err(ScoreError::BadOptions(format!(
            "--ctx {ctx} exceeds the model's context of {}",
            stage.config.context_length
        )));
    }
    if opts.batch == 0 {
        return Err(ScoreError::BadOptions("--batch must be at least 1".into()));
    }
    let vocab = stage.config.vocab_size;
    let chunks = match base.as_deref() {
        Some(b) => b.chunks(ctx, vocab, tokens)?,
        None => {
            if tokens.len() < 2 * ctx {
                return Err(ScoreError::TooFewTokens {
                    tokens: tokens.len(),
                    ctx,
                });
            }
            tokens.len() / ctx
        }
    };
    let first = ctx / 2;
    let mut positions = Vec::with_capacity(chunks * scored_per_chunk(ctx));
    let mut kld = base.as_ref().map(|_| KldStats::default());
    let mut sum_logprob = 0.0f64;
    for c in 0..chunks {
        let chunk = &tokens[c * ctx..(c + 1) * ctx];
        let mut input = chunk.to_vec();
        if let Some(b) = bos {
            input[0] = b;
        }
        let mut cache = stage.new_cache(ctx);
        let mut start = 0;
        while start < ctx {
            let n = opts.batch.min(ctx - start);
            let end = start + n;
            // Positions of this batch that are scored: first ..= ctx-2.
            let lo = start.max(first);
            let hi = end.min(ctx - 1);
            let want = if lo < end {
                LogitsFor::Tail(end - lo)
            } else {
                LogitsFor::Last
            };
            let out = stage.forward(
                StageInput::Tokens(input[start..end].to_vec()),
                &mut cache,
                want,
            )?;
            let StageOutput::Logits(l) = out else {
                return Err(ArchError::BadInput("the stage returned hidden states".into()).into());
            };
            if lo < hi {
                let l = l
                    .into_data()
                    .try_into_vec::<f32>()
                    .map_err(|e| ArchError::BadInput(format!("logits are not f32: {e:?}")))?;
                if l.len() != (end - lo) * vocab {
                    return Err(LogProbError::RowLength {
                        want: (end - lo) * vocab,
                        got: l.len(),
                    }
                    .into());
                }
                for (pos, row) in (lo..hi).zip(l.chunks_exact(vocab)) {
                    let next = chunk[pos + 1];
                    let norm = LogSoftmax::new(row)?;
                    let logprob = norm.log_prob(row, next)?;
                    sum_logprob += logprob;
                    if let (Some(stats), Some(b)) = (kld.as_mut(), base.as_deref_mut()) {
                        b.add_next(stats, row, c * ctx + pos + 1, next)?;
                    }
                    positions.push(PositionScore {
                        index: c * ctx + pos + 1,
                        token: next,
                        logprob,
                        top_logprobs: top_logprobs(row, &norm, opts.top_logprobs),
                    });
                }
            }
            start = end;
        }
        progress(c + 1, chunks);
    }
    let ppl = (-sum_logprob / positions.len() as f64).exp();
    Ok(PerplexityReport {
        tokens: tokens[..chunks * ctx].to_vec(),
        ctx,
        chunks,
        batch: opts.batch,
        ppl,
        positions,
        kld: kld.and_then(|k| k.summary()),
    })
}
