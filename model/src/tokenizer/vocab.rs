//! Vocabulary description ([`TokenizerConfig`], read from GGUF metadata) and per-token
//! attributes ([`TokenAttr`]), following llama.cpp's `llama_vocab::load`.

use super::TokenizerError;
use crate::gguf::{GgufError, Metadata};

/// Attributes of a token (llama.cpp's `llama_token_attr` bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct TokenAttr(pub u32);

impl TokenAttr {
    /// No attribute (`UNDEFINED`).
    pub const UNDEFINED: Self = Self(0);
    /// The unknown token.
    pub const UNKNOWN: Self = Self(1 << 0);
    /// Reserved, never produced.
    pub const UNUSED: Self = Self(1 << 1);
    /// An ordinary text piece.
    pub const NORMAL: Self = Self(1 << 2);
    /// A control token (BOS, EOS, `<|im_start|>`, ...): matched in text only when parsing
    /// special tokens, hidden when decoding unless asked to render them.
    pub const CONTROL: Self = Self(1 << 3);
    /// A user-defined token: always matched in text as a whole, decoded as its raw text.
    pub const USER_DEFINED: Self = Self(1 << 4);
    /// A byte-fallback token `<0xNN>`.
    pub const BYTE: Self = Self(1 << 5);

    /// The attribute for a GGUF `tokenizer.ggml.token_type` value.
    pub fn from_gguf_type(t: i32) -> Self {
        match t {
            1 => Self::NORMAL,
            2 => Self::UNKNOWN,
            3 => Self::CONTROL,
            4 => Self::USER_DEFINED,
            5 => Self::UNUSED,
            6 => Self::BYTE,
            _ => Self::UNDEFINED,
        }
    }

    /// True when any bit of `other` is set.
    pub fn has(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    /// Adds the bits of `other`.
    pub fn insert(&mut self, other: Self) {
        self.0 |= other.0;
    }
}

/// Everything needed to build a [`super::Tokenizer`]; normally read from GGUF metadata with
/// [`TokenizerConfig::from_metadata`], but can be written by hand (tests, other formats).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenizerConfig {
    /// `tokenizer.ggml.model`: `"gpt2"` (byte-level BPE) or `"llama"` (SentencePiece).
    pub model: String,
    /// `tokenizer.ggml.pre`: the BPE pre-tokenizer (`"qwen2"`, `"llama3"`, `"gpt-2"`,
    /// `"default"`, ...). Ignored for SentencePiece.
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.scores` (SentencePiece merge priorities); missing = all 0.
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.token_type` (GGUF token types); missing = all normal.
    pub token_types: Option<Vec<i32>>,
    /// `tokenizer.ggml.merges` (`"left right"`, highest priority first); BPE only.
    pub merges: Vec<String>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_id: Option<u32>,
    /// `tokenizer.ggml.eot_token_id`.
    pub eot_id: Option<u32>,
    /// `tokenizer.ggml.eom_token_id`.
    pub eom_id: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`.
    pub unk_id: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`.
    pub pad_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`.
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix` (SentencePiece: prepend a space to the text).
    pub add_space_prefix: Option<bool>,
}

fn opt_u32(m: &Metadata, key: &str) -> Result<Option<u32>, GgufError> {
    m.get_u32_opt(key)
}

impl TokenizerConfig {
    /// Reads the `tokenizer.ggml.*` keys of a GGUF file's metadata.
    pub fn from_metadata(m: &Metadata) -> Result<Self, TokenizerError> {
        let tokens: Vec<String> = m
            .get_str_array("tokenizer.ggml.tokens")?
            .into_iter()
            .map(str::to_string)
            .collect();
        let scores = if m.contains("tokenizer.ggml.scores") {
            Some(m.get_f32_array("tokenizer.ggml.scores")?)
        } else {
            None
        };
        let token_types = if m.contains("tokenizer.ggml.token_type") {
            Some(m.get_i32_array("tokenizer.ggml.token_type")?)
        } else {
            None
        };
        let merges = if m.contains("tokenizer.ggml.merges") {
            m.get_str_array("tokenizer.ggml.merges")?
                .into_iter()
                .map(str::to_string)
                .collect()
        } else {
            Vec::new()
        };
        Ok(Self {
            model: m.get_str("tokenizer.ggml.model")?.to_string(),
            pre: m.get_str_opt("tokenizer.ggml.pre")?.map(str::to_string),
            tokens,
            scores,
            token_types,
            merges,
            bos_id: opt_u32(m, "tokenizer.ggml.bos_token_id")?,
            eos_id: opt_u32(m, "tokenizer.ggml.eos_token_id")?,
            eot_id: opt_u32(m, "tokenizer.ggml.eot_token_id")?,
            eom_id: opt_u32(m, "tokenizer.ggml.eom_token_id")?,
            unk_id: opt_u32(m, "tokenizer.ggml.unknown_token_id")?,
            pad_id: opt_u32(m, "tokenizer.ggml.padding_token_id")?,
            add_bos: m.get_bool_opt("tokenizer.ggml.add_bos_token")?,
            add_eos: m.get_bool_opt("tokenizer.ggml.add_eos_token")?,
            add_space_prefix: m.get_bool_opt("tokenizer.ggml.add_space_prefix")?,
        })
    }
}

/// Token texts that end generation (llama.cpp's list, matched on the token text).
pub const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
];

/// Token texts auto-detected as end-of-turn when the metadata names none.
pub const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];

/// FIM pad / repo / file-separator token texts; llama.cpp also treats them as end-of-generation.
pub const FIM_EOG_TEXTS: &[&[&str]] = &[
    &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    &[
        "<|fim_repo|>",
        "<|repo_name|>",
        "<fim-repo>",
        "<REPO>",
        "<reponame>",
    ],
    &["<|file_sep|>"],
];
