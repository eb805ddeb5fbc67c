//! Chat templates read from the real GGUF files: Qwen2.5's ChatML template rendered exactly,
//! Gemma 3 (base, no template) falling back to the plain format.
//!
//! Missing models print SKIP and pass, except under `CI=true`, where they fail.

use edgeray_model::chat::{ChatMessage, ChatTemplate};
use edgeray_model::gguf::GgufFile;
use edgeray_model::tokenizer::Tokenizer;

fn model(name: &str) -> Option<GgufFile> {
    let p = edgeray_model::test_models::real_model(name)?;
    Some(GgufFile::open(&p).expect("open gguf"))
}

const QWEN_DEFAULT_SYSTEM: &str =
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

#[test]
fn qwen2_chatml_template_renders_exactly() {
    let Some(file) = model("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf") else {
        return;
    };
    let t = ChatTemplate::from_metadata(file.metadata()).unwrap();
    assert!(!t.is_fallback());
    assert_eq!(t.eos_token(), "<|im_end|>");

    let one = t
        .render(&[ChatMessage::user("Write hello world in Python.")], true)
        .unwrap();
    assert_eq!(
        one,
        format!(
            "<|im_start|>system\n{QWEN_DEFAULT_SYSTEM}<|im_end|>\n<|im_start|>user\nWrite hello world in Python.<|im_end|>\n<|im_start|>assistant\n"
        )
    );

    let conv = [
        ChatMessage::system("You are terse."),
        ChatMessage::user("2+2?"),
        ChatMessage::assistant("4"),
        ChatMessage::user("And 3+3?"),
    ];
    assert_eq!(
        t.render(&conv, true).unwrap(),
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n"
    );
    // without the generation prompt the text ends after the last turn
    assert!(
        t.render(&conv, false)
            .unwrap()
            .ends_with("And 3+3?<|im_end|>\n")
    );

    // the rendered prompt tokenizes with the ChatML markers as single tokens
    let tok = Tokenizer::from_gguf(&file).unwrap();
    let ids = tok.encode(&one, true).unwrap();
    assert_eq!(
        ids.iter()
            .filter(|&&i| i == tok.token_id("<|im_start|>").unwrap())
            .count(),
        3
    );
    assert_eq!(
        ids.iter()
            .filter(|&&i| i == tok.token_id("<|im_end|>").unwrap())
            .count(),
        2
    );
}

#[test]
fn gemma3_base_has_no_template_and_falls_back() {
    let Some(file) = model("gemma-3-270m-q4_k_m.gguf") else {
        return;
    };
    let t = ChatTemplate::from_metadata(file.metadata()).unwrap();
    assert!(t.is_fallback());
    assert_eq!((t.bos_token(), t.eos_token()), ("<bos>", "<eos>"));
    assert_eq!(
        t.render(&[ChatMessage::user("Hi")], true).unwrap(),
        "user: Hi\n\nassistant: "
    );
}

/// Qwen2.5's template offers tools, writes an assistant's calls in its `<tool_call>` format
/// (arguments as JSON objects) and wraps tool results; gemma3's fallback refuses tools.
#[test]
fn qwen2_template_renders_tools_calls_and_results() {
    let Some(file) = model("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf") else {
        return;
    };
    let t = ChatTemplate::from_metadata(file.metadata()).unwrap();
    assert!(t.supports_tools());
    let tools = serde_json::json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let call = ChatMessage {
        role: "assistant".into(),
        tool_calls: Some(serde_json::json!([{"type": "function",
            "function": {"name": "get_weather", "arguments": {"city": "Berlin"}}}])),
        ..ChatMessage::default()
    };
    let result = ChatMessage {
        role: "tool".into(),
        content: "{\"temperature_c\": 21}".into(),
        tool_call_id: Some("call_0".into()),
        ..ChatMessage::default()
    };
    let text = t
        .render_with_tools(
            &[ChatMessage::user("Weather in Berlin?"), call, result],
            Some(&tools),
            true,
        )
        .unwrap();
    assert!(
        text.contains("# Tools") && text.contains("\"name\":\"get_weather\""),
        "{text}"
    );
    assert!(
        text.contains("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\":\"Berlin\"}}\n</tool_call>"),
        "{text}"
    );
    assert!(
        text.contains(
            "<|im_start|>user\n<tool_response>\n{\"temperature_c\": 21}\n</tool_response><|im_end|>"
        ),
        "{text}"
    );
    assert!(text.ends_with("<|im_start|>assistant\n"));
    let Some(gemma) = model("gemma-3-270m-q4_k_m.gguf") else {
        return;
    };
    let g = ChatTemplate::from_metadata(gemma.metadata()).unwrap();
    assert!(!g.supports_tools());
    assert!(
        g.render_with_tools(&[ChatMessage::user("Hi")], Some(&tools), true)
            .is_err()
    );
}
