//! The pipeline behind the OpenAI-compatible gateway.

use std::time::Duration;

use edgeray_model::sampling::SamplingParams as ModelSampling;
use tokio::sync::mpsc;

use std::sync::Arc;

use super::driver::{Slot, TokenSink};
use super::engine::{Admission, GenOptions, GenToken, Pipeline, PipelineError};
use super::sequence::Finish;
use super::service::Service;
use crate::gateway::{
    CompletionBackend, FinishReason, GenerationEvent, GenerationRequest, PromptInput, PromptToken,
    Readiness, RequestSampling, SubmitError, TokenLogprob, TokenStream, TopLogprob,
};
use crate::pipeline::protocol::TokenLogprobs;
use edgeray_model::tokenizer::Tokenizer;

/// Serves a [`Pipeline`] (fixed, or kept deployed by a [`Service`]) through
/// [`crate::gateway::Gateway`].
pub struct PipelineBackend {
    source: Source,
    model_id: String,
    default_max_tokens: usize,
    retry_after: Duration,
}

enum Source {
    Fixed(Pipeline),
    Supervised(Arc<Service>),
}

impl PipelineBackend {
    /// A backend generating at most `default_max_tokens` when a request names no `max_tokens`.
    pub fn new(pipeline: Pipeline, default_max_tokens: usize) -> Self {
        PipelineBackend {
            model_id: pipeline.model_id().to_string(),
            source: Source::Fixed(pipeline),
            default_max_tokens,
            retry_after: Duration::from_secs(1),
        }
    }

    /// A backend on a supervised deployment: after a failover, requests go to the new pipeline.
    pub fn supervised(service: Arc<Service>, default_max_tokens: usize) -> Self {
        let model_id = service
            .current()
            .map(|p| p.model_id().to_string())
            .unwrap_or_else(|| "model".into());
        PipelineBackend {
            source: Source::Supervised(service),
            model_id,
            default_max_tokens,
            retry_after: Duration::from_secs(1),
        }
    }

    /// Serve under `id` instead of the model's own name (`serve --alias`): `/v1/models` lists
    /// it and requests must name it.
    pub fn with_model_id(mut self, id: impl Into<String>) -> Self {
        self.model_id = id.into();
        self
    }

    fn pipeline(&self) -> Result<Pipeline, SubmitError> {
        match &self.source {
            Source::Fixed(p) => Ok(p.clone()),
            Source::Supervised(s) => s.current().ok_or_else(|| match s.failure() {
                Some(why) => SubmitError::Unavailable(format!(
                    "a node failed and the pipeline cannot be redeployed: {why}"
                )),
                None => SubmitError::Unavailable(
                    "a node failed; the pipeline is being redeployed".into(),
                ),
            }),
        }
    }
}

/// The model's sampling settings for an API request: llama.cpp's server defaults (temperature
/// 0.8, top-k 40, top-p 0.95, min-p 0.05) where the request is silent; `temperature: 0` is greedy.
/// Presence and frequency penalties are OpenAI's (over the generated tokens).
pub fn sampling_for(p: &RequestSampling) -> Result<ModelSampling, SubmitError> {
    let s = ModelSampling {
        temperature: p.temperature.unwrap_or(0.8),
        top_k: p.top_k.map_or(40, |k| k as usize),
        top_p: p.top_p.unwrap_or(0.95),
        min_p: p.min_p.unwrap_or(0.05),
        repetition_penalty: p.repeat_penalty.unwrap_or(1.0),
        repeat_last_n: 64,
        seed: p.seed.unwrap_or_else(rand::random),
        presence_penalty: p.presence_penalty.unwrap_or(0.0),
        frequency_penalty: p.frequency_penalty.unwrap_or(0.0),
    };
    s.validate()
        .map_err(|e| SubmitError::Invalid(format!("invalid sampling settings: {e}")))?;
    Ok(s)
}

impl PipelineBackend {
    /// A pipeline's refusal as the gateway reports it.
    fn submit_error(&self, e: PipelineError) -> SubmitError {
        match e {
            PipelineError::Overloaded { .. } => SubmitError::Overloaded {
                retry_after: self.retry_after,
            },
            PipelineError::PromptTooLong {
                prompt,
                reserved,
                ctx,
            } => SubmitError::PromptTooLong {
                prompt_tokens: prompt as u32,
                requested_tokens: reserved as u32,
                max_context: ctx as u32,
            },
            PipelineError::EmptyPrompt | PipelineError::BadPrompt(_) => {
                SubmitError::Invalid(e.to_string())
            }
            other => SubmitError::Unavailable(other.to_string()),
        }
    }
}

impl CompletionBackend for PipelineBackend {
    fn model_id(&self) -> String {
        self.model_id.clone()
    }

    fn capacity(&self) -> Option<usize> {
        self.pipeline().ok().map(|p| p.capacity())
    }

    fn readiness(&self) -> Readiness {
        match &self.source {
            Source::Fixed(_) => Readiness::Ready,
            Source::Supervised(s) => match (s.current(), s.failure()) {
                (Some(_), _) => Readiness::Ready,
                (None, Some(why)) => Readiness::Failed(why),
                (None, None) => Readiness::Redeploying,
            },
        }
    }

    fn tokenize(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<(u32, String)>, SubmitError> {
        let pipeline = self.pipeline()?;
        let tok = pipeline.tokenizer();
        let ids = tok
            .encode_with(text, add_special, parse_special)
            .map_err(|e| SubmitError::Invalid(e.to_string()))?;
        Ok(ids
            .into_iter()
            .map(|id| {
                let piece = tok.token_bytes(id, true).unwrap_or_default();
                (id, String::from_utf8_lossy(piece).into_owned())
            })
            .collect())
    }

    fn detokenize(&self, ids: &[u32]) -> Result<String, SubmitError> {
        let pipeline = self.pipeline()?;
        pipeline
            .tokenizer()
            .decode(ids)
            .map_err(|e| SubmitError::Invalid(e.to_string()))
    }

    fn submit(&self, req: GenerationRequest) -> Result<TokenStream, SubmitError> {
        let pipeline = self.pipeline()?;
        if let Some(why) = pipeline.broken() {
            return Err(SubmitError::Unavailable(why));
        }
        let sampling = sampling_for(&req.sampling)?;
        let ids = match &req.prompt {
            PromptInput::Text(t) => pipeline.encode(t),
            PromptInput::Chat(msgs) => {
                pipeline.encode_chat_with(msgs, req.tools.as_ref(), &req.reply_prefix)
            }
        }
        .map_err(|e| SubmitError::Invalid(e.to_string()))?;
        let ctx = pipeline.context_length();
        let requested = req.max_tokens.unwrap_or(0) as usize;
        let max_tokens = req
            .max_tokens
            .map_or(self.default_max_tokens, |m| m as usize)
            .min(ctx.saturating_sub(ids.len()));
        let opts = GenOptions {
            max_tokens,
            sampling,
            logprobs: req.logprobs,
            score_prompt: req.score_prompt,
            embed: req.embed,
            response_format: req.response_format,
        };
        // The one validation and the one admission point of a request.
        pipeline
            .check(ids.len(), requested, &opts)
            .map_err(|e| self.submit_error(e))?;
        let admitted = pipeline.try_admit().map_err(|e| self.submit_error(e))?;
        let prompt_tokens = ids.len() as u32;
        let (tx, stream) = TokenStream::channel(prompt_tokens, 16);
        let events = Events {
            tx,
            tokenizer: pipeline.tokenizer().clone(),
            prompt: ids.clone(),
        };
        let service = match &self.source {
            Source::Supervised(svc) => Some(svc.clone()),
            Source::Fixed(_) => None,
        };
        let generation = service.as_ref().map_or(0, |s| s.generation());
        tokio::spawn(async move {
            let event = drive(
                pipeline,
                admitted.await,
                service,
                generation,
                ids,
                opts,
                &events,
            )
            .await;
            let _ = events.tx.send(event).await;
        });
        Ok(stream)
    }
}

/// A request's event stream, with what it takes to spell out log-probabilities' tokens.
struct Events {
    tx: mpsc::Sender<GenerationEvent>,
    tokenizer: Arc<Tokenizer>,
    /// The prompt's token ids (a scored prompt's entries name them).
    prompt: Vec<u32>,
}

impl Events {
    /// A token's text (U+FFFD where its bytes are not whole characters) and bytes.
    fn spell(&self, id: u32) -> (String, Vec<u8>) {
        let bytes = self
            .tokenizer
            .token_bytes(id, false)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        (String::from_utf8_lossy(&bytes).into_owned(), bytes)
    }

    fn top(&self, id: u32, logprob: f32) -> TopLogprob {
        let (token, bytes) = self.spell(id);
        TopLogprob {
            token,
            bytes,
            logprob,
        }
    }

    fn entry(&self, t: &TokenLogprobs) -> TokenLogprob {
        TokenLogprob {
            chosen: self.top(t.token, t.logprob),
            top: t.top.iter().map(|&(id, lp)| self.top(id, lp)).collect(),
        }
    }
}

impl TokenSink for Events {
    fn send_token(&self, t: GenToken) -> impl std::future::Future<Output = bool> + Send {
        let logprobs = t.logprobs.as_ref().map(|l| self.entry(l));
        async move {
            self.tx
                .send(GenerationEvent::Token {
                    id: t.id,
                    text: t.text,
                    logprobs,
                })
                .await
                .is_ok()
        }
    }

    /// The prompt's tokens, each with its score (none for the first); control tokens the
    /// tokenizer added in front (BOS) are left out, as they have no text.
    fn send_prompt_logprobs(
        &self,
        scores: Vec<TokenLogprobs>,
    ) -> impl std::future::Future<Output = bool> + Send {
        let mut tokens = Vec::with_capacity(self.prompt.len());
        for (i, &id) in self.prompt.iter().enumerate() {
            let (token, bytes) = self.spell(id);
            if tokens.is_empty() && bytes.is_empty() {
                continue;
            }
            tokens.push(PromptToken {
                token,
                bytes,
                logprob: i
                    .checked_sub(1)
                    .and_then(|j| scores.get(j))
                    .map(|s| self.entry(s)),
            });
        }
        async move { self.tx.send(GenerationEvent::Prompt(tokens)).await.is_ok() }
    }

    #[allow(clippy::manual_async_fn)]
    fn send_embedding(&self, vector: Vec<f32>) -> impl std::future::Future<Output = bool> + Send {
        async move {
            self.tx
                .send(GenerationEvent::Embedding(vector))
                .await
                .is_ok()
        }
    }
}

/// Runs one request to its final event, its tokens going straight into the request's event
/// stream. On a supervised deployment a request whose pipeline breaks mid-answer continues on
/// the redeployed one ([`Service::generate`]).
async fn drive(
    pipeline: Pipeline,
    slot: Admission,
    service: Option<Arc<Service>>,
    generation: u64,
    prompt: Vec<u32>,
    opts: GenOptions,
    events: &Events,
) -> GenerationEvent {
    let prompt_tokens = prompt.len() as u32;
    let result = match service {
        Some(svc) => svc
            .generate_into(Some((pipeline, slot, generation)), prompt, &opts, events)
            .await
            .map(|r| (r.finish, r.tokens.len())),
        None => super::driver::drive(pipeline, Slot::Owned(slot), None, prompt, &opts, events)
            .await
            .map(|o| (o.summary.finish, o.summary.tokens.len())),
    };
    match result {
        Ok((finish, n)) => GenerationEvent::Done {
            finish_reason: match finish {
                Finish::EndOfGeneration | Finish::Cancelled => FinishReason::Stop,
                Finish::MaxTokens | Finish::ContextFull => FinishReason::Length,
            },
            prompt_tokens,
            completion_tokens: n as u32,
        },
        Err(e) => GenerationEvent::Error(e.to_string()),
    }
}
