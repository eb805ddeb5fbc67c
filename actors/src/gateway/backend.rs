//! The boundary between the HTTP gateway and whatever generates tokens (the pipeline).

use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::mpsc;

/// A chat message as the backend receives it: the model's own turn type (the backend applies
/// the chat template); multi-part text contents arrive joined.
pub use edgeray_model::chat::ChatMessage;

/// What to continue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptInput {
    /// A raw text prompt (`/v1/completions`).
    Text(String),
    /// A conversation (`/v1/chat/completions`); the backend renders its chat template.
    Chat(Vec<ChatMessage>),
}

/// A request's sampling settings; `None` means the backend's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestSampling {
    /// Softmax temperature (0 = greedy).
    pub temperature: Option<f32>,
    /// Nucleus sampling mass.
    pub top_p: Option<f32>,
    /// Keep only the k most likely tokens.
    pub top_k: Option<u32>,
    /// Minimum probability relative to the most likely token.
    pub min_p: Option<f32>,
    /// Seed for reproducible sampling.
    pub seed: Option<u64>,
    /// OpenAI presence penalty.
    pub presence_penalty: Option<f32>,
    /// OpenAI frequency penalty.
    pub frequency_penalty: Option<f32>,
    /// llama.cpp-style repetition penalty.
    pub repeat_penalty: Option<f32>,
}

/// One generation job.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRequest {
    /// Gateway-assigned request id (also the response id).
    pub id: String,
    /// The prompt.
    pub prompt: PromptInput,
    /// Most tokens to generate; `None` = until end of sequence or the context is full.
    pub max_tokens: Option<u32>,
    /// Sampling settings.
    pub sampling: RequestSampling,
    /// Stop strings (the gateway also enforces them on the text it returns, and cancels the
    /// stream when one appears).
    pub stop: Vec<String>,
    /// Log-probabilities with each generated token: `Some(k)` adds the token's and the `k`
    /// most likely alternatives' (`k` ≤ 20; 0: the token's only).
    pub logprobs: Option<u8>,
    /// Score the prompt: the backend sends [`GenerationEvent::Prompt`] before any token, with
    /// `logprobs`' alternatives. `max_tokens: Some(0)` then generates nothing.
    pub score_prompt: bool,
    /// Tool definitions the chat template offers the model (chat only; `None`: none).
    pub tools: Option<serde_json::Value>,
    /// Text the assistant's reply starts with, written at the end of the prompt (forces a
    /// tool call); the gateway puts it back in front of the generated text.
    pub reply_prefix: String,
    /// Embed the prompt instead of generating: the backend sends
    /// [`GenerationEvent::Embedding`], then `Done`.
    pub embed: bool,
    /// Structured output enforced on the last stage (`None`: free text).
    pub response_format: Option<edgeray_model::sampling::constraint::OutputFormat>,
}

impl GenerationRequest {
    /// A request for `prompt` with every option at its default: the backend's `max_tokens`,
    /// its sampling defaults, no stop strings, log-probabilities, tools, embedding or format.
    pub fn new(id: impl Into<String>, prompt: PromptInput) -> Self {
        GenerationRequest {
            id: id.into(),
            prompt,
            max_tokens: None,
            sampling: RequestSampling::default(),
            stop: Vec::new(),
            logprobs: None,
            score_prompt: false,
            tools: None,
            reply_prefix: String::new(),
            embed: false,
            response_format: None,
        }
    }
}

/// One alternative token and its log-probability.
#[derive(Debug, Clone, PartialEq)]
pub struct TopLogprob {
    /// The token's text (bytes that are not valid UTF-8 on their own show as U+FFFD).
    pub token: String,
    /// The token's bytes.
    pub bytes: Vec<u8>,
    /// Natural log of its probability.
    pub logprob: f32,
}

/// A generated token's log-probability and the most likely alternatives, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The token itself.
    pub chosen: TopLogprob,
    /// The alternatives.
    pub top: Vec<TopLogprob>,
}

/// One token of a scored prompt ([`GenerationRequest::score_prompt`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PromptToken {
    /// The token's text (U+FFFD for bytes that are not valid UTF-8 on their own).
    pub token: String,
    /// The token's bytes.
    pub bytes: Vec<u8>,
    /// Its log-probability given the tokens before it, with the alternatives; `None` for a
    /// first token that nothing precedes.
    pub logprob: Option<TokenLogprob>,
}

/// Why a generation finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// End-of-sequence token or a stop string.
    Stop,
    /// `max_tokens` reached or the context is full.
    Length,
}

impl FinishReason {
    /// OpenAI's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// What a backend sends for one request, in order: tokens, then exactly one `Done` or `Error`.
#[derive(Debug, Clone, PartialEq)]
pub enum GenerationEvent {
    /// One generated token and its text (may be empty or a partial UTF-8 sequence resolved
    /// into the next token's text; the backend sends whole characters).
    Token {
        /// Token id.
        id: u32,
        /// Decoded text of this token.
        text: String,
        /// Its log-probabilities, when the request asked for them.
        logprobs: Option<TokenLogprob>,
    },
    /// The scored prompt (first, and only when the request asked for it).
    Prompt(Vec<PromptToken>),
    /// The prompt's embedding ([`GenerationRequest::embed`]): the mean of its positions'
    /// final-normed hidden states, not normalised.
    Embedding(Vec<f32>),
    /// Generation finished.
    Done {
        /// Why.
        finish_reason: FinishReason,
        /// Prompt tokens processed.
        prompt_tokens: u32,
        /// Tokens generated.
        completion_tokens: u32,
    },
    /// Generation failed after it was accepted.
    Error(String),
}

/// The receiving half of a request's events. Dropping it cancels the request: the backend's
/// next send fails and it should stop working on the request.
#[derive(Debug)]
pub struct TokenStream {
    /// Prompt length in tokens (known once the prompt is tokenized at submit time).
    pub prompt_tokens: u32,
    /// Events, bounded (backpressure on the backend when the client reads slowly).
    pub events: mpsc::Receiver<GenerationEvent>,
}

impl TokenStream {
    /// A bounded channel for one request: the backend keeps the sender.
    pub fn channel(
        prompt_tokens: u32,
        capacity: usize,
    ) -> (mpsc::Sender<GenerationEvent>, TokenStream) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            tx,
            TokenStream {
                prompt_tokens,
                events: rx,
            },
        )
    }
}

/// Why a backend refused a request at submission.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubmitError {
    /// Too busy now; the client should retry after the given time (HTTP 429).
    #[error("the model is overloaded; retry after {retry_after:?}")]
    Overloaded {
        /// Suggested wait.
        retry_after: Duration,
    },
    /// The prompt does not fit the context (HTTP 400 `context_length_exceeded`).
    #[error(
        "This model's maximum context length is {max_context} tokens. However, your messages resulted in {} tokens{}.",
        .prompt_tokens + .requested_tokens, split(.prompt_tokens, .requested_tokens)
    )]
    PromptTooLong {
        /// Tokens in the prompt.
        prompt_tokens: u32,
        /// Completion tokens requested (0 when not part of the check).
        requested_tokens: u32,
        /// The context length.
        max_context: u32,
    },
    /// The request is invalid for this backend (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// The backend cannot serve right now, e.g. the pipeline is being rebuilt (HTTP 503).
    #[error("the model is unavailable: {0}")]
    Unavailable(String),
}

fn split(prompt: &u32, requested: &u32) -> String {
    if *requested > 0 {
        format!(" ({prompt} in the messages, {requested} in the completion)")
    } else {
        String::new()
    }
}

/// Something that generates completions: the pipeline implements this.
pub trait CompletionBackend: Send + Sync + 'static {
    /// The model id clients must name (`/v1/models` lists it).
    fn model_id(&self) -> String;

    /// Whether requests can be served right now (`/health` answers 503 when not). The
    /// default: always ready.
    fn readiness(&self) -> super::Readiness {
        super::Readiness::Ready
    }

    /// Start generating for `req`; must not block for long (queue the work and return the
    /// stream). Errors here reach the client as HTTP errors.
    fn submit(&self, req: GenerationRequest) -> Result<TokenStream, SubmitError>;

    /// Requests this backend admits at most (running and queued) before `submit` answers
    /// [`SubmitError::Overloaded`]; `None` = no fixed bound. `/health` reports it.
    fn capacity(&self) -> Option<usize> {
        None
    }

    /// The model's token ids of `text` and each token's text (`/tokenize`): with
    /// `add_special`, the tokens the model adds (BOS); with `parse_special`, control tokens
    /// written in the text are recognised. The default: this backend has no tokenizer.
    fn tokenize(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<(u32, String)>, SubmitError> {
        let _ = (text, add_special, parse_special);
        Err(SubmitError::Invalid(
            "this backend has no tokenizer (it is not a model)".into(),
        ))
    }

    /// The text of token ids (`/detokenize`).
    fn detokenize(&self, ids: &[u32]) -> Result<String, SubmitError> {
        let _ = ids;
        Err(SubmitError::Invalid(
            "this backend has no tokenizer (it is not a model)".into(),
        ))
    }
}
