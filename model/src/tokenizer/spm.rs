//! SentencePiece-style tokenization (llama.cpp's `llm_tokenizer_spm_session`): start from
//! UTF-8 characters, repeatedly merge the adjacent pair whose concatenation is a vocabulary
//! token with the highest score (ties: leftmost), then map pieces to ids, falling back to
//! `<0xNN>` byte tokens for characters the vocabulary lacks.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// A candidate merge, ordered by score (higher first), then by left position (lower first).
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(other.left.cmp(&self.left))
    }
}

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// What the SPM algorithm needs from the vocabulary.
pub struct SpmVocab<'a> {
    /// Token text → id (all tokens).
    pub token_to_id: &'a HashMap<String, u32>,
    /// Score per id.
    pub scores: &'a [f32],
    /// Id of `<0xNN>` per byte (or of the raw one-byte string), `None` when absent.
    pub byte_tokens: &'a [Option<u32>; 256],
}

/// Tokenizes `text` (spaces already escaped to `▁`) and appends the ids to `out`.
/// Bytes without any token are dropped (a vocabulary without byte fallback cannot show them).
pub fn tokenize(text: &str, vocab: &SpmVocab<'_>, out: &mut Vec<u32>) {
    let mut symbols: Vec<Symbol> = Vec::new();
    for (i, (start, c)) in text.char_indices().enumerate() {
        symbols.push(Symbol {
            start,
            len: c.len_utf8(),
            prev: i.checked_sub(1),
            next: None,
        });
        if i > 0 {
            symbols[i - 1].next = Some(i);
        }
    }
    if symbols.is_empty() {
        return;
    }
    let mut heap = BinaryHeap::new();
    let try_add = |heap: &mut BinaryHeap<Bigram>, symbols: &[Symbol], l: usize, r: usize| {
        let (ls, rs) = (&symbols[l], &symbols[r]);
        let merged = &text[ls.start..rs.start + rs.len];
        if let Some(&id) = vocab.token_to_id.get(merged) {
            let score = vocab.scores.get(id as usize).copied().unwrap_or(0.0);
            heap.push(Bigram {
                score,
                left: l,
                right: r,
                size: merged.len(),
            });
        }
    };
    for i in 1..symbols.len() {
        try_add(&mut heap, &symbols, i - 1, i);
    }
    while let Some(b) = heap.pop() {
        let (ln, rn) = (symbols[b.left].len, symbols[b.right].len);
        if ln == 0 || rn == 0 || ln + rn != b.size {
            continue;
        }
        symbols[b.left].len += rn;
        symbols[b.right].len = 0;
        symbols[b.left].next = symbols[b.right].next;
        if let Some(n) = symbols[b.right].next {
            symbols[n].prev = Some(b.left);
        }
        if let Some(p) = symbols[b.left].prev {
            try_add(&mut heap, &symbols, p, b.left);
        }
        if let Some(n) = symbols[b.left].next {
            try_add(&mut heap, &symbols, b.left, n);
        }
    }
    // Every merged symbol is a vocabulary token by construction, so only single characters can
    // be missing from the vocabulary: llama.cpp's `resegment` then emits their bytes.
    let mut i = Some(0);
    while let Some(k) = i {
        let s = symbols[k];
        let piece = &text[s.start..s.start + s.len];
        match vocab.token_to_id.get(piece) {
            Some(&id) => out.push(id),
            None => out.extend(piece.bytes().filter_map(|b| vocab.byte_tokens[b as usize])),
        }
        i = s.next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct V {
        map: HashMap<String, u32>,
        scores: Vec<f32>,
        bytes: [Option<u32>; 256],
    }

    fn vocab(entries: &[(&str, f32)]) -> V {
        let mut map = HashMap::new();
        let mut scores = Vec::new();
        let mut bytes = [None; 256];
        for (i, (t, s)) in entries.iter().enumerate() {
            map.insert(t.to_string(), i as u32);
            scores.push(*s);
            if let Some(hex) = t.strip_prefix("<0x").and_then(|h| h.strip_suffix('>')) {
                bytes[u8::from_str_radix(hex, 16).unwrap() as usize] = Some(i as u32);
            }
        }
        V { map, scores, bytes }
    }

    fn run(v: &V, text: &str) -> Vec<u32> {
        let sv = SpmVocab {
            token_to_id: &v.map,
            scores: &v.scores,
            byte_tokens: &v.bytes,
        };
        let mut out = Vec::new();
        tokenize(text, &sv, &mut out);
        out
    }

    #[test]
    fn highest_score_merges_first() {
        // ids: a=0 b=1 c=2 ab=3 bc=4 abc=5
        let v = vocab(&[
            ("a", -1.0),
            ("b", -1.0),
            ("c", -1.0),
            ("ab", -5.0),
            ("bc", -2.0),
            ("abc", -9.0),
        ]);
        // "bc" (-2) beats "ab" (-5); then "a"+"bc" = "abc" exists
        assert_eq!(run(&v, "abc"), vec![5]);
        let v2 = vocab(&[
            ("a", -1.0),
            ("b", -1.0),
            ("c", -1.0),
            ("ab", -5.0),
            ("bc", -2.0),
        ]);
        assert_eq!(run(&v2, "abc"), vec![0, 4]);
    }

    #[test]
    fn ties_merge_leftmost_first() {
        let v = vocab(&[("a", 0.0), ("aa", -1.0)]);
        assert_eq!(run(&v, "aaa"), vec![1, 0]);
    }

    #[test]
    fn unknown_characters_fall_back_to_bytes() {
        let mut entries: Vec<(String, f32)> = vec![("▁".into(), -1.0), ("x".into(), -1.0)];
        for b in 0..=255u8 {
            entries.push((format!("<0x{b:02X}>"), 0.0));
        }
        let refs: Vec<(&str, f32)> = entries.iter().map(|(s, f)| (s.as_str(), *f)).collect();
        let v = vocab(&refs);
        // "é" = C3 A9 -> <0xC3> <0xA9>
        assert_eq!(run(&v, "x▁é"), vec![1, 0, 2 + 0xC3, 2 + 0xA9]);
        assert_eq!(run(&v, ""), Vec::<u32>::new());
    }
}
