//! OpenAI wire format: request bodies, responses, streaming chunks, and the pure conversion of
//! a request into a [`GenerationRequest`].

use super::backend::{ChatMessage, GenerationRequest, PromptInput, RequestSampling};
use super::error::ApiError;
use super::tools::{ToolCall, ToolUse, template_tool_calls, tool_use};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Most stop strings a request may give (OpenAI's limit).
pub const MAX_STOP_STRINGS: usize = 4;

/// Most alternatives `top_logprobs` (chat) or `logprobs` (completions) may ask for per token.
pub const MAX_TOP_LOGPROBS: u32 = 20;

/// Fields both endpoints understand ([`CommonParams`]).
const COMMON_FIELDS: &[&str] = &[
    "model",
    "max_tokens",
    "n_predict",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "stop",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "repeat_penalty",
    "response_format",
    "user",
];

/// Fields common clients send that change nothing here: accepted and ignored.
const HARMLESS_FIELDS: &[&str] = &["metadata", "store", "service_tier", "stream_timeout"];

/// Fields only chat completions understand.
const CHAT_FIELDS: &[&str] = &[
    "messages",
    "max_completion_tokens",
    "logprobs",
    "top_logprobs",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
];

/// Fields only text completions understand.
const COMPLETION_FIELDS: &[&str] = &["prompt", "echo", "logprobs"];

/// Refuses a request body with a field this server does not understand (OpenAI's wording,
/// naming the field): a silently ignored field would change what the client gets without it
/// knowing. `chat` selects the endpoint's own fields.
pub fn check_fields(body: &Value, chat: bool) -> Result<(), ApiError> {
    let Some(obj) = body.as_object() else {
        return Err(ApiError::invalid_request(
            "the request body must be a JSON object",
            None,
        ));
    };
    let own = if chat { CHAT_FIELDS } else { COMPLETION_FIELDS };
    for key in obj.keys() {
        let k = key.as_str();
        if !(COMMON_FIELDS.contains(&k) || HARMLESS_FIELDS.contains(&k) || own.contains(&k)) {
            return Err(invalid(
                format!("Unrecognized request argument supplied: {key}"),
                key,
            ));
        }
    }
    Ok(())
}

/// `stop`: one string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StopField {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a final chunk with `usage` before `[DONE]`.
    #[serde(default)]
    pub include_usage: bool,
}

/// Fields shared by both endpoints.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CommonParams {
    /// Model id.
    pub model: String,
    /// Max tokens to generate.
    pub max_tokens: Option<u32>,
    /// llama-server's name for `max_tokens` (`-1`: until the end of text or the context).
    pub n_predict: Option<i64>,
    /// Stream with server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Temperature.
    pub temperature: Option<f32>,
    /// Top-p.
    pub top_p: Option<f32>,
    /// Top-k (extension).
    pub top_k: Option<u32>,
    /// Min-p (extension).
    pub min_p: Option<f32>,
    /// Seed.
    pub seed: Option<u64>,
    /// Stop strings.
    pub stop: Option<StopField>,
    /// Number of choices (only 1 is supported).
    pub n: Option<u32>,
    /// Presence penalty.
    pub presence_penalty: Option<f32>,
    /// Frequency penalty.
    pub frequency_penalty: Option<f32>,
    /// Repetition penalty (extension).
    pub repeat_penalty: Option<f32>,
    /// Structured output: `{"type": "json_object"}` or `{"type": "json_schema", ...}`
    /// (checked by `structured::response_format`).
    pub response_format: Option<Value>,
    /// Client user id (ignored).
    pub user: Option<String>,
}

/// `POST /v1/completions` body.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    /// The prompt: a string or a one-element list of strings.
    pub prompt: Value,
    /// Return the prompt before the completion (with `logprobs`, the prompt's tokens are
    /// scored too; with `max_tokens: 0`, nothing is generated: how clients score a text).
    #[serde(default)]
    pub echo: bool,
    /// Log-probabilities of each token and this many most likely alternatives (0–20).
    pub logprobs: Option<u32>,
    /// Everything else.
    #[serde(flatten)]
    pub common: CommonParams,
}

/// A chat message in a request: content is a string or a list of text parts.
#[derive(Debug, Clone, Deserialize)]
pub struct RequestMessage {
    /// Role.
    pub role: String,
    /// Content.
    #[serde(default)]
    pub content: Value,
    /// An assistant turn's tool calls.
    #[serde(default)]
    pub tool_calls: Option<Value>,
    /// A tool turn: the call it answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
    /// A tool turn: the function's name (older clients).
    #[serde(default)]
    pub name: Option<String>,
}

/// `POST /v1/chat/completions` body.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<RequestMessage>,
    /// Newer name for `max_tokens`.
    pub max_completion_tokens: Option<u32>,
    /// Return each generated token's log-probability.
    #[serde(default)]
    pub logprobs: bool,
    /// With `logprobs`, this many most likely alternatives per token (0–20).
    pub top_logprobs: Option<u32>,
    /// Functions the model may call.
    pub tools: Option<Value>,
    /// `none`, `auto`, `required` or a named function.
    pub tool_choice: Option<Value>,
    /// Several calls in one answer (always allowed; accepted for compatibility).
    pub parallel_tool_calls: Option<bool>,
    /// Everything else.
    #[serde(flatten)]
    pub common: CommonParams,
}

/// `usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Generated tokens.
    pub completion_tokens: u32,
    /// Sum.
    pub total_tokens: u32,
}

impl Usage {
    /// Usage from the two counts.
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// One alternative in a chat `logprobs.content[].top_logprobs` list.
#[derive(Debug, Clone, Serialize)]
pub struct ChatTopLogprob {
    /// The token's text.
    pub token: String,
    /// Natural log of its probability (the f32 the model computed, widened exactly).
    pub logprob: f64,
    /// Its UTF-8 bytes.
    pub bytes: Vec<u8>,
}

/// One generated token in a chat `logprobs.content` list.
#[derive(Debug, Clone, Serialize)]
pub struct ChatTokenLogprob {
    /// The token's text.
    pub token: String,
    /// Natural log of its probability (the f32 the model computed, widened exactly).
    pub logprob: f64,
    /// Its UTF-8 bytes.
    pub bytes: Vec<u8>,
    /// The most likely tokens at this position, best first.
    pub top_logprobs: Vec<ChatTopLogprob>,
}

/// A chat choice's `logprobs`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChatLogprobs {
    /// One entry per generated token.
    pub content: Vec<ChatTokenLogprob>,
    /// Always null.
    pub refusal: Option<Vec<ChatTokenLogprob>>,
}

/// A text completion choice's `logprobs` (the legacy layout: parallel lists).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CompletionLogprobs {
    /// Each token's text.
    pub tokens: Vec<String>,
    /// Each token's log-probability (null for a first prompt token nothing precedes).
    pub token_logprobs: Vec<Option<f64>>,
    /// Per token, the most likely alternatives as `{text: logprob}` (null where the token
    /// has no log-probability).
    pub top_logprobs: Vec<Option<serde_json::Map<String, Value>>>,
    /// Each token's offset in characters from the start of the choice's text.
    pub text_offset: Vec<u32>,
}

/// One choice of a (non-streamed or streamed) text completion.
#[derive(Debug, Clone, Serialize)]
pub struct CompletionChoice {
    /// Text.
    pub text: String,
    /// Always 0.
    pub index: u32,
    /// The tokens' log-probabilities when the request asked for them, else null.
    pub logprobs: Option<CompletionLogprobs>,
    /// `stop`, `length` or null while streaming.
    pub finish_reason: Option<&'static str>,
}

/// A `text_completion` object (full response and stream chunks share it).
#[derive(Debug, Clone, Serialize)]
pub struct CompletionResponse {
    /// Response id.
    pub id: String,
    /// `text_completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// Model id.
    pub model: String,
    /// Null.
    pub system_fingerprint: Option<String>,
    /// One choice.
    pub choices: Vec<CompletionChoice>,
    /// Present on full responses (and the final usage chunk when asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// An assistant message in a full chat response.
#[derive(Debug, Clone, Serialize)]
pub struct ResponseMessage {
    /// `assistant`.
    pub role: &'static str,
    /// Text (null when the answer is only tool calls).
    pub content: Option<String>,
    /// The tool calls the model made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
}

/// A tool call in a stream chunk's `delta` (sent whole, in one chunk).
#[derive(Debug, Clone, Serialize)]
pub struct DeltaToolCall {
    /// Position among the answer's calls.
    pub index: u32,
    /// The call.
    #[serde(flatten)]
    pub call: ToolCall,
}

/// One choice of a full chat response.
#[derive(Debug, Clone, Serialize)]
pub struct ChatChoice {
    /// Always 0.
    pub index: u32,
    /// The reply.
    pub message: ResponseMessage,
    /// The tokens' log-probabilities when the request asked for them, else null.
    pub logprobs: Option<ChatLogprobs>,
    /// `stop` or `length`.
    pub finish_reason: &'static str,
}

/// A `chat.completion` object.
#[derive(Debug, Clone, Serialize)]
pub struct ChatResponse {
    /// Response id.
    pub id: String,
    /// `chat.completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// Model id.
    pub model: String,
    /// Null.
    pub system_fingerprint: Option<String>,
    /// One choice.
    pub choices: Vec<ChatChoice>,
    /// Token counts.
    pub usage: Usage,
}

/// `delta` of a chat stream chunk.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Delta {
    /// `assistant` on the first chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// New text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// New tool calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<DeltaToolCall>>,
}

/// One choice of a chat stream chunk.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkChoice {
    /// Always 0.
    pub index: u32,
    /// What is new.
    pub delta: Delta,
    /// The new tokens' log-probabilities when the request asked for them, else null.
    pub logprobs: Option<ChatLogprobs>,
    /// Set on the last chunk.
    pub finish_reason: Option<&'static str>,
}

/// A `chat.completion.chunk` object.
#[derive(Debug, Clone, Serialize)]
pub struct ChatChunk {
    /// Response id (same for every chunk).
    pub id: String,
    /// `chat.completion.chunk`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// Model id.
    pub model: String,
    /// Null.
    pub system_fingerprint: Option<String>,
    /// One choice (none on the usage chunk).
    pub choices: Vec<ChunkChoice>,
    /// Only on the final usage chunk when `stream_options.include_usage`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// A validated request, ready for the backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// The backend request.
    pub request: GenerationRequest,
    /// Model id the client named.
    pub model: String,
    /// Stream the answer.
    pub stream: bool,
    /// Add a usage chunk at the end of the stream.
    pub include_usage: bool,
    /// Return the prompt's text (and, with log-probabilities, its tokens) before the
    /// completion.
    pub echo: bool,
    /// Tool calling (chat): the answer is searched for calls.
    pub tools: ToolUse,
}

fn invalid(message: impl Into<String>, param: &str) -> ApiError {
    ApiError::invalid_request(message, Some(param))
}

fn check_range(v: Option<f32>, lo: f32, hi: f32, param: &str) -> Result<(), ApiError> {
    match v {
        Some(x) if !(x.is_finite() && x >= lo && x <= hi) => Err(invalid(
            format!("{x} is not a valid value for '{param}': must be between {lo} and {hi}"),
            param,
        )),
        _ => Ok(()),
    }
}

/// A `logprobs`/`top_logprobs` count in 0..=20.
fn check_top(v: Option<u32>, param: &str) -> Result<Option<u8>, ApiError> {
    match v {
        Some(k) if k > MAX_TOP_LOGPROBS => Err(invalid(
            format!(
                "{k} is not a valid value for '{param}': must be between 0 and {MAX_TOP_LOGPROBS}"
            ),
            param,
        )),
        other => Ok(other.map(|k| k as u8)),
    }
}

/// `max_tokens` (or the endpoint's newer name, `preferred`), else llama-server's `n_predict`.
fn max_tokens_of(c: &CommonParams, preferred: Option<u32>) -> Result<Option<u32>, ApiError> {
    if let Some(m) = preferred.or(c.max_tokens) {
        return Ok(Some(m));
    }
    match c.n_predict {
        None | Some(-1) => Ok(None),
        Some(n) if (0..=i64::from(u32::MAX)).contains(&n) => Ok(Some(n as u32)),
        Some(n) => Err(invalid(
            format!("{n} is not a valid value for 'n_predict': -1 or a token count"),
            "n_predict",
        )),
    }
}

fn common_checks(
    c: &CommonParams,
    max_tokens: Option<u32>,
    echo: bool,
) -> Result<(RequestSampling, Vec<String>), ApiError> {
    if let Some(n) = c.n
        && n != 1
    {
        return Err(invalid(
            format!("n = {n} is not supported: only one choice per request"),
            "n",
        ));
    }
    if max_tokens == Some(0) && !echo {
        return Err(invalid(
            "max_tokens must be at least 1 (0 only with echo, to score the prompt)",
            "max_tokens",
        ));
    }
    check_range(c.temperature, 0.0, 2.0, "temperature")?;
    check_range(c.top_p, 0.0, 1.0, "top_p")?;
    check_range(c.min_p, 0.0, 1.0, "min_p")?;
    check_range(c.presence_penalty, -2.0, 2.0, "presence_penalty")?;
    check_range(c.frequency_penalty, -2.0, 2.0, "frequency_penalty")?;
    check_range(c.repeat_penalty, 0.0, 10.0, "repeat_penalty")?;
    let stop = match &c.stop {
        None => Vec::new(),
        Some(StopField::One(s)) => vec![s.clone()],
        Some(StopField::Many(v)) => v.clone(),
    };
    if stop.len() > MAX_STOP_STRINGS {
        return Err(invalid(
            format!("at most {MAX_STOP_STRINGS} stop sequences are allowed"),
            "stop",
        ));
    }
    let stop: Vec<String> = stop.into_iter().filter(|s| !s.is_empty()).collect();
    let sampling = RequestSampling {
        temperature: c.temperature,
        top_p: c.top_p,
        top_k: c.top_k,
        min_p: c.min_p,
        seed: c.seed,
        presence_penalty: c.presence_penalty,
        frequency_penalty: c.frequency_penalty,
        repeat_penalty: c.repeat_penalty,
    };
    Ok((sampling, stop))
}

/// Validate a completion request and build the backend request.
pub fn prepare_completion(req: CompletionRequest, id: String) -> Result<Prepared, ApiError> {
    let logprobs = check_top(req.logprobs, "logprobs")?;
    let prompt = match req.prompt {
        Value::String(s) => s,
        Value::Array(items) if items.len() == 1 && items[0].is_string() => {
            items[0].as_str().unwrap_or_default().to_string()
        }
        Value::Array(items) if items.len() > 1 && items.iter().all(Value::is_string) => {
            return Err(invalid(
                "batched prompts are not supported: send one prompt per request",
                "prompt",
            ));
        }
        _ => {
            return Err(invalid(
                "prompt must be a string (token-id prompts are not supported)",
                "prompt",
            ));
        }
    };
    let max_tokens = max_tokens_of(&req.common, None)?;
    let (sampling, stop) = common_checks(&req.common, max_tokens, req.echo)?;
    Ok(Prepared {
        request: GenerationRequest {
            id,
            prompt: PromptInput::Text(prompt),
            max_tokens,
            sampling,
            stop,
            logprobs,
            score_prompt: req.echo && logprobs.is_some(),
            tools: None,
            reply_prefix: String::new(),
            embed: false,
            response_format: super::structured::response_format(&req.common)?,
        },
        model: req.common.model,
        stream: req.common.stream,
        include_usage: req
            .common
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage),
        echo: req.echo,
        tools: ToolUse::default(),
    })
}

fn message_text(content: &Value, index: usize) -> Result<String, ApiError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                match (
                    part.get("type").and_then(Value::as_str),
                    part.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    _ => {
                        return Err(invalid(
                            format!("messages[{index}].content: only text parts are supported"),
                            &format!("messages[{index}].content"),
                        ));
                    }
                }
            }
            Ok(text)
        }
        _ => Err(invalid(
            format!("messages[{index}].content must be a string or a list of text parts"),
            &format!("messages[{index}].content"),
        )),
    }
}

/// Validate a chat request and build the backend request.
pub fn prepare_chat(req: ChatRequest, id: String) -> Result<Prepared, ApiError> {
    if req.messages.is_empty() {
        return Err(invalid(
            "messages must contain at least one message",
            "messages",
        ));
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.iter().enumerate() {
        match m.role.as_str() {
            "system" | "developer" | "user" | "assistant" | "tool" => {}
            other => {
                return Err(invalid(
                    format!(
                        "messages[{i}].role `{other}` is not one of system, developer, user, assistant, tool"
                    ),
                    &format!("messages[{i}].role"),
                ));
            }
        }
        let tool_calls = match &m.tool_calls {
            Some(c) if m.role == "assistant" => Some(template_tool_calls(c, i)?),
            Some(_) => {
                return Err(invalid(
                    format!("messages[{i}].tool_calls is only for assistant messages"),
                    &format!("messages[{i}].tool_calls"),
                ));
            }
            None => None,
        };
        if m.role == "tool" && m.tool_call_id.is_none() {
            return Err(invalid(
                format!("messages[{i}]: a tool message needs tool_call_id"),
                &format!("messages[{i}].tool_call_id"),
            ));
        }
        messages.push(ChatMessage {
            role: m.role.clone(),
            content: message_text(&m.content, i)?,
            tool_calls,
            tool_call_id: m.tool_call_id.clone(),
            name: m.name.clone(),
        });
    }
    let tools = tool_use(req.tools.as_ref(), req.tool_choice.as_ref())?;
    let max_tokens = max_tokens_of(&req.common, req.max_completion_tokens)?;
    let (sampling, stop) = common_checks(&req.common, max_tokens, false)?;
    let top = check_top(req.top_logprobs, "top_logprobs")?;
    if top.is_some() && !req.logprobs {
        return Err(invalid("top_logprobs needs logprobs: true", "top_logprobs"));
    }
    Ok(Prepared {
        request: GenerationRequest {
            id,
            prompt: PromptInput::Chat(messages),
            max_tokens,
            sampling,
            stop,
            logprobs: req.logprobs.then_some(top.unwrap_or(0)),
            score_prompt: false,
            tools: tools.tools.clone(),
            reply_prefix: tools.reply_prefix.clone(),
            embed: false,
            response_format: super::structured::response_format(&req.common)?,
        },
        model: req.common.model,
        stream: req.common.stream,
        include_usage: req
            .common
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage),
        echo: false,
        tools,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_prompt_forms() {
        let r: CompletionRequest =
            serde_json::from_str(r#"{"model":"m","prompt":["hi"],"stop":"x","max_tokens":3}"#)
                .unwrap();
        let p = prepare_completion(r, "id".into()).unwrap();
        assert_eq!(p.request.prompt, PromptInput::Text("hi".into()));
        assert_eq!(p.request.stop, vec!["x".to_string()]);
        let r: CompletionRequest = serde_json::from_str(r#"{"model":"m","prompt":[1,2]}"#).unwrap();
        assert_eq!(
            prepare_completion(r, "id".into())
                .unwrap_err()
                .param
                .as_deref(),
            Some("prompt")
        );
    }

    #[test]
    fn chat_parts_and_limits() {
        let r: ChatRequest = serde_json::from_str(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],"max_completion_tokens":5,"stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .unwrap();
        let p = prepare_chat(r, "id".into()).unwrap();
        assert_eq!(
            p.request.prompt,
            PromptInput::Chat(vec![ChatMessage::user("ab")])
        );
        assert_eq!(p.request.max_tokens, Some(5));
        assert!(p.stream && p.include_usage);
        let r: ChatRequest = serde_json::from_str(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3}"#,
        )
        .unwrap();
        assert_eq!(
            prepare_chat(r, "id".into()).unwrap_err().param.as_deref(),
            Some("temperature")
        );
        let r: ChatRequest = serde_json::from_str(r#"{"model":"m","messages":[]}"#).unwrap();
        assert!(prepare_chat(r, "id".into()).is_err());
    }
}
