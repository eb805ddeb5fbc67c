//! Tool calling: checking a request's `tools` and `tool_choice`, turning OpenAI's assistant
//! `tool_calls` into what chat templates read, and finding the calls in the model's output
//! (Hermes style, as Qwen2.5's template asks: `<tool_call>{"name": …, "arguments": {…}}
//! </tool_call>`), streamed or not.

use edgeray_model::chat::{TOOL_CALL_CLOSE, TOOL_CALL_OPEN};
use serde::Serialize;
use serde_json::Value;

use super::error::ApiError;

fn invalid(message: impl Into<String>, param: &str) -> ApiError {
    ApiError::invalid_request(message, Some(param))
}

/// What a request's tools ask of the generation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ToolUse {
    /// The tool definitions to offer the model (`None`: none offered).
    pub tools: Option<Value>,
    /// Text the assistant's reply starts with, written into the prompt: forces a call
    /// (`tool_choice: "required"`) or a named one; part of the answer that is parsed.
    pub reply_prefix: String,
}

impl ToolUse {
    /// Whether the answer is searched for tool calls.
    pub fn active(&self) -> bool {
        self.tools.is_some()
    }
}

/// A function name as OpenAI allows it: 1–64 of `a-z A-Z 0-9 _ -`.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks `tools` and `tool_choice` (`none`, `auto`, `required` or
/// `{"type": "function", "function": {"name": …}}`) and decides what the generation does.
pub fn tool_use(tools: Option<&Value>, choice: Option<&Value>) -> Result<ToolUse, ApiError> {
    let list = match tools {
        None | Some(Value::Null) => None,
        Some(Value::Array(list)) if list.is_empty() => None,
        Some(Value::Array(list)) => Some(list),
        Some(_) => return Err(invalid("tools must be a list of tools", "tools")),
    };
    let mut names = Vec::new();
    for (i, t) in list.into_iter().flatten().enumerate() {
        let param = format!("tools[{i}]");
        if t.get("type").and_then(Value::as_str) != Some("function") {
            return Err(invalid(
                format!("{param}.type must be \"function\""),
                &format!("{param}.type"),
            ));
        }
        let f = t.get("function").ok_or_else(|| {
            invalid(
                format!("{param}.function is missing"),
                &format!("{param}.function"),
            )
        })?;
        let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
        if !valid_name(name) {
            return Err(invalid(
                format!("{param}.function.name {name:?} must be 1-64 letters, digits, _ or -"),
                &format!("{param}.function.name"),
            ));
        }
        if let Some(p) = f.get("parameters")
            && !p.is_object()
        {
            return Err(invalid(
                format!("{param}.function.parameters must be a JSON schema object"),
                &format!("{param}.function.parameters"),
            ));
        }
        names.push(name.to_string());
    }
    let offered = list.map(|l| Value::Array(l.clone()));
    let named = |name: &str| {
        // The call is forced up to its arguments.
        format!(
            "{TOOL_CALL_OPEN}\n{{\"name\": {}, \"arguments\": ",
            Value::from(name)
        )
    };
    match choice {
        None | Some(Value::Null) => Ok(ToolUse {
            tools: offered,
            reply_prefix: String::new(),
        }),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Ok(ToolUse {
                tools: offered,
                reply_prefix: String::new(),
            }),
            "none" => Ok(ToolUse::default()),
            "required" if offered.is_some() => Ok(ToolUse {
                tools: offered,
                reply_prefix: format!("{TOOL_CALL_OPEN}\n"),
            }),
            "required" => Err(invalid(
                "tool_choice \"required\" needs tools",
                "tool_choice",
            )),
            other => Err(invalid(
                format!("tool_choice {other:?} is not one of none, auto, required"),
                "tool_choice",
            )),
        },
        Some(obj @ Value::Object(_)) => {
            let name = obj
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .filter(|_| obj.get("type").and_then(Value::as_str) == Some("function"))
                .ok_or_else(|| {
                    invalid(
                        "tool_choice must be {\"type\": \"function\", \"function\": {\"name\": …}}",
                        "tool_choice",
                    )
                })?;
            if !names.iter().any(|n| n == name) {
                return Err(invalid(
                    format!("tool_choice names {name:?}, which is not among the tools"),
                    "tool_choice",
                ));
            }
            Ok(ToolUse {
                tools: offered,
                reply_prefix: named(name),
            })
        }
        Some(_) => Err(invalid(
            "tool_choice must be a string or an object",
            "tool_choice",
        )),
    }
}

/// An assistant message's OpenAI `tool_calls` (arguments as a JSON string) in the form chat
/// templates read (arguments as an object where the string parses as one).
pub fn template_tool_calls(calls: &Value, index: usize) -> Result<Value, ApiError> {
    let param = format!("messages[{index}].tool_calls");
    let Value::Array(list) = calls else {
        return Err(invalid(format!("{param} must be a list"), &param));
    };
    let mut out = Vec::with_capacity(list.len());
    for c in list {
        let f = c
            .get("function")
            .ok_or_else(|| invalid(format!("{param}[].function is missing"), &param))?;
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("{param}[].function.name is missing"), &param))?;
        let arguments = match f.get("arguments") {
            Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
            Some(other) => other.clone(),
            None => Value::Object(Default::default()),
        };
        out.push(serde_json::json!({
            "id": c.get("id").cloned().unwrap_or(Value::Null),
            "type": "function",
            "function": { "name": name, "arguments": arguments },
        }));
    }
    Ok(Value::Array(out))
}

/// One tool call found in the output (OpenAI's shape).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCall {
    /// `call_…`, unique within the response.
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The call.
    pub function: FunctionCall,
}

/// The function and its arguments.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionCall {
    /// Function name.
    pub name: String,
    /// Arguments as a JSON text.
    pub arguments: String,
}

/// A piece of the answer: text for `content`, or a complete tool call.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// Plain text.
    Text(String),
    /// A call.
    Call(ToolCall),
}

/// Splits streamed output into text and tool calls. Text that may be the start of
/// [`TOOL_CALL_OPEN`] is held back until it is clearly not; a call's JSON is held until its
/// [`TOOL_CALL_CLOSE`]. A call whose JSON is not `{"name": …, "arguments": …}` goes out as the
/// text it was. Small models often answer with the call's JSON alone, without the tags: an
/// answer that starts with `{` is held to its end and is a call when it is exactly such an
/// object naming one of the offered tools.
#[derive(Debug)]
pub struct ToolCallSplitter {
    buf: String,
    in_call: bool,
    calls: usize,
    id_base: String,
    /// The offered tools' names (a bare JSON answer must name one).
    names: Vec<String>,
    /// Whether the answer's first non-blank character was seen.
    started: bool,
    /// The answer started with `{`: held whole until the end.
    bare: bool,
}

impl ToolCallSplitter {
    /// A splitter whose call ids are `call_{id_base}_{n}`.
    pub fn new(id_base: &str) -> Self {
        ToolCallSplitter {
            buf: String::new(),
            in_call: false,
            calls: 0,
            id_base: id_base.to_string(),
            names: Vec::new(),
            started: false,
            bare: false,
        }
    }

    /// Also recognises an answer that is a bare call of one of `tools` (OpenAI definitions).
    pub fn with_tools(mut self, tools: &Value) -> Self {
        self.names = tools
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.pointer("/function/name")?.as_str().map(str::to_string))
            .collect();
        self
    }

    /// Calls found so far.
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// Feeds more output; returns what is decided.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.buf.push_str(text);
        if !self.started {
            let t = self.buf.trim_start();
            if t.is_empty() {
                return Vec::new();
            }
            self.started = true;
            self.bare = t.starts_with('{') && !self.names.is_empty();
        }
        if self.bare {
            return Vec::new();
        }
        let mut out = Vec::new();
        loop {
            if self.in_call {
                let Some(end) = self.buf.find(TOOL_CALL_CLOSE) else {
                    return out;
                };
                let body: String = self.buf[..end].to_string();
                self.buf.drain(..end + TOOL_CALL_CLOSE.len());
                self.in_call = false;
                out.push(self.call(&body));
            } else if let Some(start) = self.buf.find(TOOL_CALL_OPEN) {
                if start > 0 {
                    out.push(Piece::Text(self.buf[..start].to_string()));
                }
                self.buf.drain(..start + TOOL_CALL_OPEN.len());
                self.in_call = true;
            } else {
                // Hold back the longest tail that could begin the opening tag.
                let keep = (1..TOOL_CALL_OPEN.len())
                    .rev()
                    .find(|&k| {
                        self.buf.len() >= k
                            && self.buf.is_char_boundary(self.buf.len() - k)
                            && TOOL_CALL_OPEN.starts_with(&self.buf[self.buf.len() - k..])
                    })
                    .unwrap_or(0);
                let cut = self.buf.len() - keep;
                if cut > 0 {
                    out.push(Piece::Text(self.buf[..cut].to_string()));
                    self.buf.drain(..cut);
                }
                return out;
            }
        }
    }

    /// The output ended: an unterminated call is parsed if it is complete JSON, otherwise
    /// everything held goes out as text.
    pub fn finish(&mut self) -> Vec<Piece> {
        if self.bare {
            self.bare = false;
            let whole = std::mem::take(&mut self.buf);
            if let Some(call) = self.bare_call(&whole) {
                return vec![call];
            }
            let mut out = self.push(&whole);
            out.extend(self.finish());
            return out;
        }
        let rest = std::mem::take(&mut self.buf);
        if self.in_call {
            self.in_call = false;
            return vec![self.call(&rest)];
        }
        if rest.is_empty() {
            Vec::new()
        } else {
            vec![Piece::Text(rest)]
        }
    }

    /// `whole` as a call when it is one JSON object naming an offered tool.
    fn bare_call(&mut self, whole: &str) -> Option<Piece> {
        let v: Value = serde_json::from_str(whole.trim()).ok()?;
        let name = v.get("name")?.as_str()?;
        if !self.names.iter().any(|n| n == name) || v.get("arguments").is_none() {
            return None;
        }
        match self.call(whole) {
            c @ Piece::Call(_) => Some(c),
            Piece::Text(_) => None,
        }
    }

    fn call(&mut self, body: &str) -> Piece {
        let parsed: Option<(String, String)> = serde_json::from_str::<Value>(body.trim())
            .ok()
            .and_then(|v| {
                let name = v.get("name")?.as_str()?.to_string();
                // Arguments go out as JSON text: a string that is JSON as it is, any other
                // value (a plain string included) encoded.
                let arguments = match v.get("arguments") {
                    Some(Value::String(s)) if serde_json::from_str::<Value>(s).is_ok() => s.clone(),
                    Some(a) => a.to_string(),
                    None => "{}".to_string(),
                };
                Some((name, arguments))
            });
        match parsed {
            Some((name, arguments)) => {
                let id = format!("call_{}_{}", self.id_base, self.calls);
                self.calls += 1;
                Piece::Call(ToolCall {
                    id,
                    kind: "function",
                    function: FunctionCall { name, arguments },
                })
            }
            None => Piece::Text(format!("{TOOL_CALL_OPEN}{body}{TOOL_CALL_CLOSE}")),
        }
    }
}

/// Pieces in order, joined: all their text, and the calls.
pub fn join_pieces(pieces: Vec<Piece>) -> (String, Vec<ToolCall>) {
    let mut content = String::new();
    let mut calls = Vec::new();
    for p in pieces {
        match p {
            Piece::Text(t) => content.push_str(&t),
            Piece::Call(c) => calls.push(c),
        }
    }
    (content, calls)
}

/// The whole answer split into its text (`None` when only calls) and calls of `tools`.
pub fn split_answer(text: &str, id_base: &str, tools: &Value) -> (Option<String>, Vec<ToolCall>) {
    let mut s = ToolCallSplitter::new(id_base).with_tools(tools);
    let mut pieces = s.push(text);
    pieces.extend(s.finish());
    let (content, calls) = join_pieces(pieces);
    let content = content.trim().to_string();
    let content = if content.is_empty() && !calls.is_empty() {
        None
    } else {
        Some(content)
    };
    (content, calls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn weather() -> Value {
        json!([{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
    }

    #[test]
    fn tool_choice_forms() {
        let t = weather();
        let auto = tool_use(Some(&t), None).unwrap();
        assert!(auto.active() && auto.reply_prefix.is_empty());
        assert!(!tool_use(Some(&t), Some(&json!("none"))).unwrap().active());
        assert_eq!(
            tool_use(Some(&t), Some(&json!("required")))
                .unwrap()
                .reply_prefix,
            "<tool_call>\n"
        );
        let named = tool_use(
            Some(&t),
            Some(&json!({"type": "function", "function": {"name": "get_weather"}})),
        )
        .unwrap();
        assert_eq!(
            named.reply_prefix,
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
        );
        for (tools, choice, param) in [
            (json!([{"type": "x"}]), Value::Null, "tools[0].type"),
            (
                json!([{"type": "function", "function": {"name": "a b"}}]),
                Value::Null,
                "tools[0].function.name",
            ),
            (weather(), json!("sometimes"), "tool_choice"),
            (
                weather(),
                json!({"type": "function", "function": {"name": "other"}}),
                "tool_choice",
            ),
            (json!({}), Value::Null, "tools"),
        ] {
            let e = tool_use(Some(&tools), Some(&choice)).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{e:?}");
        }
        assert!(tool_use(None, Some(&json!("required"))).is_err());
    }

    #[test]
    fn calls_are_found_across_chunk_boundaries_and_bad_ones_stay_text() {
        let out = "Sure.<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Berlin\"}}\n</tool_call>";
        // Every split point gives the same pieces.
        for cut in 0..=out.len() {
            if !out.is_char_boundary(cut) {
                continue;
            }
            let mut s = ToolCallSplitter::new("x");
            let mut pieces = s.push(&out[..cut]);
            pieces.extend(s.push(&out[cut..]));
            pieces.extend(s.finish());
            let text: String = pieces
                .iter()
                .filter_map(|p| match p {
                    Piece::Text(t) => Some(t.as_str()),
                    Piece::Call(_) => None,
                })
                .collect();
            let calls: Vec<&ToolCall> = pieces
                .iter()
                .filter_map(|p| match p {
                    Piece::Call(c) => Some(c),
                    Piece::Text(_) => None,
                })
                .collect();
            assert_eq!(text, "Sure.", "cut at {cut}");
            assert_eq!(calls.len(), 1);
            assert_eq!(calls[0].function.name, "get_weather");
            assert_eq!(calls[0].id, "call_x_0");
            let args: Value = serde_json::from_str(&calls[0].function.arguments).unwrap();
            assert_eq!(args, json!({"city": "Berlin"}));
        }
        // Not a call: the text goes out as written.
        let t = weather();
        let (content, calls) = split_answer("a <tool_call>oops</tool_call> b", "x", &t);
        assert!(calls.is_empty());
        assert_eq!(content.as_deref(), Some("a <tool_call>oops</tool_call> b"));
        // A "<" that never becomes a tag is released at the end.
        let (content, _) = split_answer("x < y", "x", &t);
        assert_eq!(content.as_deref(), Some("x < y"));
        // An unterminated call at the end of the output still parses when complete.
        let (content, calls) =
            split_answer("<tool_call>{\"name\": \"f\", \"arguments\": {}}", "x", &t);
        assert_eq!((content, calls.len()), (None, 1));
        // A bare call of an offered tool, as small models answer; not of an unknown one.
        let bare = "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}";
        let (content, calls) = split_answer(bare, "x", &t);
        assert_eq!(
            (content, calls[0].function.name.as_str()),
            (None, "get_weather")
        );
        let other = "{\"name\": \"rm\", \"arguments\": {}}";
        let (content, calls) = split_answer(other, "x", &t);
        assert_eq!((content.as_deref(), calls.len()), (Some(other), 0));
        let (content, _) = split_answer("{\"a\": 1} and more", "x", &t);
        assert_eq!(content.as_deref(), Some("{\"a\": 1} and more"));
    }

    #[test]
    fn assistant_tool_calls_become_template_objects() {
        let calls = json!([{"id": "c1", "type": "function",
            "function": {"name": "f", "arguments": "{\"a\": 1}"}}]);
        let t = template_tool_calls(&calls, 2).unwrap();
        assert_eq!(t[0]["function"]["arguments"], json!({"a": 1}));
        assert!(template_tool_calls(&json!({}), 2).is_err());
    }
}
