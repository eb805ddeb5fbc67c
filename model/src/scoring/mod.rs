//! Scoring text: log-probabilities ([`logprobs`]), perplexity the way llama.cpp's
//! `llama-perplexity` computes it ([`perplexity`]), its `--kl-divergence-base` file format
//! ([`logits_file`]), the distribution-level comparison with it ([`kld`]), and compact
//! references that a test fixture can hold ([`reference`](mod@reference)).

pub mod kld;
pub mod logits_file;
pub mod logprobs;
pub mod perplexity;
pub mod reference;

pub use kld::{KldStats, KldSummary};
pub use logits_file::{BaseLogProbs, LogitsFileError, LogitsHeader, LogitsReader, LogitsWriter};
pub use logprobs::{LogProbError, LogSoftmax, top_k_ids, top_logprobs};
pub use perplexity::{
    BaseSource, PerplexityOptions, PerplexityReport, PositionScore, ScoreError, score_tokens,
    tokenize_text,
};
pub use reference::{CompactReference, NoiseFloor, ReferenceCursor, ReferencePosition};
