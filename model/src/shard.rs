//! Stage shards: a GGUF file holding only the tensors one pipeline stage needs.
//!
//! A shard keeps every metadata pair of the full model (so the tokenizer, hyper-parameters and
//! chat template travel with it), records the vocabulary size and whether the head is tied (a
//! shard may lack `token_embd.weight`, where a full model's vocabulary size comes from), and
//! copies the raw, still-quantized bytes of exactly the tensors [`Stage::load`] reads for its
//! [`StageSpec`]. Loading a stage from its shard gives the same stage as loading it from the full
//! model.
//!
//! [`Stage::load`]: crate::arch::Stage::load

use std::collections::BTreeSet;

use crate::arch::{ArchError, ModelConfig, SHARD_TIED_KEY, SHARD_VOCAB_KEY, StageSpec};
use crate::gguf::{GgufError, GgufFile, GgufWriter, MetadataValue};

/// Why a shard could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// The model's hyper-parameters are unusable, or the spec does not fit the model.
    #[error(transparent)]
    Arch(#[from] ArchError),
    /// The file could not be read or the shard could not be written.
    #[error(transparent)]
    Gguf(#[from] GgufError),
}

/// The names of the tensors a stage holding `spec` reads, in file order.
pub fn stage_tensor_names(file: &GgufFile, spec: &StageSpec) -> Result<Vec<String>, ShardError> {
    let config = ModelConfig::from_gguf(file)?;
    names_for(file, &config, spec)
}

/// [`stage_tensor_names`] with the model's configuration already read.
fn names_for(
    file: &GgufFile,
    config: &ModelConfig,
    spec: &StageSpec,
) -> Result<Vec<String>, ShardError> {
    spec.validate(config)?;
    let mut wanted = BTreeSet::new();
    if spec.embed || (spec.head && config.tied_output) {
        wanted.insert("token_embd.weight".to_string());
    }
    if spec.head {
        wanted.insert("output_norm.weight".to_string());
        if !config.tied_output {
            wanted.insert("output.weight".to_string());
        }
    }
    let mut names = Vec::new();
    for t in file.tensors() {
        let keep = match block_index(&t.name) {
            Some(i) => spec.layers.contains(&i),
            // Other global tensors (e.g. `rope_freqs.weight`) are small and shared by all layers.
            None => {
                wanted.contains(&t.name)
                    || !matches!(
                        t.name.as_str(),
                        "token_embd.weight" | "output.weight" | "output_norm.weight"
                    )
            }
        };
        if keep {
            names.push(t.name.clone());
        }
    }
    for w in &wanted {
        file.require_tensor(w)?;
    }
    Ok(names)
}

/// Builds the shard of `spec` from the full model `file`, as GGUF bytes.
pub fn build_stage_shard(file: &GgufFile, spec: &StageSpec) -> Result<Vec<u8>, ShardError> {
    let config = ModelConfig::from_gguf(file)?;
    let names = names_for(file, &config, spec)?;
    let mut w = GgufWriter::new();
    w.extend_metadata(file.metadata());
    w.set_metadata(
        SHARD_VOCAB_KEY,
        MetadataValue::U64(config.vocab_size as u64),
    );
    w.set_metadata(SHARD_TIED_KEY, MetadataValue::Bool(config.tied_output));
    w.set_metadata(
        "edgeray.shard.layers",
        MetadataValue::String(format!("{}..{}", spec.layers.start, spec.layers.end)),
    );
    for name in &names {
        let info = file.require_tensor(name)?;
        let data = file.tensor_data(info)?.to_vec();
        w.add_tensor(name.clone(), &info.dims, info.ggml_type, data)?;
    }
    Ok(w.to_bytes()?)
}

/// `blk.N.…` → `Some(N)`.
fn block_index(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_index_parses_only_block_tensors() {
        assert_eq!(block_index("blk.12.attn_q.weight"), Some(12));
        assert_eq!(block_index("blk.x.attn_q.weight"), None);
        assert_eq!(block_index("token_embd.weight"), None);
    }
}
