//! What travels between the rooms: messages between the coordinator, the stage actors and the
//! token sink, and the hidden-state wire codec.
//!
//! Hidden states never go through serde: they travel as the raw tail of the envelope (see
//! [`hidden`]); the typed part is a small header.

use edgeray_model::sampling::SamplingParams;
use edgeray_runtime::actor::ActorId;
use edgeray_runtime::identity::NodeId;
use serde::{Deserialize, Serialize};
use std::ops::Range;

pub mod hidden;

pub use hidden::WireDtype;

/// A sequence (one generation request), unique per coordinator.
pub type SeqId = u64;

/// What a stage actor is built from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageArgs {
    /// Content hash of the stage's shard in the node's shard cache.
    pub shard: String,
    /// Layers this stage holds.
    pub layers: Range<usize>,
    /// Layers of the whole model.
    pub n_layers: usize,
    /// Index of this stage in the pipeline (0 = embeds tokens).
    pub index: u16,
    /// Positions per sequence.
    pub ctx: usize,
    /// Kernel threads.
    pub threads: usize,
    /// Most sequences held at once (one KV cache each).
    pub max_sequences: usize,
    /// The next stage (`None`: this is the last stage, it samples).
    pub next: Option<ActorId>,
    /// Where the last stage sends sampled tokens and any stage reports failures. Its node is
    /// the coordinator's: the only node the stage takes control messages from.
    pub sink: ActorId,
    /// The node of the stage before this one, the only node whose batches this stage runs
    /// (`None`: this is the first stage, fed by the coordinator).
    #[serde(default)]
    pub upstream: Option<NodeId>,
    /// Element type of the hidden states this stage sends.
    pub dtype: WireDtype,
    /// What `edgeray status` shows for this stage on its node, e.g. `stage 2/3 layers 6..12 of
    /// Gemma 3 270m`.
    pub label: String,
    /// This stage is a tensor-parallel group and this actor one of its members.
    #[serde(default)]
    pub tp: Option<TpArgs>,
}

/// A member of a tensor-parallel group (see [`crate::pipeline::stage`]): which slice it holds.
/// The group's roster (every member's actor) arrives after all of them are spawned
/// ([`StageMsg::TpRoster`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TpArgs {
    /// This member's index (0: the leader, which receives the stage's batches).
    pub member: usize,
    /// Relative speed of every member (the slicing plan is made from them, the same on each).
    pub speeds: Vec<f64>,
}

/// One batch a group leader hands every other member (the input in the tail: hidden states
/// as they reached the leader, or nothing when the token ids are in `tokens`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TpRun {
    /// Run number (the leader counts its runs; every member runs them in this order).
    pub run: u64,
    /// The sequence.
    pub seq: SeqId,
    /// Position of the first token (the sequence's cache length before it).
    pub pos: u32,
    /// Tokens in the batch.
    pub n: u32,
    /// Token ids (first stage).
    pub tokens: Vec<u32>,
    /// Element type of the hidden states in the tail.
    pub dtype: WireDtype,
    /// The sequence's first batch (the member creates its cache).
    pub start: bool,
    /// The leader samples greedily without a repetition penalty (or not at all): the members
    /// send it a summary of their logits (maximum, runner-up, first NaN) instead of the
    /// values, which decides the token and the top-2 gap exactly as the full logits would.
    pub greedy: bool,
}

/// Header of one member's piece of a synchronisation point; the values follow as the raw
/// tail (`rows × (cols_end - cols_start)` little-endian f32, exact).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct TpPiece {
    /// The leader's run number.
    pub run: u64,
    /// Synchronisation point within the run (0, 1, ...).
    pub step: u32,
    /// The member that computed it.
    pub member: u16,
    /// Rows (positions).
    pub rows: u32,
    /// First column of the piece.
    pub cols_start: u32,
    /// End of its columns.
    pub cols_end: u32,
    /// Width of the full vector.
    pub width: u32,
}

/// How a sequence starts: carried by its first batch through every stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeqStart {
    /// Sampling settings (used by the last stage only).
    pub sampling: SamplingParams,
    /// The prompt's token ids (the last stage feeds them to the repetition penalty).
    pub prompt: Vec<u32>,
    /// Log-probabilities with each sampled token: `Some(k)` sends the chosen token's and the
    /// `k` most likely tokens' (`k` may be 0), from the logits the sampler saw, before any
    /// sampling filter (used by the last stage only).
    #[serde(default)]
    pub logprobs: Option<u8>,
    /// Score the prompt: the last stage computes every prompt position's logits and sends, for
    /// each prompt token after the first, its log-probability given the tokens before it
    /// ([`SinkMsg::PromptLogprobs`]; with `logprobs`' `k` alternatives).
    #[serde(default)]
    pub score_prompt: bool,
    /// How many of the last `prompt` tokens were generated earlier (a sequence resumed after a
    /// failover): the penalties over generated tokens count them.
    #[serde(default)]
    pub generated: u32,
    /// Embed the prompt instead of generating: the last stage mean-pools the final-normed
    /// hidden states of every prompt position and sends [`SinkMsg::Embedding`].
    #[serde(default)]
    pub embed: bool,
    /// Structured output (used by the last stage only): the format as JSON text
    /// (`edgeray_model::sampling::constraint::OutputFormat::to_wire`); the last stage samples
    /// only tokens its constraint allows, after feeding it the `generated` tokens at the end of
    /// `prompt` (a resumed attempt).
    #[serde(default)]
    pub constraint: Option<String>,
}

/// Most alternatives a token's log-probabilities may carry (OpenAI's `top_logprobs` limit).
pub const MAX_TOP_LOGPROBS: u8 = 20;

/// The log-probability of one token at one position, with the most likely alternatives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprobs {
    /// The token (sampled, or the prompt's).
    pub token: u32,
    /// Its log-probability (natural log of the softmax of the raw logits).
    pub logprob: f32,
    /// The most likely tokens and their log-probabilities, best first.
    pub top: Vec<(u32, f32)>,
}

/// Time one stage spent on one batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct HopTiming {
    /// Stage index.
    pub stage: u16,
    /// From the sender's timestamp to the start of compute: transfer plus mailbox queueing
    /// (across nodes this depends on their clocks agreeing).
    pub wait_us: u64,
    /// Running the stage's layers (and sampling, on the last stage).
    pub compute_us: u64,
    /// Handing the result to the next stage (waits while its mailbox is full).
    pub send_us: u64,
    /// Bytes of hidden states sent to the next stage.
    pub bytes_out: u64,
    /// Tokens (positions) in the batch.
    pub tokens: u32,
    /// Sequences in the stage run this batch was part of (1: it ran alone). `compute_us` is
    /// this sequence's share of that run, in proportion to its tokens.
    pub batch_seqs: u32,
}

/// One batch of consecutive positions of one sequence.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Forward {
    /// The sequence.
    pub seq: SeqId,
    /// Position of the first token of the batch (the sequence's cache length before it).
    pub pos: u32,
    /// Tokens in the batch.
    pub n: u32,
    /// Token ids (for the first stage; empty for later stages, which get hidden states in the
    /// tail).
    pub tokens: Vec<u32>,
    /// Element type of the hidden states in the tail.
    pub dtype: WireDtype,
    /// Present on a sequence's first batch.
    pub start: Option<SeqStart>,
    /// Whether the last stage samples a token after this batch (false for all but the last
    /// chunk of a long prompt).
    pub sample: bool,
    /// Sender's wall clock, microseconds since the Unix epoch.
    pub sent_at_us: u64,
    /// Timings of the stages already passed.
    pub hops: Vec<HopTiming>,
}

/// Messages to a stage actor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StageMsg {
    /// Run a batch (tell).
    Forward(Forward),
    /// Forget a sequence's cache here and on the following stages (tell).
    Release {
        /// The sequence.
        seq: SeqId,
    },
    /// Counters since the stage started (ask).
    Stats,
    /// Tensor-parallel group: every member's actor in member order (ask, once, after the
    /// group is spawned).
    TpRoster(Vec<ActorId>),
    /// Tensor-parallel group: the leader's batch for a member (tell).
    TpRun(TpRun),
    /// Tensor-parallel group: a member's piece of a synchronisation point (tell).
    TpPiece(TpPiece),
}

/// Counters of one stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageStats {
    /// Stage index.
    pub index: u16,
    /// Layers held.
    pub layers: Range<usize>,
    /// Weight bytes held.
    pub weight_bytes: u64,
    /// Stage runs (each a multi-sequence forward of the batches that were waiting together).
    pub batches: u64,
    /// Sequence batches (`Forward` messages) run; `forwards / batches` is the mean number of
    /// sequences per run.
    pub forwards: u64,
    /// Most sequences in one run.
    pub max_batch: u32,
    /// Tokens run.
    pub tokens: u64,
    /// Total compute time, µs.
    pub compute_us: u64,
    /// Total time handing results on, µs.
    pub send_us: u64,
    /// Total bytes of hidden states sent.
    pub bytes_out: u64,
    /// Sequences currently held.
    pub sequences: usize,
    /// Batches that failed.
    pub failures: u64,
    /// Tensor-parallel member: synchronisation points passed.
    #[serde(default)]
    pub tp_syncs: u64,
    /// Tensor-parallel member: µs from handing its piece out to holding every piece
    /// (sending, the network, and waiting for the slowest member), summed.
    #[serde(default)]
    pub tp_sync_us: u64,
    /// Tensor-parallel member: bytes of pieces it sent (to all other members).
    #[serde(default)]
    pub tp_bytes_sent: u64,
    /// Messages refused because their node has no business sending them (not this stage's
    /// coordinator, upstream stage or group).
    #[serde(default)]
    pub refused: u64,
}

/// Replies of a stage actor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StageReply {
    /// Done (reply to tells, discarded).
    Ok,
    /// Reply to [`StageMsg::Stats`].
    Stats(StageStats),
}

/// What reaches the coordinator's sink.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SinkMsg {
    /// The last stage sampled the token at position `pos`.
    Token {
        /// The sequence.
        seq: SeqId,
        /// Position of the sampled token.
        pos: u32,
        /// The token id.
        token: u32,
        /// Gap between the two highest logits (how close greedy decoding was to a tie).
        top2_gap: f32,
        /// Its log-probabilities, when the sequence asked for them ([`SeqStart::logprobs`]).
        logprobs: Option<TokenLogprobs>,
        /// Per-stage timings of the batch that produced it.
        hops: Vec<HopTiming>,
    },
    /// Scores of prompt tokens ([`SeqStart::score_prompt`]): `entries[i]` is the prompt token
    /// at position `pos + i` given the positions before it. Sent once per prompt batch that
    /// holds scored positions, before that batch's token.
    PromptLogprobs {
        /// The sequence.
        seq: SeqId,
        /// Position of the first scored token (at least 1).
        pos: u32,
        /// One entry per position.
        entries: Vec<TokenLogprobs>,
    },
    /// The prompt's embedding ([`SeqStart::embed`]): the mean of its positions' final-normed
    /// hidden states (not normalised).
    Embedding {
        /// The sequence.
        seq: SeqId,
        /// `d_model` values.
        vector: Vec<f32>,
    },
    /// A stage could not run a batch of `seq`; the sequence is over.
    Failed {
        /// The sequence.
        seq: SeqId,
        /// Stage index.
        stage: u16,
        /// What went wrong.
        error: String,
    },
}

/// Microseconds since the Unix epoch (wall clock).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
