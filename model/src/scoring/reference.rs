//! A compact reference: another implementation's log-probabilities of a scored text, kept to
//! what a distribution-level test needs — per scored position, the log-probability of the actual
//! next token and the top few tokens — where the full `--kl-divergence-base` file holds every
//! vocabulary entry (130 MB for 512 tokens of gemma3). `scripts/llama-reference.sh` writes them
//! from llama.cpp, with llama.cpp's own one-token-vs-batch figures as the noise floor.
//!
//! Scoring a text against one ([`score_tokens`](super::score_tokens) with a
//! [`ReferenceCursor`]) gives the PPL ratio and top-1 agreement exactly and the KL divergence
//! of the coarsened distributions ([`KldStats::add_coarse`]), a lower bound of the full one.

use serde::{Deserialize, Serialize};

use super::kld::KldStats;
use super::perplexity::{BaseSource, ScoreError, same_tokens};

/// One scored position of a reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferencePosition {
    /// Index of the predicted token in [`CompactReference::tokens`].
    pub index: usize,
    /// The predicted (actual next) token.
    pub token: u32,
    /// Its log-probability.
    pub logprob: f32,
    /// The most likely tokens and their log-probabilities, best first.
    pub top: Vec<(u32, f32)>,
}

/// How far the reference implementation is from itself (its one-token path against the batch
/// path the reference holds): the bar for another implementation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NoiseFloor {
    /// `PPL(one-token path) / PPL(batch path)`.
    pub ppl_ratio: f64,
    /// Mean KL divergence of the one-token path from the batch path (the full one).
    pub kld_mean: f64,
    /// Fraction of positions where both paths put the same token first.
    pub top1_agreement: f64,
}

/// A reference for one model and one text (a `model/tests/fixtures/llama/*.json` file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompactReference {
    /// Where it came from.
    #[serde(default)]
    pub about: String,
    /// The model file's stem.
    pub model: String,
    /// The text file's name.
    pub text: String,
    /// Chunk length it was scored with.
    pub ctx: usize,
    /// Chunks scored.
    pub chunks: usize,
    /// The `chunks * ctx` evaluated token ids (as llama-perplexity tokenized the text).
    pub tokens: Vec<u32>,
    /// The scored positions, in order.
    pub positions: Vec<ReferencePosition>,
    /// The reference implementation's own noise.
    pub noise: NoiseFloor,
}

impl CompactReference {
    /// Parses a reference file's JSON.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// A cursor that hands the positions to [`super::score_tokens`] in order.
    pub fn cursor(&self) -> ReferenceCursor<'_> {
        ReferenceCursor { r: self, next: 0 }
    }
}

/// The reference's positions, one after another, as scoring reaches them.
#[derive(Debug)]
pub struct ReferenceCursor<'a> {
    r: &'a CompactReference,
    next: usize,
}

impl BaseSource for ReferenceCursor<'_> {
    fn chunks(&self, ctx: usize, _vocab: usize, tokens: &[u32]) -> Result<usize, ScoreError> {
        if self.r.ctx != ctx {
            return Err(ScoreError::CtxMismatch {
                ours: ctx,
                base: self.r.ctx,
            });
        }
        same_tokens(&self.r.tokens, tokens)?;
        Ok(self.r.chunks)
    }

    fn add_next(
        &mut self,
        stats: &mut KldStats,
        row: &[f32],
        index: usize,
        next: u32,
    ) -> Result<(), ScoreError> {
        let p = self
            .r
            .positions
            .get(self.next)
            .ok_or(ScoreError::BaseTooShort)?;
        if p.index != index || p.token != next {
            return Err(ScoreError::BadOptions(format!(
                "the reference's position {} predicts token {} at index {}; scoring reached index {index} (token {next})",
                self.next, p.token, p.index
            )));
        }
        self.next += 1;
        stats.add_coarse(row, &p.top, next, p.logprob)?;
        Ok(())
    }
}
