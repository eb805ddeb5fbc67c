//! The OpenAI gateway's request handling without a model: a body is parsed as the endpoint's
//! JSON request and validated into a backend request, exactly as `POST /v1/completions` and
//! `POST /v1/chat/completions` do; a chat is then rendered with a real chat template (Qwen2.5's,
//! from its GGUF, and the built-in fallback), and the prompt text is streamed through the stop
//! matcher with the request's stop strings and split by the tool-call splitter (chunked as it
//! streams, and whole: the same text and calls either way).
//!
//! Input: byte 0 picks the endpoint (bit 0) and the stream chunk size (bits 1..); the rest is
//! the HTTP body.
#![no_main]

use edgeray::gateway::openai::{
    ChatRequest, CompletionRequest, check_fields, prepare_chat, prepare_completion,
};
use edgeray::gateway::{
    ApiError, PromptInput, StopMatcher, StopOutcome, ToolCallSplitter, join_pieces, split_answer,
};
use edgeray_model::chat::{ChatMessage, ChatTemplate};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static TEMPLATES: LazyLock<[ChatTemplate; 2]> = LazyLock::new(|| {
    [
        ChatTemplate::new(include_str!("../templates/qwen2.jinja"), "", "<|im_end|>")
            .expect("the Qwen2.5 template compiles"),
        ChatTemplate::fallback("<bos>", "<eos>"),
    ]
});

fn parse(chat: bool, body: &[u8]) -> Result<edgeray::gateway::openai::Prepared, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(ApiError::invalid_json)?;
    check_fields(&value, chat)?;
    if chat {
        let req: ChatRequest = serde_json::from_slice(body).map_err(ApiError::invalid_json)?;
        prepare_chat(req, "chatcmpl-fuzz".into())
    } else {
        let req: CompletionRequest =
            serde_json::from_slice(body).map_err(ApiError::invalid_json)?;
        prepare_completion(req, "cmpl-fuzz".into())
    }
}

/// Streams `text` through a stop matcher in `chunk`-byte pieces and checks what comes out: a
/// prefix of the text that contains no stop string, ending right before one if it stopped.
fn check_stops(stops: &[String], text: &str, chunk: usize) {
    let mut m = StopMatcher::new(stops);
    let mut out = String::new();
    let mut stopped = false;
    let mut rest = text;
    while !rest.is_empty() && !stopped {
        let mut cut = chunk.min(rest.len());
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        let (piece, tail) = rest.split_at(cut);
        rest = tail;
        match m.push(piece) {
            StopOutcome::Continue(t) => out.push_str(&t),
            StopOutcome::Stopped(t) => {
                out.push_str(&t);
                stopped = true;
            }
        }
    }
    if !stopped {
        out.push_str(&m.finish());
    }
    let stops: Vec<&String> = stops.iter().filter(|s| !s.is_empty()).collect();
    assert!(text.starts_with(&out), "output is not a prefix of the text");
    assert!(
        stops.iter().all(|s| !out.contains(s.as_str())),
        "a stop string was let through"
    );
    if stopped {
        assert!(
            stops
                .iter()
                .any(|s| text[out.len()..].starts_with(s.as_str()))
        );
    } else {
        assert_eq!(out, text);
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, body @ ..] = data else {
        return;
    };
    let chat = mode & 1 == 1;
    let chunk = usize::from(mode >> 1) + 1;
    let prepared = match parse(chat, body) {
        Ok(p) => p,
        Err(e) => {
            // Every refusal is a client error in OpenAI's error shape.
            assert!(e.status.is_client_error(), "{e}");
            assert!(!e.message.is_empty());
            return;
        }
    };
    let text = match &prepared.request.prompt {
        PromptInput::Text(t) => t.clone(),
        PromptInput::Chat(msgs) => {
            let msgs: Vec<ChatMessage> = msgs
                .iter()
                .map(|m| ChatMessage::new(m.role.clone(), m.content.clone()))
                .collect();
            let mut last = String::new();
            for t in TEMPLATES.iter() {
                if let Ok(s) = t.render(&msgs, true) {
                    last = s;
                }
            }
            last
        }
    };
    check_stops(&prepared.request.stop, &text, chunk);
    check_tool_split(&text, chunk, prepared.request.tools.as_ref());
});

/// The splitter gives the same content and calls whether the text arrives in `chunk`-byte
/// pieces or whole, and every call's arguments are JSON.
fn check_tool_split(text: &str, chunk: usize, tools: Option<&serde_json::Value>) {
    let none = serde_json::Value::Null;
    let tools = tools.unwrap_or(&none);
    let mut s = ToolCallSplitter::new("f").with_tools(tools);
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut cut = chunk.min(rest.len());
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        let (piece, tail) = rest.split_at(cut);
        rest = tail;
        pieces.extend(s.push(piece));
    }
    pieces.extend(s.finish());
    let (content, calls) = join_pieces(pieces);
    let (whole, whole_calls) = split_answer(text, "f", tools);
    assert_eq!(calls, whole_calls, "streamed and whole calls differ");
    let content = content.trim().to_string();
    assert_eq!(whole.unwrap_or_default(), content, "streamed and whole text differ");
    for c in &calls {
        assert!(serde_json::from_str::<serde_json::Value>(&c.function.arguments).is_ok());
    }
}
