//! The slicing plan of a tensor-parallel group: which query heads, KV heads and output rows of
//! every matrix each member holds. Pure arithmetic on shapes and speeds, no I/O.
//!
//! Rules (see [`GroupPlan::new`]):
//! - attention is split by whole query heads, in proportion to the members' speeds, at least
//!   one head per member (so a group has at most `n_head` members: 4 for gemma3-270m, 14 for
//!   qwen2.5-0.5B). Each member holds the KV heads its query heads read (GQA: query head `h`
//!   reads KV head `h / (n_head / n_kv_head)`); a KV head read by several members is held
//!   (and its K/V rows computed) by each of them, see [`LayerSlices::kv_holders`];
//! - every other matrix is split by output rows into contiguous ranges in member order, in
//!   proportion to speed, every boundary a multiple of the activation block of whatever
//!   consumes those rows (so a member can send its rows already quantized for the consumer).
//!   Rows past the last whole block go to the last member.

use std::ops::Range;

/// Why no plan exists for a group.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SliceError {
    /// The group has no member.
    #[error("a tensor-parallel group needs at least one member")]
    NoMembers,
    /// A member's speed is zero, negative, infinite or NaN.
    #[error("member {member} has speed {speed}; speeds must be finite and > 0")]
    BadSpeed {
        /// Member index.
        member: usize,
        /// The speed given.
        speed: f64,
    },
    /// More members than indivisible units of some split.
    #[error(
        "{members} members cannot split {what}: only {units} units of {align} rows \
         (every member needs at least one)"
    )]
    TooManyMembers {
        /// What is split (`"query heads"`, `"ffn rows"`, ...).
        what: &'static str,
        /// Members of the group.
        members: usize,
        /// Indivisible units available.
        units: usize,
        /// Rows per unit.
        align: usize,
    },
    /// The shape itself is unusable (zero sizes, heads not divisible by KV heads, ...).
    #[error("bad shape: {0}")]
    BadShape(String),
}

/// Whether the attention output projection (`attn_output`) is split or replicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WoPlacement {
    /// Every member holds all of `attn_output` and computes its full product on the gathered
    /// attention output: 3 synchronisation points per layer.
    ///
    /// Finding (from the real files' tensor types, decode, not a timing): `attn_output` is
    /// 5.4% of a qwen2.5-0.5B layer's weights (896×896 Q5_0, 0.55 MB of ~10.3 MB) and ~10% of
    /// a gemma3-270m layer's bytes (640×1024 Q4_K, 0.37 MB of ~3.8 MB). Replicating it makes
    /// each member of an even group of `N` stream the `(N-1)/N` of it it would otherwise skip:
    /// tp 2 = +0.28 MB (qwen) / +0.18 MB (gemma) per layer and member, i.e. ~35–70 µs (qwen) /
    /// ~25–45 µs (gemma) at 4–8 GB/s of effective memory bandwidth (a Pi 5 class board). It
    /// saves one all-gather of `d_model` f32 values per layer: qwen 24 of 97 sync points per
    /// token (3.5 KiB per gather), gemma 18 of 73 (2.5 KiB). Replication therefore pays when
    /// one synchronisation costs more than that extra streaming — always over a network (one
    /// Gigabit/QUIC round of a small message is ≥ 50–100 µs one way) and it is the default;
    /// [`WoPlacement::Split`] wins only with very fast links or large groups (the replicated
    /// share grows with `N`). Both placements are bit-identical to one node.
    #[default]
    Replicated,
    /// `attn_output` split by output rows like the other matrices: 4 synchronisation points
    /// per layer, each member computes only its rows.
    Split,
}

/// Options of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceOptions {
    /// Row alignment of splits whose output travels as f32 (the residual stream, logits):
    /// nothing quantizes them, so any value is exact; the default 32 keeps whole Q8_0-sized
    /// units and the SIMD kernels' 8-row groups whole.
    pub row_align: usize,
    /// Placement of the attention output projection.
    pub wo: WoPlacement,
    /// Split `ffn_gate`/`ffn_up` rows on `ffn_down`'s activation blocks ([`LayerShape::ffn_block`],
    /// 256 for Q8_K consumers), so that each member's piece of the MLP hidden vector is whole
    /// blocks and could travel quantized. Off (the default) they split on `row_align` units:
    /// the pieces travel as f32 and the consumer quantizes the gathered vector, which is
    /// exact for any row boundary, and the finer unit balances the members (qwen's 4864 rows
    /// are 19 blocks of 256, 10 + 9 between two members, but 76 + 76 units of 32).
    pub ffn_on_blocks: bool,
}

impl Default for SliceOptions {
    fn default() -> Self {
        Self {
            row_align: 32,
            wo: WoPlacement::default(),
            ffn_on_blocks: false,
        }
    }
}

/// The shape of one layer as far as slicing is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerShape {
    /// Hidden size (rows of `attn_output` and `ffn_down`).
    pub d_model: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (divides `n_head`).
    pub n_kv_head: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// MLP inner size (rows of `ffn_gate` / `ffn_up`).
    pub n_ff: usize,
    /// Activation block of `attn_output`'s weights (1 for F32/F16, 32 for Q8_0 consumers, 256
    /// for Q8_K consumers): the attention output is quantized in blocks of this size.
    pub attn_out_block: usize,
    /// Activation block of `ffn_down`'s weights: the MLP hidden vector is quantized in blocks
    /// of this size (with [`SliceOptions::ffn_on_blocks`], `ffn_gate`/`ffn_up` row boundaries
    /// are multiples of it).
    pub ffn_block: usize,
}

impl LayerShape {
    /// Query heads per KV head.
    pub fn group(&self) -> usize {
        self.n_head / self.n_kv_head
    }

    fn validate(&self) -> Result<(), SliceError> {
        let s = self;
        if [s.d_model, s.n_head, s.n_kv_head, s.head_dim, s.n_ff].contains(&0) {
            return Err(SliceError::BadShape(format!("zero dimension in {s:?}")));
        }
        if !s.n_head.is_multiple_of(s.n_kv_head) {
            return Err(SliceError::BadShape(format!(
                "{} KV heads do not divide {} query heads",
                s.n_kv_head, s.n_head
            )));
        }
        if s.attn_out_block == 0 || s.ffn_block == 0 {
            return Err(SliceError::BadShape("zero activation block".into()));
        }
        Ok(())
    }
}

/// What one member holds of one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberLayerSlice {
    /// Its query heads (rows `q_heads * head_dim` of `attn_q`).
    pub q_heads: Range<usize>,
    /// The KV heads those query heads read (rows `kv_heads * head_dim` of `attn_k`, `attn_v`).
    pub kv_heads: Range<usize>,
    /// Its rows of `attn_output` (all `0..d_model` when replicated).
    pub wo_rows: Range<usize>,
    /// Its rows of `ffn_gate` and `ffn_up` (= its elements of the MLP hidden vector).
    pub ffn_rows: Range<usize>,
    /// Its rows of `ffn_down`.
    pub down_rows: Range<usize>,
}

impl MemberLayerSlice {
    /// Its elements of the attention output vector (`n_head * head_dim` wide).
    pub fn attn_cols(&self, head_dim: usize) -> Range<usize> {
        self.q_heads.start * head_dim..self.q_heads.end * head_dim
    }
}

/// One layer's slices for every member.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSlices {
    /// The layer's shape.
    pub shape: LayerShape,
    /// One slice per member, in member order.
    pub members: Vec<MemberLayerSlice>,
    /// For each KV head, how many members hold it (1 = not replicated).
    pub kv_holders: Vec<usize>,
}

impl LayerSlices {
    /// Whether every member's attention-output boundary falls on an activation block of
    /// `attn_output`, so the attention output can be all-gathered already quantized.
    pub fn attn_out_quantizable(&self) -> bool {
        let hd = self.shape.head_dim;
        self.members
            .iter()
            .all(|m| (m.q_heads.start * hd).is_multiple_of(self.shape.attn_out_block))
    }

    /// KV heads held more than once, counted with multiplicity (Σ holders − n_kv_head): the
    /// extra K/V rows the group computes and caches compared with one node.
    pub fn kv_replicas(&self) -> usize {
        self.kv_holders.iter().sum::<usize>() - self.kv_holders.len()
    }
}

/// The slices of a whole stage for a group of members.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupPlan {
    /// The members' relative speeds, as given.
    pub speeds: Vec<f64>,
    /// The options used.
    pub options: SliceOptions,
    /// One entry per layer of the stage, in order.
    pub layers: Vec<LayerSlices>,
    /// Vocabulary rows of the output head per member (head stages).
    pub head_rows: Option<Vec<Range<usize>>>,
}

impl GroupPlan {
    /// Plans the slices of the layers `shapes` (and of an output head of `vocab` rows, if any)
    /// for members of relative `speeds` (e.g. measured MB/s; only ratios matter).
    pub fn new(
        shapes: &[LayerShape],
        vocab: Option<usize>,
        speeds: &[f64],
        options: SliceOptions,
    ) -> Result<Self, SliceError> {
        check_speeds(speeds)?;
        if options.row_align == 0 {
            return Err(SliceError::BadShape("row_align must be > 0".into()));
        }
        let layers = shapes
            .iter()
            .map(|s| plan_layer(s, speeds, options))
            .collect::<Result<Vec<_>, _>>()?;
        let head_rows = vocab
            .map(|v| split_rows(v, options.row_align, speeds, "vocabulary rows"))
            .transpose()?;
        Ok(Self {
            speeds: speeds.to_vec(),
            options,
            layers,
            head_rows,
        })
    }

    /// Number of members.
    pub fn members(&self) -> usize {
        self.speeds.len()
    }
}

fn check_speeds(speeds: &[f64]) -> Result<(), SliceError> {
    if speeds.is_empty() {
        return Err(SliceError::NoMembers);
    }
    if let Some((member, &speed)) = speeds
        .iter()
        .enumerate()
        .find(|(_, s)| !(s.is_finite() && **s > 0.0))
    {
        return Err(SliceError::BadSpeed { member, speed });
    }
    Ok(())
}

fn plan_layer(
    s: &LayerShape,
    speeds: &[f64],
    options: SliceOptions,
) -> Result<LayerSlices, SliceError> {
    s.validate()?;
    let heads = split_rows(s.n_head, 1, speeds, "query heads")?;
    let ffn_unit = if options.ffn_on_blocks {
        s.ffn_block
    } else {
        options.row_align
    };
    let ffn = split_rows(s.n_ff, ffn_unit, speeds, "ffn rows")?;
    let down = split_rows(s.d_model, options.row_align, speeds, "ffn_down rows")?;
    let wo = match options.wo {
        WoPlacement::Split => split_rows(s.d_model, options.row_align, speeds, "attn_output rows")?,
        WoPlacement::Replicated => vec![0..s.d_model; speeds.len()],
    };
    let group = s.group();
    let mut kv_holders = vec![0; s.n_kv_head];
    let members = (0..speeds.len())
        .map(|i| {
            let q = heads[i].clone();
            let kv = q.start / group..(q.end - 1) / group + 1;
            for h in kv.clone() {
                kv_holders[h] += 1;
            }
            MemberLayerSlice {
                q_heads: q,
                kv_heads: kv,
                wo_rows: wo[i].clone(),
                ffn_rows: ffn[i].clone(),
                down_rows: down[i].clone(),
            }
        })
        .collect();
    Ok(LayerSlices {
        shape: *s,
        members,
        kv_holders,
    })
}

/// Splits `total` rows into one contiguous range per member, in member order: the
/// `total / align` whole units of `align` rows are shared in proportion to `speeds` (largest
/// remainder: each member's count is within one unit of its exact share, except that a member
/// whose share is below one unit still gets one, taken from the most over-served), and the
/// `total % align` rows left over go to the last member.
pub fn split_rows(
    total: usize,
    align: usize,
    speeds: &[f64],
    what: &'static str,
) -> Result<Vec<Range<usize>>, SliceError> {
    check_speeds(speeds)?;
    if align == 0 {
        return Err(SliceError::BadShape(format!("{what}: zero alignment")));
    }
    let n = speeds.len();
    let units = total / align;
    if units < n {
        return Err(SliceError::TooManyMembers {
            what,
            members: n,
            units,
            align,
        });
    }
    let counts = unit_counts(units, speeds);
    let mut out = Vec::with_capacity(n);
    let mut at = 0;
    for (i, c) in counts.iter().enumerate() {
        let end = if i + 1 == n { total } else { at + c * align };
        out.push(at..end);
        at = end;
    }
    Ok(out)
}

/// Each member's exact share of `units` (`units * speed / Σ speeds`).
pub fn ideal_shares(units: usize, speeds: &[f64]) -> Vec<f64> {
    let sum: f64 = speeds.iter().sum();
    speeds.iter().map(|s| units as f64 * s / sum).collect()
}

/// Largest-remainder apportionment of `units >= speeds.len()` with at least one per member.
fn unit_counts(units: usize, speeds: &[f64]) -> Vec<usize> {
    let ideal = ideal_shares(units, speeds);
    let mut counts: Vec<usize> = ideal.iter().map(|x| (x.floor() as usize).max(1)).collect();
    // Pick by a key, ties to the lowest index.
    let pick = |counts: &[usize], want_max: bool, eligible: &dyn Fn(usize) -> bool| {
        let mut best: Option<(usize, f64)> = None;
        for (i, (&c, &x)) in counts.iter().zip(&ideal).enumerate() {
            if !eligible(i) {
                continue;
            }
            let r = x - c as f64;
            let better = match best {
                None => true,
                Some((_, b)) => {
                    if want_max {
                        r > b
                    } else {
                        r < b
                    }
                }
            };
            if better {
                best = Some((i, r));
            }
        }
        best.map(|(i, _)| i)
    };
    while counts.iter().sum::<usize>() < units {
        let i = pick(&counts, true, &|_| true).expect("members exist");
        counts[i] += 1;
    }
    while counts.iter().sum::<usize>() > units {
        let snapshot = counts.clone();
        let i = pick(&counts, false, &|i| snapshot[i] > 1).expect("units >= members");
        counts[i] -= 1;
    }
    counts
}
