//! Splitting text at special tokens before tokenization (llama.cpp's
//! `tokenizer_st_partition`): each special token, longest first, cuts every remaining text
//! fragment at each of its occurrences.

use std::ops::Range;

/// A piece of the input: plain text (a byte range of it) or an already identified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fragment {
    /// Text still to be tokenized.
    Text(Range<usize>),
    /// A special token found in the text.
    Token(u32),
}

/// Splits `text` at the given special tokens `(id, text)`, tried in the given order (callers
/// pass them longest first). Empty token texts are ignored.
pub fn partition(text: &str, specials: &[(u32, &str)]) -> Vec<Fragment> {
    let mut frags = if text.is_empty() {
        Vec::new()
    } else {
        vec![Fragment::Text(0..text.len())]
    };
    for &(id, pat) in specials {
        if pat.is_empty() || !text.contains(pat) {
            continue;
        }
        let mut next = Vec::with_capacity(frags.len() + 2);
        for f in frags {
            let Fragment::Text(r) = f else {
                next.push(f);
                continue;
            };
            let mut pos = r.start;
            while let Some(off) = text[pos..r.end].find(pat) {
                let m = pos + off;
                if m > pos {
                    next.push(Fragment::Text(pos..m));
                }
                next.push(Fragment::Token(id));
                pos = m + pat.len();
            }
            if pos < r.end {
                next.push(Fragment::Text(pos..r.end));
            }
        }
        frags = next;
    }
    frags
}

#[cfg(test)]
mod tests {
    use super::*;
    use Fragment::*;

    #[test]
    fn splits_at_each_occurrence() {
        let t = "<s>hi<s><s>there";
        assert_eq!(
            partition(t, &[(1, "<s>")]),
            vec![Token(1), Text(3..5), Token(1), Token(1), Text(11..16)]
        );
    }

    #[test]
    fn longer_tokens_win_when_tried_first() {
        let t = "a\n\n\nb";
        // "\n\n" tried first takes the first two newlines, "\n" the third
        assert_eq!(
            partition(t, &[(2, "\n\n"), (1, "\n")]),
            vec![Text(0..1), Token(2), Token(1), Text(4..5)]
        );
    }

    #[test]
    fn no_specials_or_empty_text() {
        assert_eq!(partition("abc", &[]), vec![Text(0..3)]);
        assert_eq!(partition("", &[(1, "x")]), vec![]);
        assert_eq!(partition("abc", &[(1, "")]), vec![Text(0..3)]);
    }
}
