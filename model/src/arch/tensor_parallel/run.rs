//! The per-member step API: a [`MemberRun`] computes up to the next synchronisation point and
//! hands out its [`Partial`]; whoever transports the pieces [`gather`]s them (concatenation in
//! column order, no arithmetic) and hands the [`Gathered`] vector back to every member.
//!
//! Synchronisation points of one forward pass (per batch of positions), in order:
//!
//! | point | gathered vector | travels as | per layer |
//! |---|---|---|---|
//! | [`SyncPoint::AttnHeads`] | attention output `[n, n_head·hd]`, by heads | consumer's activation blocks or f32 | 1 |
//! | [`SyncPoint::AttnOut`] | `attn_output` rows `[n, d]` | f32 (residual) | 1 if `attn_output` is split, else 0 |
//! | [`SyncPoint::FfnHidden`] | MLP hidden `[n, n_ff]` | `ffn_down`'s activation blocks or f32 | 1 |
//! | [`SyncPoint::FfnOut`] | `ffn_down` rows `[n, d]` | f32 (residual) | 1 |
//! | [`SyncPoint::Logits`] | logits `[k, vocab]` (head stage) | f32 | once per pass |
//!
//! So 3 (replicated `attn_output`, the default) or 4 per layer, plus one per pass on a head
//! stage. Everything between two points (norms, RoPE, residual adds, activations) runs on
//! every member on the same full vectors, which is why every member keeps the same residual.

use std::ops::Range;

use burn::tensor::{Tensor, TensorData};

use super::error::TpError;
use super::member::MemberStage;
use super::slicing::WoPlacement;
use crate::arch::{KvCache, LogitsFor, RopeTables, StageInput, StageOutput};

/// A synchronisation point of a group forward pass (`layer`: index within the stage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncPoint {
    /// The attention output of every member's heads.
    AttnHeads {
        /// Layer within the stage.
        layer: usize,
    },
    /// The rows of a split `attn_output` projection.
    AttnOut {
        /// Layer within the stage.
        layer: usize,
    },
    /// The MLP hidden vector (`ffn_gate`/`ffn_up` rows after the activation).
    FfnHidden {
        /// Layer within the stage.
        layer: usize,
    },
    /// The rows of `ffn_down`.
    FfnOut {
        /// Layer within the stage.
        layer: usize,
    },
    /// The output head's rows (logits).
    Logits,
}

/// One member's piece of a vector to all-gather: columns `cols` of a `[rows, width]` matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Partial {
    /// Where in the pass it belongs.
    pub point: SyncPoint,
    /// The member that computed it.
    pub member: usize,
    /// Rows (positions) of the pass.
    pub rows: usize,
    /// Its columns of the full vector.
    pub cols: Range<usize>,
    /// Width of the full vector.
    pub width: usize,
    /// `rows × cols.len()` values, row-major.
    pub data: Vec<f32>,
}

impl Partial {
    fn from_tensor(
        point: SyncPoint,
        member: usize,
        cols: Range<usize>,
        width: usize,
        t: Tensor<2>,
    ) -> Result<Self, TpError> {
        let [rows, c] = t.dims();
        if c != cols.len() {
            return Err(TpError::Protocol(format!(
                "{point:?}: member {member} computed {c} columns for {cols:?}"
            )));
        }
        let data = t
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| TpError::Protocol(format!("partial is not f32: {e:?}")))?;
        Ok(Self {
            point,
            member,
            rows,
            cols,
            width,
            data,
        })
    }

    /// Bytes of its values as f32.
    pub fn f32_bytes(&self) -> usize {
        self.data.len() * 4
    }
}

/// The full vector of a synchronisation point, the same on every member.
#[derive(Debug, Clone, PartialEq)]
pub struct Gathered {
    /// Which point.
    pub point: SyncPoint,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub width: usize,
    /// `rows × width` values, row-major.
    pub data: Vec<f32>,
}

/// All-gathers the pieces of one synchronisation point (any order): they must be of the same
/// point and rows and their columns must tile `0..width` exactly; the result is their
/// concatenation in column order (a copy, no arithmetic).
pub fn gather(mut parts: Vec<Partial>) -> Result<Gathered, TpError> {
    let first = parts
        .first()
        .ok_or_else(|| TpError::Protocol("nothing to gather".into()))?;
    let (point, rows, width) = (first.point, first.rows, first.width);
    if let Some(p) = parts
        .iter()
        .find(|p| p.point != point || p.rows != rows || p.width != width)
    {
        return Err(TpError::Protocol(format!(
            "gathering {point:?} [{rows} x {width}]: got member {}'s {:?} [{} x {}]",
            p.member, p.point, p.rows, p.width
        )));
    }
    parts.sort_by_key(|p| p.cols.start);
    let mut at = 0;
    for p in &parts {
        if p.cols.start != at || p.data.len() != rows * p.cols.len() {
            return Err(TpError::Protocol(format!(
                "gathering {point:?}: member {} holds columns {:?}, expected a piece starting at {at}",
                p.member, p.cols
            )));
        }
        at = p.cols.end;
    }
    if at != width {
        return Err(TpError::Protocol(format!(
            "gathering {point:?}: pieces cover 0..{at} of {width}"
        )));
    }
    let mut data = vec![0f32; rows * width];
    for p in &parts {
        let w = p.cols.len();
        for r in 0..rows {
            data[r * width + p.cols.start..r * width + p.cols.end]
                .copy_from_slice(&p.data[r * w..(r + 1) * w]);
        }
    }
    Ok(Gathered {
        point,
        rows,
        width,
        data,
    })
}

/// What a member does next.
// Not boxed: one piece per sync point, tens per token, moved straight to the transport.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Step {
    /// Send this piece to every other member, gather, and call [`MemberRun::resume`].
    Send(Partial),
    /// The pass is complete: the stage's output (identical on every member).
    Done(StageOutput),
}

/// One member's forward pass over a batch of positions, driven from outside one
/// synchronisation point at a time.
pub struct MemberRun<'a> {
    stage: &'a MemberStage,
    cache: &'a mut KvCache,
    x: Tensor<2>,
    tables: Vec<(f32, RopeTables)>,
    logits: LogitsFor,
    waiting: Option<SyncPoint>,
}

impl<'a> MemberRun<'a> {
    /// Starts a pass of `input` (positions `cache.len()..`) on member `stage` with its own
    /// `cache`: computes up to the first synchronisation point.
    pub fn start(
        stage: &'a MemberStage,
        input: StageInput,
        cache: &'a mut KvCache,
        logits: LogitsFor,
    ) -> Result<(Self, Step), TpError> {
        let x = embed_input(stage, input, cache)?;
        let n = x.dims()[0];
        let positions: Vec<usize> = (cache.len()..cache.len() + n).collect();
        let mut tables: Vec<(f32, RopeTables)> = Vec::new();
        for b in &stage.blocks {
            let rope = b.spec.rope;
            if !tables.iter().any(|(base, _)| *base == rope.base) {
                tables.push((rope.base, rope.tables(&positions, stage.device())));
            }
        }
        let mut run = Self {
            stage,
            cache,
            x,
            tables,
            logits,
            waiting: None,
        };
        let step = if stage.blocks.is_empty() {
            run.after_layers()?
        } else {
            run.attention(0)?
        };
        Ok((run, step))
    }

    /// The point whose gathered vector this run waits for (`None` once done).
    pub fn waiting(&self) -> Option<SyncPoint> {
        self.waiting
    }

    /// Continues with the gathered vector of the point it waits for, up to the next point.
    pub fn resume(&mut self, g: Gathered) -> Result<Step, TpError> {
        let Some(point) = self.waiting else {
            return Err(TpError::Protocol("the pass is already complete".into()));
        };
        if g.point != point {
            return Err(TpError::Protocol(format!(
                "member {} waits for {point:?}, got {:?}",
                self.stage.member, g.point
            )));
        }
        let rows = g.rows;
        let t = Tensor::<2>::from_data(
            TensorData::new(g.data, [rows, g.width]),
            self.stage.device(),
        );
        match point {
            SyncPoint::AttnHeads { layer } => {
                let b = &self.stage.blocks[layer];
                let h = b.attn_output(t)?;
                match self.stage.wo {
                    WoPlacement::Replicated => {
                        self.x = b.finish_attention(self.x.clone(), h);
                        self.ffn_hidden(layer)
                    }
                    WoPlacement::Split => self.send(
                        SyncPoint::AttnOut { layer },
                        b.slice.wo_rows.clone(),
                        self.stage.config.d_model,
                        h,
                    ),
                }
            }
            SyncPoint::AttnOut { layer } => {
                let b = &self.stage.blocks[layer];
                self.x = b.finish_attention(self.x.clone(), t);
                self.ffn_hidden(layer)
            }
            SyncPoint::FfnHidden { layer } => {
                let b = &self.stage.blocks[layer];
                let h = b.ffn_down(t)?;
                self.send(
                    SyncPoint::FfnOut { layer },
                    b.slice.down_rows.clone(),
                    self.stage.config.d_model,
                    h,
                )
            }
            SyncPoint::FfnOut { layer } => {
                let b = &self.stage.blocks[layer];
                self.x = b.finish_ffn(self.x.clone(), t);
                if layer + 1 < self.stage.blocks.len() {
                    self.attention(layer + 1)
                } else {
                    self.after_layers()
                }
            }
            SyncPoint::Logits => {
                self.waiting = None;
                Ok(Step::Done(StageOutput::Logits(t)))
            }
        }
    }

    fn send(
        &mut self,
        point: SyncPoint,
        cols: Range<usize>,
        width: usize,
        t: Tensor<2>,
    ) -> Result<Step, TpError> {
        self.waiting = Some(point);
        Ok(Step::Send(Partial::from_tensor(
            point,
            self.stage.member,
            cols,
            width,
            t,
        )?))
    }

    fn attention(&mut self, layer: usize) -> Result<Step, TpError> {
        let b = &self.stage.blocks[layer];
        let rope = &self
            .tables
            .iter()
            .find(|(base, _)| *base == b.spec.rope.base)
            .expect("tables for every base")
            .1;
        let a = b.attention(&self.x, rope, self.cache, layer)?;
        let width = b.spec.n_head * b.spec.head_dim;
        self.send(
            SyncPoint::AttnHeads { layer },
            b.slice.attn_cols(b.spec.head_dim),
            width,
            a,
        )
    }

    fn ffn_hidden(&mut self, layer: usize) -> Result<Step, TpError> {
        let b = &self.stage.blocks[layer];
        let a = b.ffn_hidden(&self.x)?;
        self.send(
            SyncPoint::FfnHidden { layer },
            b.slice.ffn_rows.clone(),
            self.stage.config.n_ff,
            a,
        )
    }

    fn after_layers(&mut self) -> Result<Step, TpError> {
        let n = self.x.dims()[0];
        self.cache.advance(n);
        match &self.stage.head_rows {
            None => {
                self.waiting = None;
                Ok(Step::Done(StageOutput::Hidden(self.x.clone())))
            }
            Some(rows) => {
                let (r, k) = match self.logits {
                    LogitsFor::Last => (n - 1, 1),
                    LogitsFor::All => (0, n),
                    LogitsFor::Tail(k) => {
                        let k = k.clamp(1, n);
                        (n - k, k)
                    }
                    LogitsFor::Normed => {
                        return Err(TpError::Protocol(
                            "final hidden states (embeddings) are not computed by a \
                             tensor-parallel group"
                                .into(),
                        ));
                    }
                };
                let h = self.x.clone().narrow(0, r, k);
                let l = self.stage.head(h)?;
                self.send(
                    SyncPoint::Logits,
                    rows.clone(),
                    self.stage.config.vocab_size,
                    l,
                )
            }
        }
    }
}

/// Checks the input against the member's stage and cache and returns its rows `[n, d]`.
fn embed_input(
    stage: &MemberStage,
    input: StageInput,
    cache: &KvCache,
) -> Result<Tensor<2>, TpError> {
    let bad = |m: String| Err(TpError::Arch(crate::arch::ArchError::BadInput(m)));
    if cache.n_layers() != stage.blocks.len() {
        return Err(crate::arch::ArchError::CacheMismatch {
            want: stage.blocks.len(),
            got: cache.n_layers(),
        }
        .into());
    }
    let x = match (input, &stage.embed) {
        (StageInput::Tokens(ids), Some(e)) => {
            if ids.is_empty() {
                return bad("empty batch".into());
            }
            if let Some(&t) = ids.iter().find(|&&t| t as usize >= stage.config.vocab_size) {
                return bad(format!(
                    "token id {t} >= vocab size {}",
                    stage.config.vocab_size
                ));
            }
            e.forward(&ids, stage.device())?
        }
        (StageInput::Hidden(h), None) => {
            if h.dims()[1] != stage.config.d_model {
                return bad(format!("hidden states {:?}", h.dims()));
            }
            h
        }
        (StageInput::Tokens(_), None) => {
            return bad("token ids given to a stage without the embedding".into());
        }
        (StageInput::Hidden(_), Some(_)) => {
            return bad("hidden states given to the embedding stage".into());
        }
    };
    if x.dims()[0] == 0 {
        return bad("empty batch".into());
    }
    cache.check_room(x.dims()[0])?;
    Ok(x)
}
