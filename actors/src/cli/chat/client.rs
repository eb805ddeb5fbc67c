//! The OpenAI endpoint `edgeray chat` talks to: the model id, and one streamed answer.

use futures::StreamExt;
use serde_json::{Value, json};

use super::sse::{SseDecoder, SseError, StreamEvent};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// Not reachable, or the connection broke.
    #[error("cannot reach {url}: {source}")]
    Http {
        /// The URL asked.
        url: String,
        /// The error.
        source: reqwest::Error,
    },
    /// The server answered with an error (OpenAI's error shape when it has one).
    #[error("the server answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
    /// The server lists no model.
    #[error("{0}/models lists no model")]
    NoModel(String),
    /// The stream could not be read.
    #[error(transparent)]
    Sse(#[from] SseError),
    /// An error event mid-stream.
    #[error("the answer broke off: {0}")]
    Stream(String),
}

/// One OpenAI-compatible server (`…/v1`).
#[derive(Debug, Clone)]
pub struct ChatClient {
    http: reqwest::Client,
    base: String,
    api_key: Option<String>,
}

/// What a finished (or stopped) answer reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnswerStats {
    /// `finish_reason`, when the stream said it.
    pub finish: Option<String>,
    /// Tokens of the rendered conversation (history included).
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
}

impl ChatClient {
    /// A client of `url` (the server's address, with or without `/v1`).
    pub fn new(url: &str, api_key: Option<String>) -> Self {
        let url = url.trim_end_matches('/');
        let base = if url.ends_with("/v1") {
            url.to_string()
        } else {
            format!("{url}/v1")
        };
        ChatClient {
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap_or_default(),
            base,
            api_key,
        }
    }

    /// The base URL (`…/v1`).
    pub fn base(&self) -> &str {
        &self.base
    }

    fn auth(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    fn http_err(&self, url: &str) -> impl FnOnce(reqwest::Error) -> ChatError {
        let url = url.to_string();
        move |source| ChatError::Http { url, source }
    }

    /// The first model id `/v1/models` lists.
    pub async fn model_id(&self) -> Result<String, ChatError> {
        let url = format!("{}/models", self.base);
        let r = self
            .auth(self.http.get(&url))
            .send()
            .await
            .map_err(self.http_err(&url))?;
        let v = ok_json(r).await?;
        v["data"][0]["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ChatError::NoModel(self.base.clone()))
    }

    /// Streams the answer to `messages`, handing each piece of text to `on_text` as it
    /// arrives. Dropping the future closes the connection, which stops the generation.
    pub async fn answer(
        &self,
        model: &str,
        messages: Value,
        params: &Value,
        mut on_text: impl FnMut(&str),
    ) -> Result<AnswerStats, ChatError> {
        let url = format!("{}/chat/completions", self.base);
        let mut body = json!({
            "model": model,
            "messages": messages,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        if let (Some(b), Some(p)) = (body.as_object_mut(), params.as_object()) {
            b.extend(p.clone());
        }
        let r = self
            .auth(self.http.post(&url).json(&body))
            .send()
            .await
            .map_err(self.http_err(&url))?;
        if !r.status().is_success() {
            return Err(error_of(r).await);
        }
        let mut stats = AnswerStats::default();
        let mut decoder = SseDecoder::default();
        let mut bytes = r.bytes_stream();
        while let Some(chunk) = bytes.next().await {
            let chunk = chunk.map_err(self.http_err(&url))?;
            for ev in decoder.feed(&chunk)? {
                match ev {
                    StreamEvent::Text(t) => on_text(&t),
                    StreamEvent::Finish(f) => stats.finish = Some(f),
                    StreamEvent::Usage {
                        prompt_tokens,
                        completion_tokens,
                    } => {
                        stats.prompt_tokens = prompt_tokens;
                        stats.completion_tokens = completion_tokens;
                    }
                    StreamEvent::Error(e) => return Err(ChatError::Stream(e)),
                    StreamEvent::Done => return Ok(stats),
                }
            }
        }
        Ok(stats)
    }
}

/// The JSON of a successful response, or its error.
async fn ok_json(r: reqwest::Response) -> Result<Value, ChatError> {
    if !r.status().is_success() {
        return Err(error_of(r).await);
    }
    let url = r.url().to_string();
    r.json()
        .await
        .map_err(|source| ChatError::Http { url, source })
}

/// An unsuccessful response as an error: OpenAI's `error.message` when the body has one.
async fn error_of(r: reqwest::Response) -> ChatError {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let message = v["error"]["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| text.chars().take(300).collect());
    ChatError::Status { status, message }
}
