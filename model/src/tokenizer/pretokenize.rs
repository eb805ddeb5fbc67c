//! BPE pre-tokenization: splitting text into words with llama.cpp's regexes per
//! `tokenizer.ggml.pre` type, before byte-level encoding and merges.

use super::TokenizerError;
use fancy_regex::Regex;

/// GPT-2's pattern.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// Llama 3's pattern (case-insensitive contractions spelled out).
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 2's pattern: Llama 3's with single digits.
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How a BPE vocabulary splits text, and the per-type flags llama.cpp attaches to it.
#[derive(Debug, Clone)]
pub struct PreTokenizer {
    name: String,
    regexes: Vec<Regex>,
    /// Llama-3 style: a whole word found in the vocabulary is taken as is, without merges.
    pub ignore_merges: bool,
    /// The pre-tokenizer implies a BOS by default (before `add_bos_token` is read).
    pub default_add_bos: bool,
}

impl PreTokenizer {
    /// The pre-tokenizer for a `tokenizer.ggml.pre` value (`None` = llama.cpp's default).
    pub fn for_name(pre: Option<&str>) -> Result<Self, TokenizerError> {
        let name = pre.unwrap_or("default");
        let (patterns, ignore_merges, default_add_bos): (Vec<&str>, bool, bool) = match name {
            "qwen2" | "deepseek-r1-qwen" | "stablelm2" | "megrez" | "hunyuan" | "grok-2" => {
                (vec![QWEN2], false, false)
            }
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
            | "midm-2.0" | "lfm2" => (vec![LLAMA3], true, true),
            "dbrx" | "smaug-bpe" => (vec![LLAMA3], false, false),
            "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es"
            | "jina-v2-de" | "mpt" | "olmo" | "jais" | "exaone4" => (vec![GPT2], false, false),
            "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone"
            | "minerva-7b" => (vec![r"\p{N}", GPT2], false, false),
            "default" => (
                vec![
                    r"[\p{P}\$\+<=>\^~\|]+",
                    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
                    r"\p{N}+",
                    r"[0-9][0-9][0-9]",
                ],
                false,
                false,
            ),
            other => return Err(TokenizerError::UnsupportedPreTokenizer(other.to_string())),
        };
        let regexes = patterns
            .into_iter()
            .map(|p| Regex::new(p).map_err(|e| TokenizerError::Regex(format!("{p}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            name: name.to_string(),
            regexes,
            ignore_merges,
            default_add_bos,
        })
    }

    /// The pre-tokenizer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Splits `text` into words: each regex in turn splits every current piece into its matches
    /// and the (non-empty) gaps between them, like llama.cpp's `unicode_regex_split`.
    pub fn split<'t>(&self, text: &'t str) -> Result<Vec<&'t str>, TokenizerError> {
        let mut pieces: Vec<&'t str> = if text.is_empty() {
            Vec::new()
        } else {
            vec![text]
        };
        for re in &self.regexes {
            let mut next = Vec::with_capacity(pieces.len() * 2);
            for piece in pieces {
                let mut last = 0;
                for m in re.find_iter(piece) {
                    let m = m.map_err(|e| TokenizerError::Regex(e.to_string()))?;
                    if m.start() > last {
                        next.push(&piece[last..m.start()]);
                    }
                    if m.end() > m.start() {
                        next.push(m.as_str());
                    }
                    last = m.end();
                }
                if last < piece.len() {
                    next.push(&piece[last..]);
                }
            }
            pieces = next;
        }
        Ok(pieces)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(pre: &str, text: &str) -> Vec<String> {
        PreTokenizer::for_name(Some(pre))
            .unwrap()
            .split(text)
            .unwrap()
            .into_iter()
            .map(String::from)
            .collect()
    }

    #[test]
    fn qwen2_splits_like_llama_cpp() {
        assert_eq!(
            split("qwen2", "def fibonacci(n):"),
            vec!["def", " fibonacci", "(n", "):"]
        );
        assert_eq!(
            split("qwen2", "I'm 123 OK"),
            vec!["I", "'m", " ", "1", "2", "3", " OK"]
        );
        assert_eq!(split("qwen2", "a  \n\n  b"), vec!["a", "  \n\n", " ", " b"]);
        assert_eq!(split("qwen2", "x   "), vec!["x", "   "]);
        assert_eq!(split("qwen2", "x   y"), vec!["x", "  ", " y"]);
        assert_eq!(split("qwen2", "你好，世界"), vec!["你好", "，世界"]);
        assert_eq!(
            split("qwen2", "  return x;\n"),
            vec![" ", " return", " x", ";\n"]
        );
    }

    #[test]
    fn llama3_groups_three_digits() {
        assert_eq!(split("llama3", "12345"), vec!["123", "45"]);
    }

    #[test]
    fn default_chain_applies_each_regex_to_pieces() {
        // punctuation first, then the GPT-2 pattern, then digit runs, then 3-digit groups
        assert_eq!(
            split("default", "ab, 12345!"),
            vec!["ab", ",", " ", "123", "45", "!"]
        );
    }

    #[test]
    fn unknown_pre_tokenizer_is_an_error() {
        let e = PreTokenizer::for_name(Some("klingon")).unwrap_err();
        assert!(e.to_string().contains("klingon"));
    }
}
