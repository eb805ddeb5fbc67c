//! Log-probabilities in responses: which tokens' entries go out with which piece of text (stop
//! strings hold text back, and text past a stop string is never returned, so neither are its
//! tokens), and the two OpenAI layouts — chat's `content` list and completions' parallel lists.

use std::collections::VecDeque;

use serde_json::Value;

use super::backend::{PromptToken, TokenLogprob, TopLogprob};
use super::openai::{ChatLogprobs, ChatTokenLogprob, ChatTopLogprob, CompletionLogprobs};

/// Generated tokens' entries waiting for their text to be released to the client.
#[derive(Debug, Default)]
pub struct Pending {
    /// Characters of generated text seen so far (released or held back).
    seen: usize,
    /// Characters released to the client so far.
    released: usize,
    /// Entries by the character offset their token's text starts at.
    entries: VecDeque<(usize, TokenLogprob)>,
}

impl Pending {
    /// A generated token whose text is `text` (may be empty: part of a character).
    pub fn token(&mut self, text: &str, entry: TokenLogprob) {
        self.entries.push_back((self.seen, entry));
        self.seen += text.chars().count();
    }

    /// Text `out` went to the client: the entries of the tokens it starts into.
    pub fn released(&mut self, out: &str) -> Vec<TokenLogprob> {
        self.released += out.chars().count();
        let mut done = Vec::new();
        while let Some((start, _)) = self.entries.front() {
            if *start >= self.released {
                break;
            }
            done.extend(self.entries.pop_front().map(|(_, e)| e));
        }
        done
    }

    /// The generation ended without a stop string: every remaining entry goes out.
    pub fn rest(&mut self) -> Vec<TokenLogprob> {
        self.entries.drain(..).map(|(_, e)| e).collect()
    }
}

fn chat_top(t: &TopLogprob) -> ChatTopLogprob {
    ChatTopLogprob {
        token: t.token.clone(),
        logprob: f64::from(t.logprob),
        bytes: t.bytes.clone(),
    }
}

/// Chat's layout of generated tokens' entries.
pub fn chat(entries: &[TokenLogprob]) -> ChatLogprobs {
    ChatLogprobs {
        content: entries
            .iter()
            .map(|e| ChatTokenLogprob {
                token: e.chosen.token.clone(),
                logprob: f64::from(e.chosen.logprob),
                bytes: e.chosen.bytes.clone(),
                top_logprobs: e.top.iter().map(chat_top).collect(),
            })
            .collect(),
        refusal: None,
    }
}

/// Builds completions' parallel lists, keeping the character offset across stream chunks.
#[derive(Debug, Default)]
pub struct CompletionLists {
    /// Characters of the choice's text before the next token.
    offset: usize,
}

impl CompletionLists {
    /// The lists for `prompt` tokens (an echoed, scored prompt) followed by generated
    /// `entries`; offsets count characters from the start of the choice's text.
    pub fn lists(
        &mut self,
        prompt: &[PromptToken],
        entries: &[TokenLogprob],
    ) -> CompletionLogprobs {
        let mut out = CompletionLogprobs::default();
        for p in prompt {
            self.push(
                &mut out,
                &p.token,
                p.logprob.as_ref().map(|l| (l.chosen.logprob, &l.top[..])),
            );
        }
        for e in entries {
            self.push(
                &mut out,
                &e.chosen.token,
                Some((e.chosen.logprob, &e.top[..])),
            );
        }
        out
    }

    fn push(
        &mut self,
        out: &mut CompletionLogprobs,
        token: &str,
        lp: Option<(f32, &[TopLogprob])>,
    ) {
        out.tokens.push(token.to_string());
        out.text_offset.push(self.offset as u32);
        self.offset += token.chars().count();
        out.token_logprobs.push(lp.map(|(l, _)| f64::from(l)));
        out.top_logprobs.push(lp.map(|(_, top)| {
            let mut m = serde_json::Map::new();
            for t in top {
                // Two alternatives with the same text (different ids) keep the likelier.
                m.entry(t.token.clone())
                    .or_insert_with(|| Value::from(f64::from(t.logprob)));
            }
            m
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(text: &str, lp: f32) -> TokenLogprob {
        let t = TopLogprob {
            token: text.to_string(),
            bytes: text.as_bytes().to_vec(),
            logprob: lp,
        };
        TokenLogprob {
            chosen: t.clone(),
            top: vec![t],
        }
    }

    #[test]
    fn entries_go_out_with_the_text_their_token_starts_into() {
        let mut p = Pending::default();
        p.token("Hel", entry("Hel", -0.1));
        p.token("", entry("\u{fffd}", -0.2)); // half a character
        p.token("lo ", entry("lo ", -0.3));
        // A stop matcher held "lo " back and released "Hel".
        let got: Vec<f32> = p.released("Hel").iter().map(|e| e.chosen.logprob).collect();
        assert_eq!(got, vec![-0.1]);
        let got: Vec<f32> = p.released("l").iter().map(|e| e.chosen.logprob).collect();
        assert_eq!(
            got,
            vec![-0.2, -0.3],
            "the empty token starts where the next does"
        );
        p.token("STOP", entry("STOP", -0.4));
        // The stop string cut the text: nothing more is released, the entry is never sent.
        assert!(p.released("").is_empty());
        let mut q = Pending::default();
        q.token("a", entry("a", -1.0));
        assert_eq!(q.rest().len(), 1);
    }

    #[test]
    fn completion_lists_count_offsets_across_chunks_and_leave_a_first_prompt_token_null() {
        let mut l = CompletionLists::default();
        let prompt = vec![
            PromptToken {
                token: "Hé".into(),
                bytes: "Hé".as_bytes().to_vec(),
                logprob: None,
            },
            PromptToken {
                token: " there".into(),
                bytes: b" there".to_vec(),
                logprob: Some(entry(" there", -2.0)),
            },
        ];
        let a = l.lists(&prompt, &[entry("!", -0.5)]);
        assert_eq!(a.tokens, vec!["Hé", " there", "!"]);
        assert_eq!(a.text_offset, vec![0, 2, 8], "characters, not bytes");
        assert_eq!(a.token_logprobs, vec![None, Some(-2.0), Some(-0.5)]);
        assert!(a.top_logprobs[0].is_none());
        assert_eq!(
            a.top_logprobs[2].as_ref().unwrap()["!"],
            Value::from(-0.5f64)
        );
        let b = l.lists(&[], &[entry("?", -0.25)]);
        assert_eq!(b.text_offset, vec![9]);
        let c = chat(&[entry("x", -0.75)]);
        assert_eq!(c.content[0].token, "x");
        assert_eq!(c.content[0].top_logprobs.len(), 1);
    }
}
