//! Text generation on a full-model [`Stage`]: tokenize, batched prefill, token-by-token decode
//! with a [`Sampler`], per-token callback, stop at an end-of-generation token or a token limit.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::tensor::Device;

use super::config::ModelConfig;
use super::error::ArchError;
use super::stage::{LogitsFor, Stage, StageInput, StageOutput, StageSpec};
use crate::chat::{ChatMessage, ChatTemplate, ChatTemplateError};
use crate::gguf::{GgufError, GgufFile};
use crate::quant::{KernelPool, QuantError};
use crate::sampling::{Sampler, SamplingError, SamplingParams, top2_gap};
use crate::tokenizer::{TokenStreamDecoder, Tokenizer, TokenizerError};

/// Errors of loading a model for generation or generating.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// Model structure or forward pass.
    #[error(transparent)]
    Arch(#[from] ArchError),
    /// GGUF reading.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// Kernel pool.
    #[error(transparent)]
    Quant(#[from] QuantError),
    /// Tokenizer.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// Sampling.
    #[error(transparent)]
    Sampling(#[from] SamplingError),
    /// Chat template.
    #[error(transparent)]
    Chat(#[from] ChatTemplateError),
    /// The prompt is empty after tokenization.
    #[error("the prompt has no tokens")]
    EmptyPrompt,
    /// The prompt does not fit the context.
    #[error("prompt of {prompt} tokens does not fit a context of {ctx}")]
    PromptTooLong {
        /// Prompt tokens.
        prompt: usize,
        /// Context length.
        ctx: usize,
    },
}

/// Options of one generation.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Maximum number of new tokens.
    pub max_tokens: usize,
    /// Sampling parameters (default: greedy).
    pub sampling: SamplingParams,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_tokens: 128,
            sampling: SamplingParams::default(),
        }
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenerateStop {
    /// The model produced an end-of-generation token (not included in the output).
    EndOfGeneration,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The context is full.
    ContextFull,
    /// The callback asked to stop.
    Callback,
}

/// One generated token as seen by the callback.
#[derive(Debug, Clone, Copy)]
pub struct TokenEvent<'a> {
    /// The token id.
    pub id: u32,
    /// Its text (complete UTF-8 only; may be empty while a character is split across tokens).
    pub text: &'a str,
    /// Best minus second-best logit at this step (near-tie diagnostics).
    pub top2_gap: f32,
    /// The logits the token was chosen from (before any sampling filter); empty for the final
    /// event that only flushes text held back by the decoder.
    pub logits: &'a [f32],
}

/// The result of a generation.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Prompt token ids.
    pub prompt_tokens: Vec<u32>,
    /// Generated token ids (without a final end-of-generation token).
    pub tokens: Vec<u32>,
    /// Top-two logit gap at each generated step (same length as `tokens`).
    pub gaps: Vec<f32>,
    /// Generated text.
    pub text: String,
    /// Why it stopped.
    pub stop: GenerateStop,
    /// Time of the batched prompt pass (including sampling the first token).
    pub prompt_time: Duration,
    /// Time of the decode steps after the first token.
    pub gen_time: Duration,
}

impl Generation {
    /// Prompt tokens per second.
    pub fn prompt_tokens_per_s(&self) -> f64 {
        self.prompt_tokens.len() as f64 / self.prompt_time.as_secs_f64().max(1e-9)
    }

    /// Generated tokens per second (decode steps after the first token).
    pub fn gen_tokens_per_s(&self) -> f64 {
        let steps = self.tokens.len().saturating_sub(1);
        steps as f64 / self.gen_time.as_secs_f64().max(1e-9)
    }
}

/// A loaded model (all layers, embedding and head) with its tokenizer, ready to generate.
pub struct Generator {
    /// The full-model stage.
    pub stage: Stage,
    /// The tokenizer of the GGUF file.
    pub tokenizer: Arc<Tokenizer>,
    /// The chat template of the GGUF file (or the plain fallback).
    pub chat: ChatTemplate,
    /// Context length used for new sequences.
    pub ctx: usize,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("config", &self.stage.config)
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

impl Generator {
    /// Opens `path` and loads the whole model on the Flex CPU device with a `threads`-thread
    /// kernel pool; `ctx` positions per sequence (`None`: min(model context, 4096)).
    /// `progress(done, total)` is called as layers load.
    pub fn load(
        path: impl AsRef<Path>,
        threads: usize,
        ctx: Option<usize>,
        progress: impl FnMut(usize, usize),
    ) -> Result<Self, GenerateError> {
        let file = GgufFile::open(path)?;
        let pool = Arc::new(KernelPool::new(threads)?);
        Self::from_file(&file, &pool, ctx, progress)
    }

    /// Like [`Generator::load`] from an opened file and an existing pool.
    pub fn from_file(
        file: &GgufFile,
        pool: &Arc<KernelPool>,
        ctx: Option<usize>,
        progress: impl FnMut(usize, usize),
    ) -> Result<Self, GenerateError> {
        let cfg = ModelConfig::from_gguf(file)?;
        let tokenizer = Arc::new(Tokenizer::from_gguf(file)?);
        let chat = ChatTemplate::from_metadata(file.metadata())?;
        let spec = StageSpec::full(cfg.n_layers);
        let stage = Stage::load_with_progress(file, &spec, &Device::flex(), pool, progress)?;
        let ctx = ctx.unwrap_or(cfg.context_length.min(4096)).max(1);
        Ok(Self {
            stage,
            tokenizer,
            chat,
            ctx,
        })
    }

    /// The model hyper-parameters.
    pub fn config(&self) -> &ModelConfig {
        &self.stage.config
    }

    /// Tokenizes a raw prompt (BOS added when the model wants it; special tokens parsed).
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>, GenerateError> {
        Ok(self.tokenizer.encode(prompt, true)?)
    }

    /// Renders `user_message` with the chat template (generation prompt appended) and tokenizes it.
    pub fn encode_chat(&self, user_message: &str) -> Result<Vec<u32>, GenerateError> {
        let text = self.chat.render(&[ChatMessage::user(user_message)], true)?;
        self.encode(&text)
    }

    /// Logits of the last position after running `tokens` through a fresh sequence (testing,
    /// diagnostics).
    pub fn last_logits(&self, tokens: &[u32]) -> Result<Vec<f32>, GenerateError> {
        let mut cache = self.stage.new_cache(self.ctx.max(tokens.len()));
        self.step(StageInput::Tokens(tokens.to_vec()), &mut cache)
    }

    fn step(
        &self,
        input: StageInput,
        cache: &mut super::kv_cache::KvCache,
    ) -> Result<Vec<f32>, GenerateError> {
        match self.stage.forward(input, cache, LogitsFor::Last)? {
            StageOutput::Logits(l) => l
                .into_data()
                .try_into_vec::<f32>()
                .map_err(|e| ArchError::BadInput(format!("logits are not f32: {e:?}")).into()),
            StageOutput::Hidden(_) => {
                Err(ArchError::BadInput("full stage returned hidden states".into()).into())
            }
        }
    }

    /// Generates from prompt token ids: one batched prompt pass, then one token per step.
    /// `on_token` is called for every generated token; returning `false` stops.
    pub fn generate_tokens(
        &self,
        prompt: &[u32],
        opts: &GenerateOptions,
        mut on_token: impl FnMut(TokenEvent<'_>) -> bool,
    ) -> Result<Generation, GenerateError> {
        if prompt.is_empty() {
            return Err(GenerateError::EmptyPrompt);
        }
        if prompt.len() >= self.ctx {
            return Err(GenerateError::PromptTooLong {
                prompt: prompt.len(),
                ctx: self.ctx,
            });
        }
        let mut sampler = Sampler::new(opts.sampling.clone())?;
        sampler.accept_all(prompt);
        let mut cache = self.stage.new_cache(self.ctx);
        let mut decoder = TokenStreamDecoder::new();
        let mut out = Generation {
            prompt_tokens: prompt.to_vec(),
            tokens: Vec::new(),
            gaps: Vec::new(),
            text: String::new(),
            stop: GenerateStop::MaxTokens,
            prompt_time: Duration::ZERO,
            gen_time: Duration::ZERO,
        };
        if opts.max_tokens == 0 {
            return Ok(out);
        }
        let t0 = Instant::now();
        let mut logits = self.step(StageInput::Tokens(prompt.to_vec()), &mut cache)?;
        let mut t_gen = None;
        loop {
            let gap = top2_gap(&logits);
            let id = sampler.sample(&logits)?;
            if t_gen.is_none() {
                out.prompt_time = t0.elapsed();
                t_gen = Some(Instant::now());
            }
            if self.tokenizer.is_eog(id) {
                out.stop = GenerateStop::EndOfGeneration;
                break;
            }
            let text = decoder.push(&self.tokenizer, id)?;
            out.tokens.push(id);
            out.gaps.push(gap);
            out.text.push_str(&text);
            if !on_token(TokenEvent {
                id,
                text: &text,
                top2_gap: gap,
                logits: &logits,
            }) {
                out.stop = GenerateStop::Callback;
                break;
            }
            if out.tokens.len() >= opts.max_tokens {
                out.stop = GenerateStop::MaxTokens;
                break;
            }
            if cache.len() >= self.ctx {
                out.stop = GenerateStop::ContextFull;
                break;
            }
            logits = self.step(StageInput::Tokens(vec![id]), &mut cache)?;
        }
        let rest = decoder.finish();
        if !rest.is_empty() {
            out.text.push_str(&rest);
            on_token(TokenEvent {
                id: *out.tokens.last().unwrap_or(&0),
                text: &rest,
                top2_gap: f32::INFINITY,
                logits: &[],
            });
        }
        out.gen_time = t_gen.map(|t| t.elapsed()).unwrap_or_default();
        Ok(out)
    }

    /// Generates from a raw text prompt, calling `on_text` with each new piece of text.
    pub fn generate(
        &self,
        prompt: &str,
        opts: &GenerateOptions,
        mut on_text: impl FnMut(&str),
    ) -> Result<Generation, GenerateError> {
        let ids = self.encode(prompt)?;
        self.generate_tokens(&ids, opts, |e| {
            on_text(e.text);
            true
        })
    }
}
