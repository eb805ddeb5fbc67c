//! Tokenizers built from GGUF metadata, reproducing llama.cpp's token ids.
//!
//! Two vocabulary kinds are supported, as in llama.cpp:
//! - `gpt2`: byte-level BPE with a regex pre-tokenizer chosen by `tokenizer.ggml.pre`
//!   (`qwen2`, `llama3`, `gpt-2`, `default`, ...), merges from `tokenizer.ggml.merges`;
//! - `llama`: SentencePiece-style merging by token score with `<0xNN>` byte fallback and `▁`
//!   for spaces (Gemma, Llama 2).
//!
//! Special tokens: user-defined tokens are always matched in the text; control tokens
//! (`<|im_start|>`, `<start_of_turn>`, ...) only when `parse_special` is on (the default of
//! [`Tokenizer::encode`]). Decoding hides control tokens unless asked to render them.
//! Not reproduced: llama.cpp's `clean_spaces` post-processing of whole-text detokenization
//! (off for Qwen 2 and SentencePiece vocabularies) and its per-model lstrip/rstrip hacks.
//!
//! ```no_run
//! use edgeray_model::{gguf::GgufFile, tokenizer::{Tokenizer, TokenStreamDecoder}};
//! let file = GgufFile::open("models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")?;
//! let tok = Tokenizer::from_gguf(&file)?;
//! let ids = tok.encode("def fibonacci(n):", true)?;
//! assert_eq!(ids, vec![750, 75698, 1445, 1648]);
//! let mut stream = TokenStreamDecoder::new();
//! let mut text = String::new();
//! for &id in &ids {
//!     text += &stream.push(&tok, id)?;
//! }
//! text += &stream.finish();
//! assert_eq!(text, "def fibonacci(n):");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bpe;
pub mod bytelevel;
mod pretokenize;
pub mod special;
mod spm;
mod stream;
mod vocab;

use crate::gguf::{GgufError, GgufFile, Metadata};
use special::Fragment;
use std::collections::{BTreeSet, HashMap};

pub use pretokenize::PreTokenizer;
pub use stream::{TokenStreamDecoder, drain_complete_utf8};
pub use vocab::{EOG_TEXTS, EOT_TEXTS, TokenAttr, TokenizerConfig};

/// Tokenizer construction and use errors.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A metadata key is missing or has the wrong type.
    #[error("tokenizer metadata: {0}")]
    Metadata(#[from] GgufError),
    /// `tokenizer.ggml.model` is not `gpt2` or `llama`.
    #[error("unsupported tokenizer model {0:?} (supported: \"gpt2\", \"llama\")")]
    UnsupportedModel(String),
    /// `tokenizer.ggml.pre` names a pre-tokenizer this crate does not implement.
    #[error("unsupported BPE pre-tokenizer {0:?}")]
    UnsupportedPreTokenizer(String),
    /// A pre-tokenizer regex failed to compile or to run.
    #[error("pre-tokenizer regex: {0}")]
    Regex(String),
    /// A BPE vocabulary without `tokenizer.ggml.merges`.
    #[error("BPE vocabulary has no merges (tokenizer.ggml.merges)")]
    MissingMerges,
    /// The vocabulary is empty.
    #[error("the vocabulary is empty")]
    EmptyVocab,
    /// A per-token array is shorter than the token list.
    #[error("{what} has {found} entries but there are {expected} tokens")]
    LengthMismatch {
        /// Which array.
        what: &'static str,
        /// Number of tokens.
        expected: usize,
        /// Entries found.
        found: usize,
    },
    /// Two tokens have the same text.
    #[error("duplicate token {text:?} at ids {first} and {second}")]
    DuplicateToken {
        /// The text.
        text: String,
        /// First id.
        first: u32,
        /// Second id.
        second: u32,
    },
    /// The metadata asks for a BOS/EOS token that it does not define.
    #[error("{0} is requested but the vocabulary has no such token")]
    MissingSpecialToken(&'static str),
    /// A token id outside the vocabulary.
    #[error("token id {id} is outside the vocabulary (size {vocab_size})")]
    TokenOutOfRange {
        /// The id.
        id: u32,
        /// Vocabulary size.
        vocab_size: usize,
    },
}

/// The algorithm family of a vocabulary.
#[derive(Debug, Clone)]
enum Kind {
    /// SentencePiece-style score merging (`tokenizer.ggml.model = "llama"`).
    Spm,
    /// Byte-level BPE (`tokenizer.ggml.model = "gpt2"`).
    Bpe {
        pre: PreTokenizer,
        merges: bpe::MergeTable,
    },
}

/// A tokenizer with llama.cpp-identical encoding. Immutable and `Send + Sync`: share it with
/// an `Arc`.
pub struct Tokenizer {
    kind: Kind,
    model_name: String,
    tokens: Vec<String>,
    attrs: Vec<TokenAttr>,
    scores: Vec<f32>,
    token_to_id: HashMap<String, u32>,
    /// Decoded bytes of every token (control tokens: their text), concatenated.
    piece_data: Vec<u8>,
    /// `piece_offsets[i]..piece_offsets[i + 1]` is token `i`'s piece.
    piece_offsets: Vec<usize>,
    byte_tokens: [Option<u32>; 256],
    /// Control, user-defined and unknown tokens, longest text first.
    specials: Vec<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    eog: BTreeSet<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("model", &self.model_name)
            .field("vocab_size", &self.tokens.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("eog", &self.eog)
            .field("add_bos", &self.add_bos)
            .finish_non_exhaustive()
    }
}

/// `Some(id)` when `id` is inside a vocabulary of `n` tokens.
fn in_range(id: Option<u32>, n: usize) -> Option<u32> {
    id.filter(|&i| (i as usize) < n)
}

impl Tokenizer {
    /// The tokenizer described by a GGUF file's metadata.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, TokenizerError> {
        Self::from_metadata(file.metadata())
    }

    /// The tokenizer described by GGUF metadata (`tokenizer.ggml.*`).
    pub fn from_metadata(metadata: &Metadata) -> Result<Self, TokenizerError> {
        Self::new(TokenizerConfig::from_metadata(metadata)?)
    }

    /// Builds a tokenizer from an explicit configuration (llama.cpp's defaults apply to
    /// everything left `None`).
    pub fn new(cfg: TokenizerConfig) -> Result<Self, TokenizerError> {
        let n = cfg.tokens.len();
        if n == 0 {
            return Err(TokenizerError::EmptyVocab);
        }
        let kind = match cfg.model.as_str() {
            "llama" => Kind::Spm,
            "gpt2" => {
                if cfg.merges.is_empty() {
                    return Err(TokenizerError::MissingMerges);
                }
                Kind::Bpe {
                    pre: PreTokenizer::for_name(cfg.pre.as_deref())?,
                    merges: bpe::MergeTable::new(&cfg.merges),
                }
            }
            other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        };
        let scores = match cfg.scores {
            Some(s) if s.len() < n => {
                return Err(TokenizerError::LengthMismatch {
                    what: "tokenizer.ggml.scores",
                    expected: n,
                    found: s.len(),
                });
            }
            Some(mut s) => {
                s.truncate(n);
                s
            }
            None => vec![0.0; n],
        };
        let mut attrs = match cfg.token_types {
            Some(t) if t.len() < n => {
                return Err(TokenizerError::LengthMismatch {
                    what: "tokenizer.ggml.token_type",
                    expected: n,
                    found: t.len(),
                });
            }
            Some(t) => t[..n]
                .iter()
                .map(|&t| TokenAttr::from_gguf_type(t))
                .collect(),
            None => vec![TokenAttr::NORMAL; n],
        };
        let mut tokens = cfg.tokens;
        let mut token_to_id = HashMap::with_capacity(n);
        for (i, t) in tokens.iter_mut().enumerate() {
            if t.is_empty() {
                *t = format!("[EMPTY_{i}]");
            }
            if let Some(&first) = token_to_id.get(t.as_str()) {
                return Err(TokenizerError::DuplicateToken {
                    text: t.clone(),
                    first,
                    second: i as u32,
                });
            }
            token_to_id.insert(t.clone(), i as u32);
        }

        // Model-family defaults, then metadata (llama.cpp's order).
        let (mut bos, mut eos, mut unk, mut add_bos, mut add_space_prefix) = match &kind {
            Kind::Spm => (Some(1), Some(2), Some(0), true, true),
            Kind::Bpe { pre, .. } => (Some(11), Some(11), None, pre.default_add_bos, false),
        };
        bos = in_range(bos, n);
        eos = in_range(eos, n);
        unk = in_range(unk, n);
        let mut pad = None;
        let mut eot = None;
        let mut eom = None;
        for (slot, value) in [
            (&mut bos, cfg.bos_id),
            (&mut eos, cfg.eos_id),
            (&mut unk, cfg.unk_id),
            (&mut pad, cfg.pad_id),
            (&mut eot, cfg.eot_id),
            (&mut eom, cfg.eom_id),
        ] {
            if let Some(v) = in_range(value, n) {
                *slot = Some(v);
            }
        }
        if let Some(v) = cfg.add_space_prefix {
            add_space_prefix = v;
        }
        if let Some(v) = cfg.add_bos {
            add_bos = v;
        }
        let add_eos = cfg.add_eos.unwrap_or(false);
        if add_bos && bos.is_none() {
            return Err(TokenizerError::MissingSpecialToken("add_bos_token"));
        }
        if add_eos && eos.is_none() {
            return Err(TokenizerError::MissingSpecialToken("add_eos_token"));
        }

        let eog = detect_eog(&tokens, &mut attrs, &mut eot, &mut eom, eos);

        let mut byte_tokens = [None; 256];
        for (b, slot) in byte_tokens.iter_mut().enumerate() {
            *slot = token_to_id
                .get(&format!("<0x{b:02X}>"))
                .copied()
                .or_else(|| {
                    (b < 0x80)
                        .then(|| token_to_id.get(&(b as u8 as char).to_string()).copied())
                        .flatten()
                });
        }

        let mut specials: Vec<u32> = (0..n as u32)
            .filter(|&i| {
                attrs[i as usize].has(TokenAttr(
                    TokenAttr::CONTROL.0 | TokenAttr::USER_DEFINED.0 | TokenAttr::UNKNOWN.0,
                ))
            })
            .collect();
        specials.sort_by(|&a, &b| {
            tokens[b as usize]
                .len()
                .cmp(&tokens[a as usize].len())
                .then(a.cmp(&b))
        });

        let mut piece_data = Vec::new();
        let mut piece_offsets = Vec::with_capacity(n + 1);
        piece_offsets.push(0);
        for (i, t) in tokens.iter().enumerate() {
            piece_into(&kind, t, attrs[i], &mut piece_data);
            piece_offsets.push(piece_data.len());
        }

        Ok(Self {
            model_name: cfg.model,
            kind,
            tokens,
            attrs,
            scores,
            token_to_id,
            piece_data,
            piece_offsets,
            byte_tokens,
            specials,
            bos,
            eos,
            eot,
            unk,
            pad,
            eog,
            add_bos,
            add_eos,
            add_space_prefix,
        })
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// `tokenizer.ggml.model` (`"gpt2"` or `"llama"`).
    pub fn model_name(&self) -> &str {
        &self.model_name
    }

    /// The beginning-of-sequence token.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// The end-of-sequence token.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// The end-of-turn token (from metadata or detected by text, e.g. `<|im_end|>`).
    pub fn eot_id(&self) -> Option<u32> {
        self.eot
    }

    /// The unknown token.
    pub fn unk_id(&self) -> Option<u32> {
        self.unk
    }

    /// The padding token.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad
    }

    /// Whether [`Tokenizer::encode`] with `add_special` prepends BOS.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether [`Tokenizer::encode`] with `add_special` appends EOS.
    pub fn adds_eos(&self) -> bool {
        self.add_eos
    }

    /// True for tokens that end generation (EOS, end-of-turn, ... as llama.cpp decides).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// All end-of-generation tokens.
    pub fn eog_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.eog.iter().copied()
    }

    /// The vocabulary text of a token (`Ġhello`, `▁world`, `<|im_end|>`, ...).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The attributes of a token.
    pub fn token_attr(&self, id: u32) -> Option<TokenAttr> {
        self.attrs.get(id as usize).copied()
    }

    /// The score of a token (SentencePiece merge priority; 0 for BPE).
    pub fn token_score(&self, id: u32) -> Option<f32> {
        self.scores.get(id as usize).copied()
    }

    /// The id of a token given its exact vocabulary text.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.token_to_id.get(text).copied()
    }

    /// Tokenizes `text`, recognising special tokens written in it (`<|im_start|>`, ...);
    /// `add_special` adds BOS/EOS as the metadata asks.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, TokenizerError> {
        self.encode_with(text, add_special, true)
    }

    /// Like [`Tokenizer::encode`], choosing whether control tokens written in the text are
    /// recognised (`parse_special`) or tokenized as plain text. User-defined tokens are always
    /// recognised (as in llama.cpp and Hugging Face tokenizers).
    pub fn encode_with(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let specials: Vec<(u32, &str)> = self
            .specials
            .iter()
            .filter(|&&id| {
                parse_special
                    || !self.attrs[id as usize]
                        .has(TokenAttr(TokenAttr::CONTROL.0 | TokenAttr::UNKNOWN.0))
            })
            .map(|&id| (id, self.tokens[id as usize].as_str()))
            .collect();
        let fragments = special::partition(text, &specials);
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        match &self.kind {
            Kind::Spm => {
                let vocab = spm::SpmVocab {
                    token_to_id: &self.token_to_id,
                    scores: &self.scores,
                    byte_tokens: &self.byte_tokens,
                };
                let mut is_prev_special = true;
                for f in fragments {
                    match f {
                        Fragment::Text(r) => {
                            let mut t = String::with_capacity(r.len() + 3);
                            if self.add_space_prefix && is_prev_special {
                                t.push(' ');
                            }
                            t.push_str(&text[r]);
                            let escaped = t.replace(' ', "\u{2581}");
                            spm::tokenize(&escaped, &vocab, &mut out);
                            is_prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            is_prev_special = true;
                        }
                    }
                }
            }
            Kind::Bpe { pre, merges } => {
                for f in fragments {
                    match f {
                        Fragment::Text(r) => self.encode_bpe(&text[r], pre, merges, &mut out)?,
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        Ok(out)
    }

    fn encode_bpe(
        &self,
        text: &str,
        pre: &PreTokenizer,
        merges: &bpe::MergeTable,
        out: &mut Vec<u32>,
    ) -> Result<(), TokenizerError> {
        for word in pre.split(text)? {
            let encoded = bytelevel::encode(word.as_bytes());
            if pre.ignore_merges
                && let Some(&id) = self.token_to_id.get(&encoded)
            {
                out.push(id);
                continue;
            }
            for r in bpe::merge_word(&encoded, merges) {
                let piece = &encoded[r];
                match self.token_to_id.get(piece) {
                    Some(&id) => out.push(id),
                    None => {
                        // llama.cpp looks each byte of the piece up as a one-byte token.
                        for b in piece.bytes().filter(u8::is_ascii) {
                            if let Some(&id) = self.token_to_id.get(&(b as char).to_string()) {
                                out.push(id);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The bytes a token stands for. Control and unknown tokens give their text when
    /// `render_special` is true and nothing otherwise; unused tokens give nothing.
    pub fn token_bytes(&self, id: u32, render_special: bool) -> Result<&[u8], TokenizerError> {
        let i = id as usize;
        let attr = *self.attrs.get(i).ok_or(TokenizerError::TokenOutOfRange {
            id,
            vocab_size: self.tokens.len(),
        })?;
        if !render_special && attr.has(TokenAttr(TokenAttr::CONTROL.0 | TokenAttr::UNKNOWN.0)) {
            return Ok(&[]);
        }
        Ok(&self.piece_data[self.piece_offsets[i]..self.piece_offsets[i + 1]])
    }

    /// Drops the leading space of the first piece for vocabularies that add one when encoding.
    fn strip_first_space<'a>(&self, piece: &'a [u8]) -> &'a [u8] {
        match piece {
            [b' ', rest @ ..] if self.add_space_prefix => rest,
            _ => piece,
        }
    }

    /// The raw bytes of a token sequence (see [`Tokenizer::decode_with`]).
    pub fn decode_bytes(
        &self,
        ids: &[u32],
        render_special: bool,
    ) -> Result<Vec<u8>, TokenizerError> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for (k, &id) in ids.iter().enumerate() {
            let piece = self.token_bytes(id, render_special)?;
            out.extend_from_slice(if k == 0 {
                self.strip_first_space(piece)
            } else {
                piece
            });
        }
        Ok(out)
    }

    /// Text of a token sequence, control tokens hidden. Invalid UTF-8 (a character cut off by
    /// the end of the sequence) becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.decode_with(ids, false)
    }

    /// Text of a token sequence; control tokens are written as their text when `render_special`.
    pub fn decode_with(&self, ids: &[u32], render_special: bool) -> Result<String, TokenizerError> {
        let bytes = self.decode_bytes(ids, render_special)?;
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }
}

/// Appends the decoded bytes of one token (llama.cpp's `token_to_piece` with `special=true`).
fn piece_into(kind: &Kind, text: &str, attr: TokenAttr, out: &mut Vec<u8>) {
    if attr.has(TokenAttr(
        TokenAttr::CONTROL.0 | TokenAttr::UNKNOWN.0 | TokenAttr::USER_DEFINED.0,
    )) {
        out.extend_from_slice(text.as_bytes());
    } else if attr.has(TokenAttr::NORMAL) {
        match kind {
            Kind::Spm => out.extend_from_slice(text.replace('\u{2581}', " ").as_bytes()),
            Kind::Bpe { .. } => bytelevel::decode_into(text, out),
        }
    } else if attr.has(TokenAttr::BYTE)
        && let Some(b) = text
            .strip_prefix("<0x")
            .and_then(|h| h.strip_suffix('>'))
            .and_then(|h| u8::from_str_radix(h, 16).ok())
    {
        out.push(b);
    }
}

/// llama.cpp's end-of-generation detection by token text; also fills in EOT/EOM when the
/// metadata names none and marks EOG tokens as control tokens.
fn detect_eog(
    tokens: &[String],
    attrs: &mut [TokenAttr],
    eot: &mut Option<u32>,
    eom: &mut Option<u32>,
    eos: Option<u32>,
) -> BTreeSet<u32> {
    let find = |texts: &[&str]| {
        tokens
            .iter()
            .position(|t| texts.contains(&t.as_str()))
            .map(|i| i as u32)
    };
    if eot.is_none() {
        *eot = find(EOT_TEXTS);
    }
    if eom.is_none() {
        *eom = find(&["<|eom_id|>"][..]);
    }
    let mut eog = BTreeSet::new();
    for group in vocab::FIM_EOG_TEXTS {
        if let Some(id) = find(group) {
            attrs[id as usize].insert(TokenAttr::CONTROL);
            eog.insert(id);
        }
    }
    for id in [*eot, *eom].into_iter().flatten() {
        attrs[id as usize].insert(TokenAttr::CONTROL);
    }
    for (i, t) in tokens.iter().enumerate() {
        if EOG_TEXTS.contains(&t.as_str()) {
            eog.insert(i as u32);
            attrs[i].insert(TokenAttr::CONTROL);
        }
    }
    // gpt-oss: these are always rendered
    for (i, t) in tokens.iter().enumerate() {
        if matches!(
            t.as_str(),
            "<|channel|>" | "<|message|>" | "<|start|>" | "<|constrain|>"
        ) {
            attrs[i] = TokenAttr::USER_DEFINED;
        }
    }
    eog.extend([eos, *eot, *eom].into_iter().flatten());
    let text_of = |id: u32| tokens[id as usize].as_str();
    let has = |eog: &BTreeSet<u32>, s: &str| eog.iter().copied().find(|&id| text_of(id) == s);
    // o200k_harmony / solar-open: "<|end|>" is not an end of generation there.
    let call = has(&eog, "<|call|>").or_else(|| has(&eog, "<|calls|>"));
    if let Some(end) = has(&eog, "<|end|>")
        && call.is_some()
        && (has(&eog, "<|return|>").is_some() || has(&eog, "<|flush|>").is_some())
    {
        eog.remove(&end);
        attrs[end as usize] = TokenAttr::USER_DEFINED;
    }
    // gemma4 / paddleocr: "</s>" is text there.
    if has(&eog, "<|tool_response>").is_some()
        && let Some(s) = has(&eog, "</s>")
    {
        eog.remove(&s);
        attrs[s as usize] = TokenAttr::NORMAL;
    }
    eog
}

#[cfg(test)]
mod tests;
