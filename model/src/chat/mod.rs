//! Chat templates: renders a conversation into a prompt string with the model's own Jinja
//! template (`tokenizer.chat_template` in the GGUF), the way Hugging Face `transformers` does.
//!
//! The environment mirrors `transformers`' sandbox: `trim_blocks` and `lstrip_blocks` on,
//! Python string/dict methods (`.strip()`, `.startswith()`, `.get()`, ...) via
//! `minijinja-contrib`'s pycompat, plus the globals `raise_exception(msg)` and
//! `strftime_now(fmt)`. Variables passed to the template: `messages`, `add_generation_prompt`,
//! `bos_token`, `eos_token`.
//!
//! ```
//! use edgeray_model::chat::{ChatMessage, ChatTemplate};
//! let t = ChatTemplate::new(
//!     "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
//!      {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
//!     "", "<|im_end|>")?;
//! let s = t.render(&[ChatMessage::user("Hi")], true)?;
//! assert_eq!(s, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
//! # Ok::<(), edgeray_model::chat::ChatTemplateError>(())
//! ```

mod strftime;

use crate::gguf::Metadata;
use minijinja::{Environment, Error, ErrorKind, Value, context};
use serde::{Deserialize, Serialize};

pub use strftime::{StrftimeError, format_utc};

/// GGUF key holding the Jinja chat template.
pub const CHAT_TEMPLATE_KEY: &str = "tokenizer.chat_template";

/// The template used when a model has none (see [`ChatTemplate::fallback`]).
///
/// Each message becomes `<role>: <content>` followed by a blank line; with
/// `add_generation_prompt` the prompt ends in `assistant: `. The BOS token is not written (the
/// tokenizer adds it when the model wants one).
pub const FALLBACK_TEMPLATE: &str = "{% for message in messages %}{{ message.role }}: {{ message.content }}\n\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}";

/// Problems with a chat template.
#[derive(Debug, thiserror::Error)]
pub enum ChatTemplateError {
    /// The template source does not parse.
    #[error("chat template does not parse: {0}")]
    Syntax(String),
    /// Rendering failed (missing value, `raise_exception(...)`, wrong type, ...).
    #[error("chat template failed to render: {0}")]
    Render(String),
    /// Metadata needed to build the template is malformed.
    #[error("chat template metadata: {0}")]
    Metadata(String),
}

/// One turn of a conversation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text of the turn.
    pub content: String,
    /// An assistant turn's tool calls, as templates read them: a list of
    /// `{"type": "function", "function": {"name": …, "arguments": {…}}}` with the arguments
    /// as a JSON object (not OpenAI's JSON string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<serde_json::Value>,
    /// A `tool` turn: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// A `tool` turn: the function's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    /// A message with any role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            ..Self::default()
        }
    }
    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// A compiled chat template with its BOS/EOS token texts.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    is_fallback: bool,
    /// The template renders a `tools` list (it names the variable).
    tools: bool,
    /// The template asks for calls as `<tool_call>{json}</tool_call>` (Hermes style, Qwen2.5).
    tool_call_tags: bool,
}

const TEMPLATE_NAME: &str = "chat_template";

/// Where a Hermes-style tool call starts in a model's output.
pub const TOOL_CALL_OPEN: &str = "<tool_call>";
/// Where it ends.
pub const TOOL_CALL_CLOSE: &str = "</tool_call>";

/// Most template instructions one render may execute. Templates come from GGUF files (not
/// trusted): a loop nest such as `range(10000)` inside `range(10000)` stops here with
/// [`ChatTemplateError::Render`] instead of holding a thread. Real templates need a few hundred
/// instructions per message, so this allows conversations of thousands of messages.
pub const TEMPLATE_FUEL: u64 = 5_000_000;

fn raise_exception(msg: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

fn strftime_now(fmt: String) -> Result<String, Error> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    format_utc(secs, &fmt).map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))
}

/// Full error text including minijinja's source location details.
fn describe(e: &Error) -> String {
    let mut s = format!("{e:#}");
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(&format!(": {inner}"));
        src = inner.source();
    }
    s
}

impl ChatTemplate {
    /// Compiles `template_source`; `bos_token`/`eos_token` are the token texts the template may
    /// reference (e.g. `<bos>`, `<|im_end|>`).
    pub fn new(
        template_source: &str,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Result<Self, ChatTemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(TEMPLATE_NAME, template_source.to_string())
            .map_err(|e| ChatTemplateError::Syntax(describe(&e)))?;
        Ok(Self {
            env,
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
            is_fallback: false,
            tools: template_source.contains("tools"),
            tool_call_tags: template_source.contains(TOOL_CALL_OPEN),
        })
    }

    /// The documented plain format [`FALLBACK_TEMPLATE`] for models without a template.
    pub fn fallback(bos_token: impl Into<String>, eos_token: impl Into<String>) -> Self {
        let mut t = Self::new(FALLBACK_TEMPLATE, bos_token, eos_token)
            .expect("the built-in fallback template parses"); // constant, covered by tests
        t.is_fallback = true;
        t
    }

    /// The template of a GGUF's metadata (`tokenizer.chat_template`), or [`Self::fallback`]
    /// when the key is absent. BOS/EOS texts come from `tokenizer.ggml.tokens` at
    /// `tokenizer.ggml.bos_token_id` / `eos_token_id` (empty when unknown).
    pub fn from_metadata(metadata: &Metadata) -> Result<Self, ChatTemplateError> {
        let meta = |e: crate::gguf::GgufError| ChatTemplateError::Metadata(e.to_string());
        let token_text = |key: &str| -> Result<String, ChatTemplateError> {
            let Some(id) = metadata.get_u32_opt(key).map_err(meta)? else {
                return Ok(String::new());
            };
            let tokens = metadata.get_array("tokenizer.ggml.tokens").map_err(meta)?;
            Ok(tokens
                .get(id as usize)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string())
        };
        let bos = token_text("tokenizer.ggml.bos_token_id")?;
        let eos = token_text("tokenizer.ggml.eos_token_id")?;
        match metadata.get_str_opt(CHAT_TEMPLATE_KEY).map_err(meta)? {
            Some(src) => Self::new(src, bos, eos),
            None => Ok(Self::fallback(bos, eos)),
        }
    }

    /// True when this is the built-in plain fallback.
    pub fn is_fallback(&self) -> bool {
        self.is_fallback
    }

    /// Whether the template can offer tools and ask for calls in a format edgeray parses
    /// (`<tool_call>{"name": …, "arguments": {…}}</tool_call>`).
    pub fn supports_tools(&self) -> bool {
        self.tools && self.tool_call_tags
    }

    /// The BOS token text given to the template.
    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    /// The EOS token text given to the template.
    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    /// Renders `messages`; with `add_generation_prompt` the result ends where the assistant's
    /// reply should start.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatTemplateError> {
        self.render_with_tools(messages, None, add_generation_prompt)
    }

    /// [`ChatTemplate::render`] offering `tools` (a list of OpenAI tool definitions,
    /// `{"type": "function", "function": {"name", "description", "parameters"}}`), when the
    /// template supports them ([`ChatTemplate::supports_tools`]; an error otherwise).
    pub fn render_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<String, ChatTemplateError> {
        if tools.is_some() && !self.supports_tools() {
            return Err(ChatTemplateError::Render(
                "this model's chat template has no tool-calling format edgeray can parse".into(),
            ));
        }
        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| ChatTemplateError::Render(describe(&e)))?;
        let tools = tools.map(Value::from_serialize);
        tmpl.render(context! {
            messages => messages,
            tools => tools,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        })
        .map_err(|e| ChatTemplateError::Render(describe(&e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runaway_templates_run_out_of_fuel() {
        let t = ChatTemplate::new(
            "{% for i in range(10000) %}{% for j in range(10000) %}{{ '' }}{% endfor %}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        let started = std::time::Instant::now();
        let e = t.render(&[ChatMessage::user("x")], false).unwrap_err();
        assert!(matches!(e, ChatTemplateError::Render(_)), "{e}");
        assert!(e.to_string().contains("fuel"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        // A long but ordinary conversation still renders.
        let t = ChatTemplate::fallback("<s>", "</s>");
        let msgs: Vec<ChatMessage> = (0..2000)
            .map(|i| ChatMessage::user(format!("m{i}")))
            .collect();
        assert!(t.render(&msgs, true).unwrap().contains("m1999"));
    }

    #[test]
    fn fallback_format_is_plain() {
        let t = ChatTemplate::fallback("<bos>", "<eos>");
        assert!(t.is_fallback());
        let s = t
            .render(
                &[ChatMessage::system("Be brief."), ChatMessage::user("Hi")],
                true,
            )
            .unwrap();
        assert_eq!(s, "system: Be brief.\n\nuser: Hi\n\nassistant: ");
        let s = t.render(&[ChatMessage::user("Hi")], false).unwrap();
        assert_eq!(s, "user: Hi\n\n");
    }

    #[test]
    fn syntax_errors_are_reported() {
        let e = ChatTemplate::new("{% for m in messages %}", "", "").unwrap_err();
        assert!(matches!(e, ChatTemplateError::Syntax(_)), "{e}");
    }

    #[test]
    fn raise_exception_becomes_render_error() {
        let t = ChatTemplate::new(
            "{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}ok",
            "",
            "",
        )
        .unwrap();
        let e = t.render(&[ChatMessage::assistant("x")], false).unwrap_err();
        assert!(e.to_string().contains("first must be user"), "{e}");
        assert_eq!(t.render(&[ChatMessage::user("x")], false).unwrap(), "ok");
    }

    #[test]
    fn python_string_methods_and_tokens_available() {
        let t = ChatTemplate::new(
            "{{ bos_token }}{% for m in messages %}{{ m.content.strip().upper() }}{% if m.content.startswith(' ') %}!{% endif %}{% endfor %}{{ eos_token }}",
            "<s>",
            "</s>",
        )
        .unwrap();
        assert_eq!(
            t.render(&[ChatMessage::user("  hi ")], false).unwrap(),
            "<s>HI!</s>"
        );
    }

    #[test]
    fn trim_and_lstrip_blocks_like_transformers() {
        let t = ChatTemplate::new("{% for m in messages %}\n    {% if true %}\n{{ m.content }}\n    {% endif %}\n{% endfor %}", "", "")
            .unwrap();
        assert_eq!(
            t.render(&[ChatMessage::user("a"), ChatMessage::user("b")], false)
                .unwrap(),
            "a\nb\n"
        );
    }

    #[test]
    fn strftime_now_renders_a_date() {
        let t = ChatTemplate::new("{{ strftime_now('%Y') }}", "", "").unwrap();
        let y: i32 = t.render(&[], false).unwrap().parse().unwrap();
        assert!(y >= 2024);
    }

    #[test]
    fn from_metadata_without_template_falls_back() {
        let mut m = Metadata::new();
        m.insert("tokenizer.ggml.tokens", vec!["<pad>", "<eos>", "<bos>"])
            .unwrap();
        m.insert("tokenizer.ggml.bos_token_id", 2u32).unwrap();
        m.insert("tokenizer.ggml.eos_token_id", 1u32).unwrap();
        let t = ChatTemplate::from_metadata(&m).unwrap();
        assert!(t.is_fallback());
        assert_eq!((t.bos_token(), t.eos_token()), ("<bos>", "<eos>"));
        m.insert(CHAT_TEMPLATE_KEY, "{{ bos_token }}X").unwrap();
        let t = ChatTemplate::from_metadata(&m).unwrap();
        assert!(!t.is_fallback());
        assert_eq!(t.render(&[], false).unwrap(), "<bos>X");
    }
}
