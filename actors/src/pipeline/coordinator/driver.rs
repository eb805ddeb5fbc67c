//! The async shell around a [`Sequence`]: it moves events from the pipeline (tokens and
//! failures arriving at the sink, the pipeline's death watch, the client going away, time
//! passing) into the state machine and carries out the actions it returns (send a batch, hand
//! the client a token, wait for a redeployed pipeline). One driver per sequence, from admission
//! to the end, failovers included; tokens go straight into the caller's channel.

use std::future::Future;
use std::time::{Duration, Instant};

use edgeray_model::tokenizer::TokenStreamDecoder;
use tokio::sync::mpsc;

use super::engine::{
    Admission, GenOptions, GenSummary, GenToken, PREFILL_CHUNK, PREFILL_CHUNK_SHARED, Pipeline,
    PipelineError, SCORE_CHUNK,
};
use super::sequence::{Action, Event, Finish, Sequence, SequenceSpec, Stall, Watchdog};
use super::service::Service;
use crate::pipeline::protocol::{SeqStart, SinkMsg, TokenLogprobs};

/// Where a driver hands generated tokens: a channel to the caller (the CLI, a test) or the
/// gateway's event stream. `false` means the receiver went away (the generation is cancelled).
pub trait TokenSink: Sync {
    /// Hands one token on; waits while the receiver is full.
    fn send_token(&self, token: GenToken) -> impl Future<Output = bool> + Send;

    /// Hands on the scores of the prompt's tokens ([`GenOptions::score_prompt`]), once, before
    /// the first token: `scores[i]` is the prompt token at position `i + 1` given the ones
    /// before it. The default drops them.
    // Spelled out rather than `async fn` so the future is `Send`, like `send_token`'s.
    #[allow(clippy::manual_async_fn)]
    fn send_prompt_logprobs(
        &self,
        scores: Vec<TokenLogprobs>,
    ) -> impl Future<Output = bool> + Send {
        let _ = scores;
        async { true }
    }

    /// Hands on the prompt's embedding ([`GenOptions::embed`]): the mean of its positions'
    /// final-normed hidden states. The default drops it.
    #[allow(clippy::manual_async_fn)]
    fn send_embedding(&self, vector: Vec<f32>) -> impl Future<Output = bool> + Send {
        let _ = vector;
        async { true }
    }
}

/// The prompt's scores as they arrive from the last stage, one message per prompt batch, in
/// any order relative to each other and to the first token (each `tell` travels on its own).
#[derive(Debug, Default)]
struct PromptScores {
    /// Entry `i`: the prompt token at position `i + 1`.
    got: Vec<Option<TokenLogprobs>>,
    missing: usize,
    /// Handed to the caller (a replay after a failover scores nothing again).
    delivered: bool,
    /// The first token, held until the scores are complete.
    held: Option<SinkMsg>,
}

impl PromptScores {
    /// Expecting the scores of a prompt of `prompt_len` tokens (all but the first).
    fn expect(prompt_len: usize) -> Self {
        let n = prompt_len.saturating_sub(1);
        PromptScores {
            got: vec![None; n],
            missing: n,
            delivered: false,
            held: None,
        }
    }

    /// Records the entries for positions `pos..`; out-of-range or repeated ones are ignored.
    fn add(&mut self, pos: u32, entries: Vec<TokenLogprobs>) {
        for (i, e) in entries.into_iter().enumerate() {
            let Some(slot) = (pos as usize + i)
                .checked_sub(1)
                .and_then(|j| self.got.get_mut(j))
            else {
                continue;
            };
            if slot.is_none() {
                *slot = Some(e);
                self.missing -= 1;
            }
        }
    }

    fn complete(&self) -> bool {
        self.missing == 0
    }

    /// The scores, in order, once complete and not yet handed on.
    fn take(&mut self) -> Option<Vec<TokenLogprobs>> {
        if self.delivered || !self.complete() {
            return None;
        }
        self.delivered = true;
        Some(
            std::mem::take(&mut self.got)
                .into_iter()
                .flatten()
                .collect(),
        )
    }
}

impl TokenSink for mpsc::Sender<GenToken> {
    async fn send_token(&self, token: GenToken) -> bool {
        self.send(token).await.is_ok()
    }
}

/// How often a waiting driver lets its sequence check its deadlines.
const TICK: Duration = Duration::from_secs(1);

/// How long a redeployed pipeline may take to produce the next token of a resumed sequence
/// before the sequence is failed over again.
const RESUME_BOUND: Duration = Duration::from_secs(60);

/// The per-token watchdog: a pipeline that is up but gives no token for 30 s after a decode
/// step, or 30 s plus 100 ms per token after a prefill (a 1,000-token prompt: 130 s, room for
/// a slow board), fails the request with a clear error and frees its slot.
pub const WATCHDOG: Watchdog = Watchdog {
    step: Duration::from_secs(30),
    per_prompt_token: Duration::from_millis(100),
};

/// A generation driven to its end.
pub(crate) struct Outcome {
    /// What the caller of a single pipeline sees.
    pub summary: GenSummary,
    /// Failovers survived.
    pub resumed: u32,
    /// Their stalls.
    pub stalls: Vec<Stall>,
}

/// A supervised deployment a broken sequence may continue on, and the pipeline generation
/// the sequence started on.
pub(crate) struct Resume<'a> {
    /// The service.
    pub service: &'a Service,
    /// Pipelines deployed when the sequence started on its current one.
    pub generation: u64,
}

/// The pipeline slot a generation runs in.
pub(crate) enum Slot {
    /// Taken by the caller, who passes it on.
    Owned(Admission),
    /// Taken and kept by the caller for the generation's duration.
    Held,
    /// Not taken yet: wait for one.
    Wait,
}

/// One sequence on one pipeline: its slot, its route at the sink and its stages' caches.
struct Attempt {
    pipeline: Pipeline,
    _slot: Option<Admission>,
    _active: super::engine::ActiveGuard,
    seq: crate::pipeline::protocol::SeqId,
    rx: mpsc::Receiver<SinkMsg>,
    guard: super::engine::SeqGuard,
}

impl Attempt {
    fn open(pipeline: Pipeline, slot: Option<Admission>) -> Attempt {
        let (seq, rx, guard) = pipeline.open_sequence();
        Attempt {
            _active: pipeline.active(),
            pipeline,
            _slot: slot,
            seq,
            rx,
            guard,
        }
    }

    /// Releases the sequence on the stages before the slot goes to the next one.
    async fn close(mut self) {
        self.guard.release().await;
    }
}

/// Drives one generation of `prompt` on `pipeline` (with `slot` if already admitted) to its
/// end. With `resume`, a failure mid-answer waits for the redeployed pipeline and continues
/// there, replaying the prompt plus the tokens already sent, so `out` receives every token once,
/// in order (greedy output is that of an undisturbed run).
pub(crate) async fn drive(
    pipeline: Pipeline,
    slot: Slot,
    mut resume: Option<Resume<'_>>,
    prompt: Vec<u32>,
    opts: &GenOptions,
    out: &impl TokenSink,
) -> Result<Outcome, PipelineError> {
    // The request was checked once, before its admission (`Pipeline::check`).
    let ctx = pipeline.context_length();
    if let Some(why) = pipeline.broken() {
        return Err(PipelineError::Broken(why));
    }
    let prompt_tokens = prompt.len();
    let slot = match slot {
        Slot::Owned(s) => Some(s),
        Slot::Held => None,
        Slot::Wait => Some(pipeline.admit().await),
    };
    // While other sequences are generating, the prompt goes in short chunks that share each
    // stage run with their decode steps, so a long prompt does not stall their streams.
    let prefill_chunk = if pipeline.sequences_running() > 1 {
        PREFILL_CHUNK_SHARED
    } else {
        PREFILL_CHUNK
    };
    let prefill_chunk = if opts.score_prompt {
        prefill_chunk.min(SCORE_CHUNK)
    } else {
        prefill_chunk
    };
    let mut scores = if opts.score_prompt {
        PromptScores::expect(prompt.len())
    } else {
        PromptScores {
            delivered: true,
            ..PromptScores::default()
        }
    };
    let mut seq = Sequence::new(SequenceSpec {
        prompt,
        max_tokens: if opts.embed { 0 } else { opts.max_tokens },
        score_prompt: opts.score_prompt || opts.embed,
        ctx,
        prefill_chunk,
        resumable: resume.is_some(),
        resume_bound: Some(RESUME_BOUND),
        watchdog: Some(WATCHDOG),
    });
    let mut attempt = Attempt::open(pipeline, slot);
    let mut start = SeqStart {
        sampling: opts.sampling.clone(),
        prompt: seq.prefill_tokens(),
        logprobs: opts.logprobs,
        score_prompt: opts.score_prompt,
        generated: 0,
        embed: opts.embed,
        // A resumed attempt's prompt ends with the `generated` tokens already sent, which the
        // last stage feeds to the constraint.
        constraint: opts.response_format.as_ref().map(|f| f.to_wire()),
    };
    let mut decoder = TokenStreamDecoder::new();
    let mut text = String::new();
    let t0 = Instant::now();
    let mut first_token: Option<Instant> = None;
    // The top-two logit gap and the log-probabilities of the token just received.
    let mut gap = f32::INFINITY;
    let mut token_logprobs = None;
    // Held from a failure until the first token after it (failover plans wait meanwhile).
    let mut resuming = None;
    // The error behind the next `Action::Fail`, when it has a type of its own.
    let mut error: Option<PipelineError> = None;
    let mut actions: std::collections::VecDeque<Action> = seq.on(Event::Started { now: t0 }).into();
    let mut broken = attempt.pipeline.broken_watch();
    // When the previous token went out (time between tokens).
    let mut last_token: Option<Instant> = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        while let Some(action) = actions.pop_front() {
            match action {
                Action::Send(batch) => {
                    if let Err(e) = attempt
                        .pipeline
                        .send_batch(attempt.seq, batch, &start)
                        .await
                    {
                        let ev = failure_event(&attempt.pipeline, resume.is_some(), &e).await;
                        error = Some(e);
                        actions.clear();
                        actions.extend(seq.on(ev));
                    }
                }
                Action::Emit(token) => {
                    let piece = decoder
                        .push(attempt.pipeline.tokenizer(), token)
                        .map_err(|e| PipelineError::BadPrompt(e.to_string()));
                    let piece = match piece {
                        Ok(p) => p,
                        Err(e) => {
                            attempt.close().await;
                            return Err(e);
                        }
                    };
                    text.push_str(&piece);
                    let now = Instant::now();
                    attempt
                        .pipeline
                        .count_token(last_token.map(|t| now.saturating_duration_since(t)));
                    last_token = Some(now);
                    let sent = out
                        .send_token(GenToken {
                            id: token,
                            text: piece,
                            top2_gap: gap,
                            logprobs: token_logprobs.take(),
                        })
                        .await;
                    if !sent {
                        actions.clear();
                        actions.extend(seq.on(Event::ClientGone));
                    }
                }
                Action::Resumed(stall) => {
                    tracing::info!(
                        stall_ms = stall.total().as_millis() as u64,
                        detect_ms = stall.detect.as_millis() as u64,
                        redeploy_ms = stall.redeploy.as_millis() as u64,
                        replay_ms = stall.replay.as_millis() as u64,
                        "generation resumed after a failover"
                    );
                    if let Some(r) = &resume {
                        r.service.record_stall(&stall);
                    }
                    resuming = None;
                }
                Action::AwaitRedeploy => {
                    let Some(r) = resume.as_mut() else {
                        // The machine only asks for a redeploy when told it may.
                        return Err(
                            error.unwrap_or(PipelineError::Broken("the pipeline broke".into()))
                        );
                    };
                    let why = error
                        .take()
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| "the pipeline broke".into());
                    tracing::warn!(error = %why, tokens_sent = seq.generated().len(), "generation interrupted by a failure; waiting for the redeployed pipeline");
                    attempt.close().await;
                    resuming.get_or_insert_with(|| r.service.resuming());
                    let pipeline = r
                        .service
                        .wait_current(r.generation + 1)
                        .await
                        .map_err(|w| PipelineError::Broken(format!("{why}; {w}")))?;
                    r.generation = r.service.generation();
                    let slot = pipeline.admit().await;
                    attempt = Attempt::open(pipeline, Some(slot));
                    broken = attempt.pipeline.broken_watch();
                    // The replay prefills the tokens already sent; the decoder goes on where
                    // the client's text stopped (the replay emits nothing twice).
                    start.prompt = seq.prefill_tokens();
                    start.generated = seq.generated().len() as u32;
                    // Scores not handed on yet are asked for again (nothing was generated
                    // then, so the replay's prompt is the prompt).
                    start.score_prompt = !scores.delivered;
                    if !scores.delivered {
                        scores = PromptScores::expect(start.prompt.len());
                    }
                    actions.extend(seq.on(Event::Started {
                        now: Instant::now(),
                    }));
                }
                Action::Finish(finish) => {
                    let rest = decoder.finish();
                    if !rest.is_empty() && finish != Finish::Cancelled {
                        text.push_str(&rest);
                        let _ = out
                            .send_token(GenToken {
                                id: *seq.generated().last().unwrap_or(&0),
                                text: rest,
                                top2_gap: f32::INFINITY,
                                logprobs: None,
                            })
                            .await;
                    }
                    attempt.close().await;
                    let resumed = seq.resumed();
                    let stalls = seq.stalls().to_vec();
                    return Ok(Outcome {
                        summary: GenSummary {
                            prompt_tokens,
                            tokens: seq.into_generated(),
                            text,
                            finish,
                            prompt_time: first_token.map_or(Duration::ZERO, |t| t - t0),
                            gen_time: first_token.map(|t| t.elapsed()).unwrap_or_default(),
                        },
                        resumed,
                        stalls,
                    });
                }
                Action::Fail(why) => {
                    attempt.close().await;
                    return Err(error.unwrap_or(PipelineError::Broken(why)));
                }
            }
        }
        let arrived = tokio::select! {
            m = attempt.rx.recv() => Arrived::Sink(m),
            _ = broken.wait_for(|b| b.is_some()) => Arrived::Broken,
            _ = tick.tick() => Arrived::Tick,
        };
        // The prompt's scores go out before the first token; a token that arrives before
        // them waits.
        let arrived = match arrived {
            Arrived::Sink(Some(SinkMsg::PromptLogprobs { pos, entries, .. })) => {
                scores.add(pos, entries);
                match scores.held.take() {
                    Some(token) if scores.complete() => Arrived::Sink(Some(token)),
                    held => {
                        scores.held = held;
                        continue;
                    }
                }
            }
            Arrived::Sink(Some(token @ SinkMsg::Token { .. })) if !scores.delivered => {
                if !scores.complete() {
                    scores.held = Some(token);
                    continue;
                }
                Arrived::Sink(Some(token))
            }
            // An embedding ends the sequence like the token of a prompt run with nothing to
            // generate.
            Arrived::Sink(Some(SinkMsg::Embedding { vector, .. })) => {
                if !out.send_embedding(vector).await {
                    actions.extend(seq.on(Event::ClientGone));
                    continue;
                }
                actions.extend(seq.on(Event::Token {
                    token: 0,
                    end_of_generation: false,
                    now: Instant::now(),
                }));
                continue;
            }
            other => other,
        };
        if let Some(s) = scores.take()
            && !out.send_prompt_logprobs(s).await
        {
            actions.extend(seq.on(Event::ClientGone));
            continue;
        }
        // A token for another position than the one awaited is not this sequence's next:
        // dropped (a member that is not the last stage, or a stale duplicate).
        if let Arrived::Sink(Some(SinkMsg::Token { pos, .. })) = &arrived
            && seq.awaited_position() != Some(*pos as usize)
        {
            tracing::warn!(
                pos,
                awaited = ?seq.awaited_position(),
                "a token for a position the sequence does not await: dropped"
            );
            continue;
        }
        let ev = match arrived {
            Arrived::Sink(Some(SinkMsg::Token {
                token,
                top2_gap,
                logprobs,
                hops,
                ..
            })) => {
                attempt.pipeline.record_hops(&hops);
                gap = top2_gap;
                token_logprobs = logprobs;
                first_token.get_or_insert_with(Instant::now);
                Event::Token {
                    token,
                    end_of_generation: attempt.pipeline.is_eog(token),
                    now: Instant::now(),
                }
            }
            Arrived::Sink(Some(SinkMsg::Failed {
                stage, error: e, ..
            })) => {
                let e = PipelineError::StageFailed { stage, error: e };
                let ev = failure_event(&attempt.pipeline, resume.is_some(), &e).await;
                error = Some(e);
                ev
            }
            Arrived::Sink(None) => {
                let e = PipelineError::Broken("the sink went away".into());
                let ev = failure_event(&attempt.pipeline, resume.is_some(), &e).await;
                error = Some(e);
                ev
            }
            Arrived::Broken => {
                let e = PipelineError::Broken(attempt.pipeline.broken().unwrap_or_default());
                let ev = failure_event(&attempt.pipeline, resume.is_some(), &e).await;
                error = Some(e);
                ev
            }
            Arrived::Tick => Event::Tick {
                now: Instant::now(),
            },
            // Taken in above.
            Arrived::Sink(Some(SinkMsg::PromptLogprobs { .. } | SinkMsg::Embedding { .. })) => {
                continue;
            }
        };
        actions.extend(seq.on(ev));
    }
}

/// What woke a waiting driver.
enum Arrived {
    /// A message at the sink (`None`: the sink went away).
    Sink(Option<SinkMsg>),
    /// The pipeline's death watch fired.
    Broken,
    /// Time for the sequence to check its deadlines.
    Tick,
}

/// What a failure means for the sequence: a loss the sequence may survive on a redeployed
/// pipeline when the pipeline is (or within a few seconds becomes) broken — a failed batch
/// caused by a dying stage is followed by its death watch — and the sequence's own failure
/// otherwise.
async fn failure_event(p: &Pipeline, resumable: bool, e: &PipelineError) -> Event {
    let loss = matches!(
        e,
        PipelineError::Broken(_)
            | PipelineError::StageFailed { .. }
            | PipelineError::Unreachable(_)
    );
    if resumable && loss && broken_soon(p).await {
        Event::Interrupted {
            error: e.to_string(),
            now: Instant::now(),
        }
    } else {
        Event::Failed {
            error: e.to_string(),
        }
    }
}

/// Whether `p` is (or within a few seconds becomes) broken.
async fn broken_soon(p: &Pipeline) -> bool {
    p.broken().is_some()
        || tokio::time::timeout(Duration::from_secs(10), p.wait_broken())
            .await
            .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(token: u32) -> TokenLogprobs {
        TokenLogprobs {
            token,
            logprob: -(token as f32),
            top: Vec::new(),
        }
    }

    #[test]
    fn prompt_scores_assemble_in_any_order_and_are_handed_on_once() {
        // A 6-token prompt: positions 1..=5 are scored, in two batches arriving out of order.
        let mut s = PromptScores::expect(6);
        assert!(!s.complete() && s.take().is_none());
        s.add(4, vec![entry(4), entry(5)]);
        assert!(!s.complete());
        s.add(4, vec![entry(40)]); // a repeat changes nothing
        s.add(9, vec![entry(9)]); // out of range: ignored
        s.add(1, vec![entry(1), entry(2), entry(3)]);
        assert!(s.complete());
        let got: Vec<u32> = s.take().unwrap().iter().map(|e| e.token).collect();
        assert_eq!(got, vec![1, 2, 3, 4, 5]);
        assert!(s.take().is_none(), "handed on once");
        // A one-token prompt has nothing to score.
        let mut s = PromptScores::expect(1);
        assert_eq!(s.take(), Some(Vec::new()));
    }
}
