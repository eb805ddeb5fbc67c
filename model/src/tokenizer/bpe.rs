//! Byte-level BPE merging of one pre-tokenized word (llama.cpp's `llm_tokenizer_bpe_session`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// Merge ranks: `"left right"` → rank (lower merges first).
#[derive(Debug, Clone, Default)]
pub struct MergeTable {
    ranks: HashMap<String, u32>,
}

impl MergeTable {
    /// Builds the table from GGUF merge lines. Like llama.cpp, a line is split at the first
    /// space after its first byte; lines without such a space are skipped, and the first
    /// occurrence of a pair wins.
    pub fn new(lines: &[String]) -> Self {
        let mut ranks = HashMap::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            let Some(pos) = line
                .as_bytes()
                .iter()
                .skip(1)
                .position(|&b| b == b' ')
                .map(|p| p + 1)
            else {
                continue;
            };
            let key = format!("{} {}", &line[..pos], &line[pos + 1..]);
            ranks.entry(key).or_insert(i as u32);
        }
        Self { ranks }
    }

    /// Number of merges.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ranks.len()
    }

    fn rank(&self, key_buf: &mut String, left: &str, right: &str) -> Option<u32> {
        key_buf.clear();
        key_buf.push_str(left);
        key_buf.push(' ');
        key_buf.push_str(right);
        self.ranks.get(key_buf.as_str()).copied()
    }
}

/// Min-heap of candidate merges: (rank, left index, right index, merged byte length).
type Heap = BinaryHeap<Reverse<(u32, usize, usize, usize)>>;

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// Splits the (byte-level encoded) `word` into its final BPE pieces, as byte ranges of `word`.
///
/// Starts from single characters and repeatedly merges the adjacent pair with the lowest rank
/// (ties: leftmost), exactly like llama.cpp.
pub fn merge_word(word: &str, merges: &MergeTable) -> Vec<std::ops::Range<usize>> {
    let mut symbols: Vec<Symbol> = Vec::new();
    for (i, (start, c)) in word.char_indices().enumerate() {
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
    // (rank, left index) min-heap; the stored size detects pairs that went stale.
    let mut heap = Heap::new();
    let mut key = String::new();
    let text = |s: &Symbol| &word[s.start..s.start + s.len];
    let push = |heap: &mut Heap, key: &mut String, symbols: &[Symbol], l: usize, r: usize| {
        let (ls, rs) = (&symbols[l], &symbols[r]);
        if let Some(rank) = merges.rank(key, text(ls), text(rs)) {
            heap.push(Reverse((rank, l, r, ls.len + rs.len)));
        }
    };
    for i in 1..symbols.len() {
        push(&mut heap, &mut key, &symbols, i - 1, i);
    }
    while let Some(Reverse((_, l, r, size))) = heap.pop() {
        let (ln, rn) = (symbols[l].len, symbols[r].len);
        if ln == 0 || rn == 0 || ln + rn != size || symbols[l].next != Some(r) {
            continue; // outdated
        }
        symbols[l].len += rn;
        symbols[r].len = 0;
        symbols[l].next = symbols[r].next;
        if let Some(n) = symbols[r].next {
            symbols[n].prev = Some(l);
        }
        if let Some(p) = symbols[l].prev {
            push(&mut heap, &mut key, &symbols, p, l);
        }
        if let Some(n) = symbols[l].next {
            push(&mut heap, &mut key, &symbols, l, n);
        }
    }
    symbols
        .iter()
        .filter(|s| s.len > 0)
        .map(|s| s.start..s.start + s.len)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merges(lines: &[&str]) -> MergeTable {
        MergeTable::new(&lines.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn pieces<'a>(word: &'a str, m: &MergeTable) -> Vec<&'a str> {
        merge_word(word, m).into_iter().map(|r| &word[r]).collect()
    }

    #[test]
    fn merges_by_rank_not_position() {
        let m = merges(&["b c", "a b", "a bc"]);
        // "b c" (rank 0) beats "a b" (rank 1); then "a bc" (rank 2)
        assert_eq!(pieces("abc", &m), vec!["abc"]);
        let m2 = merges(&["a b", "b c"]);
        assert_eq!(pieces("abc", &m2), vec!["ab", "c"]);
    }

    #[test]
    fn ties_go_left_and_repeats_work() {
        let m = merges(&["a a", "aa aa"]);
        assert_eq!(pieces("aaaaa", &m), vec!["aaaa", "a"]);
        assert_eq!(pieces("", &m), Vec::<&str>::new());
        assert_eq!(pieces("x", &m), vec!["x"]);
    }

    #[test]
    fn multibyte_characters_are_symbols() {
        let m = merges(&["Ġ é", "Ġé t"]);
        assert_eq!(pieces("Ġét", &m), vec!["Ġét"]);
    }

    #[test]
    fn malformed_merge_lines_are_skipped() {
        let m = merges(&["nospace", " x y", "a b"]);
        // " x y" splits after the leading space: (" x", "y")
        assert_eq!(m.len(), 2);
        assert_eq!(pieces("ab", &m), vec!["ab"]);
    }
}
