//! Incremental detokenization for streaming output: text is released as soon as it is complete
//! UTF-8 (byte-fallback and byte-level tokens can split one character across several tokens).

use super::{Tokenizer, TokenizerError};

/// Turns a stream of token ids into text pieces. The concatenation of everything returned by
/// [`TokenStreamDecoder::push`] and [`TokenStreamDecoder::finish`] equals
/// [`Tokenizer::decode_with`] of the whole sequence (same `render_special`).
///
/// It holds no reference to the tokenizer, so it can live in an actor next to an
/// `Arc<Tokenizer>`; pass the tokenizer to each call.
#[derive(Debug, Clone, Default)]
pub struct TokenStreamDecoder {
    pending: Vec<u8>,
    seen_first: bool,
    render_special: bool,
}

impl TokenStreamDecoder {
    /// A decoder that hides control tokens (like [`Tokenizer::decode`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder that writes control tokens as their text when `render_special` is true.
    pub fn with_special(render_special: bool) -> Self {
        Self {
            render_special,
            ..Self::default()
        }
    }

    /// Adds one token; returns the text that became complete (possibly empty).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String, TokenizerError> {
        let piece = tokenizer.token_bytes(id, self.render_special)?;
        let piece = if !self.seen_first {
            tokenizer.strip_first_space(piece)
        } else {
            piece
        };
        self.seen_first = true;
        self.pending.extend_from_slice(piece);
        let mut out = String::new();
        drain_complete_utf8(&mut self.pending, &mut out);
        Ok(out)
    }

    /// Ends the stream: an incomplete trailing character becomes U+FFFD (as in a lossy decode).
    /// The decoder is ready for a new stream afterwards.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        self.seen_first = false;
        out
    }
}

/// Moves the longest decodable prefix of `pending` into `out`. Invalid sequences become U+FFFD
/// exactly as `String::from_utf8_lossy` would; an incomplete sequence at the end stays pending.
pub fn drain_complete_utf8(pending: &mut Vec<u8>, out: &mut String) {
    let mut start = 0;
    loop {
        match std::str::from_utf8(&pending[start..]) {
            Ok(s) => {
                out.push_str(s);
                start = pending.len();
                break;
            }
            Err(e) => {
                let valid = e.valid_up_to();
                if let Ok(s) = std::str::from_utf8(&pending[start..start + valid]) {
                    out.push_str(s);
                }
                match e.error_len() {
                    None => {
                        start += valid;
                        break;
                    }
                    Some(n) => {
                        out.push('\u{FFFD}');
                        start += valid + n;
                    }
                }
            }
        }
    }
    pending.drain(..start);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(chunks: &[&[u8]]) -> String {
        let mut pending = Vec::new();
        let mut out = String::new();
        for c in chunks {
            pending.extend_from_slice(c);
            drain_complete_utf8(&mut pending, &mut out);
        }
        out.push_str(&String::from_utf8_lossy(&pending));
        out
    }

    #[test]
    fn split_characters_are_held_until_complete() {
        let mut pending = b"a\xE4\xBD".to_vec();
        let mut out = String::new();
        drain_complete_utf8(&mut pending, &mut out);
        assert_eq!(out, "a");
        assert_eq!(pending, b"\xE4\xBD");
        pending.push(0xA0);
        drain_complete_utf8(&mut pending, &mut out);
        assert_eq!(out, "a你");
        assert!(pending.is_empty());
    }

    #[test]
    fn matches_lossy_decode_for_any_chunking() {
        let cases: Vec<Vec<u8>> = vec![
            "héllo 你好 🎉!".as_bytes().to_vec(),
            b"ab\xFFcd\xE4\xBDxy\xF0\x9F\x8E".to_vec(),
            b"\x80\x80\xC3".to_vec(),
            b"\xED\xA0\x80z".to_vec(),
        ];
        for bytes in cases {
            let expected = String::from_utf8_lossy(&bytes).into_owned();
            for split in 1..=bytes.len() {
                let chunks: Vec<&[u8]> = bytes.chunks(split).collect();
                assert_eq!(stream(&chunks), expected, "chunk size {split} of {bytes:?}");
            }
            let singles: Vec<&[u8]> = bytes.chunks(1).collect();
            assert_eq!(stream(&singles), expected);
        }
    }
}
