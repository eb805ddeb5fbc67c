//! The stage actor: a contiguous range of transformer blocks loaded from a shard in the node's
//! cache, one KV cache per sequence, wired point-to-point to the next stage.
//!
//! A batch arrives as token ids (first stage) or hidden states in the raw tail (later stages).
//! The actor's handler only moves it into a bounded local queue; a worker task owned by the
//! actor takes every batch already waiting there when it becomes free (never waiting on
//! purpose), runs them as one multi-sequence forward on a blocking thread (see
//! [`super::batching`] for which may run together), and hands each sequence's result on with
//! `tell` (which waits while that stage's mailbox is full). While the queue is full the handler
//! waits, holding its mailbox slot, so back-pressure still reaches the senders. The last stage
//! applies the final norm, the head and the sampler, and sends only the token id to the sink.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use edgeray_model::arch::{
    BatchItem, KvCache, LogitsFor, ModelConfig, Stage, StageInput, StageOutput, StageSpec,
    hidden_from_vec, hidden_to_vec,
};
use edgeray_model::quant::KernelPool;
use edgeray_model::sampling::{Sampler, top2_gap};
use edgeray_runtime::actor::{ActorCtx, ActorError, ActorRef, Envelope, RemoteActor};

use super::batching::{Arrivals, BatchPlan, compute_shares, gather_budget};
use super::claims::{StageClaim, check_claim};
use super::group::{self, Group};
use super::logprobs;
use super::senders::{Senders, StageMsgKind};
use super::shard_dir::open_shard_store;
use super::shard_store::ShardLease;
use crate::pipeline::coordinator::SinkActor;
use crate::pipeline::protocol::hidden::{WireDtype, decode_hidden, encode_hidden};
use crate::pipeline::protocol::{
    Forward, HopTiming, MAX_TOP_LOGPROBS, SeqId, SeqStart, SinkMsg, StageArgs, StageMsg,
    StageReply, StageStats, TokenLogprobs, TpRun, now_us,
};

/// What became of a queued job offered to the run being gathered.
enum Taken {
    /// It is in the run.
    Joined,
    /// Its sequence is in the run already: it waits for the next one; the scan goes on.
    Later(Job),
    /// It cannot join (the run is full, or it is not a batch): it and everything after it
    /// wait for the next run.
    Stop(Job),
}

/// One sequence's state on one stage.
struct SeqState {
    cache: KvCache,
    /// Last stage only.
    sampler: Option<Sampler>,
    /// Last stage only: what the sequence asked for besides the token ids.
    scoring: Scoring,
    /// Last stage only: structured output ([`SeqStart::constraint`]).
    constraint: Option<edgeray_model::sampling::constraint::Constraint>,
}

/// The log-probabilities a sequence asked the last stage for ([`SeqStart::logprobs`],
/// [`SeqStart::score_prompt`]).
#[derive(Debug, Clone, Default)]
struct Scoring {
    /// With each sampled token, its log-probability and this many alternatives.
    logprobs: Option<u8>,
    /// The prompt whose tokens are scored (empty: none).
    prompt: Vec<u32>,
    /// Embedding: the sum of the final-normed hidden states so far and their count.
    embed: Option<(Vec<f64>, usize)>,
}

impl Scoring {
    fn of(start: &SeqStart) -> Result<Scoring, String> {
        if start.logprobs.is_some_and(|k| k > MAX_TOP_LOGPROBS) {
            return Err(format!(
                "at most {MAX_TOP_LOGPROBS} alternative log-probabilities per token"
            ));
        }
        Ok(Scoring {
            logprobs: start.logprobs,
            prompt: if start.score_prompt {
                start.prompt.clone()
            } else {
                Vec::new()
            },
            embed: start.embed.then(|| (Vec::new(), 0)),
        })
    }

    /// Alternatives per scored token.
    fn top(&self) -> usize {
        self.logprobs.unwrap_or(0) as usize
    }

    /// Which positions of a batch at `pos` need logits: all of them while the batch holds
    /// prompt positions to score, else the last.
    fn logits_for(&self, pos: u32) -> LogitsFor {
        if self.embed.is_some() {
            LogitsFor::Normed
        } else if (pos as usize) + 1 < self.prompt.len() {
            LogitsFor::All
        } else {
            LogitsFor::Last
        }
    }
}

/// Work for the stage's worker, in arrival order.
enum Job {
    /// A sequence's batch, and when it reached this stage (the handler's time, so waiting in
    /// the queue does not count as travel: see [`Arrivals`]).
    Forward(Forward, bytes::Bytes, Instant),
    Release(SeqId),
    /// Tensor-parallel member: the leader's batch.
    TpRun(TpRun, bytes::Bytes),
}

/// What a stage computes with: the whole stage, or one member's slice of a tensor-parallel
/// group.
#[derive(Clone)]
enum Engine {
    Whole(Arc<Stage>),
    Member(Arc<Group>),
}

impl Engine {
    fn new_cache(&self, ctx: usize) -> KvCache {
        match self {
            Engine::Whole(s) => s.new_cache(ctx),
            Engine::Member(g) => g.stage.new_cache(ctx),
        }
    }

    fn d_model(&self) -> usize {
        match self {
            Engine::Whole(s) => s.config.d_model,
            Engine::Member(g) => g.stage.config.d_model,
        }
    }

    fn weight_bytes(&self) -> usize {
        match self {
            Engine::Whole(s) => s.weight_bytes(),
            Engine::Member(g) => g.stage.weight_bytes(),
        }
    }
}

/// Kernel threads a stage may use: what it was asked for, never more than the CPUs this
/// process may run on (its affinity mask and cgroup CPU quota, which
/// [`std::thread::available_parallelism`] respects on Linux).
pub fn capped_threads(asked: usize) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    asked.clamp(1, cpus)
}

/// A pipeline stage (actor kind `edgeray.stage`).
pub struct StageActor {
    /// The hosting node (its status shows this stage's role while it runs).
    node: Option<edgeray_runtime::node::NodeHandle>,
    ctx: ActorCtx,
    label: String,
    jobs: mpsc::Sender<Job>,
    worker: tokio::task::JoinHandle<()>,
    stats: Arc<Mutex<StageStats>>,
    /// Set when the stage stops (its coordinator watch then has nothing to do).
    done: Arc<std::sync::atomic::AtomicBool>,
    /// Tensor-parallel member: roster and received pieces.
    group: Option<Arc<Group>>,
    /// Holds the shard against eviction from the node's cache while the stage runs.
    _shard: ShardLease,
    /// The nodes this stage takes messages from (its pipeline's).
    senders: Senders,
    /// This stage's node (a message sent from this process counts as sent by it).
    here: edgeray_runtime::identity::NodeId,
}

/// The part of a stage that computes: owns the sequences' caches and runs the queued batches.
struct Worker {
    stage: Engine,
    /// Tensor-parallel leader: runs handed to the other members so far.
    runs: u64,
    args: StageArgs,
    seqs: HashMap<SeqId, SeqState>,
    next: Option<ActorRef<StageActor>>,
    sink: ActorRef<SinkActor>,
    stats: Arc<Mutex<StageStats>>,
    jobs: mpsc::Receiver<Job>,
    /// A job taken from the queue that could not join the current run.
    held: std::collections::VecDeque<Job>,
    /// When the sequences left and how long they took to come back (see [`Arrivals`]).
    arrivals: Arrivals,
    /// Compute time of the latest run.
    last_run: std::time::Duration,
    /// Last stage: the vocabulary for structured output (built on first use).
    vocab: super::constraint::VocabSlot,
}

impl RemoteActor for StageActor {
    type Args = StageArgs;
    type Msg = StageMsg;
    type Reply = StageReply;

    fn kind() -> &'static str {
        "edgeray.stage"
    }

    fn create(args: StageArgs, ctx: ActorCtx) -> Result<Self, ActorError> {
        let cluster = ctx
            .cluster()
            .ok_or_else(|| ActorError::new("a stage needs a cluster"))?;
        // A stage serves the coordinator that deployed it: the node holding its sink.
        let coordinator = args.sink.node;
        if let Some(by) = ctx.spawned_by()
            && by != coordinator
        {
            return Err(ActorError::new(format!(
                "stage refused: spawned by node {} for a sink on node {} (a stage is deployed by its coordinator)",
                by.short(),
                coordinator.short()
            )));
        }
        let senders = Senders {
            coordinator,
            upstream: args.upstream.unwrap_or(coordinator),
            group: Vec::new(),
        };
        let store = open_shard_store(&cluster).map_err(|e| ActorError::new(e.to_string()))?;
        // Checked against its sidecar before it is mapped: a damaged shard is discarded here
        // and this start fails, so the coordinator ships it again.
        let t = Instant::now();
        let lease = store
            .open_for_stage(&args.shard)
            .map_err(|e| ActorError::new(e.to_string()))?;
        let verify_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let path = lease.path();
        let file = match lease.open_gguf() {
            Ok(f) => f,
            // Unusable (e.g. sealed under a rotated secret): discarded, so that the next
            // deployment ships it again.
            Err(e) => {
                drop(lease);
                return Err(ActorError::new(
                    store.discard_unusable(&args.shard, &e).to_string(),
                ));
            }
        };
        // What the arguments claim from this board, before anything is loaded.
        let config = ModelConfig::from_gguf(&file)
            .map_err(|e| ActorError::new(format!("shard {}: {e}", path.display())))?;
        let members = args.tp.as_ref().map_or(1, |t| t.speeds.len().max(1)) as u64;
        let claim = StageClaim {
            ctx: args.ctx,
            sequences: args.max_sequences,
            kv_bytes_per_position: config.kv_bytes_per_token_per_layer() as u64
                * args.layers.len() as u64
                / members,
        };
        let budget = cluster
            .node()
            .and_then(|n| n.member(n.node_id()))
            .and_then(|m| m.resources)
            .map(|r| r.memory_budget);
        check_claim(claim, config.context_length, budget)
            .map_err(|e| ActorError::new(format!("stage refused: {e}")))?;
        let threads = capped_threads(args.threads);
        if threads < args.threads {
            tracing::info!(
                asked = args.threads,
                threads,
                "kernel threads capped to the CPUs this process may run on"
            );
        }
        let pool = Arc::new(KernelPool::new(threads).map_err(|e| ActorError::new(e.to_string()))?);
        let spec = StageSpec::for_range(args.layers.clone(), args.n_layers);
        let device = burn::tensor::Device::flex();
        let stage = match &args.tp {
            None => Engine::Whole(Arc::new(
                Stage::load(&file, &spec, &device, &pool).map_err(|e| {
                    ActorError::new(format!("cannot load layers {:?}: {e}", args.layers))
                })?,
            )),
            Some(tp) => {
                use edgeray_model::arch::tensor_parallel::{MemberStage, SliceOptions, plan_stage};
                let plan = plan_stage(&file, &spec, &tp.speeds, SliceOptions::default())
                    .map_err(|e| ActorError::new(format!("no tensor-parallel plan: {e}")))?;
                let m = MemberStage::load(&file, &spec, &plan, tp.member, &device, &pool).map_err(
                    |e| {
                        ActorError::new(format!(
                            "cannot load member {}'s slice of layers {:?}: {e}",
                            tp.member, args.layers
                        ))
                    },
                )?;
                Engine::Member(Arc::new(Group {
                    stage: Arc::new(m),
                    members: tp.speeds.len(),
                    roster: parking_lot::Mutex::new(Vec::new()),
                    inbox: group::Inbox::default(),
                    links: super::tp_link::Links::register(&cluster, ctx.local_id()),
                }))
            }
        };
        tracing::info!(
            stage = args.index,
            layers = ?args.layers,
            tp_member = ?args.tp.as_ref().map(|t| (t.member, t.speeds.len())),
            threads,
            weight_mib = stage.weight_bytes() >> 20,
            verify_ms = format!("{verify_ms:.1}"),
            load_ms = format!("{:.1}", t.elapsed().as_secs_f64() * 1e3),
            "stage loaded"
        );
        let group = match &stage {
            Engine::Member(g) => Some(g.clone()),
            Engine::Whole(_) => None,
        };
        let node = cluster.node().cloned();
        if let Some(n) = &node {
            n.add_role(args.label.clone());
        }
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        release_with_coordinator(&cluster, &ctx, args.sink, done.clone());
        let stats = Arc::new(Mutex::new(StageStats {
            index: args.index,
            layers: args.layers.clone(),
            weight_bytes: stage.weight_bytes() as u64,
            ..Default::default()
        }));
        // Room for one batch of every sequence the stage may hold, so they can run together.
        // A group member's handler must never wait on this queue (pieces of the running batch
        // arrive through the same mailbox), so its queue has room for far more than the
        // coordinator ever has in flight.
        let room = if group.is_some() {
            args.max_sequences.max(1) * 8 + 16
        } else {
            args.max_sequences.max(1)
        };
        let (tx, rx) = mpsc::channel(room);
        let label = args.label.clone();
        let w = Worker {
            stage,
            runs: 0,
            next: args.next.map(|id| cluster.actor_ref(id)),
            sink: cluster.actor_ref(args.sink),
            args,
            seqs: HashMap::new(),
            stats: stats.clone(),
            jobs: rx,
            held: std::collections::VecDeque::new(),
            arrivals: Arrivals::new(),
            last_run: std::time::Duration::ZERO,
            vocab: super::constraint::VocabSlot::new(lease.opener()),
        };
        // On the actor's own thread (create runs there), next to the handler.
        let worker = tokio::task::spawn_local(w.run());
        Ok(StageActor {
            node,
            ctx,
            label,
            jobs: tx,
            worker,
            stats,
            done,
            group,
            _shard: lease,
            senders,
            here: cluster.node_id(),
        })
    }

    async fn handle(
        &mut self,
        msg: Envelope<StageMsg>,
    ) -> Result<Envelope<StageReply>, ActorError> {
        let from = msg.sent_by(self.here);
        if let Err(refused) = self.senders.check(StageMsgKind::of(&msg.msg), from) {
            tracing::warn!(stage = %self.label, "{refused}");
            self.stats.lock().refused += 1;
            return Err(ActorError::new(refused.to_string()));
        }
        let (msg, tail) = msg.into_parts();
        let job = match msg {
            StageMsg::Forward(f) => Job::Forward(f, tail, Instant::now()),
            StageMsg::Release { seq } => Job::Release(seq),
            StageMsg::Stats => {
                return Ok(Envelope::new(StageReply::Stats(self.stats.lock().clone())));
            }
            StageMsg::TpPiece(piece) => {
                if let Some(g) = &self.group {
                    g.inbox.push(piece, tail);
                }
                return Ok(Envelope::new(StageReply::Ok));
            }
            StageMsg::TpRoster(ids) => {
                let Some(g) = &self.group else {
                    return Err(ActorError::new("not a tensor-parallel group member"));
                };
                let cluster = self
                    .ctx
                    .cluster()
                    .ok_or_else(|| ActorError::new("a stage needs a cluster"))?;
                if ids.len() != g.members {
                    return Err(ActorError::new(format!(
                        "a roster of {} for a group of {}",
                        ids.len(),
                        g.members
                    )));
                }
                self.senders.group = ids.iter().map(|id| id.node).collect();
                if let Some(l) = &g.links {
                    l.set_roster(self.senders.group.clone());
                }
                *g.roster.lock() = ids.into_iter().map(|id| cluster.actor_ref(id)).collect();
                return Ok(Envelope::new(StageReply::Ok));
            }
            StageMsg::TpRun(r) => Job::TpRun(r, tail),
        };
        // Waits while the local queue is full (the mailbox slot stays taken meanwhile).
        if self.jobs.send(job).await.is_err() {
            // The worker is gone (it panicked): stop, so the pipeline sees the stage die.
            self.ctx.stop();
            return Err(ActorError::new("the stage's worker has stopped"));
        }
        Ok(Envelope::new(StageReply::Ok))
    }

    fn stopped(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Release);
        if let Some(g) = &self.group {
            g.inbox.close();
            if let Some(l) = &g.links {
                l.close();
            }
        }
        self.worker.abort();
        if let Some(n) = &self.node {
            n.remove_role(&self.label);
        }
    }
}

/// A stage serves one coordinator: when that coordinator's sink stops or its node is lost
/// (idle timeout, goodbye), the stage stops too, releasing its sequences' caches and its
/// memory; the node keeps serving the stages of other coordinators.
fn release_with_coordinator(
    cluster: &edgeray_runtime::cluster::Cluster,
    ctx: &ActorCtx,
    sink: edgeray_runtime::actor::ActorId,
    done: Arc<std::sync::atomic::AtomicBool>,
) {
    let (Some(node), Ok(rt)) = (ctx.node(), tokio::runtime::Handle::try_current()) else {
        return;
    };
    let me = edgeray_runtime::actor::ActorId {
        node,
        local: ctx.local_id(),
    };
    let watch = cluster.watch(sink);
    let weak = cluster.downgrade();
    rt.spawn(async move {
        let reason = watch.await;
        if done.load(std::sync::atomic::Ordering::Acquire) {
            return; // stopped with its pipeline
        }
        if let Some(c) = weak.upgrade() {
            tracing::info!(
                ?reason,
                "the coordinator of this stage is gone; stopping the stage"
            );
            c.actor_ref::<StageActor>(me).stop().await;
        }
    });
}

/// One sequence's batch, checked and ready to compute.
struct Ready {
    f: Forward,
    state: SeqState,
    input: Input,
}

impl Worker {
    /// Takes the queued jobs in order until the actor's queue closes.
    async fn run(mut self) {
        loop {
            let job = match self.held.pop_front() {
                Some(j) => j,
                None => match self.jobs.recv().await {
                    Some(j) => j,
                    None => return,
                },
            };
            match job {
                Job::Release(seq) => {
                    self.seqs.remove(&seq);
                    self.arrivals.forget(seq);
                    self.sync_sequences();
                    self.release_members(seq).await;
                    self.release_downstream(seq).await;
                }
                Job::TpRun(r, tail) => self.member_run(r, tail).await,
                Job::Forward(f, tail, at) => {
                    let max = self.args.max_sequences;
                    let mut plan = BatchPlan::new();
                    plan.try_add(f.seq, f.n as usize, max);
                    self.arrivals.arrived(f.seq, at);
                    let mut batch = vec![(f, tail)];
                    // Jobs taken earlier, then everything already queued, that may join. A
                    // later batch of a sequence already in the run (the next chunk of a long
                    // prompt) waits for the next run without stopping the scan, so the other
                    // sequences' decode steps behind it still join this one.
                    let mut later = std::collections::VecDeque::new();
                    let mut stopped = false;
                    while let Some(j) = self.held.pop_front().or_else(|| self.jobs.try_recv().ok())
                    {
                        match self.take_into(j, &mut plan, &mut batch) {
                            Taken::Joined => {}
                            Taken::Later(j) => later.push_back(j),
                            Taken::Stop(j) => {
                                later.push_back(j);
                                stopped = true;
                                break;
                            }
                        }
                    }
                    // Then the sequences due back within a fraction of a run.
                    while !stopped {
                        let budget = gather_budget(self.last_run);
                        let Some(until) =
                            self.arrivals
                                .gather_until(Instant::now(), &plan, max, budget)
                        else {
                            break;
                        };
                        let until = tokio::time::Instant::from_std(until);
                        match tokio::time::timeout_at(until, self.jobs.recv()).await {
                            Ok(Some(j)) => match self.take_into(j, &mut plan, &mut batch) {
                                Taken::Joined => {}
                                Taken::Later(j) => later.push_back(j),
                                Taken::Stop(j) => {
                                    later.push_back(j);
                                    stopped = true;
                                }
                            },
                            Ok(None) | Err(_) => break,
                        }
                    }
                    // What waits keeps its order, ahead of anything held still.
                    while let Some(j) = later.pop_back() {
                        self.held.push_front(j);
                    }
                    match self.stage.clone() {
                        Engine::Whole(stage) => self.run_batches(&stage, batch).await,
                        Engine::Member(g) => self.run_group(&g, batch).await,
                    }
                }
            }
        }
    }

    /// Adds a queued job to the run being gathered if it may join (see [`BatchPlan`]).
    fn take_into(
        &mut self,
        job: Job,
        plan: &mut BatchPlan,
        batch: &mut Vec<(Forward, bytes::Bytes)>,
    ) -> Taken {
        match job {
            Job::Forward(f, tail, at)
                if plan.try_add(f.seq, f.n as usize, self.args.max_sequences) =>
            {
                self.arrivals.arrived(f.seq, at);
                batch.push((f, tail));
                Taken::Joined
            }
            Job::Forward(f, tail, at) if plan.contains(f.seq) => {
                Taken::Later(Job::Forward(f, tail, at))
            }
            other => Taken::Stop(other),
        }
    }

    fn sync_sequences(&self) {
        self.stats.lock().sequences = self.seqs.len();
    }

    async fn release_downstream(&self, seq: SeqId) {
        if let Some(next) = &self.next {
            let _ = next.tell(StageMsg::Release { seq }).await;
        }
    }

    /// Ends a sequence here and downstream after a failed batch, and tells the sink.
    async fn fail(&mut self, seq: SeqId, error: String) {
        self.stats.lock().failures += 1;
        self.seqs.remove(&seq);
        self.arrivals.forget(seq);
        self.sync_sequences();
        tracing::warn!(stage = self.args.index, seq, %error, "batch failed");
        let _ = self
            .sink
            .tell(SinkMsg::Failed {
                seq,
                stage: self.args.index,
                error,
            })
            .await;
        self.release_downstream(seq).await;
    }

    /// Runs the batches of several sequences as one stage run and hands each result on; a
    /// batch that cannot run fails only its own sequence.
    async fn run_batches(&mut self, stage: &Arc<Stage>, batch: Vec<(Forward, bytes::Bytes)>) {
        let arrived = now_us();
        let mut ready = Vec::with_capacity(batch.len());
        for (f, tail) in batch {
            let seq = f.seq;
            match self.prepare(f, tail) {
                Ok(r) => ready.push(r),
                Err(e) => self.fail(seq, e).await,
            }
        }
        if ready.is_empty() {
            return;
        }
        let ids: Vec<SeqId> = ready.iter().map(|r| r.f.seq).collect();
        let stage = stage.clone();
        let dtype = self.args.dtype;
        let t0 = Instant::now();
        let computed = tokio::task::spawn_blocking(move || compute(&stage, ready, dtype)).await;
        self.last_run = t0.elapsed();
        let compute_us = self.last_run.as_micros() as u64;
        let computed = match computed {
            Ok(c) => c,
            Err(e) => {
                // The sequences' states went down with the panicked task: they are over.
                for seq in ids {
                    self.fail(seq, format!("stage compute panicked: {e}")).await;
                }
                return;
            }
        };
        let rows: Vec<usize> = computed.iter().map(|(r, _)| r.f.n as usize).collect();
        let shares = compute_shares(compute_us, &rows);
        {
            let mut st = self.stats.lock();
            st.batches += 1;
            st.forwards += computed.len() as u64;
            st.tokens += rows.iter().sum::<usize>() as u64;
            st.compute_us += compute_us;
            st.max_batch = st.max_batch.max(computed.len() as u32);
        }
        let n_seqs = computed.len() as u32;
        for ((r, out), share) in computed.into_iter().zip(shares) {
            let Ready { f, mut state, .. } = r;
            let seq = f.seq;
            let result = match out {
                Ok(o) => o,
                Err(e) => {
                    state.cache.truncate(f.pos as usize);
                    self.fail(seq, e).await;
                    continue;
                }
            };
            self.seqs.insert(seq, state);
            let hop = HopTiming {
                stage: self.args.index,
                wait_us: arrived.saturating_sub(f.sent_at_us),
                compute_us: share,
                send_us: 0,
                bytes_out: 0,
                tokens: f.n,
                batch_seqs: n_seqs,
            };
            if let Err(e) = self.hand_on(f, hop, result).await {
                self.fail(seq, e).await;
            } else {
                self.arrivals.left(seq, Instant::now());
            }
        }
        self.sync_sequences();
    }

    /// Tensor-parallel leader: tells the other members to forget `seq` too.
    async fn release_members(&self, seq: SeqId) {
        if let Engine::Member(g) = &self.stage
            && g.member() == 0
        {
            for o in g.others() {
                let _ = o.tell(StageMsg::Release { seq }).await;
            }
        }
    }

    /// Tensor-parallel leader: runs each sequence's batch with the group, one after another
    /// (every member runs the leader's runs in the leader's order), and hands each result on
    /// like a plain stage.
    async fn run_group(&mut self, g: &Arc<Group>, batch: Vec<(Forward, bytes::Bytes)>) {
        for (f, tail) in batch {
            let arrived = now_us();
            let seq = f.seq;
            let mut msg = TpRun {
                run: 0,
                seq,
                pos: f.pos,
                n: f.n,
                tokens: f.tokens.clone(),
                dtype: f.dtype,
                start: f.start.is_some(),
                greedy: false,
            };
            let ready = match self.prepare(f, tail.clone()) {
                Ok(r) => r,
                Err(e) => {
                    self.fail(seq, e).await;
                    continue;
                }
            };
            // The leader needs the whole logits row for log-probabilities; a greedy pick
            // needs only each member's summary.
            // So does a constrained sample (the mask needs every logit).
            msg.greedy = !ready.f.sample
                || (ready.state.scoring.logprobs.is_none()
                    && ready.state.constraint.is_none()
                    && ready.state.sampler.as_ref().is_some_and(|s| {
                        let p = s.params();
                        p.is_greedy() && !p.penalises()
                    }));
            let greedy = msg.greedy;
            self.runs += 1;
            let run = self.runs;
            msg.run = run;
            let mut handed = Ok(());
            for o in g.others() {
                let env = Envelope::with_tail(StageMsg::TpRun(msg.clone()), tail.clone());
                if let Err(e) = o.tell(env).await {
                    handed = Err(format!("group member unreachable: {e}"));
                    break;
                }
            }
            if let Err(e) = handed {
                self.fail(seq, e).await;
                continue;
            }
            let (gr, stats, dtype, d) = (
                g.clone(),
                self.stats.clone(),
                self.args.dtype,
                self.stage.d_model(),
            );
            let rt = tokio::runtime::Handle::current();
            let t0 = Instant::now();
            let joined = tokio::task::spawn_blocking(move || {
                let mut r = ready;
                let input = std::mem::replace(&mut r.input, Input::Tokens(Vec::new()));
                let out = model_input(input, d, gr.stage.device()).and_then(|input| {
                    let o =
                        group::forward(&gr, run, greedy, input, &mut r.state.cache, &stats, &rt)?
                            .ok_or("the group leader got no stage output")?;
                    finish(o, &mut r.state, dtype, &r.f)
                });
                (r, out)
            })
            .await;
            let compute_us = t0.elapsed().as_micros() as u64;
            let (r, out) = match joined {
                Ok(x) => x,
                Err(e) => {
                    self.fail(seq, format!("stage compute panicked: {e}")).await;
                    continue;
                }
            };
            {
                let mut st = self.stats.lock();
                st.batches += 1;
                st.forwards += 1;
                st.tokens += r.f.n as u64;
                st.compute_us += compute_us;
                st.max_batch = st.max_batch.max(1);
            }
            let Ready { f, state, .. } = r;
            let result = match out {
                Ok(o) => o,
                Err(e) => {
                    self.fail(seq, e).await;
                    continue;
                }
            };
            self.seqs.insert(seq, state);
            let hop = HopTiming {
                stage: self.args.index,
                wait_us: arrived.saturating_sub(f.sent_at_us),
                compute_us,
                send_us: 0,
                bytes_out: 0,
                tokens: f.n,
                batch_seqs: 1,
            };
            if let Err(e) = self.hand_on(f, hop, result).await {
                self.fail(seq, e).await;
            }
        }
        self.sync_sequences();
    }

    /// Tensor-parallel member (not the leader): runs the leader's batch with the group; its
    /// own copy of the output is dropped (the leader hands the identical one on).
    async fn member_run(&mut self, r: TpRun, tail: bytes::Bytes) {
        let Engine::Member(g) = self.stage.clone() else {
            return;
        };
        let seq = r.seq;
        let state = if r.start {
            SeqState {
                cache: self.stage.new_cache(self.args.ctx),
                sampler: None,
                scoring: Scoring::default(),
                constraint: None,
            }
        } else {
            match self.seqs.remove(&seq) {
                Some(s) => s,
                None => {
                    tracing::warn!(seq, "group member: unknown sequence");
                    self.stats.lock().failures += 1;
                    return;
                }
            }
        };
        if state.cache.len() != r.pos as usize {
            tracing::warn!(
                seq,
                pos = r.pos,
                held = state.cache.len(),
                "group member: batch at a position its cache does not hold"
            );
            self.stats.lock().failures += 1;
            return;
        }
        let (n, d) = (r.n as usize, self.stage.d_model());
        let input = if r.tokens.is_empty() {
            match decode_hidden(&tail, n, d, r.dtype) {
                Ok(v) => Input::Hidden(v),
                Err(e) => {
                    tracing::warn!(seq, %e, "group member: bad input");
                    self.stats.lock().failures += 1;
                    return;
                }
            }
        } else {
            Input::Tokens(r.tokens)
        };
        let (stats, rt, run, greedy) = (
            self.stats.clone(),
            tokio::runtime::Handle::current(),
            r.run,
            r.greedy,
        );
        let t0 = Instant::now();
        let joined = tokio::task::spawn_blocking(move || {
            let mut state = state;
            let out = model_input(input, d, g.stage.device()).and_then(|input| {
                group::forward(&g, run, greedy, input, &mut state.cache, &stats, &rt)
            });
            (state, out)
        })
        .await;
        let compute_us = t0.elapsed().as_micros() as u64;
        let mut st = self.stats.lock();
        st.batches += 1;
        st.forwards += 1;
        st.tokens += n as u64;
        st.compute_us += compute_us;
        st.max_batch = st.max_batch.max(1);
        match joined {
            Ok((state, Ok(_))) => {
                self.seqs.insert(seq, state);
                st.sequences = self.seqs.len();
            }
            Ok((_, Err(e))) => {
                st.failures += 1;
                tracing::warn!(seq, %e, "group member: run failed");
            }
            Err(e) => {
                st.failures += 1;
                tracing::warn!(seq, %e, "group member: compute panicked");
            }
        }
    }

    /// Checks a batch against the sequence's state and decodes its input.
    fn prepare(&mut self, mut f: Forward, tail: bytes::Bytes) -> Result<Ready, String> {
        let first = self.args.index == 0;
        let last = self.next.is_none();
        if f.n == 0 {
            return Err("empty batch".into());
        }
        let state = match (&f.start, self.seqs.remove(&f.seq)) {
            (Some(start), None) => {
                if self.seqs.len() >= self.args.max_sequences {
                    return Err(format!(
                        "stage {} already holds its maximum of {} sequences",
                        self.args.index, self.args.max_sequences
                    ));
                }
                let (sampler, scoring) = if last {
                    let mut s = Sampler::new(start.sampling.clone()).map_err(|e| e.to_string())?;
                    s.accept_all(&start.prompt);
                    let earlier = start.prompt.len().saturating_sub(start.generated as usize);
                    s.note_generated(&start.prompt[earlier..]);
                    (Some(s), Scoring::of(start)?)
                } else {
                    (None, Scoring::default())
                };
                if (!scoring.prompt.is_empty() || scoring.embed.is_some())
                    && matches!(self.stage, Engine::Member(_))
                {
                    return Err("scoring or embedding a prompt is not supported on a \
                                tensor-parallel last stage"
                        .into());
                }
                let constraint = match &start.constraint {
                    Some(c) if last => Some(self.vocab.start(c, &start.prompt, start.generated)?),
                    _ => None,
                };
                SeqState {
                    cache: self.stage.new_cache(self.args.ctx),
                    sampler,
                    scoring,
                    constraint,
                }
            }
            (None, Some(s)) => s,
            (Some(_), Some(_)) => return Err(format!("sequence {} started twice", f.seq)),
            (None, None) => return Err(format!("unknown sequence {}", f.seq)),
        };
        if state.cache.len() != f.pos as usize {
            return Err(format!(
                "batch at position {} but the cache holds {} positions",
                f.pos,
                state.cache.len()
            ));
        }
        let n = f.n as usize;
        let d = self.stage.d_model();
        let input = if first {
            if f.tokens.len() != n {
                return Err(format!("{} token ids for a batch of {n}", f.tokens.len()));
            }
            // The ids are moved, not copied: nothing reads them from `f` after this.
            Input::Tokens(std::mem::take(&mut f.tokens))
        } else {
            Input::Hidden(decode_hidden(&tail, n, d, f.dtype).map_err(|e| e.to_string())?)
        };
        Ok(Ready { f, state, input })
    }

    /// Last stage: sends the scores of a batch's prompt positions to the sink.
    async fn send_scores(&self, seq: SeqId, scored: Option<Scored>) -> Result<(), String> {
        let Some((pos, entries)) = scored else {
            return Ok(());
        };
        self.sink
            .tell(SinkMsg::PromptLogprobs { seq, pos, entries })
            .await
            .map_err(|e| format!("coordinator unreachable: {e}"))
    }

    /// Sends one sequence's result to the next stage or (last stage) its token to the sink.
    async fn hand_on(
        &mut self,
        f: Forward,
        mut hop: HopTiming,
        result: Output,
    ) -> Result<(), String> {
        let mut hops = f.hops;
        match (result, &self.next) {
            (Output::Hidden(bytes), Some(next)) => {
                hop.bytes_out = bytes.len() as u64;
                let t1 = Instant::now();
                hops.push(hop);
                let msg = StageMsg::Forward(Forward {
                    seq: f.seq,
                    pos: f.pos,
                    n: f.n,
                    tokens: Vec::new(),
                    dtype: self.args.dtype,
                    start: f.start,
                    sample: f.sample,
                    sent_at_us: now_us(),
                    hops,
                });
                next.tell(Envelope::with_tail(msg, bytes))
                    .await
                    .map_err(|e| format!("next stage unreachable: {e}"))?;
                let mut st = self.stats.lock();
                st.send_us += t1.elapsed().as_micros() as u64;
                st.bytes_out += hop.bytes_out;
            }
            (
                Output::Token {
                    token,
                    gap,
                    logprobs,
                    scored,
                },
                None,
            ) => {
                hops.push(hop);
                let t1 = Instant::now();
                self.send_scores(f.seq, scored).await?;
                self.sink
                    .tell(SinkMsg::Token {
                        seq: f.seq,
                        pos: f.pos + f.n,
                        token,
                        top2_gap: gap,
                        logprobs,
                        hops,
                    })
                    .await
                    .map_err(|e| format!("coordinator unreachable: {e}"))?;
                self.stats.lock().send_us += t1.elapsed().as_micros() as u64;
            }
            (Output::Skipped { scored }, None) => self.send_scores(f.seq, scored).await?,
            (Output::Embedding(vector), None) => {
                self.sink
                    .tell(SinkMsg::Embedding { seq: f.seq, vector })
                    .await
                    .map_err(|e| format!("coordinator unreachable: {e}"))?;
            }
            _ => return Err("stage output does not match its place in the pipeline".into()),
        }
        Ok(())
    }
}

#[derive(Clone)]
enum Input {
    Tokens(Vec<u32>),
    Hidden(Vec<f32>),
}

/// The scores of a batch's prompt positions: the first scored position and one entry each.
type Scored = (u32, Vec<TokenLogprobs>);

enum Output {
    Hidden(Bytes),
    Token {
        token: u32,
        gap: f32,
        logprobs: Option<TokenLogprobs>,
        scored: Option<Scored>,
    },
    /// Last stage, a prompt chunk that is not the last: nothing to sample yet.
    Skipped {
        scored: Option<Scored>,
    },
    /// Last stage, the end of an embedded prompt: the mean of its final-normed hidden states.
    Embedding(Vec<f32>),
}

/// The blocking part: one multi-sequence forward over all `ready` batches, then per sequence
/// either encode its hidden states or sample. If the joint forward fails, each batch runs
/// alone, so only the one at fault fails.
fn compute(
    stage: &Stage,
    mut ready: Vec<Ready>,
    dtype: WireDtype,
) -> Vec<(Ready, Result<Output, String>)> {
    // Each batch's hidden states move into a tensor once; a tensor's clone shares its buffer,
    // so the joint forward leaves the inputs in place for the one-by-one fallback.
    let inputs: Vec<Result<StageInput, String>> = ready
        .iter_mut()
        .map(|r| {
            let input = std::mem::replace(&mut r.input, Input::Tokens(Vec::new()));
            model_input(input, stage.config.d_model, stage.device())
        })
        .collect();
    if ready.len() > 1 && inputs.iter().all(Result::is_ok) {
        let items: Vec<BatchItem<'_>> = ready
            .iter_mut()
            .zip(inputs.iter().flatten())
            .map(|(r, input)| BatchItem {
                input: input.clone(),
                logits: r.state.scoring.logits_for(r.f.pos),
                cache: &mut r.state.cache,
            })
            .collect();
        match stage.forward_batch(items) {
            Ok(outs) => {
                return ready
                    .into_iter()
                    .zip(outs)
                    .map(|(mut r, o)| {
                        let out = finish(o, &mut r.state, dtype, &r.f);
                        (r, out)
                    })
                    .collect();
            }
            Err(e) => {
                tracing::debug!(%e, "joint stage run failed; running the batches one by one");
                for r in &mut ready {
                    r.state.cache.truncate(r.f.pos as usize);
                }
            }
        }
    }
    ready
        .into_iter()
        .zip(inputs)
        .map(|(mut r, input)| {
            let out = input.and_then(|input| {
                let logits = r.state.scoring.logits_for(r.f.pos);
                let o = stage
                    .forward(input, &mut r.state.cache, logits)
                    .map_err(|e| e.to_string())?;
                finish(o, &mut r.state, dtype, &r.f)
            });
            (r, out)
        })
        .collect()
}

/// The model's input for one batch (a stage's or a group member's): token ids as they are,
/// hidden states as a `[n, d_model]` tensor over the decoded vector (no copy).
fn model_input(
    input: Input,
    d_model: usize,
    device: &burn::tensor::Device,
) -> Result<StageInput, String> {
    Ok(match input {
        Input::Tokens(t) => StageInput::Tokens(t),
        Input::Hidden(v) => {
            let n = v.len() / d_model.max(1);
            StageInput::Hidden(hidden_from_vec(v, n, d_model, device).map_err(|e| e.to_string())?)
        }
    })
}

/// After the layers: encode the hidden states for the wire, or (last stage) score the batch's
/// prompt positions when asked and sample after the batch's last position.
fn finish(
    out: StageOutput,
    state: &mut SeqState,
    dtype: WireDtype,
    f: &Forward,
) -> Result<Output, String> {
    let l = match out {
        StageOutput::Hidden(h) => {
            let (v, _) = hidden_to_vec(h).map_err(|e| e.to_string())?;
            if let Some((sum, count)) = state.scoring.embed.as_mut() {
                // Summed in position order in f64: the same bits whatever the batches.
                let d = v.len() / f.n.max(1) as usize;
                sum.resize(d, 0.0);
                for row in v.chunks_exact(d.max(1)) {
                    for (s, x) in sum.iter_mut().zip(row) {
                        *s += f64::from(*x);
                    }
                    *count += 1;
                }
                if !f.sample {
                    return Ok(Output::Skipped { scored: None });
                }
                let n = (*count).max(1) as f64;
                return Ok(Output::Embedding(
                    sum.iter().map(|s| (s / n) as f32).collect(),
                ));
            }
            return Ok(Output::Hidden(encode_hidden(v, dtype)));
        }
        StageOutput::Logits(l) => l,
    };
    let scoring = &state.scoring;
    let all = scoring.logits_for(f.pos) == LogitsFor::All;
    if !f.sample && !all {
        return Ok(Output::Skipped { scored: None });
    }
    let [rows, vocab] = l.dims();
    let logits: Vec<f32> = l
        .into_data()
        .try_into_vec::<f32>()
        .map_err(|e| format!("logits are not f32: {e:?}"))?;
    let scored = if all {
        let (first, entries) = logprobs::prompt_scores(
            &logits,
            vocab,
            f.pos as usize,
            &scoring.prompt,
            scoring.top(),
        )?;
        (!entries.is_empty()).then_some((first, entries))
    } else {
        None
    };
    if !f.sample {
        return Ok(Output::Skipped { scored });
    }
    let last = &logits[(rows.max(1) - 1) * vocab..];
    let sampler = state
        .sampler
        .as_mut()
        .ok_or("the head stage has no sampler for this sequence")?;
    let (gap, token) = match state.constraint.as_mut() {
        Some(c) => super::constraint::sample(c, sampler, last)?,
        None => (
            top2_gap(last),
            sampler.sample(last).map_err(|e| e.to_string())?,
        ),
    };
    let logprobs = match scoring.logprobs {
        Some(k) => Some(logprobs::token_logprobs(last, token, k as usize)?),
        None => None,
    };
    Ok(Output::Token {
        token,
        gap,
        logprobs,
        scored,
    })
}
