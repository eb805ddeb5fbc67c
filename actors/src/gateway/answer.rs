//! Reading a generation's event stream as an answer: stop strings, the generated tokens'
//! log-probabilities released with the text they start, token counts and the time to the
//! first token. Both response shapes — one JSON body and an SSE stream — read through
//! [`AnswerReader`], so they cannot disagree on where an answer ends or what it says.

use std::time::Instant;

use super::backend::{FinishReason, GenerationEvent, PromptToken, TokenLogprob};
use super::error::ApiError;
use super::logprobs;
use super::metrics::{Counter, Histogram};
use super::openai::Usage;
use super::stop::{StopMatcher, StopOutcome};

/// The message of a stream that ended without its final event.
pub const UNFINISHED: &str = "the model backend ended the stream without finishing the generation";

/// What one event means for the answer.
#[derive(Debug)]
pub enum Step {
    /// Nothing to show yet (text held back by a possible stop string, or an embedding).
    Nothing,
    /// The scored prompt (`echo` with `logprobs`); it comes before any token.
    Prompt(Vec<PromptToken>),
    /// Text released to the client and the log-probabilities of the tokens it starts.
    Text(String, Vec<TokenLogprob>),
    /// The answer ended: its last text and entries, why, and the token counts.
    End {
        /// Text released at the end (held back until now, or before a stop string).
        text: String,
        /// The log-probabilities still to go out.
        entries: Vec<TokenLogprob>,
        /// Why it ended.
        finish: FinishReason,
        /// Token counts.
        usage: Usage,
    },
    /// The generation failed (or its stream ended unfinished).
    Failed(ApiError),
}

/// Turns events into [`Step`]s; see the module docs.
pub struct AnswerReader {
    matcher: StopMatcher,
    pending: logprobs::Pending,
    count: u32,
    started: Instant,
    ttft: Histogram,
    tokens: Counter,
}

impl AnswerReader {
    /// A reader ending the answer at the first of `stops`; the first token's delay from
    /// `started` goes to `ttft`, and each token counts in `tokens`.
    pub fn new(stops: &[String], started: Instant, ttft: Histogram, tokens: Counter) -> Self {
        AnswerReader {
            matcher: StopMatcher::new(stops),
            pending: logprobs::Pending::default(),
            count: 0,
            started,
            ttft,
            tokens,
        }
    }

    /// What `event` (`None`: the stream closed) means, for a request of `prompt_tokens`.
    pub fn step(&mut self, event: Option<GenerationEvent>, prompt_tokens: u32) -> Step {
        match event {
            Some(GenerationEvent::Embedding(_)) => Step::Nothing,
            Some(GenerationEvent::Prompt(p)) => Step::Prompt(p),
            Some(GenerationEvent::Token { text, logprobs, .. }) => {
                if self.count == 0 {
                    self.ttft.observe(self.started.elapsed().as_secs_f64());
                }
                self.count += 1;
                self.tokens.inc();
                if let Some(lp) = logprobs {
                    self.pending.token(&text, lp);
                }
                match self.matcher.push(&text) {
                    StopOutcome::Continue(out) if out.is_empty() => Step::Nothing,
                    StopOutcome::Continue(out) => {
                        let entries = self.pending.released(&out);
                        Step::Text(out, entries)
                    }
                    // Dropping the stream after this cancels the rest of the generation.
                    StopOutcome::Stopped(out) => {
                        let entries = self.pending.released(&out);
                        Step::End {
                            text: out,
                            entries,
                            finish: FinishReason::Stop,
                            usage: Usage::new(prompt_tokens, self.count),
                        }
                    }
                }
            }
            Some(GenerationEvent::Done {
                finish_reason,
                prompt_tokens,
                completion_tokens,
            }) => Step::End {
                text: self.matcher.finish(),
                entries: self.pending.rest(),
                finish: finish_reason,
                usage: Usage::new(prompt_tokens, completion_tokens),
            },
            Some(GenerationEvent::Error(m)) => {
                Step::Failed(ApiError::internal(format!("generation failed: {m}")))
            }
            None => Step::Failed(ApiError::internal(UNFINISHED)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(text: &str) -> Option<GenerationEvent> {
        Some(GenerationEvent::Token {
            id: 0,
            text: text.into(),
            logprobs: None,
        })
    }

    fn reader(stops: &[&str]) -> (AnswerReader, Counter) {
        let tokens = Counter::default();
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let ttft = super::super::metrics::MetricsRegistry::new()
            .histogram("ttft", "First token.", &[], &[1.0])
            .unwrap();
        (
            AnswerReader::new(&stops, Instant::now(), ttft, tokens.clone()),
            tokens,
        )
    }

    #[test]
    fn a_stop_string_ends_the_answer_before_it() {
        let (mut r, tokens) = reader(&["END"]);
        assert!(matches!(r.step(token("hello "), 3), Step::Text(t, _) if t == "hello "));
        // "E" may start the stop string: held back.
        assert!(matches!(r.step(token("E"), 3), Step::Nothing));
        match r.step(token("ND now"), 3) {
            Step::End {
                text,
                finish,
                usage,
                ..
            } => {
                assert_eq!(text, "");
                assert_eq!(finish, FinishReason::Stop);
                assert_eq!((usage.prompt_tokens, usage.completion_tokens), (3, 3));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(tokens.get(), 3);
    }

    #[test]
    fn held_back_text_goes_out_at_the_end() {
        let (mut r, _) = reader(&["END"]);
        assert!(matches!(r.step(token("EN"), 1), Step::Nothing));
        let done = Some(GenerationEvent::Done {
            finish_reason: FinishReason::Length,
            prompt_tokens: 1,
            completion_tokens: 1,
        });
        assert!(
            matches!(r.step(done, 1), Step::End { text, finish: FinishReason::Length, .. } if text == "EN")
        );
    }

    #[test]
    fn an_unfinished_stream_and_an_error_fail() {
        let (mut r, _) = reader(&[]);
        assert!(
            matches!(r.step(None, 1), Step::Failed(e) if e.message.contains("without finishing"))
        );
        let err = Some(GenerationEvent::Error("stage 1 failed".into()));
        assert!(matches!(r.step(err, 1), Step::Failed(e) if e.message.contains("stage 1 failed")));
    }
}
