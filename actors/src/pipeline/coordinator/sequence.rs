//! The life of one sequence on the coordinator, as a pure state machine: admitted, its prompt
//! sent in chunks, tokens decoded one at a time, interrupted by a failure, replayed on a
//! redeployed pipeline, finished. No I/O, no clock and no channels: the async driver
//! (`driver.rs`) feeds it [`Event`]s (with the time they happened) and carries out the
//! [`Action`]s it returns, so every path, failover in every phase included, is unit-tested with
//! scripted events.
//!
//! Positions: a batch at `pos` holds the tokens for cache positions `pos..pos + n`. The prompt
//! (plus, after a failover, every token the client already got) is sent as prefill chunks; the
//! last chunk samples the first token. Each later batch is the previous token at the next
//! position. One batch is in flight at a time.

use edgeray_model::arch::TILED_MIN_QUERIES;
use std::time::{Duration, Instant};

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The model produced an end-of-generation token.
    EndOfGeneration,
    /// `max_tokens` reached.
    MaxTokens,
    /// The context is full.
    ContextFull,
    /// The receiver of the tokens went away.
    Cancelled,
}

/// Where one failover's stall went: from the last token before the failure to the first
/// token after it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stall {
    /// Last token until the failure was noticed (QUIC idle timeout, or at once for a stage
    /// that stopped).
    pub detect: Duration,
    /// Failure noticed until the redeployed pipeline was up.
    pub redeploy: Duration,
    /// Redeployed until the next token: the prompt plus the tokens already sent replayed.
    pub replay: Duration,
}

impl Stall {
    /// The whole stall.
    pub fn total(&self) -> Duration {
        self.detect + self.redeploy + self.replay
    }
}

impl std::fmt::Display for Stall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stall {:.1} s (detection {:.1} s, redeploy {:.1} s, replay {:.1} s)",
            self.total().as_secs_f64(),
            self.detect.as_secs_f64(),
            self.redeploy.as_secs_f64(),
            self.replay.as_secs_f64()
        )
    }
}

/// The sizes of the prefill batches of `n` prompt tokens with chunks of about `chunk`: as few
/// chunks as `chunk` allows, of balanced sizes, and none shorter than
/// [`TILED_MIN_QUERIES`] when the whole prompt is at least that long. A batch that short would
/// take the model's one-chunk attention path (f16 sums) instead of the tiled one a single
/// forward over the whole prompt takes, and the answer could differ from one node's; batches of
/// [`TILED_MIN_QUERIES`] rows or more all give the same bits.
pub fn prefill_chunks(n: usize, chunk: usize) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    let chunk = chunk.max(1);
    let mut k = n.div_ceil(chunk);
    if n >= TILED_MIN_QUERIES && n / k < TILED_MIN_QUERIES {
        k = (n / TILED_MIN_QUERIES).max(1);
    }
    (0..k).map(|i| n / k + usize::from(i < n % k)).collect()
}

/// The fixed settings of one sequence.
#[derive(Debug, Clone)]
pub struct SequenceSpec {
    /// The prompt's token ids (at least one).
    pub prompt: Vec<u32>,
    /// Most tokens to generate (0 with `score_prompt`: the prompt runs, nothing is generated).
    pub max_tokens: usize,
    /// Whether the prompt is scored: it then runs even when `max_tokens` is 0, and its first
    /// token only ends the sequence.
    pub score_prompt: bool,
    /// Positions the stages' caches hold.
    pub ctx: usize,
    /// Most tokens per prefill batch.
    pub prefill_chunk: usize,
    /// Whether a failure mid-answer waits for a redeployed pipeline (a supervised service)
    /// instead of ending the sequence.
    pub resumable: bool,
    /// Longest a redeployed pipeline may take to produce the next token before the sequence
    /// is failed again (`None`: no bound).
    pub resume_bound: Option<Duration>,
    /// The per-token watchdog (`None`: none): a pipeline that is up but stops answering a
    /// batch fails the sequence, which frees its slot.
    pub watchdog: Option<Watchdog>,
}

/// How long the pipeline may take to answer the batch in flight before the sequence fails:
/// `step`, plus `per_prompt_token` for each token of a prefill (a long prompt takes longer
/// than a decode step, more so on a slow board).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watchdog {
    /// The bound of a decode step.
    pub step: Duration,
    /// Added per prefilled token.
    pub per_prompt_token: Duration,
}

impl Watchdog {
    /// The bound for a batch of `tokens` input tokens.
    pub fn bound(&self, tokens: usize) -> Duration {
        if tokens <= 1 {
            self.step
        } else {
            self.step
                .saturating_add(self.per_prompt_token.saturating_mul(tokens as u32))
        }
    }
}

/// One batch to send to the first stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Cache position of the first token.
    pub pos: usize,
    /// Token ids.
    pub tokens: Vec<u32>,
    /// Whether this batch starts the sequence on the stages (carries its sampling settings
    /// and the whole prefill as the sampler's history).
    pub first: bool,
    /// Whether the last stage samples a token after it.
    pub sample: bool,
}

/// What happened to the sequence.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A pipeline took the sequence (first attempt, or a redeployed pipeline after
    /// [`Action::AwaitRedeploy`]).
    Started {
        /// When.
        now: Instant,
    },
    /// The last stage sampled `token`.
    Token {
        /// The token id.
        token: u32,
        /// Whether it ends the generation (end-of-generation token).
        end_of_generation: bool,
        /// When it arrived.
        now: Instant,
    },
    /// The receiver of the tokens went away.
    ClientGone,
    /// The pipeline broke (a stage or its node was lost, a stage-to-stage link failed): the
    /// sequence may continue on a redeployed pipeline.
    Interrupted {
        /// What broke.
        error: String,
        /// When it was noticed.
        now: Instant,
    },
    /// The sequence itself failed (bad input at a stage, no pipeline to resume on).
    Failed {
        /// Why.
        error: String,
    },
    /// Time passed with nothing else happening (lets the machine check its deadlines).
    Tick {
        /// Now.
        now: Instant,
    },
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send a batch to the first stage.
    Send(Batch),
    /// Give the client a generated token.
    Emit(u32),
    /// A failover's stall is over: the first token after it is about to be emitted.
    Resumed(Stall),
    /// Drop the broken pipeline and wait for a redeployed one, then report
    /// [`Event::Started`].
    AwaitRedeploy,
    /// The sequence is over.
    Finish(Finish),
    /// The sequence failed.
    Fail(String),
}

/// Where the sequence is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not started on a pipeline yet.
    Admitted,
    /// The prompt (or a replay) is being prefilled; no token of this attempt yet.
    Prefill,
    /// Generating one token at a time.
    Decode,
    /// A failure broke the pipeline; waiting for a redeployed one.
    Interrupted,
    /// Over.
    Done,
}

/// One sequence's state (see the module docs).
#[derive(Debug, Clone)]
pub struct Sequence {
    spec: SequenceSpec,
    phase: Phase,
    /// Tokens the client got, in order.
    generated: Vec<u32>,
    /// Cache positions covered by the batches sent on the current pipeline.
    pos: usize,
    /// When the client last got a token (or the sequence started).
    last_token_at: Option<Instant>,
    /// The failure being recovered from: (first noticed, redeployed).
    recovering: Option<(Instant, Option<Instant>)>,
    /// Since when the pipeline owes the next token, and for a batch of how many input tokens
    /// (the watchdog's clock).
    owed: Option<(Instant, usize)>,
    resumed: u32,
    stalls: Vec<Stall>,
}

impl Sequence {
    /// A sequence about to start.
    pub fn new(spec: SequenceSpec) -> Self {
        Sequence {
            spec,
            phase: Phase::Admitted,
            generated: Vec::new(),
            pos: 0,
            last_token_at: None,
            recovering: None,
            owed: None,
            resumed: 0,
            stalls: Vec::new(),
        }
    }

    /// Where it is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The position of the token the sequence waits for (the sink's `pos` of the answer to
    /// the batches in flight), or `None` when it waits for none. A token for any other
    /// position is not this sequence's next one.
    pub fn awaited_position(&self) -> Option<usize> {
        matches!(self.phase, Phase::Prefill | Phase::Decode).then_some(self.pos)
    }

    /// Every token the client got, in order.
    pub fn generated(&self) -> &[u32] {
        &self.generated
    }

    /// Consumes the sequence, returning the tokens the client got.
    pub fn into_generated(self) -> Vec<u32> {
        self.generated
    }

    /// Failovers survived.
    pub fn resumed(&self) -> u32 {
        self.resumed
    }

    /// The stall of each failover survived.
    pub fn stalls(&self) -> &[Stall] {
        &self.stalls
    }

    /// The token ids the current attempt prefills: the prompt, then every token the client
    /// already got (their KV entries were lost with the old pipeline).
    pub fn prefill_tokens(&self) -> Vec<u32> {
        let mut t = self.spec.prompt.clone();
        t.extend_from_slice(&self.generated);
        t
    }

    /// Advances the machine by one event.
    pub fn on(&mut self, event: Event) -> Vec<Action> {
        if self.phase == Phase::Done {
            return Vec::new();
        }
        match event {
            Event::Started { now } => self.start(now),
            Event::Token {
                token,
                end_of_generation,
                now,
            } => self.token(token, end_of_generation, now),
            Event::ClientGone => self.finish(Finish::Cancelled),
            Event::Interrupted { error, now } => self.interrupted(error, now),
            Event::Failed { error } => self.fail(error),
            Event::Tick { now } => self.tick(now),
        }
    }

    fn start(&mut self, now: Instant) -> Vec<Action> {
        match self.phase {
            Phase::Admitted | Phase::Interrupted => {}
            // A start while running is a driver bug; nothing sensible to do but ignore it.
            _ => return Vec::new(),
        }
        if self.phase == Phase::Admitted {
            self.last_token_at = Some(now);
            if self.spec.max_tokens == 0 && !self.spec.score_prompt {
                return self.finish(Finish::MaxTokens);
            }
            if self.spec.prompt.is_empty() {
                return self.fail("the prompt is empty".into());
            }
        } else if let Some((_, redeployed)) = &mut self.recovering {
            *redeployed = Some(now);
        }
        let input = self.prefill_tokens();
        if input.len() >= self.spec.ctx {
            return self.fail(format!(
                "the prompt has {} tokens; the context holds {}",
                input.len(),
                self.spec.ctx
            ));
        }
        self.phase = Phase::Prefill;
        self.pos = 0;
        self.owed = Some((now, input.len()));
        let sizes = prefill_chunks(input.len(), self.spec.prefill_chunk);
        let n_chunks = sizes.len();
        let mut actions = Vec::with_capacity(n_chunks);
        let mut rest = &input[..];
        for (i, n) in sizes.into_iter().enumerate() {
            let (c, tail) = rest.split_at(n);
            rest = tail;
            actions.push(Action::Send(Batch {
                pos: self.pos,
                tokens: c.to_vec(),
                first: i == 0,
                sample: i + 1 == n_chunks,
            }));
            self.pos += c.len();
        }
        actions
    }

    fn token(&mut self, token: u32, end_of_generation: bool, now: Instant) -> Vec<Action> {
        if !matches!(self.phase, Phase::Prefill | Phase::Decode) {
            // A late token of a broken pipeline: the replay will produce it again.
            return Vec::new();
        }
        let mut actions = Vec::new();
        if let Some((noticed, Some(redeployed))) = self.recovering.take() {
            let from = self.last_token_at.unwrap_or(noticed);
            let stall = Stall {
                detect: noticed.saturating_duration_since(from),
                redeploy: redeployed.saturating_duration_since(noticed),
                replay: now.saturating_duration_since(redeployed),
            };
            self.stalls.push(stall);
            self.resumed += 1;
            actions.push(Action::Resumed(stall));
        }
        self.phase = Phase::Decode;
        self.last_token_at = Some(now);
        if self.spec.max_tokens == 0 {
            // A scored prompt with nothing to generate: the prompt's scores came with it.
            actions.extend(self.finish(Finish::MaxTokens));
            return actions;
        }
        if end_of_generation {
            actions.extend(self.finish(Finish::EndOfGeneration));
            return actions;
        }
        self.generated.push(token);
        actions.push(Action::Emit(token));
        if self.generated.len() >= self.spec.max_tokens {
            actions.extend(self.finish(Finish::MaxTokens));
        } else if self.pos + 1 >= self.spec.ctx {
            actions.extend(self.finish(Finish::ContextFull));
        } else {
            actions.push(Action::Send(Batch {
                pos: self.pos,
                tokens: vec![token],
                first: false,
                sample: true,
            }));
            self.pos += 1;
            self.owed = Some((now, 1));
        }
        actions
    }

    fn interrupted(&mut self, error: String, now: Instant) -> Vec<Action> {
        if self.phase == Phase::Interrupted {
            return Vec::new(); // already waiting for a redeploy
        }
        if !self.spec.resumable || self.phase == Phase::Admitted {
            return self.fail(error);
        }
        // A failure during a replay counts from the first one's last token.
        let noticed = self.recovering.map_or(now, |(n, _)| n);
        self.recovering = Some((noticed, None));
        self.phase = Phase::Interrupted;
        vec![Action::AwaitRedeploy]
    }

    fn tick(&mut self, now: Instant) -> Vec<Action> {
        if let (Some(w), Some((since, tokens)), Phase::Prefill | Phase::Decode) =
            (self.spec.watchdog, self.owed, self.phase)
        {
            let bound = w.bound(tokens);
            if now.saturating_duration_since(since) > bound {
                return self.fail(format!(
                    "the pipeline gave no token for {:.0} s (the bound for a batch of {tokens} \
                     token{}): a stage has stopped answering; the request is failed and its \
                     slot freed",
                    bound.as_secs_f64(),
                    if tokens == 1 { "" } else { "s" }
                ));
            }
        }
        let (Some(bound), Some((_, Some(redeployed)))) = (self.spec.resume_bound, self.recovering)
        else {
            return Vec::new();
        };
        if self.phase == Phase::Prefill && now.saturating_duration_since(redeployed) > bound {
            return self.interrupted(
                format!(
                    "the redeployed pipeline did not resume the answer within {:.0} s",
                    bound.as_secs_f64()
                ),
                now,
            );
        }
        Vec::new()
    }

    fn finish(&mut self, why: Finish) -> Vec<Action> {
        self.phase = Phase::Done;
        vec![Action::Finish(why)]
    }

    fn fail(&mut self, error: String) -> Vec<Action> {
        self.phase = Phase::Done;
        vec![Action::Fail(error)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(prompt: usize, max_tokens: usize) -> SequenceSpec {
        SequenceSpec {
            prompt: (1..=prompt as u32).collect(),
            max_tokens,
            score_prompt: false,
            ctx: 64,
            prefill_chunk: 4,
            resumable: true,
            resume_bound: Some(Duration::from_secs(10)),
            watchdog: None,
        }
    }

    fn t0() -> Instant {
        Instant::now()
    }

    fn tok(token: u32, now: Instant) -> Event {
        Event::Token {
            token,
            end_of_generation: false,
            now,
        }
    }

    fn sends(actions: &[Action]) -> Vec<Batch> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(b) => Some(b.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn prefill_chunks_are_balanced_and_never_too_short_for_the_tiled_path() {
        assert_eq!(prefill_chunks(0, 512), Vec::<usize>::new());
        assert_eq!(prefill_chunks(5, 512), vec![5]);
        assert_eq!(
            prefill_chunks(31, 4),
            vec![4, 4, 4, 4, 4, 4, 4, 3],
            "short prompts: any split"
        );
        // 520 = 512 + 8 would put 8 rows on the other attention path.
        assert_eq!(prefill_chunks(520, 512), vec![260, 260]);
        assert_eq!(
            prefill_chunks(1000, 32),
            vec![33; 8]
                .into_iter()
                .chain(vec![32; 23])
                .collect::<Vec<_>>()
        );
        for n in 1..2000 {
            for chunk in [1, 16, 32, 33, 64, 100, 512] {
                let c = prefill_chunks(n, chunk);
                assert_eq!(c.iter().sum::<usize>(), n, "{n} / {chunk}");
                assert!(c.iter().all(|&m| m > 0));
                if n >= TILED_MIN_QUERIES {
                    assert!(
                        c.iter().all(|&m| m >= TILED_MIN_QUERIES),
                        "{n} / {chunk}: {c:?}"
                    );
                }
                if chunk >= TILED_MIN_QUERIES {
                    let most = chunk.max(2 * TILED_MIN_QUERIES - 1);
                    assert!(c.iter().all(|&m| m <= most), "{n} / {chunk}: {c:?}");
                }
                if chunk >= 2 * TILED_MIN_QUERIES {
                    assert_eq!(
                        c.len(),
                        n.div_ceil(chunk),
                        "{n} / {chunk}: as few as the chunk allows"
                    );
                }
            }
        }
    }

    #[test]
    fn prompt_goes_in_chunks_and_only_the_last_samples() {
        let mut s = Sequence::new(spec(10, 3));
        let a = s.on(Event::Started { now: t0() });
        let b = sends(&a);
        assert_eq!(b.len(), 3);
        assert_eq!(
            b.iter()
                .map(|b| (b.pos, b.tokens.len(), b.first, b.sample))
                .collect::<Vec<_>>(),
            vec![
                (0, 4, true, false),
                (4, 3, false, false),
                (7, 3, false, true)
            ],
            "balanced chunks (see prefill_chunks)"
        );
        assert_eq!(s.phase(), Phase::Prefill);
    }

    #[test]
    fn decode_feeds_each_token_back_at_the_next_position_until_max_tokens() {
        let now = t0();
        let mut s = Sequence::new(spec(3, 3));
        s.on(Event::Started { now });
        let a = s.on(tok(100, now));
        assert_eq!(
            a,
            vec![
                Action::Emit(100),
                Action::Send(Batch {
                    pos: 3,
                    tokens: vec![100],
                    first: false,
                    sample: true
                })
            ]
        );
        let a = s.on(tok(101, now));
        assert_eq!(sends(&a)[0].pos, 4);
        let a = s.on(tok(102, now));
        assert_eq!(
            a,
            vec![Action::Emit(102), Action::Finish(Finish::MaxTokens)]
        );
        assert_eq!(s.generated(), &[100, 101, 102]);
        assert_eq!(s.phase(), Phase::Done);
        assert!(s.on(tok(103, now)).is_empty(), "nothing after the end");
    }

    #[test]
    fn end_of_generation_is_not_emitted() {
        let now = t0();
        let mut s = Sequence::new(spec(2, 8));
        s.on(Event::Started { now });
        s.on(tok(7, now));
        let a = s.on(Event::Token {
            token: 1,
            end_of_generation: true,
            now,
        });
        assert_eq!(a, vec![Action::Finish(Finish::EndOfGeneration)]);
        assert_eq!(s.generated(), &[7]);
    }

    #[test]
    fn context_full_ends_before_a_batch_past_the_cache() {
        let now = t0();
        let mut s = Sequence::new(SequenceSpec {
            ctx: 5,
            ..spec(3, 100)
        });
        s.on(Event::Started { now });
        // first token sampled after position 2; it goes to position 3
        let a = s.on(tok(10, now));
        assert_eq!(sends(&a)[0].pos, 3);
        // second token would go to position 4 = ctx - 1: the cache is full then
        let a = s.on(tok(11, now));
        assert_eq!(
            a,
            vec![Action::Emit(11), Action::Finish(Finish::ContextFull)]
        );
    }

    #[test]
    fn zero_max_tokens_and_bad_prompts_end_at_once() {
        let now = t0();
        let mut s = Sequence::new(spec(3, 0));
        assert_eq!(
            s.on(Event::Started { now }),
            vec![Action::Finish(Finish::MaxTokens)]
        );
        let mut s = Sequence::new(spec(0, 5));
        assert!(matches!(
            s.on(Event::Started { now })[..],
            [Action::Fail(_)]
        ));
        let mut s = Sequence::new(SequenceSpec {
            ctx: 4,
            ..spec(4, 5)
        });
        assert!(matches!(
            s.on(Event::Started { now })[..],
            [Action::Fail(_)]
        ));
    }

    #[test]
    fn a_scored_prompt_runs_with_zero_max_tokens_and_its_token_only_ends_it() {
        let now = t0();
        let mut s = Sequence::new(SequenceSpec {
            score_prompt: true,
            ..spec(6, 0)
        });
        let a = s.on(Event::Started { now });
        assert_eq!(sends(&a).iter().map(|b| b.tokens.len()).sum::<usize>(), 6);
        assert_eq!(
            s.on(tok(7, now)),
            vec![Action::Finish(Finish::MaxTokens)],
            "nothing emitted, nothing sent"
        );
        assert!(s.into_generated().is_empty());
        // With tokens to generate, a scored prompt generates as usual.
        let mut s = Sequence::new(SequenceSpec {
            score_prompt: true,
            ..spec(3, 2)
        });
        s.on(Event::Started { now });
        assert_eq!(s.on(tok(7, now))[0], Action::Emit(7));
    }

    #[test]
    fn client_gone_cancels_in_any_running_phase() {
        let now = t0();
        let mut s = Sequence::new(spec(3, 5));
        s.on(Event::Started { now });
        assert_eq!(
            s.on(Event::ClientGone),
            vec![Action::Finish(Finish::Cancelled)]
        );
        let mut s = Sequence::new(spec(3, 5));
        s.on(Event::Started { now });
        s.on(Event::Interrupted {
            error: "x".into(),
            now,
        });
        assert_eq!(
            s.on(Event::ClientGone),
            vec![Action::Finish(Finish::Cancelled)]
        );
    }

    /// Runs a sequence to the end with a failure injected after `fail_after` events of the
    /// undisturbed run; returns the emitted tokens and the actions of the replay's start.
    fn run_with_failure(fail_after: usize) -> (Vec<u32>, Vec<Batch>, Sequence) {
        let base = t0();
        let at = |ms: u64| base + Duration::from_millis(ms);
        let mut s = Sequence::new(spec(6, 4));
        let mut emitted = Vec::new();
        let mut replay = Vec::new();
        let mut clock = 0;
        let collect = |acts: Vec<Action>, emitted: &mut Vec<u32>| {
            for a in acts {
                if let Action::Emit(t) = a {
                    emitted.push(t);
                }
            }
        };
        collect(s.on(Event::Started { now: at(0) }), &mut emitted);
        let mut events = 0;
        // the model: token k (1-based) at position p is 100 + p
        while s.phase() != Phase::Done {
            clock += 10;
            if events == fail_after {
                let a = s.on(Event::Interrupted {
                    error: "stage 1 stopped".into(),
                    now: at(clock),
                });
                assert_eq!(a, vec![Action::AwaitRedeploy]);
                assert_eq!(s.phase(), Phase::Interrupted);
                // a late token from the broken pipeline is ignored
                assert!(s.on(tok(999, at(clock))).is_empty());
                clock += 1000;
                let a = s.on(Event::Started { now: at(clock) });
                replay = sends(&a);
            }
            events += 1;
            let next_pos = s.prefill_tokens().len();
            let a = s.on(tok(100 + next_pos as u32, at(clock)));
            collect(a, &mut emitted);
        }
        (emitted, replay, s)
    }

    #[test]
    fn failover_in_every_phase_gives_the_undisturbed_tokens() {
        let (undisturbed, _, _) = run_with_failure(usize::MAX);
        assert_eq!(undisturbed, vec![106, 107, 108, 109]);
        for fail_after in 0..4 {
            let (tokens, replay, s) = run_with_failure(fail_after);
            assert_eq!(tokens, undisturbed, "failure after {fail_after} tokens");
            assert_eq!(s.resumed(), 1);
            // the replay prefills the prompt and every token already emitted
            let replayed: Vec<u32> = replay.iter().flat_map(|b| b.tokens.clone()).collect();
            let mut want: Vec<u32> = (1..=6).collect();
            want.extend(&undisturbed[..fail_after]);
            assert_eq!(replayed, want);
            assert!(replay[0].first && replay.last().unwrap().sample);
            let stall = s.stalls()[0];
            assert_eq!(stall.redeploy, Duration::from_millis(1000));
            assert_eq!(stall.replay, Duration::ZERO);
        }
    }

    #[test]
    fn stall_phases_are_measured_from_the_last_token() {
        let base = t0();
        let at = |ms: u64| base + Duration::from_millis(ms);
        let mut s = Sequence::new(spec(2, 10));
        s.on(Event::Started { now: at(0) });
        s.on(tok(5, at(100)));
        s.on(Event::Interrupted {
            error: "x".into(),
            now: at(6100),
        });
        s.on(Event::Started { now: at(6600) });
        // a second failure during the replay counts from the first one
        assert_eq!(
            s.on(Event::Interrupted {
                error: "y".into(),
                now: at(7000)
            }),
            vec![Action::AwaitRedeploy]
        );
        s.on(Event::Started { now: at(8000) });
        let a = s.on(tok(6, at(8300)));
        let stall = Stall {
            detect: Duration::from_millis(6000),
            redeploy: Duration::from_millis(1900),
            replay: Duration::from_millis(300),
        };
        assert_eq!(a[0], Action::Resumed(stall));
        assert_eq!(s.stalls(), &[stall]);
        assert_eq!(stall.total(), Duration::from_millis(8200));
    }

    #[test]
    fn a_replay_that_does_not_resume_within_the_bound_fails_over_again() {
        let base = t0();
        let at = |s: u64| base + Duration::from_secs(s);
        let mut s = Sequence::new(spec(2, 10));
        s.on(Event::Started { now: at(0) });
        s.on(Event::Interrupted {
            error: "x".into(),
            now: at(1),
        });
        s.on(Event::Started { now: at(2) });
        assert!(s.on(Event::Tick { now: at(11) }).is_empty());
        assert_eq!(
            s.on(Event::Tick { now: at(13) }),
            vec![Action::AwaitRedeploy]
        );
    }

    #[test]
    fn the_awaited_position_follows_the_batches_in_flight() {
        let now = t0();
        let mut s = Sequence::new(spec(5, 3));
        assert_eq!(s.awaited_position(), None);
        s.on(Event::Started { now });
        assert_eq!(
            s.awaited_position(),
            Some(5),
            "the prompt's last chunk samples at 5"
        );
        s.on(tok(9, now));
        assert_eq!(s.awaited_position(), Some(6));
        s.on(Event::Interrupted {
            error: "x".into(),
            now,
        });
        assert_eq!(
            s.awaited_position(),
            None,
            "nothing in flight while interrupted"
        );
        s.on(Event::Started { now });
        assert_eq!(
            s.awaited_position(),
            Some(6),
            "the replay covers prompt + token 9"
        );
        s.on(tok(10, now));
        s.on(tok(11, now));
        assert_eq!(s.phase(), Phase::Done);
        assert_eq!(s.awaited_position(), None);
    }

    #[test]
    fn the_watchdog_fails_a_sequence_whose_pipeline_stops_answering() {
        let base = t0();
        let at = |ms: u64| base + Duration::from_millis(ms);
        let w = Watchdog {
            step: Duration::from_secs(2),
            per_prompt_token: Duration::from_millis(100),
        };
        assert_eq!(w.bound(1), Duration::from_secs(2));
        assert_eq!(w.bound(10), Duration::from_secs(3));
        let fails =
            |a: &[Action]| matches!(a, [Action::Fail(e)] if e.contains("stopped answering"));
        // A prompt of 10 tokens may take 3 s; each later token 2 s from the one before.
        let mut s = Sequence::new(SequenceSpec {
            watchdog: Some(w),
            ..spec(10, 5)
        });
        s.on(Event::Started { now: at(0) });
        assert!(
            s.on(Event::Tick { now: at(2_900) }).is_empty(),
            "prefill in time"
        );
        s.on(tok(7, at(2_950)));
        assert!(
            s.on(Event::Tick { now: at(4_900) }).is_empty(),
            "a step in time"
        );
        s.on(tok(8, at(4_950)));
        let a = s.on(Event::Tick { now: at(7_000) });
        assert!(fails(&a), "{a:?}");
        assert_eq!(s.phase(), Phase::Done);
        assert_eq!(s.generated(), [7, 8], "the tokens sent stay sent");
        // Every phase: a stuck prefill fails too, and a sequence waiting for a redeploy is
        // not the watchdog's (the resume bound covers the replay).
        let mut p = Sequence::new(SequenceSpec {
            watchdog: Some(w),
            ..spec(10, 5)
        });
        p.on(Event::Started { now: at(0) });
        assert!(fails(&p.on(Event::Tick { now: at(3_100) })));
        let mut r = Sequence::new(SequenceSpec {
            watchdog: Some(w),
            ..spec(10, 5)
        });
        r.on(Event::Started { now: at(0) });
        r.on(Event::Interrupted {
            error: "x".into(),
            now: at(1_000),
        });
        assert!(r.on(Event::Tick { now: at(60_000) }).is_empty());
        // Without a watchdog nothing fires.
        let mut n = Sequence::new(spec(10, 5));
        n.on(Event::Started { now: at(0) });
        assert!(n.on(Event::Tick { now: at(600_000) }).is_empty());
    }

    #[test]
    fn without_a_service_a_failure_ends_the_sequence() {
        let now = t0();
        let mut s = Sequence::new(SequenceSpec {
            resumable: false,
            ..spec(2, 10)
        });
        s.on(Event::Started { now });
        assert_eq!(
            s.on(Event::Interrupted {
                error: "stage 0 stopped".into(),
                now
            }),
            vec![Action::Fail("stage 0 stopped".into())]
        );
        let mut s = Sequence::new(spec(2, 10));
        s.on(Event::Started { now });
        assert_eq!(
            s.on(Event::Failed {
                error: "bad".into()
            }),
            vec![Action::Fail("bad".into())]
        );
    }
}
