//! [`SamplingParams`]: the knobs of token selection, with validation.

use serde::{Deserialize, Serialize};

/// Invalid sampling parameters or logits.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplingError {
    /// `temperature` is negative or not finite.
    #[error("temperature must be a finite number >= 0, got {0}")]
    InvalidTemperature(f32),
    /// `top_p` is outside `(0, 1]`.
    #[error("top_p must be in (0, 1], got {0}")]
    InvalidTopP(f32),
    /// `min_p` is outside `[0, 1]`.
    #[error("min_p must be in [0, 1], got {0}")]
    InvalidMinP(f32),
    /// `repetition_penalty` is not a finite number > 0.
    #[error("repetition_penalty must be a finite number > 0, got {0}")]
    InvalidRepetitionPenalty(f32),
    /// `presence_penalty` or `frequency_penalty` is not finite.
    #[error("presence and frequency penalties must be finite numbers, got {0}")]
    InvalidPenalty(f32),
    /// The logits slice is empty.
    #[error("cannot sample from an empty logits vector")]
    EmptyLogits,
    /// A logit is NaN.
    #[error("logits contain NaN at index {0}")]
    NanLogit(usize),
    /// Every candidate has probability zero (all logits are -infinity).
    #[error("all logits are -infinity: no token can be sampled")]
    NoCandidates,
    /// A token id in the sampler's history (see [`crate::sampling::Sampler::accept`]) is not an
    /// index into the logits vector (checked at sampling time, when the penalty is applied).
    #[error("token id {id} is outside the logits vector of length {len}")]
    TokenOutOfRange {
        /// The offending id.
        id: u32,
        /// Number of logits.
        len: usize,
    },
}

/// How the next token is chosen from the logits.
///
/// The filters run in llama.cpp's order: repetition penalty, top-k, top-p, min-p, temperature,
/// then a draw from the remaining distribution. `temperature == 0` means greedy: the token with
/// the highest (penalised) logit, ties going to the lowest id. The default is greedy with every
/// filter disabled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// Softmax temperature; `0` = greedy argmax. Must be finite and `>= 0`.
    pub temperature: f32,
    /// Keep only the `top_k` highest logits; `0` = disabled.
    pub top_k: usize,
    /// Nucleus sampling: keep the smallest set of most likely tokens whose probability sums to
    /// at least `top_p`; `1.0` = disabled. Must be in `(0, 1]`.
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p` times the most likely token's; `0` =
    /// disabled. Must be in `[0, 1]`.
    pub min_p: f32,
    /// llama.cpp-style repetition penalty on the last `repeat_last_n` tokens: a positive logit
    /// is divided by it, a negative one multiplied; `1.0` = disabled. Must be finite and `> 0`.
    pub repetition_penalty: f32,
    /// How many of the most recent tokens (prompt included, see
    /// [`crate::sampling::Sampler::accept`]) the repetition penalty looks at; `0` = disabled.
    pub repeat_last_n: usize,
    /// Seed of the sampler's random generator (xoshiro256**, see [`super::rng`]).
    pub seed: u64,
    /// OpenAI's presence penalty: subtracted once from the logit of every token generated so
    /// far (prompt tokens do not count); `0` = disabled. Must be finite.
    pub presence_penalty: f32,
    /// OpenAI's frequency penalty: subtracted from a token's logit once per time it was
    /// generated so far; `0` = disabled. Must be finite.
    pub frequency_penalty: f32,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self::greedy()
    }
}

impl SamplingParams {
    /// Greedy decoding: temperature 0, all filters off.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0x5EED,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
        }
    }

    /// True when the choice is a deterministic argmax (no random draw).
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// True when a penalty changes the logits before the choice (so a greedy choice is not
    /// simply the highest raw logit).
    pub fn penalises(&self) -> bool {
        (self.repetition_penalty != 1.0 && self.repeat_last_n > 0)
            || self.presence_penalty != 0.0
            || self.frequency_penalty != 0.0
    }

    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), SamplingError> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(SamplingError::InvalidTemperature(self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(SamplingError::InvalidTopP(self.top_p));
        }
        if !(self.min_p >= 0.0 && self.min_p <= 1.0) {
            return Err(SamplingError::InvalidMinP(self.min_p));
        }
        if !self.repetition_penalty.is_finite() || self.repetition_penalty <= 0.0 {
            return Err(SamplingError::InvalidRepetitionPenalty(
                self.repetition_penalty,
            ));
        }
        for v in [self.presence_penalty, self.frequency_penalty] {
            if !v.is_finite() {
                return Err(SamplingError::InvalidPenalty(v));
            }
        }
        Ok(())
    }
}
