//! The OpenAI gateway's request handling without a model: a body is parsed as the endpoint's
//! JSON request and validated into a backend request, exactly as `POST /v1/completions` and
//! `POST /v1/chat/completions` do; a chat is then rendered with a real chat template (Qwen2.5's,
//! from its GGUF, and the built-in fallback), and the prompt text is streamed through the stop
//! matcher with the request's stop strings.
//!
//! Input: byte 0 picks the endpoint (bit 0) and the stream chunk size (bits 1..); the rest is
//! the HTTP body.
#![no_main]

use edgeray::gateway::openai::{ChatRequest, CompletionRequest, prepare_chat, prepare_completion};
use edgeray::gateway::stop::{StopMatcher, StopOutcome};
use edgeray::gateway::{ApiError, PromptInput};
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
});
