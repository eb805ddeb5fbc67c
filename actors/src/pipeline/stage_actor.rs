//! The stage actor: a contiguous range of transformer blocks loaded from a shard in the node's
//! cache, one KV cache per sequence, wired point-to-point to the next stage.
//!
//! A batch arrives as token ids (first stage) or hidden states in the raw tail (later stages),
//! runs through the layers on a blocking thread, and goes on to the next stage with `tell`
//! (which waits while that stage's mailbox is full: back-pressure end to end). The last stage
//! applies the final norm, the head and the sampler, and sends only the token id to the sink.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use edgeray_model::arch::{
    KvCache, LogitsFor, Stage, StageInput, StageOutput, StageSpec, hidden_from_vec, hidden_to_vec,
};
use edgeray_model::gguf::GgufFile;
use edgeray_model::quant::KernelPool;
use edgeray_model::sampling::{Sampler, top2_gap};
use edgeray_runtime::actor::{ActorCtx, ActorError, ActorRef, Envelope, RemoteActor};

use super::hidden::{decode_hidden, encode_hidden};
use super::node_env::shard_dir;
use super::protocol::{
    Forward, HopTiming, SeqId, SinkMsg, StageArgs, StageMsg, StageReply, StageStats, now_us,
};
use super::shard_store::ShardStore;
use super::sink::SinkActor;

/// One sequence's state on one stage.
struct SeqState {
    cache: KvCache,
    /// Last stage only.
    sampler: Option<Sampler>,
}

/// A pipeline stage (actor kind `edgeray.stage`).
pub struct StageActor {
    /// The hosting node (its status shows this stage's role while it runs).
    node: Option<edgeray_runtime::node::NodeHandle>,
    stage: Arc<Stage>,
    args: StageArgs,
    seqs: HashMap<SeqId, SeqState>,
    next: Option<ActorRef<StageActor>>,
    sink: ActorRef<SinkActor>,
    stats: StageStats,
    /// Set when the stage stops.
    done: Arc<std::sync::atomic::AtomicBool>,
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
        let store = ShardStore::open(shard_dir(ctx.node().as_ref()))
            .map_err(|e| ActorError::new(e.to_string()))?;
        let path = store
            .path(&args.shard)
            .map_err(|e| ActorError::new(e.to_string()))?;
        if !path.is_file() {
            return Err(ActorError::new(format!(
                "shard {} is not in this node's cache ({})",
                args.shard,
                store.dir().display()
            )));
        }
        let file = GgufFile::open(&path)
            .map_err(|e| ActorError::new(format!("cannot open shard {}: {e}", path.display())))?;
        let pool = Arc::new(
            KernelPool::new(args.threads.max(1)).map_err(|e| ActorError::new(e.to_string()))?,
        );
        let spec = StageSpec::for_range(args.layers.clone(), args.n_layers);
        let stage = Stage::load(&file, &spec, &burn::tensor::Device::flex(), &pool)
            .map_err(|e| ActorError::new(format!("cannot load layers {:?}: {e}", args.layers)))?;
        tracing::info!(
            stage = args.index,
            layers = ?args.layers,
            weight_mib = stage.weight_bytes() >> 20,
            "stage loaded"
        );
        let node = cluster.node().cloned();
        if let Some(n) = &node {
            let _g = ROLES.lock();
            let mut roles = n.roles();
            roles.push(args.label.clone());
            n.set_roles(roles);
        }
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        release_with_coordinator(&cluster, &ctx, args.sink, done.clone());
        let stats = StageStats {
            index: args.index,
            layers: args.layers.clone(),
            weight_bytes: stage.weight_bytes() as u64,
            ..Default::default()
        };
        Ok(StageActor {
            node,
            stage: Arc::new(stage),
            next: args.next.map(|id| cluster.actor_ref(id)),
            sink: cluster.actor_ref(args.sink),
            args,
            seqs: HashMap::new(),
            stats,
            done,
        })
    }

    async fn handle(
        &mut self,
        msg: Envelope<StageMsg>,
    ) -> Result<Envelope<StageReply>, ActorError> {
        let Envelope { msg, tail } = msg;
        match msg {
            StageMsg::Forward(f) => {
                let seq = f.seq;
                if let Err(error) = self.forward(f, tail).await {
                    self.stats.failures += 1;
                    self.seqs.remove(&seq);
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
            }
            StageMsg::Release { seq } => {
                self.seqs.remove(&seq);
                self.release_downstream(seq).await;
            }
            StageMsg::Stats => {
                let mut s = self.stats.clone();
                s.sequences = self.seqs.len();
                return Ok(Envelope::new(StageReply::Stats(s)));
            }
        }
        Ok(Envelope::new(StageReply::Ok))
    }

    fn stopped(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Release);
        if let Some(n) = &self.node {
            let _g = ROLES.lock();
            let mut roles = n.roles();
            if let Some(i) = roles.iter().position(|r| *r == self.args.label) {
                roles.remove(i);
            }
            n.set_roles(roles);
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

/// Serializes read-modify-write of a node's roles by the stage actors of this process.
static ROLES: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

impl StageActor {
    async fn release_downstream(&self, seq: SeqId) {
        if let Some(next) = &self.next {
            let _ = next.tell(StageMsg::Release { seq }).await;
        }
    }

    /// Runs one batch and hands the result on; an `Err` fails the sequence.
    async fn forward(&mut self, f: Forward, tail: bytes::Bytes) -> Result<(), String> {
        let arrived = now_us();
        let first = self.args.index == 0;
        let last = self.next.is_none();
        if f.n == 0 {
            return Err("empty batch".into());
        }
        let mut state = match (&f.start, self.seqs.remove(&f.seq)) {
            (Some(start), None) => {
                if self.seqs.len() >= self.args.max_sequences {
                    return Err(format!(
                        "stage {} already holds its maximum of {} sequences",
                        self.args.index, self.args.max_sequences
                    ));
                }
                let sampler = if last {
                    let mut s = Sampler::new(start.sampling.clone()).map_err(|e| e.to_string())?;
                    s.accept_all(&start.prompt);
                    Some(s)
                } else {
                    None
                };
                SeqState {
                    cache: self.stage.new_cache(self.args.ctx),
                    sampler,
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
        let d = self.stage.config.d_model;
        let input = if first {
            if f.tokens.len() != n {
                return Err(format!("{} token ids for a batch of {n}", f.tokens.len()));
            }
            Input::Tokens(f.tokens.clone())
        } else {
            Input::Hidden(decode_hidden(&tail, n, d, f.dtype).map_err(|e| e.to_string())?)
        };
        let stage = self.stage.clone();
        let dtype = self.args.dtype;
        let sample = f.sample;
        let t0 = Instant::now();
        let (state, out) = tokio::task::spawn_blocking(move || {
            let out = run_batch(&stage, input, &mut state, dtype, sample);
            (state, out)
        })
        .await
        .map_err(|e| format!("stage compute panicked: {e}"))?;
        let compute_us = t0.elapsed().as_micros() as u64;
        let mut state = state;
        let result = match out {
            Ok(r) => r,
            Err(e) => {
                state.cache.truncate(f.pos as usize);
                return Err(e);
            }
        };
        self.seqs.insert(f.seq, state);
        self.stats.batches += 1;
        self.stats.tokens += n as u64;
        self.stats.compute_us += compute_us;
        let mut hop = HopTiming {
            stage: self.args.index,
            wait_us: arrived.saturating_sub(f.sent_at_us),
            compute_us,
            send_us: 0,
            bytes_out: 0,
            tokens: f.n,
        };
        let mut hops = f.hops;
        match (result, &self.next) {
            (Output::Hidden(bytes), Some(next)) => {
                hop.bytes_out = bytes.len() as u64;
                let t1 = Instant::now();
                let mut hops_out = hops;
                hops_out.push(hop);
                let msg = StageMsg::Forward(Forward {
                    seq: f.seq,
                    pos: f.pos,
                    n: f.n,
                    tokens: Vec::new(),
                    dtype,
                    start: f.start,
                    sample: f.sample,
                    sent_at_us: now_us(),
                    hops: hops_out,
                });
                next.tell(Envelope::with_tail(msg, bytes))
                    .await
                    .map_err(|e| format!("next stage unreachable: {e}"))?;
                let send_us = t1.elapsed().as_micros() as u64;
                self.stats.send_us += send_us;
                self.stats.bytes_out += hop.bytes_out;
            }
            (Output::Token { token, gap }, None) => {
                hops.push(hop);
                let t1 = Instant::now();
                self.sink
                    .tell(SinkMsg::Token {
                        seq: f.seq,
                        pos: f.pos + f.n,
                        token,
                        top2_gap: gap,
                        hops,
                    })
                    .await
                    .map_err(|e| format!("coordinator unreachable: {e}"))?;
                self.stats.send_us += t1.elapsed().as_micros() as u64;
            }
            (Output::Skipped, None) => {}
            _ => return Err("stage output does not match its place in the pipeline".into()),
        }
        Ok(())
    }
}

enum Input {
    Tokens(Vec<u32>),
    Hidden(Vec<f32>),
}

enum Output {
    Hidden(Vec<u8>),
    Token {
        token: u32,
        gap: f32,
    },
    /// Last stage, a prompt chunk that is not the last: nothing to sample yet.
    Skipped,
}

/// The blocking part: layers, then either encode the hidden states or sample.
fn run_batch(
    stage: &Stage,
    input: Input,
    state: &mut SeqState,
    dtype: super::hidden::WireDtype,
    sample: bool,
) -> Result<Output, String> {
    let input = match input {
        Input::Tokens(t) => StageInput::Tokens(t),
        Input::Hidden(v) => {
            let n = v.len() / stage.config.d_model.max(1);
            StageInput::Hidden(
                hidden_from_vec(v, n, stage.config.d_model, stage.device())
                    .map_err(|e| e.to_string())?,
            )
        }
    };
    match stage
        .forward(input, &mut state.cache, LogitsFor::Last)
        .map_err(|e| e.to_string())?
    {
        StageOutput::Hidden(h) => {
            let (v, _) = hidden_to_vec(h).map_err(|e| e.to_string())?;
            Ok(Output::Hidden(encode_hidden(&v, dtype)))
        }
        StageOutput::Logits(_) if !sample => Ok(Output::Skipped),
        StageOutput::Logits(l) => {
            let logits: Vec<f32> = l
                .into_data()
                .try_into_vec::<f32>()
                .map_err(|e| format!("logits are not f32: {e:?}"))?;
            let sampler = state
                .sampler
                .as_mut()
                .ok_or("the head stage has no sampler for this sequence")?;
            let gap = top2_gap(&logits);
            let token = sampler.sample(&logits).map_err(|e| e.to_string())?;
            Ok(Output::Token { token, gap })
        }
    }
}
