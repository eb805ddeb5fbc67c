//! [`EchoBackend`]: a deterministic [`CompletionBackend`] that is not a model. It answers with
//! the words of the prompt (for chats: of the last message) one token per word, so gateways,
//! HTTP clients and the OpenAI client check script can be exercised without loading weights.

use super::backend::{
    CompletionBackend, FinishReason, GenerationEvent, GenerationRequest, PromptInput, PromptToken,
    SubmitError, TokenLogprob, TokenStream, TopLogprob,
};
use super::readiness::Readiness;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Settings of an [`EchoBackend`].
#[derive(Debug, Clone, PartialEq)]
pub struct EchoConfig {
    /// Model id it answers to.
    pub model_id: String,
    /// Context length in "tokens" (whitespace-separated words of the whole prompt).
    pub context_length: u32,
    /// Tokens generated when the request gives no `max_tokens`.
    pub default_max_tokens: u32,
    /// Pause before each token (to simulate generation speed).
    pub token_delay: Duration,
    /// Most requests generating at once; beyond it `submit` answers `Overloaded`.
    /// `None` = unlimited.
    pub max_active: Option<usize>,
    /// The `Retry-After` of an `Overloaded` answer. Default 2 s.
    pub retry_after: Duration,
}

impl Default for EchoConfig {
    fn default() -> Self {
        EchoConfig {
            model_id: "edgeray-echo".to_string(),
            context_length: 4096,
            default_max_tokens: 64,
            token_delay: Duration::ZERO,
            max_active: None,
            retry_after: Duration::from_secs(2),
        }
    }
}

/// Deterministic echo generator; see the module docs.
#[derive(Debug, Clone)]
pub struct EchoBackend {
    config: EchoConfig,
    active: Arc<AtomicUsize>,
    readiness: Arc<parking_lot::Mutex<Readiness>>,
}

struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl EchoBackend {
    /// A backend with `config`.
    pub fn new(config: EchoConfig) -> Self {
        EchoBackend {
            config,
            active: Arc::new(AtomicUsize::new(0)),
            readiness: Arc::default(),
        }
    }

    /// What `readiness` (and so `/health`) reports from now on, in every clone (to exercise
    /// the gateway's answers during a redeployment).
    pub fn set_readiness(&self, readiness: Readiness) {
        *self.readiness.lock() = readiness;
    }

    /// Requests generating right now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// The "tokens" of a prompt and the words the reply echoes.
    pub fn tokenize(prompt: &PromptInput) -> (u32, Vec<String>) {
        match prompt {
            PromptInput::Text(t) => {
                let words: Vec<String> = t.split_whitespace().map(str::to_string).collect();
                (words.len() as u32, words)
            }
            PromptInput::Chat(msgs) => {
                // role marker + words, like a chat template adds tokens per message
                let total: usize = msgs
                    .iter()
                    .map(|m| 1 + m.content.split_whitespace().count())
                    .sum();
                let last = msgs
                    .last()
                    .map(|m| m.content.split_whitespace().map(str::to_string).collect())
                    .unwrap_or_default();
                (total as u32, last)
            }
        }
    }
}

impl CompletionBackend for EchoBackend {
    fn model_id(&self) -> String {
        self.config.model_id.clone()
    }

    fn capacity(&self) -> Option<usize> {
        self.config.max_active
    }

    fn readiness(&self) -> Readiness {
        self.readiness.lock().clone()
    }

    fn submit(&self, req: GenerationRequest) -> Result<TokenStream, SubmitError> {
        if req.embed {
            return Err(SubmitError::Invalid(
                "the echo backend is not a model: it has no embeddings".into(),
            ));
        }
        if req.tools.is_some() {
            return Err(SubmitError::Invalid(
                "the echo backend has no chat template: tools need a model".into(),
            ));
        }
        let (prompt_tokens, words) = Self::tokenize(&req.prompt);
        if prompt_tokens > self.config.context_length {
            return Err(SubmitError::PromptTooLong {
                prompt_tokens,
                requested_tokens: 0,
                max_context: self.config.context_length,
            });
        }
        if prompt_tokens == 0 {
            return Err(SubmitError::Invalid("the prompt is empty".to_string()));
        }
        let prev = self.active.fetch_add(1, Ordering::SeqCst);
        let guard = ActiveGuard(self.active.clone());
        if let Some(max) = self.config.max_active
            && prev >= max
        {
            return Err(SubmitError::Overloaded {
                retry_after: self.config.retry_after,
            });
        }
        let room = self.config.context_length - prompt_tokens;
        let max_tokens = req
            .max_tokens
            .unwrap_or(self.config.default_max_tokens)
            .min(room);
        let delay = self.config.token_delay;
        let (tx, stream) = TokenStream::channel(prompt_tokens, 8);
        // An echo is certain: every token has probability 1 (log-probability 0), and it is
        // its own only alternative.
        let certain = |text: &str| TokenLogprob {
            chosen: TopLogprob {
                token: text.to_string(),
                bytes: text.as_bytes().to_vec(),
                logprob: 0.0,
            },
            top: (req.logprobs.unwrap_or(0) > 0)
                .then(|| TopLogprob {
                    token: text.to_string(),
                    bytes: text.as_bytes().to_vec(),
                    logprob: 0.0,
                })
                .into_iter()
                .collect(),
        };
        let prompt_scores = req.score_prompt.then(|| {
            let PromptInput::Text(t) = &req.prompt else {
                return Vec::new();
            };
            t.split_whitespace()
                .enumerate()
                .map(|(i, w)| {
                    let text = if i == 0 {
                        w.to_string()
                    } else {
                        format!(" {w}")
                    };
                    PromptToken {
                        logprob: (i > 0).then(|| certain(&text)),
                        bytes: text.as_bytes().to_vec(),
                        token: text,
                    }
                })
                .collect()
        });
        let words: Vec<(String, Option<TokenLogprob>)> = words
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let text = if i == 0 { w.clone() } else { format!(" {w}") };
                let lp = req.logprobs.map(|_| certain(&text));
                (text, lp)
            })
            .collect();
        tokio::spawn(async move {
            let _guard = guard;
            if let Some(p) = prompt_scores
                && tx.send(GenerationEvent::Prompt(p)).await.is_err()
            {
                return;
            }
            let mut sent = 0u32;
            for (i, (text, logprobs)) in words.iter().enumerate() {
                if sent == max_tokens {
                    break;
                }
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if tx
                    .send(GenerationEvent::Token {
                        id: i as u32,
                        text: text.clone(),
                        logprobs: logprobs.clone(),
                    })
                    .await
                    .is_err()
                {
                    return; // the client went away
                }
                sent += 1;
            }
            let finish_reason = if (sent as usize) < words.len() {
                FinishReason::Length
            } else {
                FinishReason::Stop
            };
            let _ = tx
                .send(GenerationEvent::Done {
                    finish_reason,
                    prompt_tokens,
                    completion_tokens: sent,
                })
                .await;
        });
        Ok(stream)
    }
}
