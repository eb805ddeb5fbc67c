//! A pipeline stage: a contiguous range of layers, optionally with the token embedding (first
//! stage) and the final norm + output head (last stage). A full model is one stage with all
//! layers, the embedding and the head.

use std::ops::Range;
use std::sync::Arc;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};

use super::attention::AttnSeq;
use super::block::Block;
use super::config::ModelConfig;
use super::error::ArchError;
use super::kv_cache::KvCache;
use super::norm::RmsNorm;
use super::rope::RopeTables;
use super::tensors::vector;
use crate::gguf::GgufFile;
use crate::ops::{QLinear, QuantWeight};
use crate::quant::KernelPool;

/// Which part of a model a stage holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageSpec {
    /// Layers `start..end` of the model.
    pub layers: Range<usize>,
    /// Whether the stage starts from token ids (holds `token_embd`).
    pub embed: bool,
    /// Whether the stage ends with the final norm and output head (produces logits).
    pub head: bool,
}

impl StageSpec {
    /// The whole model as one stage.
    pub fn full(n_layers: usize) -> Self {
        Self {
            layers: 0..n_layers,
            embed: true,
            head: true,
        }
    }

    /// Stage `layers` of a model of `n_layers`: embeds iff it starts at 0, has the head iff it
    /// ends at `n_layers`.
    pub fn for_range(layers: Range<usize>, n_layers: usize) -> Self {
        Self {
            embed: layers.start == 0,
            head: layers.end == n_layers,
            layers,
        }
    }

    /// Checks the range against the model.
    pub fn validate(&self, cfg: &ModelConfig) -> Result<(), ArchError> {
        if self.layers.start > self.layers.end || self.layers.end > cfg.n_layers {
            return Err(ArchError::BadLayerRange {
                start: self.layers.start,
                end: self.layers.end,
                n_layers: cfg.n_layers,
            });
        }
        Ok(())
    }
}

/// What a stage consumes.
#[derive(Debug, Clone)]
// Moved once per forward: boxing the tensor would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum StageInput {
    /// Token ids (first stage).
    Tokens(Vec<u32>),
    /// Hidden states `[n, d_model]` from the previous stage.
    Hidden(Tensor<2>),
}

/// What a stage produces.
#[derive(Debug, Clone)]
pub enum StageOutput {
    /// Hidden states `[n, d_model]` for the next stage.
    Hidden(Tensor<2>),
    /// Logits `[rows, vocab]` (last stage): one row per requested position.
    Logits(Tensor<2>),
}

/// The first row and the number of rows of a batch of `n` rows the head runs on.
fn head_rows(logits: LogitsFor, n: usize) -> (usize, usize) {
    match logits {
        LogitsFor::Last | LogitsFor::Normed => (n - 1, 1),
        LogitsFor::All => (0, n),
        LogitsFor::Tail(k) => {
            let k = k.clamp(1, n);
            (n - k, k)
        }
    }
}

/// Which positions the head computes logits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsFor {
    /// Only the last position of the batch (generation).
    Last,
    /// Every position of the batch.
    All,
    /// The last `k` positions of the batch (clamped to 1..=rows): scoring a text needs only
    /// the positions it scores.
    Tail(usize),
    /// No logits: every position's final-normed hidden state ([`StageOutput::Hidden`],
    /// `[rows, d_model]`), what embeddings pool.
    Normed,
}

/// The token embedding table (quantized rows, dequantized on lookup).
#[derive(Module, Debug)]
pub struct Embedding {
    /// `token_embd.weight` as `[vocab, d_model]`.
    #[module(skip)]
    pub table: QuantWeight,
    /// Multiplier applied after the lookup (gemma3: `sqrt(d_model)`).
    #[module(skip)]
    pub scale: Option<f32>,
}

impl Embedding {
    /// Looks up `ids` (`[n, d_model]`), dequantizing only those rows.
    pub fn forward(&self, ids: &[u32], device: &Device) -> Result<Tensor<2>, ArchError> {
        let d = self.table.cols();
        let rows: Vec<usize> = ids.iter().map(|&i| i as usize).collect();
        let mut out = vec![0f32; rows.len() * d];
        self.table.dequantize_rows(&rows, &mut out)?;
        let x = Tensor::from_data(TensorData::new(out, [rows.len(), d]), device);
        Ok(match self.scale {
            Some(s) => x.mul_scalar(s),
            None => x,
        })
    }
}

/// Whether stages keep their Q8_0 / Q5_0 / Q4_0 matrices in the kernels' packed layouts (see
/// [`QuantWeight::prepack`]: the output head and the blocks' projections);
/// `EDGERAY_PREPACK=0` turns it off (to compare the two in one run: the results are the same
/// bits either way).
pub(crate) fn prepack_enabled() -> bool {
    std::env::var("EDGERAY_PREPACK").map_or(true, |v| v != "0")
}

/// One sequence's part of a [`Stage::forward_batch`] call.
#[derive(Debug)]
pub struct BatchItem<'a> {
    /// Its input rows (token ids or hidden states), positions `cache.len()..`.
    pub input: StageInput,
    /// Its KV cache on this stage.
    pub cache: &'a mut KvCache,
    /// Which of its positions get logits (head stage).
    pub logits: LogitsFor,
}

/// A loaded stage.
#[derive(Module, Debug)]
pub struct Stage {
    /// Token embedding (first stage).
    pub embed: Option<Embedding>,
    /// The blocks of `spec.layers`, in order.
    pub blocks: Vec<Block>,
    /// Final norm (last stage).
    pub norm: Option<RmsNorm>,
    /// Output head (last stage; `token_embd` when tied).
    pub output: Option<QLinear>,
    /// Model hyper-parameters.
    #[module(skip)]
    pub config: ModelConfig,
    /// What this stage holds.
    #[module(skip)]
    pub spec: StageSpec,
    #[module(skip)]
    device: Device,
}

impl Stage {
    /// Loads the part of `file` described by `spec`: only the tensors of those layers (plus the
    /// embedding / head when asked) are touched. Quantized weights stay in the memory map.
    pub fn load(
        file: &GgufFile,
        spec: &StageSpec,
        device: &Device,
        pool: &Arc<KernelPool>,
    ) -> Result<Self, ArchError> {
        Self::load_with_progress(file, spec, device, pool, |_, _| {})
    }

    /// Like [`Stage::load`], calling `progress(done, total)` after each layer.
    pub fn load_with_progress(
        file: &GgufFile,
        spec: &StageSpec,
        device: &Device,
        pool: &Arc<KernelPool>,
        progress: impl FnMut(usize, usize),
    ) -> Result<Self, ArchError> {
        Self::load_parts(file, spec, device, pool, progress, prepack_enabled())
    }

    /// Like [`Stage::load`] with every matrix left in the GGUF layout: for a tensor-parallel
    /// member, which packs only the rows it keeps.
    pub(crate) fn load_unpacked(
        file: &GgufFile,
        spec: &StageSpec,
        device: &Device,
        pool: &Arc<KernelPool>,
    ) -> Result<Self, ArchError> {
        Self::load_parts(file, spec, device, pool, |_, _| {}, false)
    }

    /// [`Stage::load_with_progress`], packing the matrices when `pack` (see
    /// [`prepack_enabled`]).
    fn load_parts(
        file: &GgufFile,
        spec: &StageSpec,
        device: &Device,
        pool: &Arc<KernelPool>,
        mut progress: impl FnMut(usize, usize),
        pack: bool,
    ) -> Result<Self, ArchError> {
        let config = ModelConfig::from_gguf(file)?;
        spec.validate(&config)?;
        let total = spec.layers.len() + 1;
        let mut embed = if spec.embed {
            Some(Embedding {
                table: QuantWeight::from_gguf(file, "token_embd.weight", pool)?,
                scale: config.embed_scale,
            })
        } else {
            None
        };
        let mut blocks = Vec::with_capacity(spec.layers.len());
        for (k, il) in spec.layers.clone().enumerate() {
            let mut block = Block::load(file, &config, il, device, pool)?;
            if pack {
                block.prepack();
            }
            blocks.push(block);
            progress(k + 1, total);
        }
        let (norm, output) = if spec.head {
            let norm = RmsNorm::new(
                vector(file, "output_norm.weight", config.d_model, device)?,
                config.rms_eps,
            );
            let name = if config.tied_output {
                "token_embd.weight"
            } else {
                "output.weight"
            };
            let mut w = QuantWeight::from_gguf(file, name, pool)?;
            if pack {
                w.prepack();
            }
            if w.cols() != config.d_model || w.rows() != config.vocab_size {
                return Err(ArchError::BadTensor {
                    name: name.into(),
                    reason: format!(
                        "expected [{} x {}], got [{} x {}]",
                        config.vocab_size,
                        config.d_model,
                        w.rows(),
                        w.cols()
                    ),
                });
            }
            // A tied table serves the lookups from the head's (packed) copy, so the raw rows
            // it replaced never come back into memory.
            if config.tied_output
                && let Some(e) = &mut embed
            {
                e.table = w.clone();
            }
            (Some(norm), Some(QLinear::new(w, None)))
        } else {
            (None, None)
        };
        progress(total, total);
        Ok(Self {
            embed,
            blocks,
            norm,
            output,
            config,
            spec: spec.clone(),
            device: device.clone(),
        })
    }

    /// A fresh KV cache for one sequence of this stage, holding up to `max_ctx` positions.
    pub fn new_cache(&self, max_ctx: usize) -> KvCache {
        KvCache::new(self.blocks.len(), max_ctx)
    }

    /// The device the stage computes on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Runs the stage on a batch of `n` consecutive positions starting at `cache.len()`.
    ///
    /// Token input needs an embedding stage; hidden input (`[n, d_model]`) a non-embedding one.
    /// The head stage returns logits (see [`LogitsFor`]), others hidden states. On error the
    /// cache may hold partial keys for this batch: `truncate` it to its previous length.
    pub fn forward(
        &self,
        input: StageInput,
        cache: &mut KvCache,
        logits: LogitsFor,
    ) -> Result<StageOutput, ArchError> {
        let mut out = self.forward_batch(vec![BatchItem {
            input,
            cache,
            logits,
        }])?;
        out.pop()
            .ok_or_else(|| ArchError::BadInput("empty batch".into()))
    }

    /// Runs the stage once for several sequences, each with its own input, KV cache and
    /// [`LogitsFor`]; returns one output per item, in order.
    ///
    /// The rows of all items are stacked so the norms, the quantized linear layers and the head
    /// run once over all of them (each weight row is streamed once per batch instead of once
    /// per sequence); RoPE and attention run per sequence on its own positions and cache. Each
    /// item's output is bit-identical to running it alone with [`Stage::forward`]. Any invalid
    /// item fails the whole call before anything is computed; on a later error every cache
    /// may hold partial keys and should be truncated to its previous length.
    pub fn forward_batch(&self, items: Vec<BatchItem<'_>>) -> Result<Vec<StageOutput>, ArchError> {
        if items.is_empty() {
            return Err(ArchError::BadInput("empty batch".into()));
        }
        let mut xs = Vec::with_capacity(items.len());
        let mut seqs = Vec::with_capacity(items.len());
        for item in items {
            let x = self.embed_input(item.input, item.cache)?;
            let n = x.dims()[0];
            xs.push(x);
            seqs.push((n, item.cache, item.logits));
        }
        let x = if xs.len() == 1 {
            xs.pop().expect("one item")
        } else {
            Tensor::cat(xs, 0)
        };
        // RoPE tables per sequence and per distinct base (gemma3 has two).
        let mut bases: Vec<f32> = Vec::new();
        for b in &self.blocks {
            if !bases.contains(&b.attn.spec.rope.base) {
                bases.push(b.attn.spec.rope.base);
            }
        }
        let tables: Vec<Vec<RopeTables>> = seqs
            .iter()
            .map(|(n, cache, _)| {
                let positions: Vec<usize> = (cache.len()..cache.len() + n).collect();
                bases
                    .iter()
                    .map(|&base| {
                        let rope = self
                            .blocks
                            .iter()
                            .find(|b| b.attn.spec.rope.base == base)
                            .expect("base of a block")
                            .attn
                            .spec
                            .rope;
                        rope.tables(&positions, &self.device)
                    })
                    .collect()
            })
            .collect();
        let mut x = x;
        for (i, block) in self.blocks.iter().enumerate() {
            let idx = bases
                .iter()
                .position(|&b| b == block.attn.spec.rope.base)
                .expect("base listed");
            let mut attn: Vec<AttnSeq<'_>> = seqs
                .iter_mut()
                .zip(&tables)
                .map(|((n, cache, _), t)| AttnSeq {
                    n: *n,
                    rope: &t[idx],
                    cache,
                })
                .collect();
            x = block.forward_batch(x, &mut attn, i)?;
        }
        for (n, cache, _) in seqs.iter_mut() {
            cache.advance(*n);
        }
        // Each item's rows of the stacked output.
        let mut spans = Vec::with_capacity(seqs.len());
        let mut row = 0;
        for (n, _, logits) in &seqs {
            spans.push((row, *n, *logits));
            row += n;
        }
        match (&self.norm, &self.output) {
            (Some(norm), Some(output)) if spans.iter().any(|s| s.2 == LogitsFor::Normed) => {
                // Normed items get their final-normed rows (the norm works row by row, so
                // the bits are those of any other grouping); the others their logits.
                spans
                    .iter()
                    .map(|&(r, n, logits)| {
                        let rows = x.clone().narrow(0, r, n);
                        Ok(match logits {
                            LogitsFor::Normed => StageOutput::Hidden(norm.forward(rows)),
                            other => {
                                let (a, k) = head_rows(other, n);
                                let h = rows.narrow(0, a, k);
                                StageOutput::Logits(output.forward(norm.forward(h))?)
                            }
                        })
                    })
                    .collect()
            }
            (Some(norm), Some(output)) => {
                // The head runs once over the rows asked for, then splits them per item.
                let picked: Vec<(usize, usize)> = spans
                    .iter()
                    .map(|&(r, n, logits)| {
                        let (a, k) = head_rows(logits, n);
                        (r + a, k)
                    })
                    .collect();
                let h = if let [(r, n)] = picked[..] {
                    x.narrow(0, r, n)
                } else {
                    Tensor::cat(
                        picked
                            .iter()
                            .map(|&(r, n)| x.clone().narrow(0, r, n))
                            .collect(),
                        0,
                    )
                };
                let l = output.forward(norm.forward(h))?;
                if picked.len() == 1 {
                    return Ok(vec![StageOutput::Logits(l)]);
                }
                let mut at = 0;
                Ok(picked
                    .iter()
                    .map(|&(_, n)| {
                        let part = l.clone().narrow(0, at, n);
                        at += n;
                        StageOutput::Logits(part)
                    })
                    .collect())
            }
            _ if spans.len() == 1 => Ok(vec![StageOutput::Hidden(x)]),
            _ => Ok(spans
                .iter()
                .map(|&(r, n, _)| StageOutput::Hidden(x.clone().narrow(0, r, n)))
                .collect()),
        }
    }

    /// Checks one item against this stage and its cache and returns its rows `[n, d_model]`
    /// (token ids embedded on the first stage).
    fn embed_input(&self, input: StageInput, cache: &KvCache) -> Result<Tensor<2>, ArchError> {
        if cache.n_layers() != self.blocks.len() {
            return Err(ArchError::CacheMismatch {
                want: self.blocks.len(),
                got: cache.n_layers(),
            });
        }
        let d = self.config.d_model;
        let x = match (input, &self.embed) {
            (StageInput::Tokens(ids), Some(e)) => {
                if let Some(&bad) = ids.iter().find(|&&t| t as usize >= self.config.vocab_size) {
                    return Err(ArchError::BadInput(format!(
                        "token id {bad} >= vocab size {}",
                        self.config.vocab_size
                    )));
                }
                if ids.is_empty() {
                    return Err(ArchError::BadInput("empty batch".into()));
                }
                e.forward(&ids, &self.device)?
            }
            (StageInput::Hidden(h), None) => {
                if h.dims()[1] != d {
                    return Err(ArchError::BadInput(format!(
                        "hidden states {:?}, expected [n, {d}]",
                        h.dims()
                    )));
                }
                h
            }
            (StageInput::Tokens(_), None) => {
                return Err(ArchError::BadInput(
                    "token ids given to a stage without the embedding".into(),
                ));
            }
            (StageInput::Hidden(_), Some(_)) => {
                return Err(ArchError::BadInput(
                    "hidden states given to the embedding stage".into(),
                ));
            }
        };
        let n = x.dims()[0];
        if n == 0 {
            return Err(ArchError::BadInput("empty batch".into()));
        }
        cache.check_room(n)?;
        Ok(x)
    }

    /// Bytes of quantized weights held by this stage (blocks, embedding, head; a tied table
    /// counted once).
    pub fn weight_bytes(&self) -> usize {
        let blocks: usize = self.blocks.iter().map(Block::weight_bytes).sum();
        let embed = self.embed.as_ref().map_or(0, |e| e.table.n_bytes());
        let head = match (&self.output, &self.embed) {
            (Some(_), Some(_)) if self.config.tied_output => 0,
            (Some(o), _) => o.weight.n_bytes(),
            _ => 0,
        };
        blocks + embed + head
    }
}

/// Hidden states as a flat row-major vector (for sending between stages).
pub fn hidden_to_vec(h: Tensor<2>) -> Result<(Vec<f32>, [usize; 2]), ArchError> {
    let dims = h.dims();
    let v = h
        .into_data()
        .try_into_vec::<f32>()
        .map_err(|e| ArchError::BadInput(format!("hidden states are not f32: {e:?}")))?;
    Ok((v, dims))
}

/// Hidden states `[n, d]` from a flat row-major vector.
pub fn hidden_from_vec(
    v: Vec<f32>,
    n: usize,
    d: usize,
    device: &Device,
) -> Result<Tensor<2>, ArchError> {
    if v.len() != n * d {
        return Err(ArchError::BadInput(format!(
            "{} values cannot be [{n}, {d}]",
            v.len()
        )));
    }
    Ok(Tensor::from_data(TensorData::new(v, [n, d]), device))
}
