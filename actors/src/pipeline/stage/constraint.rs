//! The last stage's structured output: each constrained sequence's
//! [`Constraint`](edgeray_model::sampling::constraint::Constraint), built from the
//! sequence's [`SeqStart::constraint`](crate::pipeline::protocol::SeqStart::constraint), masks the logits before the sampler sees them.
//!
//! Log-probabilities stay those of the raw logits (what the model thinks, before any mask,
//! as with temperature and the other sampling filters): a constrained token may show a
//! low log-probability, and the alternatives listed may include tokens the constraint ruled
//! out. The top-2 gap reported with each token is that of the masked logits (the choice the
//! sampler actually made).

use std::sync::Arc;

use edgeray_model::sampling::constraint::{Constraint, ConstraintVocab, OutputFormat};
use edgeray_model::sampling::{Sampler, top2_gap};
use edgeray_model::tokenizer::Tokenizer;

/// The stage's vocabulary for constraints, built from its shard's tokenizer metadata on the
/// first constrained sequence (0.4–0.7 s for qwen2.5's 151,936 tokens on a 2-core x86 box) and
/// kept for the stage's life.
pub(super) struct VocabSlot {
    shard: super::shard_store::ShardOpener,
    vocab: Option<Arc<ConstraintVocab>>,
}

impl VocabSlot {
    pub(super) fn new(shard: super::shard_store::ShardOpener) -> Self {
        Self { shard, vocab: None }
    }

    fn get(&mut self) -> Result<Arc<ConstraintVocab>, String> {
        if let Some(v) = &self.vocab {
            return Ok(v.clone());
        }
        let file = self.shard.open()?;
        let tokenizer = Tokenizer::from_gguf(&file)
            .map_err(|e| format!("no tokenizer for structured output: {e}"))?;
        let t0 = std::time::Instant::now();
        let vocab =
            Arc::new(ConstraintVocab::from_tokenizer(&tokenizer).map_err(|e| e.to_string())?);
        tracing::info!(
            tokens = vocab.len(),
            ms = t0.elapsed().as_millis() as u64,
            "structured output: vocabulary prepared"
        );
        self.vocab = Some(vocab.clone());
        Ok(vocab)
    }

    /// The constraint of a sequence in `format` ([`SeqStart::constraint`](crate::pipeline::protocol::SeqStart::constraint)) starting with
    /// `prompt`, whose last `generated` tokens (a resumed attempt's output so far) it consumes.
    pub(super) fn start(
        &mut self,
        format: &str,
        prompt: &[u32],
        generated: u32,
    ) -> Result<Constraint, String> {
        let format = OutputFormat::from_wire(format).map_err(|e| e.to_string())?;
        let mut constraint = Constraint::new(self.get()?, &format).map_err(|e| e.to_string())?;
        let done = prompt
            .len()
            .checked_sub(generated as usize)
            .map(|from| &prompt[from..])
            .ok_or("more generated tokens than the prompt holds")?;
        constraint.advance_all(done).map_err(|e| e.to_string())?;
        Ok(constraint)
    }
}

/// Samples from `logits` with every token the constraint rules out at −∞, and advances the
/// constraint. Returns the masked logits' top-2 gap and the token.
pub(super) fn sample(
    constraint: &mut Constraint,
    sampler: &mut Sampler,
    logits: &[f32],
) -> Result<(f32, u32), String> {
    let mut masked = logits.to_vec();
    constraint
        .mask_logits(&mut masked)
        .map_err(|e| e.to_string())?;
    let gap = top2_gap(&masked);
    let token = sampler.sample(&masked).map_err(|e| e.to_string())?;
    constraint.advance(token).map_err(|e| e.to_string())?;
    Ok((gap, token))
}
