//! A stage as a tensor-parallel group (`--tp N`): N stage actors on N boards, each holding a
//! [`MemberStage`] slice of the stage's layers. The leader (member 0) is the stage the
//! previous stage or the coordinator talks to: it hands every batch to the other members
//! ([`StageMsg::TpRun`], the input as the same raw tail), every member drives its own
//! [`MemberRun`], and at each synchronisation point every member tells every other member its
//! piece ([`StageMsg::TpPiece`], the values as the raw f32 tail: exact, no serde) and resumes
//! once it holds all pieces, concatenated in member order by [`gather`] (no arithmetic, so
//! the group's output is bit-identical to one node's). The leader then hands the stage output
//! on exactly like a plain stage; the others drop theirs (every member ends with the same).
//!
//! Channel: `tell` on the runtime's mail stream, which is one QUIC stream per (sending node,
//! target actor) kept open for the actor's life, so a piece costs one frame on an open stream.
//! The piece arrives in the target actor's handler, which only pushes it into the [`Inbox`]
//! that the member's compute thread (a blocking thread, never the actor's) waits on.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;

use edgeray_model::arch::tensor_parallel::{
    MemberRun, MemberStage, Partial, Step, SyncPoint, gather,
};
use edgeray_model::arch::{KvCache, LogitsFor, StageInput, StageOutput};
use edgeray_runtime::actor::{ActorId, ActorRef, Envelope};

use super::StageActor;
use crate::pipeline::protocol::hidden::{decode_f32, f32_tail};
use crate::pipeline::protocol::{StageMsg, StageStats, TpPiece};

/// Longest a member waits for the other members' pieces of one synchronisation point. A lost
/// member is normally noticed first by the coordinator's death watch (which redeploys); this
/// only frees the compute thread of a group that was abandoned.
pub const PIECE_TIMEOUT: Duration = Duration::from_secs(15);

/// A piece's header and its f32 tail.
type Piece = (TpPiece, Bytes);

/// Pieces that reached a member, by (run, step), until its compute thread takes them.
pub struct Inbox {
    tx: Mutex<Sender<Piece>>,
    rx: Mutex<Receiver<Piece>>,
    pending: Mutex<HashMap<(u64, u32), Vec<Piece>>>,
    closed: AtomicBool,
}

impl Default for Inbox {
    fn default() -> Self {
        let (tx, rx) = channel();
        Self {
            tx: Mutex::new(tx),
            rx: Mutex::new(rx),
            pending: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        }
    }
}

impl Inbox {
    /// Called by the actor's handler: never waits.
    pub fn push(&self, piece: TpPiece, tail: Bytes) {
        let _ = self.tx.lock().send((piece, tail));
    }

    /// The actor stopped: waiting compute threads give up.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Waits (compute thread) for `need` pieces of `(run, step)`; drops pieces of earlier runs.
    fn wait(&self, run: u64, step: u32, need: usize) -> Result<Vec<(TpPiece, Bytes)>, String> {
        let deadline = Instant::now() + PIECE_TIMEOUT;
        let rx = self.rx.lock();
        loop {
            {
                let mut p = self.pending.lock();
                if p.get(&(run, step)).is_some_and(|v| v.len() >= need) {
                    let got = p.remove(&(run, step)).unwrap_or_default();
                    p.retain(|(r, _), _| *r >= run);
                    return Ok(got);
                }
            }
            if self.closed.load(Ordering::Acquire) {
                return Err("the stage stopped".into());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "a group member did not send its piece of run {run} step {step} within {PIECE_TIMEOUT:?}"
                ));
            }
            match rx.recv_timeout((deadline - now).min(Duration::from_millis(200))) {
                Ok((h, t)) => {
                    if h.run >= run {
                        self.pending
                            .lock()
                            .entry((h.run, h.step))
                            .or_default()
                            .push((h, t));
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err("inbox closed".into()),
            }
        }
    }
}

/// What a member shares between its actor (handler) and its worker.
pub struct Group {
    /// Its slice of the stage.
    pub stage: Arc<MemberStage>,
    /// Members in the group.
    pub members: usize,
    /// Every member's actor in member order (set by [`StageMsg::TpRoster`]).
    pub roster: Mutex<Vec<ActorRef<StageActor>>>,
    /// Pieces received by `tell` (from members in this process).
    pub inbox: Inbox,
    /// Streams to and from remote members (`None` without a transport).
    pub links: Option<Arc<super::tp_link::Links>>,
}

impl Group {
    /// This member's index.
    pub fn member(&self) -> usize {
        self.stage.member
    }

    /// The other members' actors (empty until the roster arrived).
    pub fn others(&self) -> Vec<ActorRef<StageActor>> {
        let me = self.member();
        self.roster
            .lock()
            .iter()
            .enumerate()
            .filter(|(m, _)| *m != me)
            .map(|(_, r)| r.clone())
            .collect()
    }
}

/// One group forward pass of run `run` on this member (blocking thread): computes, exchanges
/// the pieces of every synchronisation point with the other members, and returns the stage
/// output: the leader's (member 0) always; the others' only when it is hidden states (the
/// logits' pieces go to the leader alone, the only member that samples; with `greedy` only
/// a [`LogitsSummary`] of each, see [`TpRun::greedy`]). `rt`: a runtime to send on.
pub fn forward(
    group: &Group,
    run: u64,
    greedy: bool,
    input: StageInput,
    cache: &mut KvCache,
    stats: &Mutex<StageStats>,
    rt: &tokio::runtime::Handle,
) -> Result<Option<StageOutput>, String> {
    let roster = group.roster.lock().clone();
    let me = group.member();
    if roster.len() != group.members {
        return Err(format!(
            "group member {me} knows {} of its {} peers",
            roster.len().saturating_sub(1),
            group.members - 1
        ));
    }
    // Remote peers get the pieces on the group's own streams (when this node has a
    // transport); peers in this process by `tell`.
    let mut by_stream: Vec<(usize, ActorId)> = Vec::new();
    let mut by_tell: Vec<(usize, ActorRef<StageActor>)> = Vec::new();
    for (m, r) in roster.iter().enumerate() {
        if m == me {
            continue;
        }
        match &group.links {
            Some(_) if !r.is_local() => by_stream.push((m, r.id())),
            _ => by_tell.push((m, r.clone())),
        }
    }
    let (mut r, mut step) =
        MemberRun::start(&group.stage, input, cache, LogitsFor::Last).map_err(|e| e.to_string())?;
    let mut k = 0u32;
    let (mut syncs, mut sync_us, mut sent) = (0u64, 0u64, 0u64);
    let out = loop {
        let p = match step {
            Step::Done(o) => break Some(o),
            Step::Send(p) => p,
        };
        let t = Instant::now();
        let t0 = t;
        let h = TpPiece {
            run,
            step: k,
            member: p.member as u16,
            rows: p.rows as u32,
            cols_start: p.cols.start as u32,
            cols_end: p.cols.end as u32,
            width: p.width as u32,
        };
        // The logits: only the leader needs them; it sends nothing, the others send to it.
        let logits = p.point == SyncPoint::Logits;
        let to = |m: usize| !logits || m == 0;
        let summary = logits && greedy && p.rows == 1;
        let tail = if logits && me == 0 {
            Bytes::new()
        } else if summary {
            LogitsSummary::of(&p.data, p.cols.start).to_bytes()
        } else {
            f32_tail(&p.data)
        };
        let stream_to: Vec<ActorId> = by_stream
            .iter()
            .filter(|(m, _)| to(*m))
            .map(|(_, id)| *id)
            .collect();
        let tell_to: Vec<&ActorRef<StageActor>> = by_tell
            .iter()
            .filter(|(m, _)| to(*m))
            .map(|(_, r)| r)
            .collect();
        sent += (tail.len() * (stream_to.len() + tell_to.len())) as u64;
        if !stream_to.is_empty() {
            let links = group.links.as_ref().expect("stream peers only with links");
            links.send(h.member, &stream_to, &h, &tail, rt)?;
        }
        if !tell_to.is_empty() {
            let sends = tell_to
                .iter()
                .map(|o| o.tell(Envelope::with_tail(StageMsg::TpPiece(h), tail.clone())));
            let results = rt.block_on(futures::future::join_all(sends));
            if let Some(e) = results.into_iter().find_map(Result::err) {
                return Err(format!("group member unreachable: {e}"));
            }
        }
        if logits && me != 0 {
            sync_us += t.elapsed().as_micros() as u64;
            syncs += 1;
            break None;
        }
        let deadline = Instant::now() + PIECE_TIMEOUT;
        let mut got = if by_tell.is_empty() {
            Vec::new()
        } else {
            group.inbox.wait(run, k, by_tell.len())?
        };
        if let Some(links) = &group.links {
            for (m, _) in &by_stream {
                got.push(links.receive(*m as u16, run, k, deadline, rt)?);
            }
        }
        if summary {
            // The leader: the synthetic logits decide exactly as the full ones would.
            let mut all = vec![LogitsSummary::of(&p.data, p.cols.start)];
            for (_, tail) in &got {
                all.push(LogitsSummary::from_bytes(tail)?);
            }
            let v = LogitsSummary::logits(&all, p.width);
            let t = burn::tensor::Tensor::<2>::from_data(
                burn::tensor::TensorData::new(v, [1, p.width]),
                group.stage.device(),
            );
            sync_us += t0_us(t0);
            syncs += 1;
            break Some(StageOutput::Logits(t));
        }
        let mut parts = Vec::with_capacity(group.members);
        for (g, tail) in got {
            parts.push(Partial {
                point: p.point,
                member: g.member as usize,
                rows: g.rows as usize,
                cols: g.cols_start as usize..g.cols_end as usize,
                width: g.width as usize,
                data: decode_f32(&tail).map_err(|e| e.to_string())?,
            });
        }
        parts.push(p);
        let g = gather(parts).map_err(|e| e.to_string())?;
        sync_us += t.elapsed().as_micros() as u64;
        syncs += 1;
        k += 1;
        step = r.resume(g).map_err(|e| e.to_string())?;
    };
    let mut st = stats.lock();
    st.tp_syncs += syncs;
    st.tp_sync_us += sync_us;
    st.tp_bytes_sent += sent;
    Ok(out)
}

fn t0_us(t0: Instant) -> u64 {
    t0.elapsed().as_micros() as u64
}

/// What a member sends the leader of its logits slice (one row) when the leader samples
/// greedily: the first maximum (lowest index, NaN skipped: [`edgeray_model::sampling::argmax`]),
/// the runner-up of [`edgeray_model::sampling::top2_gap`]'s scan, and the first NaN. Global
/// indices; `NONE` where there is none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LogitsSummary {
    best: (u32, f32),
    second: (u32, f32),
    nan: u32,
}

const NONE: u32 = u32::MAX;

impl LogitsSummary {
    pub(crate) fn of(v: &[f32], start: usize) -> Self {
        let mut best: (u32, f32) = (NONE, f32::NEG_INFINITY);
        let mut first: (u32, f32) = (NONE, f32::NEG_INFINITY);
        let mut second: (u32, f32) = (NONE, f32::NEG_INFINITY);
        let mut nan = NONE;
        for (i, &x) in v.iter().enumerate() {
            let i = (start + i) as u32;
            if x.is_nan() {
                if nan == NONE {
                    nan = i;
                }
                continue;
            }
            // argmax: the first strictly greater value (the first value at all).
            if best.0 == NONE || x > best.1 {
                best = (i, x);
            }
            // top2_gap's scan.
            if x > first.1 {
                second = first;
                first = (i, x);
            } else if x > second.1 {
                second = (i, x);
            }
        }
        Self { best, second, nan }
    }

    fn to_bytes(self) -> Bytes {
        let w = [
            self.best.0,
            self.best.1.to_bits(),
            self.second.0,
            self.second.1.to_bits(),
            self.nan,
        ];
        let mut out = Vec::with_capacity(20);
        for x in w {
            out.extend_from_slice(&x.to_le_bytes());
        }
        Bytes::from(out)
    }

    fn from_bytes(b: &[u8]) -> Result<Self, String> {
        if b.len() != 20 {
            return Err(format!("a logits summary of {} bytes", b.len()));
        }
        let w: Vec<u32> = b
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(Self {
            best: (w[0], f32::from_bits(w[1])),
            second: (w[2], f32::from_bits(w[3])),
            nan: w[4],
        })
    }

    /// Logits of `width` entries, -inf but for every summary's maximum, runner-up and first
    /// NaN at their indices: greedy sampling and the top-2 gap of these equal those of the
    /// full logits (the global maximum and its lowest index, the global runner-up and the
    /// first NaN are all among them; the filler never beats a real value).
    pub(crate) fn logits(all: &[Self], width: usize) -> Vec<f32> {
        let mut v = vec![f32::NEG_INFINITY; width];
        for s in all {
            for (i, x) in [s.second, s.best] {
                if (i as usize) < width {
                    v[i as usize] = x;
                }
            }
        }
        for s in all {
            if (s.nan as usize) < width {
                v[s.nan as usize] = f32::NAN;
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::LogitsSummary;
    use edgeray_model::sampling::{Sampler, SamplingParams, top2_gap};
    use proptest::prelude::*;

    /// What the leader's `finish` makes of the logits: the token and gap, or the error (the
    /// gap is then dropped).
    fn decide(v: &[f32]) -> Result<(u32, u32), String> {
        let mut s = Sampler::new(SamplingParams::greedy()).unwrap();
        let gap = top2_gap(v).to_bits();
        s.sample(v).map(|t| (t, gap)).map_err(|e| e.to_string())
    }

    proptest! {
        /// The synthetic logits of the members' summaries sample (greedy) the same token, fail
        /// the same way and give the same top-2 gap as the full logits, for any split.
        #[test]
        fn summaries_decide_like_the_full_logits(
            v in prop::collection::vec(
                prop_oneof![
                    8 => (-4i32..4).prop_map(|x| x as f32 * 0.5),
                    1 => Just(f32::NEG_INFINITY),
                    1 => Just(-0.0f32),
                    1 => Just(f32::NAN),
                ],
                2..40,
            ),
            cuts in prop::collection::vec(0usize..40, 0..4),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % v.len()).collect();
            cuts.push(0);
            cuts.push(v.len());
            cuts.sort();
            cuts.dedup();
            let sums: Vec<LogitsSummary> = cuts
                .windows(2)
                .map(|w| LogitsSummary::of(&v[w[0]..w[1]], w[0]))
                .collect();
            let syn = LogitsSummary::logits(&sums, v.len());
            prop_assert_eq!(decide(&syn), decide(&v));
        }
    }
}
