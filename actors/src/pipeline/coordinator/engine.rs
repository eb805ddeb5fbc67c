//! A deployed pipeline, seen from the coordinator: admission, one driver per sequence, and the
//! per-stage metrics gathered from the timings each batch carries.
//!
//! A sequence's prompt goes to the first stage in batches; the last stage samples and sends the
//! token id to the coordinator's sink; the driver streams it out and feeds it to the first stage
//! as the next batch. Between stages, batches travel point-to-point. Each sequence has at most
//! one batch in flight, so the ring of bounded mailboxes can never deadlock while the number of
//! admitted sequences stays below the mailbox capacity.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use edgeray_model::chat::{ChatMessage, ChatTemplate};
use edgeray_model::sampling::SamplingParams;
use edgeray_model::tokenizer::Tokenizer;
use edgeray_runtime::actor::ActorRef;
use edgeray_runtime::cluster::Cluster;
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use super::driver::Slot;
use super::latency_window::LatencyWindow;
use super::sequence::{Batch, Finish};
use super::sink::{Routes, SinkActor, unregister_routes};
use crate::gateway::MetricsRegistry;
use crate::pipeline::protocol::{
    Forward, HopTiming, SeqId, SeqStart, SinkMsg, StageMsg, StageStats, TokenLogprobs, WireDtype,
    now_us,
};
use crate::pipeline::stage::StageActor;
use crate::placement::Placement;

/// Most prompt tokens per batch (bounds the hidden-state message size).
pub const PREFILL_CHUNK: usize = 512;

/// Prompt tokens per batch while other sequences generate: each stage run then holds one such
/// chunk next to the running sequences' decode steps. The model's tiled attention path (the one
/// a whole-prompt forward takes) needs at least this many rows per batch, so it is also the
/// smallest chunk that keeps the answer identical (see `sequence::prefill_chunks`).
pub const PREFILL_CHUNK_SHARED: usize = edgeray_model::arch::TILED_MIN_QUERIES;

/// Why a generation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PipelineError {
    /// The prompt has no tokens.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// The prompt does not leave room for one generated token, or for the tokens the request
    /// reserved.
    #[error("{}", too_long(*prompt, *reserved, *ctx))]
    PromptTooLong {
        /// Prompt tokens.
        prompt: usize,
        /// Generated tokens the request reserved room for (0: none).
        reserved: usize,
        /// Context length.
        ctx: usize,
    },
    /// Too many requests are running or queued.
    #[error("the pipeline is saturated ({active} running, {queued} queued)")]
    Overloaded {
        /// Sequences running.
        active: usize,
        /// Requests waiting.
        queued: usize,
    },
    /// The prompt could not be tokenized or templated.
    #[error("bad prompt: {0}")]
    BadPrompt(String),
    /// A stage failed the sequence.
    #[error("stage {stage} failed: {error}")]
    StageFailed {
        /// Stage index.
        stage: u16,
        /// Its error.
        error: String,
    },
    /// A stage (or its node) is gone: the pipeline must be redeployed.
    #[error("the pipeline is broken: {0}")]
    Broken(String),
    /// A message could not be delivered to the first stage.
    #[error("cannot reach the first stage: {0}")]
    Unreachable(String),
}

fn too_long(prompt: usize, reserved: usize, ctx: usize) -> String {
    if reserved == 0 {
        format!("the prompt has {prompt} tokens; the context holds {ctx}")
    } else {
        format!(
            "the prompt has {prompt} tokens and {reserved} more were asked for; the context \
             holds {ctx}"
        )
    }
}

/// How to generate.
#[derive(Debug, Clone, Default)]
pub struct GenOptions {
    /// Most tokens to generate (0 with `score_prompt`: only score the prompt).
    pub max_tokens: usize,
    /// Sampling settings (applied on the last stage).
    pub sampling: SamplingParams,
    /// Log-probabilities with each generated token: `Some(k)` adds the token's and the `k`
    /// most likely tokens' (at most
    /// [`crate::pipeline::protocol::MAX_TOP_LOGPROBS`]).
    pub logprobs: Option<u8>,
    /// Score the prompt's tokens too (see [`super::driver::TokenSink::send_prompt_logprobs`]);
    /// not supported when the last stage is a tensor-parallel group.
    pub score_prompt: bool,
    /// Embed the prompt instead of generating (see
    /// [`super::driver::TokenSink::send_embedding`]); `max_tokens` is then ignored.
    pub embed: bool,
    /// Structured output: the last stage samples only tokens that keep the answer a prefix
    /// of a document of this format.
    pub response_format: Option<edgeray_model::sampling::constraint::OutputFormat>,
}

/// Prompt tokens per batch while the prompt is scored: the last stage then computes every
/// position's logits (a `rows × vocabulary` matrix of floats, 64 MiB for gemma3 at 64 rows),
/// so the batches stay short — and never shorter than the tiled attention path needs, so the
/// answer stays that of one node.
pub const SCORE_CHUNK: usize = 2 * edgeray_model::arch::TILED_MIN_QUERIES;

/// One generated token, as it streams out.
#[derive(Debug, Clone, PartialEq)]
pub struct GenToken {
    /// Token id.
    pub id: u32,
    /// Its text (whole UTF-8 characters; may be empty while a character is incomplete).
    pub text: String,
    /// Gap between the two highest logits at this step.
    pub top2_gap: f32,
    /// Its log-probabilities, when asked for ([`GenOptions::logprobs`]).
    pub logprobs: Option<TokenLogprobs>,
}

/// A finished generation.
#[derive(Debug, Clone)]
pub struct GenSummary {
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Generated token ids (the end-of-generation token excluded).
    pub tokens: Vec<u32>,
    /// Generated text.
    pub text: String,
    /// Why it ended.
    pub finish: Finish,
    /// From submission to the first token.
    pub prompt_time: Duration,
    /// From the first token to the end.
    pub gen_time: Duration,
}

impl GenSummary {
    /// Generated tokens per second after the first.
    pub fn gen_tokens_per_s(&self) -> f64 {
        let n = self.tokens.len().saturating_sub(1) as f64;
        if self.gen_time.is_zero() {
            0.0
        } else {
            n / self.gen_time.as_secs_f64()
        }
    }
}

/// Accumulated timings of one stage, from the batches that came back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HopTotals {
    /// Batches (one sequence's positions each).
    pub batches: u64,
    /// Of those, batches the stage ran together with other sequences' batches.
    pub shared: u64,
    /// Transfer + queueing, µs.
    pub wait_us: u64,
    /// Compute, µs (a batch that ran with others is charged its share of the run).
    pub compute_us: u64,
    /// Handing on, µs.
    pub send_us: u64,
    /// Hidden-state bytes sent on.
    pub bytes_out: u64,
    /// Tokens (positions) the batches held.
    pub tokens: u64,
}

pub(crate) struct Deployed {
    pub cluster: Cluster,
    pub stages: Vec<ActorRef<StageActor>>,
    /// Per stage, the other members of its tensor-parallel group (empty: a plain stage).
    pub members: Vec<Vec<ActorRef<StageActor>>>,
    pub placement: Placement,
    pub sink: ActorRef<SinkActor>,
    pub sink_key: u64,
    pub routes: Arc<Routes>,
    pub tokenizer: Arc<Tokenizer>,
    pub chat: Arc<ChatTemplate>,
    pub model_id: String,
    pub ctx: usize,
    pub dtype: WireDtype,
    pub max_sequences: usize,
    pub max_queued: usize,
    pub shipped_bytes: u64,
    pub timings: super::deploy::DeployTimings,
}

struct Inner {
    d: Deployed,
    slots: Arc<Semaphore>,
    queued: AtomicUsize,
    broken: watch::Sender<Option<String>>,
    /// The stage whose stop broke the pipeline.
    broken_stage: Mutex<Option<usize>>,
    /// Set by [`Pipeline::shutdown`]: stages stopping then is expected.
    closing: std::sync::atomic::AtomicBool,
    hops: Mutex<Vec<HopTotals>>,
    metrics: Mutex<Option<PipelineMetrics>>,
}

/// A model deployed as a pipeline of stage actors. Cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

/// A slot to run one sequence (released when dropped).
pub struct Admission {
    _permit: OwnedSemaphorePermit,
}

impl Pipeline {
    pub(crate) fn new(d: Deployed) -> Self {
        let n = d.stages.len();
        let (broken, _) = watch::channel(None);
        let inner = Arc::new(Inner {
            slots: Arc::new(Semaphore::new(d.max_sequences)),
            queued: AtomicUsize::new(0),
            broken,
            broken_stage: Mutex::new(None),
            closing: std::sync::atomic::AtomicBool::new(false),
            hops: Mutex::new(vec![HopTotals::default(); n]),
            metrics: Mutex::new(None),
            d,
        });
        // Death watch: a stage that stops (or whose node goes down) breaks the pipeline, and
        // every running sequence fails at once instead of waiting forever.
        // A group member's loss is a loss of its stage.
        let watched =
            inner
                .d
                .stages
                .iter()
                .enumerate()
                .map(|(k, s)| (k, s, None))
                .chain(inner.d.members.iter().enumerate().flat_map(|(k, ms)| {
                    ms.iter().enumerate().map(move |(i, m)| (k, m, Some(i + 1)))
                }));
        for (k, s, member) in watched {
            let w = s.watch();
            let weak = Arc::downgrade(&inner);
            let node = match member {
                None => inner.d.placement.stages[k].node_name.clone(),
                Some(i) => inner.d.placement.stages[k]
                    .group
                    .get(i)
                    .map(|g| format!("{} (tensor-parallel member {i})", g.node_name))
                    .unwrap_or_default(),
            };
            tokio::spawn(async move {
                let reason = w.await;
                if let Some(inner) = weak.upgrade() {
                    let why = format!("stage {k} on {node} stopped ({reason:?})");
                    if inner.closing.load(Ordering::Acquire) {
                        inner
                            .broken
                            .send_replace(Some("the pipeline was shut down".into()));
                        return;
                    }
                    tracing::warn!("{why}");
                    inner.broken_stage.lock().get_or_insert(k);
                    inner.broken.send_replace(Some(why));
                }
            });
        }
        Pipeline { inner }
    }

    /// Where each stage runs.
    pub fn placement(&self) -> &Placement {
        &self.inner.d.placement
    }

    /// The model id (GGUF `general.name`, else the file stem).
    pub fn model_id(&self) -> &str {
        &self.inner.d.model_id
    }

    /// Positions per sequence.
    pub fn context_length(&self) -> usize {
        self.inner.d.ctx
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.inner.d.tokenizer
    }

    /// Element type of hidden states between stages.
    pub fn wire_dtype(&self) -> WireDtype {
        self.inner.d.dtype
    }

    /// Shard bytes sent to nodes while deploying (0 when every node had its shard cached).
    pub fn shipped_bytes(&self) -> u64 {
        self.inner.d.shipped_bytes
    }

    /// The cluster the pipeline runs on.
    pub fn cluster(&self) -> &Cluster {
        &self.inner.d.cluster
    }

    /// The stage actors, first to last (the leader of each tensor-parallel group).
    pub fn stage_ids(&self) -> Vec<edgeray_runtime::actor::ActorId> {
        self.inner.d.stages.iter().map(|s| s.id()).collect()
    }

    /// The token sink's actor id (on this node).
    pub fn sink_id(&self) -> edgeray_runtime::actor::ActorId {
        self.inner.d.sink.id()
    }

    /// Messages this pipeline's sink refused because they came from a node other than its
    /// stages'.
    pub fn sink_refusals(&self) -> u64 {
        super::sink::sink_refusals(&self.inner.d.cluster, self.inner.d.sink_key)
    }

    /// Where the time of this pipeline's deployment went.
    pub fn deploy_timings(&self) -> super::deploy::DeployTimings {
        self.inner.d.timings
    }

    /// The stage whose stop (or node loss) broke the pipeline, if one did.
    pub fn broken_stage(&self) -> Option<usize> {
        *self.inner.broken_stage.lock()
    }

    /// Why the pipeline is broken, if it is.
    pub fn broken(&self) -> Option<String> {
        self.inner.broken.borrow().clone()
    }

    /// A receiver that sees the reason once the pipeline breaks.
    pub(crate) fn broken_watch(&self) -> watch::Receiver<Option<String>> {
        self.inner.broken.subscribe()
    }

    /// Resolves once a stage has stopped or become unreachable (or the pipeline was shut
    /// down), with the reason.
    pub async fn wait_broken(&self) -> String {
        let mut rx = self.inner.broken.subscribe();
        match rx.wait_for(|b| b.is_some()).await {
            Ok(b) => b.clone().unwrap_or_default(),
            Err(_) => "the pipeline is gone".into(),
        }
    }

    /// Tokenizes a raw prompt (BOS added when the model wants it).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, PipelineError> {
        self.inner
            .d
            .tokenizer
            .encode(text, true)
            .map_err(|e| PipelineError::BadPrompt(e.to_string()))
    }

    /// Renders a conversation with the model's chat template and tokenizes it.
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, PipelineError> {
        self.encode_chat_with(messages, None, "")
    }

    /// [`Pipeline::encode_chat`] offering `tools` (OpenAI tool definitions; an error when the
    /// model's template has no tool format edgeray parses) and starting the assistant's reply
    /// with `reply_prefix`.
    pub fn encode_chat_with(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
        reply_prefix: &str,
    ) -> Result<Vec<u32>, PipelineError> {
        let mut text = self
            .inner
            .d
            .chat
            .render_with_tools(messages, tools, true)
            .map_err(|e| PipelineError::BadPrompt(e.to_string()))?;
        text.push_str(reply_prefix);
        self.encode(&text)
    }

    /// Sends this pipeline's metrics to `registry` (per-stage compute/wait/send time, bytes,
    /// tokens) from now on.
    pub fn export_metrics(&self, registry: &MetricsRegistry) {
        let m = PipelineMetrics::new(registry, self.inner.d.stages.len()).ok();
        if let Some(m) = &m {
            m.capacity.set(self.inner.d.max_sequences as f64);
        }
        *self.inner.metrics.lock() = m;
    }

    /// Checks a request against this pipeline: the one validation every entry point
    /// ([`Pipeline::generate`], the gateway backend, [`super::Service::generate`]) runs before
    /// admitting it. The prompt must be non-empty and leave room for one token, or for the
    /// `reserve` tokens the request insists on (an API request's explicit `max_tokens`);
    /// scoring or embedding a prompt needs a last stage that is not a tensor-parallel group.
    pub fn check(
        &self,
        prompt_len: usize,
        reserve: usize,
        opts: &GenOptions,
    ) -> Result<(), PipelineError> {
        let ctx = self.context_length();
        if prompt_len == 0 {
            return Err(PipelineError::EmptyPrompt);
        }
        if prompt_len >= ctx || prompt_len.saturating_add(reserve) > ctx {
            return Err(PipelineError::PromptTooLong {
                prompt: prompt_len,
                reserved: reserve,
                ctx,
            });
        }
        if (opts.score_prompt || opts.embed) && !self.can_score_prompts() {
            return Err(PipelineError::BadPrompt(
                "scoring or embedding a prompt is not supported when the last stage is a \
                 tensor-parallel group"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Requests admitted at most: sequence slots plus the bounded queue. Beyond it
    /// [`Pipeline::try_admit`] refuses; this is the cluster's one admission point.
    pub fn capacity(&self) -> usize {
        self.inner.d.max_sequences + self.inner.d.max_queued
    }

    /// Requests admitted now, running or waiting for a slot.
    pub fn admitted(&self) -> usize {
        self.inner.d.max_sequences - self.inner.slots.available_permits()
            + self.inner.queued.load(Ordering::Acquire)
    }

    /// The one admission point: takes a slot now, or says the pipeline is saturated when
    /// `max_queued` requests already wait for one. The future resolves when a slot frees up.
    pub fn try_admit(
        &self,
    ) -> Result<impl std::future::Future<Output = Admission> + Send + 'static, PipelineError> {
        let inner = self.inner.clone();
        if let Ok(p) = inner.slots.clone().try_acquire_owned() {
            if let Some(m) = &*inner.metrics.lock() {
                m.queue.observe(0.0);
            }
            return Ok(futures::future::Either::Left(std::future::ready(
                Admission { _permit: p },
            )));
        }
        let asked = Instant::now();
        let queued = inner.queued.fetch_add(1, Ordering::AcqRel);
        if queued >= inner.d.max_queued {
            inner.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(PipelineError::Overloaded {
                active: inner.d.max_sequences,
                queued,
            });
        }
        Ok(futures::future::Either::Right(async move {
            let p = inner
                .slots
                .clone()
                .acquire_owned()
                .await
                .expect("the admission semaphore is never closed");
            inner.queued.fetch_sub(1, Ordering::AcqRel);
            if let Some(m) = &*inner.metrics.lock() {
                m.queue.observe(asked.elapsed().as_secs_f64());
            }
            Admission { _permit: p }
        }))
    }

    /// Waits for a slot (no queue limit).
    pub async fn admit(&self) -> Admission {
        let p = self
            .inner
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the admission semaphore is never closed");
        Admission { _permit: p }
    }

    /// Generates from prompt token ids, waiting for a slot first; tokens stream into `out`
    /// (generation stops early when its receiver is dropped).
    pub async fn generate(
        &self,
        prompt: Vec<u32>,
        opts: &GenOptions,
        out: &mpsc::Sender<GenToken>,
    ) -> Result<GenSummary, PipelineError> {
        self.check(prompt.len(), 0, opts)?;
        let slot = self.admit().await;
        self.run_checked(prompt, opts, out, Slot::Owned(slot)).await
    }

    /// Like [`Pipeline::generate`] with a slot already taken (held by the caller).
    pub async fn generate_admitted(
        &self,
        slot: &Admission,
        prompt: Vec<u32>,
        opts: &GenOptions,
        out: &mpsc::Sender<GenToken>,
    ) -> Result<GenSummary, PipelineError> {
        let _ = slot;
        self.check(prompt.len(), 0, opts)?;
        self.run_checked(prompt, opts, out, Slot::Held).await
    }

    async fn run_checked(
        &self,
        prompt: Vec<u32>,
        opts: &GenOptions,
        out: &mpsc::Sender<GenToken>,
        slot: Slot,
    ) -> Result<GenSummary, PipelineError> {
        super::driver::drive(self.clone(), slot, None, prompt, opts, out)
            .await
            .map(|o| o.summary)
    }

    /// Starts sequence `seq` on this pipeline: its tokens will arrive on the returned
    /// channel until the returned guard releases it on every stage.
    pub(crate) fn open_sequence(&self) -> (SeqId, mpsc::Receiver<SinkMsg>, SeqGuard) {
        let d = &self.inner.d;
        let (tx, rx) = mpsc::channel::<SinkMsg>(4);
        // Unguessable: a member that is not this sequence's last stage cannot address its
        // tokens at the sink (the sink drops messages of sequences it does not route).
        let seq = loop {
            let seq: SeqId = rand::random();
            if seq != 0
                && let dashmap::Entry::Vacant(v) = d.routes.entry(seq)
            {
                v.insert(tx);
                break seq;
            }
        };
        let guard = SeqGuard {
            seq,
            routes: d.routes.clone(),
            first: d.stages[0].clone(),
            released: false,
        };
        (seq, rx, guard)
    }

    /// Sends one batch of sequence `seq` to the first stage (`start` goes with its first).
    pub(crate) async fn send_batch(
        &self,
        seq: SeqId,
        batch: Batch,
        start: &SeqStart,
    ) -> Result<(), PipelineError> {
        let f = Forward {
            seq,
            pos: batch.pos as u32,
            n: batch.tokens.len() as u32,
            tokens: batch.tokens,
            dtype: self.inner.d.dtype,
            start: batch.first.then(|| start.clone()),
            sample: batch.sample,
            sent_at_us: now_us(),
            hops: Vec::new(),
        };
        self.inner.d.stages[0]
            .tell(StageMsg::Forward(f))
            .await
            .map_err(|e| PipelineError::Unreachable(e.to_string()))
    }

    /// Whether the last stage can score prompts (it is not a tensor-parallel group).
    pub fn can_score_prompts(&self) -> bool {
        self.inner.d.members.last().is_none_or(|m| m.is_empty())
    }

    /// Whether `token` ends a generation.
    pub(crate) fn is_eog(&self, token: u32) -> bool {
        self.inner.d.tokenizer.is_eog(token)
    }

    /// Counts a sequence as active in the metrics while the returned guard lives.
    pub(crate) fn active(&self) -> ActiveGuard {
        if let Some(m) = &*self.inner.metrics.lock() {
            m.active.add(1.0);
        }
        ActiveGuard(self.inner.clone())
    }

    /// Sequences holding a slot now (being generated or about to be).
    pub(crate) fn sequences_running(&self) -> usize {
        self.inner
            .d
            .max_sequences
            .saturating_sub(self.inner.slots.available_permits())
    }

    /// Counts one generated token in the metrics; `since_previous`: the time since the same
    /// sequence's previous token (none for its first).
    pub(crate) fn count_token(&self, since_previous: Option<Duration>) {
        if let Some(m) = &mut *self.inner.metrics.lock() {
            m.tokens.inc();
            if let Some(d) = since_previous {
                m.gap(d);
            }
        }
    }

    /// Adds a batch's per-stage timings to the totals and the metrics.
    pub(crate) fn record_hops(&self, hops: &[HopTiming]) {
        let mut totals = self.inner.hops.lock();
        let metrics = self.inner.metrics.lock();
        for h in hops {
            if let Some(t) = totals.get_mut(h.stage as usize) {
                t.batches += 1;
                t.shared += u64::from(h.batch_seqs > 1);
                t.wait_us += h.wait_us;
                t.compute_us += h.compute_us;
                t.send_us += h.send_us;
                t.bytes_out += h.bytes_out;
                t.tokens += u64::from(h.tokens);
            }
            if let Some(m) = &*metrics {
                m.record(h);
            }
        }
    }

    /// Timings per stage accumulated from the batches that came back.
    pub fn hop_totals(&self) -> Vec<HopTotals> {
        self.inner.hops.lock().clone()
    }

    /// Asks every stage for its counters.
    pub async fn stage_stats(&self) -> Vec<Result<StageStats, String>> {
        let mut out = Vec::new();
        for s in &self.inner.d.stages {
            out.push(match s.ask(StageMsg::Stats, Duration::from_secs(5)).await {
                Ok(env) => match env.msg {
                    crate::pipeline::protocol::StageReply::Stats(st) => Ok(st),
                    other => Err(format!("unexpected reply {other:?}")),
                },
                Err(e) => Err(e.to_string()),
            });
        }
        out
    }

    /// Counters of every stage actor, group members included (stage order, then member
    /// order; an unreachable one counts as empty).
    pub async fn member_stats(&self) -> Vec<StageStats> {
        let mut out = Vec::new();
        for (k, s) in self.inner.d.stages.iter().enumerate() {
            let others = self.inner.d.members.get(k).into_iter().flatten();
            for a in std::iter::once(s).chain(others) {
                out.push(match a.ask(StageMsg::Stats, Duration::from_secs(5)).await {
                    Ok(env) => match env.msg {
                        crate::pipeline::protocol::StageReply::Stats(st) => st,
                        _ => StageStats::default(),
                    },
                    Err(_) => StageStats::default(),
                });
            }
        }
        out
    }

    /// Stops the stage actors and the sink.
    pub async fn shutdown(&self) {
        self.inner.closing.store(true, Ordering::Release);
        // At once: a stage on a lost node must not delay the others.
        futures::future::join_all(
            self.inner
                .d
                .stages
                .iter()
                .chain(self.inner.d.members.iter().flatten())
                .map(|s| s.stop()),
        )
        .await;
        self.inner.d.sink.stop().await;
        unregister_routes(&self.inner.d.cluster, self.inner.d.sink_key);
    }
}

/// Forgets the sequence's route and releases its caches on every stage when the driver ends.
pub(crate) struct SeqGuard {
    seq: SeqId,
    routes: Arc<Routes>,
    first: ActorRef<StageActor>,
    released: bool,
}

impl SeqGuard {
    /// Releases the sequence on every stage and waits until the release is on its way (the
    /// stages forget it before its slot goes to the next one: same FIFO stream as that one's
    /// first batch, so no stage ever holds more than its maximum).
    pub(crate) async fn release(&mut self) {
        self.released = true;
        self.routes.remove(&self.seq);
        let _ = self.first.tell(StageMsg::Release { seq: self.seq }).await;
    }
}

impl Drop for SeqGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.routes.remove(&self.seq);
        let first = self.first.clone();
        let seq = self.seq;
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = first.tell(StageMsg::Release { seq }).await;
            });
        }
    }
}

/// Counts a sequence as active while it lives.
pub(crate) struct ActiveGuard(Arc<Inner>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if let Some(m) = &*self.0.metrics.lock() {
            m.active.add(-1.0);
        }
    }
}

/// Prometheus series of a pipeline.
struct PipelineMetrics {
    tokens: crate::gateway::Counter,
    active: crate::gateway::Gauge,
    per_stage: Vec<StageSeries>,
    /// Time between two tokens of one sequence.
    between_tokens: crate::gateway::Histogram,
    /// p50 / p99 of the latest gaps between tokens.
    between_tokens_p50: crate::gateway::Gauge,
    between_tokens_p99: crate::gateway::Gauge,
    recent_gaps: LatencyWindow,
    /// Time a request waited for a sequence slot.
    queue: crate::gateway::Histogram,
    /// Sequences the KV budget lets run at once.
    capacity: crate::gateway::Gauge,
}

/// Upper bounds of the time-between-tokens and queue histograms, seconds.
const GAP_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12,
];

/// Upper bounds of the sequences-per-stage-run histogram.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0];

/// Gaps the p50/p99 series are computed over.
const RECENT_GAPS: usize = 2048;

struct StageSeries {
    batch_sequences: crate::gateway::Histogram,
    batches: crate::gateway::Counter,
    compute_us: crate::gateway::Counter,
    wait_us: crate::gateway::Counter,
    send_us: crate::gateway::Counter,
    bytes: crate::gateway::Counter,
}

impl PipelineMetrics {
    fn new(r: &MetricsRegistry, stages: usize) -> Result<Self, crate::gateway::MetricsError> {
        let mut per_stage = Vec::new();
        for k in 0..stages {
            let label = k.to_string();
            let l = [("stage", label.as_str())];
            per_stage.push(StageSeries {
                batch_sequences: r.histogram(
                    "edgeray_stage_batch_sequences",
                    "Sequences in the stage run that computed each sequence's batch (1: alone).",
                    &l,
                    BATCH_BUCKETS,
                )?,
                batches: r.counter(
                    "edgeray_stage_batches_total",
                    "Batches run by each pipeline stage.",
                    &l,
                )?,
                compute_us: r.counter(
                    "edgeray_stage_compute_microseconds_total",
                    "Time each stage spent computing its layers.",
                    &l,
                )?,
                wait_us: r.counter(
                    "edgeray_stage_queue_microseconds_total",
                    "Transfer plus mailbox time before each stage started a batch.",
                    &l,
                )?,
                send_us: r.counter(
                    "edgeray_stage_transfer_microseconds_total",
                    "Time each stage spent handing its output on (waits under back-pressure).",
                    &l,
                )?,
                bytes: r.counter(
                    "edgeray_stage_bytes_out_total",
                    "Hidden-state bytes each stage sent to the next.",
                    &l,
                )?,
            });
        }
        Ok(PipelineMetrics {
            tokens: r.counter(
                "edgeray_pipeline_tokens_total",
                "Tokens generated by the pipeline.",
                &[],
            )?,
            active: r.gauge(
                "edgeray_pipeline_sequences_active",
                "Sequences being generated now.",
                &[],
            )?,
            per_stage,
            between_tokens: r.histogram(
                "edgeray_time_between_tokens_seconds",
                "Time between two consecutive tokens of one sequence.",
                &[],
                GAP_BUCKETS,
            )?,
            between_tokens_p50: r.gauge(
                "edgeray_time_between_tokens_p50_seconds",
                "Median time between two tokens of a sequence, over the latest 2048 gaps.",
                &[],
            )?,
            between_tokens_p99: r.gauge(
                "edgeray_time_between_tokens_p99_seconds",
                "99th percentile of the time between two tokens of a sequence, latest 2048 gaps.",
                &[],
            )?,
            recent_gaps: LatencyWindow::new(RECENT_GAPS),
            queue: r.histogram(
                "edgeray_pipeline_queue_seconds",
                "Time a request waited for a sequence slot before it started.",
                &[],
                GAP_BUCKETS,
            )?,
            capacity: r.gauge(
                "edgeray_pipeline_sequence_slots",
                "Sequences generated at once: the asked maximum, bounded by the nodes' KV-cache memory.",
                &[],
            )?,
        })
    }

    fn gap(&mut self, d: Duration) {
        self.between_tokens.observe(d.as_secs_f64());
        self.recent_gaps.push(d);
        // Sorting the window on every token would cost more than the token's bookkeeping.
        if (self.recent_gaps.len() < 64 || self.between_tokens.count().is_multiple_of(16))
            && let Some(q) = self.recent_gaps.quantiles(&[0.5, 0.99])
        {
            self.between_tokens_p50.set(q[0].as_secs_f64());
            self.between_tokens_p99.set(q[1].as_secs_f64());
        }
    }

    fn record(&self, h: &HopTiming) {
        if let Some(s) = self.per_stage.get(h.stage as usize) {
            s.batch_sequences.observe(f64::from(h.batch_seqs.max(1)));
            s.batches.inc();
            s.compute_us.add(h.compute_us);
            s.wait_us.add(h.wait_us);
            s.send_us.add(h.send_us);
            s.bytes.add(h.bytes_out);
        }
    }
}
