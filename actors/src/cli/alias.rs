//! `serve --alias NAME`: the model id clients name instead of the GGUF's own name.

/// Why an alias is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AliasError {
    /// Empty string.
    #[error("the alias is empty")]
    Empty,
    /// Longer than [`MAX_ALIAS_LEN`] bytes.
    #[error("the alias is {0} bytes long; at most {MAX_ALIAS_LEN}")]
    TooLong(usize),
    /// A character outside ASCII letters, digits and `-_.:/@+`.
    #[error(
        "the alias contains {0:?}; use ASCII letters, digits and - _ . : / @ + (e.g. qwen or qwen2.5-0.5b)"
    )]
    BadChar(char),
}

/// Longest alias accepted, in bytes.
pub const MAX_ALIAS_LEN: usize = 128;

/// Checks an alias (clap value parser): non-empty, at most [`MAX_ALIAS_LEN`] bytes, ASCII
/// letters, digits and `-_.:/@+` only (what OpenAI and llama-server model ids use; no spaces or
/// control characters that would garble JSON logs or URLs).
pub fn parse_alias(s: &str) -> Result<String, AliasError> {
    if s.is_empty() {
        return Err(AliasError::Empty);
    }
    if s.len() > MAX_ALIAS_LEN {
        return Err(AliasError::TooLong(s.len()));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.:/@+".contains(*c)))
    {
        return Err(AliasError::BadChar(c));
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_model_like_ids() {
        for ok in [
            "qwen",
            "qwen2.5-coder:0.5b",
            "Qwen/Qwen2.5",
            "gpt-4o_mini+x@v1",
        ] {
            assert_eq!(parse_alias(ok).as_deref(), Ok(ok));
        }
    }

    #[test]
    fn refuses_empty_long_and_odd_characters() {
        assert_eq!(parse_alias(""), Err(AliasError::Empty));
        assert_eq!(parse_alias(&"a".repeat(129)), Err(AliasError::TooLong(129)));
        assert_eq!(parse_alias("my model"), Err(AliasError::BadChar(' ')));
        assert_eq!(parse_alias("q\u{7}"), Err(AliasError::BadChar('\u{7}')));
        assert_eq!(parse_alias("modèle"), Err(AliasError::BadChar('è')));
    }
}
