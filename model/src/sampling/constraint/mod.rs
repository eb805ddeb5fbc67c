//! Structured output: a per-sequence constraint that allows only the tokens which keep the
//! generated text a prefix of a JSON document valid for a schema ("any JSON object" for
//! OpenAI's `json_object`), and end-of-generation only when the document is complete.
//!
//! # Why llguidance
//!
//! The schema → token-level automaton part is [llguidance](https://github.com/guidance-ai/llguidance)
//! (MIT, maintained by the guidance-ai team; available as a structured-output backend in vLLM,
//! SGLang and llama.cpp). It compiles a JSON schema (objects with `properties`/`required`/
//! `additionalProperties`, strings with `enum`/`const`/`pattern`/`format`/lengths, numbers and
//! integers with bounds, booleans, null, arrays with `items`/`prefixItems`/lengths,
//! `anyOf`/`oneOf`/`allOf`, local `$ref`s) into a lexer + Earley parser and walks a byte trie
//! of the vocabulary to compute a token mask — tens of microseconds per step for qwen2.5's
//! 151,936 tokens (`model/tests/constraint_real.rs` prints it), far inside the
//! 10 % budget a decode step allows on the boards. Writing our own JSON-schema subset automaton
//! was the fallback; the crate builds from crates.io with `default-features = false` (no rayon,
//! no `referencing`, no lark front end needed); it adds five crates (llguidance, derivre, toktrie,
//! strum, strum_macros: about 45 s of CPU in a cold build at opt-level 3, llguidance and
//! derivre 17–19 s each; `regex-syntax` was already in the tree).
//!
//! # Determinism
//!
//! The mask is a pure function of the schema and the tokens consumed so far (llguidance's
//! limits are fuel counts, not timers), so greedy decoding stays deterministic and
//! independent of the placement, and a sequence resumed after a failover rebuilds the same
//! state by consuming the tokens it already produced ([`Constraint::advance`]).
//!
//! # How the vocabulary is mapped
//!
//! Each token is the bytes [`Tokenizer::token_bytes`] gives without rendering specials.
//! Control/unknown tokens (no bytes) and every end-of-generation token get a `0xFF`-prefixed
//! name, which toktrie treats as a special token that no grammar byte matches; toktrie's single
//! EOS is the tokenizer's first end-of-generation token, and whenever the mask allows it every
//! end-of-generation token is allowed. Byte-level tokens for `0xFF` itself can never appear in
//! UTF-8 JSON, so their being "special" changes nothing.
//!
//! JSON whitespace is not free: objects are written `{"a": 1, "b": [2, 3]}` (separators `", "`
//! and `": "`, no other whitespace), which removes the classic failure of small models emitting
//! newlines and spaces forever inside a constrained document.

use std::sync::{Arc, OnceLock};

use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use serde_json::{Map, Value, json};
use toktrie::{ApproximateTokEnv, SimpleVob, TokEnv, TokRxInfo, TokTrie};

use crate::tokenizer::Tokenizer;

/// Why a format or a constraint step was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConstraintError {
    /// The schema cannot be compiled (unsupported keyword, unsatisfiable, not a schema).
    #[error("invalid JSON schema: {0}")]
    Schema(String),
    /// The vocabulary cannot be used (no end-of-generation token).
    #[error("vocabulary: {0}")]
    Vocab(String),
    /// A token the mask did not allow was fed, or the parser failed.
    #[error("constraint: {0}")]
    Step(String),
}

/// What the output must be.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputFormat {
    /// Any JSON object (OpenAI `{"type": "json_object"}`).
    JsonObject,
    /// A JSON document valid for `schema` (OpenAI `{"type": "json_schema", ...}`). With
    /// `strict`, an object schema that does not say `additionalProperties` gets
    /// `additionalProperties: false` (OpenAI's strict mode requires it to be said; here it is
    /// implied), so the keys are exactly the declared ones.
    JsonSchema {
        /// The JSON schema.
        schema: Value,
        /// OpenAI's `strict` flag.
        strict: bool,
    },
}

impl OutputFormat {
    /// The schema llguidance compiles (with our whitespace options).
    pub fn grammar_schema(&self) -> Value {
        let mut schema = match self {
            OutputFormat::JsonObject => json!({"type": "object"}),
            OutputFormat::JsonSchema { schema, strict } => {
                let mut s = schema.clone();
                if *strict {
                    close_objects(&mut s);
                }
                s
            }
        };
        if let Value::Object(m) = &mut schema {
            m.insert(
                "x-guidance".into(),
                json!({
                    "whitespace_flexible": false,
                    "item_separator": ", ",
                    "key_separator": ": ",
                }),
            );
        }
        schema
    }

    /// The text that travels with a sequence ([`OutputFormat::from_wire`] reads it back).
    pub fn to_wire(&self) -> String {
        match self {
            OutputFormat::JsonObject => json!({"type": "json_object"}),
            OutputFormat::JsonSchema { schema, strict } => {
                json!({"type": "json_schema", "schema": schema, "strict": strict})
            }
        }
        .to_string()
    }

    /// Reads [`OutputFormat::to_wire`]'s text.
    pub fn from_wire(text: &str) -> Result<Self, ConstraintError> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| ConstraintError::Schema(e.to_string()))?;
        match v.get("type").and_then(Value::as_str) {
            Some("json_object") => Ok(OutputFormat::JsonObject),
            Some("json_schema") => Ok(OutputFormat::JsonSchema {
                schema: v.get("schema").cloned().unwrap_or(json!({})),
                strict: v.get("strict").and_then(Value::as_bool).unwrap_or(false),
            }),
            _ => Err(ConstraintError::Schema(format!(
                "not an output format: {text}"
            ))),
        }
    }

    /// Compiles the format without a model vocabulary (one token per byte): the check a
    /// gateway runs before accepting a request.
    pub fn check(&self) -> Result<(), ConstraintError> {
        if let OutputFormat::JsonSchema { schema, .. } = self
            && !(schema.is_object() || schema.is_boolean())
        {
            return Err(ConstraintError::Schema(
                "a schema must be a JSON object".into(),
            ));
        }
        static BYTES: OnceLock<Arc<ConstraintVocab>> = OnceLock::new();
        let vocab = BYTES.get_or_init(|| {
            let mut words: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
            words.push(Vec::new()); // the end-of-generation token
            Arc::new(ConstraintVocab::from_token_bytes(words, &[256]).expect("byte vocabulary"))
        });
        Constraint::new(vocab.clone(), self).map(|_| ())
    }
}

/// `additionalProperties: false` on every object schema that does not say otherwise.
fn close_objects(v: &mut Value) {
    match v {
        Value::Object(m) => {
            let is_object = m.get("type").and_then(Value::as_str) == Some("object")
                || m.contains_key("properties");
            if is_object && !m.contains_key("additionalProperties") {
                m.insert("additionalProperties".into(), Value::Bool(false));
            }
            for (k, sub) in m.iter_mut() {
                match k.as_str() {
                    // Data, not schemas.
                    "enum" | "const" | "default" | "examples" => {}
                    // Maps from names to schemas: each value is a schema, the map is not.
                    "properties" | "patternProperties" | "$defs" | "definitions"
                    | "dependentSchemas" => {
                        if let Value::Object(named) = sub {
                            named.values_mut().for_each(close_objects);
                        }
                    }
                    _ => close_objects(sub),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(close_objects),
        _ => {}
    }
}

/// A model's vocabulary prepared for constraints: the token byte trie and the parser factory
/// (built once per model, shared by every constrained sequence).
pub struct ConstraintVocab {
    factory: ParserFactory,
    eog: Vec<u32>,
    eos: u32,
    n_vocab: usize,
}

impl std::fmt::Debug for ConstraintVocab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConstraintVocab")
            .field("n_vocab", &self.n_vocab)
            .field("eog", &self.eog)
            .finish()
    }
}

impl ConstraintVocab {
    /// The vocabulary of `tokenizer` (0.4–1 s for qwen2.5's 151,936 tokens on a 2-core x86 box).
    pub fn from_tokenizer(tokenizer: &Tokenizer) -> Result<Self, ConstraintError> {
        let n = tokenizer.vocab_size();
        let words = (0..n as u32)
            .map(|id| {
                tokenizer
                    .token_bytes(id, false)
                    .map(<[u8]>::to_vec)
                    .unwrap_or_default()
            })
            .collect();
        let eog: Vec<u32> = tokenizer.eog_ids().collect();
        Self::from_token_bytes(words, &eog)
    }

    /// A vocabulary from each token's bytes (`words[id]`) and the end-of-generation ids.
    pub fn from_token_bytes(mut words: Vec<Vec<u8>>, eog: &[u32]) -> Result<Self, ConstraintError> {
        let n_vocab = words.len();
        let mut eog: Vec<u32> = eog
            .iter()
            .copied()
            .filter(|&t| (t as usize) < n_vocab)
            .collect();
        eog.sort_unstable();
        eog.dedup();
        let eos = *eog
            .first()
            .ok_or_else(|| ConstraintError::Vocab("no end-of-generation token".into()))?;
        for (id, w) in words.iter_mut().enumerate() {
            if w.is_empty() || eog.binary_search(&(id as u32)).is_ok() {
                // 0xFF: toktrie's special-token marker (never a byte of UTF-8 text).
                *w = [&[0xFF][..], format!("<special {id}>").as_bytes()].concat();
            }
        }
        let info = TokRxInfo::new(n_vocab as u32, eos);
        let trie = TokTrie::from(&info, &words);
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory =
            ParserFactory::new_simple(&env).map_err(|e| ConstraintError::Vocab(e.to_string()))?;
        factory.quiet();
        Ok(Self {
            factory,
            eog,
            eos,
            n_vocab,
        })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.n_vocab
    }

    /// Whether the vocabulary is empty (never: it has an end-of-generation token).
    pub fn is_empty(&self) -> bool {
        self.n_vocab == 0
    }

    /// Whether `token` ends generation.
    pub fn is_eog(&self, token: u32) -> bool {
        self.eog.binary_search(&token).is_ok()
    }
}

/// One sequence's constraint: which tokens may come next.
pub struct Constraint {
    vocab: Arc<ConstraintVocab>,
    matcher: Matcher,
    /// The mask for the current position (computed once, dropped on [`Constraint::advance`]).
    mask: Option<SimpleVob>,
    /// An end-of-generation token was consumed.
    ended: bool,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("ended", &self.ended)
            .finish()
    }
}

impl Constraint {
    /// A constraint at the start of the output.
    pub fn new(
        vocab: Arc<ConstraintVocab>,
        format: &OutputFormat,
    ) -> Result<Self, ConstraintError> {
        let grammar = TopLevelGrammar::from_json_schema(format.grammar_schema());
        let parser = vocab
            .factory
            .create_parser(grammar)
            .map_err(|e| ConstraintError::Schema(e.to_string()))?;
        let mut matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(ConstraintError::Schema(e));
        }
        // An unsatisfiable schema shows as an empty first mask.
        let mask = matcher
            .compute_mask_or_eos()
            .map_err(|e| ConstraintError::Schema(e.to_string()))?;
        if mask.is_zero() {
            return Err(ConstraintError::Schema(
                "no document satisfies the schema".into(),
            ));
        }
        Ok(Self {
            vocab,
            matcher,
            mask: Some(mask),
            ended: false,
        })
    }

    fn mask(&mut self) -> Result<&SimpleVob, ConstraintError> {
        if self.mask.is_none() {
            let m = if self.ended {
                let mut m = SimpleVob::alloc(self.vocab.n_vocab);
                m.allow_token(self.vocab.eos);
                m
            } else {
                self.matcher
                    .compute_mask_or_eos()
                    .map_err(|e| ConstraintError::Step(e.to_string()))?
            };
            self.mask = Some(m);
        }
        Ok(self.mask.as_ref().expect("just set"))
    }

    /// Whether `token` may come next.
    pub fn allows(&mut self, token: u32) -> Result<bool, ConstraintError> {
        if self.vocab.is_eog(token) {
            return self.is_complete();
        }
        Ok(self.mask()?.is_allowed(token))
    }

    /// Whether the output so far is a complete document (end-of-generation is allowed).
    pub fn is_complete(&mut self) -> Result<bool, ConstraintError> {
        let eos = self.vocab.eos;
        Ok(self.mask()?.is_allowed(eos))
    }

    /// Sets every logit the constraint does not allow to −∞ (`logits`: one per token; entries
    /// past the vocabulary, if any, are disallowed too).
    pub fn mask_logits(&mut self, logits: &mut [f32]) -> Result<(), ConstraintError> {
        let eog_ok = self.is_complete()?;
        let n = self.vocab.n_vocab;
        let mask = self.mask()?;
        let words = mask.as_slice();
        let within = n.min(logits.len());
        for (w, chunk) in logits[..within].chunks_mut(32).enumerate() {
            let bits = words.get(w).copied().unwrap_or(0);
            if bits == u32::MAX {
                continue;
            }
            for (i, l) in chunk.iter_mut().enumerate() {
                if bits & (1 << i) == 0 {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
        if logits.len() > n {
            logits[n..].fill(f32::NEG_INFINITY);
        }
        for &t in &self.vocab.eog {
            if let Some(l) = logits.get_mut(t as usize)
                && !eog_ok
            {
                *l = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }

    /// Consumes the chosen `token` (it must be allowed).
    pub fn advance(&mut self, token: u32) -> Result<(), ConstraintError> {
        if !self.allows(token)? {
            return Err(ConstraintError::Step(format!(
                "token {token} is not allowed here"
            )));
        }
        self.mask = None;
        if self.vocab.is_eog(token) {
            self.ended = true;
            return Ok(());
        }
        self.matcher
            .consume_token(token)
            .map_err(|e| ConstraintError::Step(e.to_string()))
    }

    /// [`Constraint::advance`] for each token in order (a resumed sequence's output so far).
    pub fn advance_all(&mut self, tokens: &[u32]) -> Result<(), ConstraintError> {
        tokens.iter().try_for_each(|&t| self.advance(t))
    }
}

/// Parses OpenAI's `response_format` value: `None` for `{"type": "text"}`, the format
/// otherwise; the error names what is wrong (for a 400 on `response_format`).
pub fn parse_response_format(v: &Value) -> Result<Option<OutputFormat>, String> {
    let obj: &Map<String, Value> = v.as_object().ok_or("response_format must be an object")?;
    let ty = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or("response_format.type must be \"text\", \"json_object\" or \"json_schema\"")?;
    let allowed: &[&str] = match ty {
        "text" | "json_object" => &["type"],
        "json_schema" => &["type", "json_schema"],
        other => {
            return Err(format!(
                "response_format.type {other:?} is not supported (\"text\", \"json_object\" or \"json_schema\")"
            ));
        }
    };
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("unknown field response_format.{k}"));
    }
    let format = match ty {
        "text" => return Ok(None),
        "json_object" => OutputFormat::JsonObject,
        _ => {
            let js = obj
                .get("json_schema")
                .and_then(Value::as_object)
                .ok_or("response_format.json_schema must be an object with name and schema")?;
            if let Some(k) = js
                .keys()
                .find(|k| !["name", "schema", "strict", "description"].contains(&k.as_str()))
            {
                return Err(format!("unknown field response_format.json_schema.{k}"));
            }
            match js.get("name") {
                Some(Value::String(n))
                    if !n.is_empty()
                        && n.len() <= 64
                        && n.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') => {}
                _ => {
                    return Err(
                        "response_format.json_schema.name must be 1-64 characters of \
                                a-z, A-Z, 0-9, _ and -"
                            .into(),
                    );
                }
            }
            let strict = match js.get("strict") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err("response_format.json_schema.strict must be a boolean".into());
                }
            };
            let schema = match js.get("schema") {
                None => json!({}),
                Some(s @ Value::Object(_)) => s.clone(),
                Some(_) => {
                    return Err("response_format.json_schema.schema must be a JSON object".into());
                }
            };
            OutputFormat::JsonSchema { schema, strict }
        }
    };
    format
        .check()
        .map_err(|e| format!("response_format: {e}"))?;
    Ok(Some(format))
}

#[cfg(test)]
mod tests;
