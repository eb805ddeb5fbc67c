//! Building a [`ModelProfile`] from a model's tensor table and hyper-parameters (pure; the CLI
//! reads them from the GGUF file).

use super::types::{DEFAULT_STAGE_OVERHEAD_BYTES, ModelProfile};

/// Bytes per KV-cache element as edgeray's model crate stores the cache (f32).
pub const KV_ELEM_BYTES: u64 = 4;

/// Bytes per activation element sent between stages (f16).
pub const ACTIVATION_ELEM_BYTES: u64 = 2;

/// Hyper-parameters the profile needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileParams {
    /// Model name.
    pub name: String,
    /// Number of transformer layers.
    pub n_layers: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// Number of KV heads.
    pub n_kv_heads: usize,
    /// Key head dimension.
    pub key_dim: usize,
    /// Value head dimension.
    pub value_dim: usize,
    /// Context length to size the KV cache for.
    pub context_length: usize,
    /// Bytes per KV-cache element.
    pub kv_elem_bytes: u64,
    /// Fixed per-stage overhead (tensors every stage needs are added to it).
    pub stage_overhead_bytes: u64,
}

impl ProfileParams {
    /// Parameters with edgeray's defaults for element sizes and overhead.
    pub fn new(
        name: impl Into<String>,
        n_layers: usize,
        hidden_size: usize,
        n_kv_heads: usize,
        head_dim: usize,
        context_length: usize,
    ) -> Self {
        ProfileParams {
            name: name.into(),
            n_layers,
            hidden_size,
            n_kv_heads,
            key_dim: head_dim,
            value_dim: head_dim,
            context_length,
            kv_elem_bytes: KV_ELEM_BYTES,
            stage_overhead_bytes: DEFAULT_STAGE_OVERHEAD_BYTES,
        }
    }
}

/// Why a tensor table cannot be profiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// A `blk.<i>.` tensor names a layer beyond `n_layers` or is malformed.
    #[error("tensor `{name}` does not belong to a layer 0..{n_layers}")]
    BadLayerTensor {
        /// Tensor name.
        name: String,
        /// Declared layer count.
        n_layers: usize,
    },
    /// A layer has no tensors.
    #[error("layer {0} has no tensors")]
    EmptyLayer(usize),
    /// `token_embd.weight` is missing.
    #[error("the model has no `token_embd.weight` tensor")]
    NoEmbedding,
    /// The model declares no layers.
    #[error("the model declares 0 layers")]
    NoLayers,
}

/// Profile a model from `(tensor name, byte size)` pairs: per-layer bytes are the sizes of the
/// tensors named `blk.<i>.*`; `token_embd.*` is the embedding; `output_norm.*` and `output.*` are
/// the head (without `output.weight` the head is tied to the embedding table); any other
/// tensor (e.g. `rope_freqs.weight`) is needed by every stage and counts as per-stage overhead.
pub fn profile_from_tensors<'a>(
    params: &ProfileParams,
    tensors: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result<ModelProfile, ProfileError> {
    if params.n_layers == 0 {
        return Err(ProfileError::NoLayers);
    }
    let mut layer_bytes = vec![0u64; params.n_layers];
    let mut layer_seen = vec![false; params.n_layers];
    let mut embedding = None;
    let mut output = None;
    let mut output_norm = 0u64;
    let mut shared = 0u64;
    for (name, bytes) in tensors {
        if let Some(rest) = name.strip_prefix("blk.") {
            let idx = rest.split('.').next().and_then(|s| s.parse::<usize>().ok());
            match idx {
                Some(i) if i < params.n_layers && rest.len() > i.to_string().len() + 1 => {
                    layer_bytes[i] += bytes;
                    layer_seen[i] = true;
                }
                _ => {
                    return Err(ProfileError::BadLayerTensor {
                        name: name.to_string(),
                        n_layers: params.n_layers,
                    });
                }
            }
        } else if name.starts_with("token_embd.") {
            *embedding.get_or_insert(0) += bytes;
        } else if name.starts_with("output_norm.") {
            output_norm += bytes;
        } else if name.starts_with("output.") {
            *output.get_or_insert(0) += bytes;
        } else {
            shared += bytes;
        }
    }
    if let Some(i) = layer_seen.iter().position(|s| !s) {
        return Err(ProfileError::EmptyLayer(i));
    }
    let embedding_bytes = embedding.ok_or(ProfileError::NoEmbedding)?;
    let tied = output.is_none();
    let head_bytes = output_norm + output.unwrap_or(embedding_bytes);
    let kv = params.n_kv_heads as u64
        * (params.key_dim + params.value_dim) as u64
        * params.kv_elem_bytes;
    Ok(ModelProfile {
        name: params.name.clone(),
        layer_bytes,
        embedding_bytes,
        head_bytes,
        tied_embeddings: tied,
        kv_bytes_per_token_per_layer: kv,
        context_length: params.context_length,
        hidden_size: params.hidden_size,
        activation_bytes_per_token: params.hidden_size as u64 * ACTIVATION_ELEM_BYTES,
        stage_overhead_bytes: params.stage_overhead_bytes + shared,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_layers_embedding_and_tied_head() {
        let p = ProfileParams::new("t", 2, 8, 2, 4, 16);
        let tensors = [
            ("token_embd.weight", 100),
            ("blk.0.attn_q.weight", 10),
            ("blk.0.ffn_up.weight", 5),
            ("blk.1.attn_q.weight", 7),
            ("output_norm.weight", 3),
            ("rope_freqs.weight", 1),
        ];
        let m = profile_from_tensors(&p, tensors).unwrap();
        assert_eq!(m.layer_bytes, vec![15, 7]);
        assert_eq!(m.embedding_bytes, 100);
        assert_eq!(m.head_bytes, 103);
        assert!(m.tied_embeddings);
        assert_eq!(m.kv_bytes_per_token_per_layer, 2 * 2 * 4 * 4);
        assert_eq!(m.activation_bytes_per_token, 16);
        assert_eq!(m.stage_overhead_bytes, DEFAULT_STAGE_OVERHEAD_BYTES + 1);
        assert_eq!(m.total_weight_bytes(), 100 + 15 + 7 + 3);
    }

    #[test]
    fn rejects_bad_layer_and_missing_layer() {
        let p = ProfileParams::new("t", 2, 8, 2, 4, 16);
        let e = profile_from_tensors(&p, [("token_embd.weight", 1), ("blk.7.x", 1)]).unwrap_err();
        assert!(matches!(e, ProfileError::BadLayerTensor { .. }));
        let e = profile_from_tensors(&p, [("token_embd.weight", 1), ("blk.0.x", 1)]).unwrap_err();
        assert_eq!(e, ProfileError::EmptyLayer(1));
    }
}

/// Why a GGUF file's metadata does not describe a model that can be placed.
#[derive(Debug, thiserror::Error)]
pub enum GgufProfileError {
    /// A metadata key is missing or has the wrong type.
    #[error("GGUF metadata: {0}")]
    Metadata(#[from] edgeray_model::gguf::GgufError),
    /// A key holds a value the profile cannot use.
    #[error("GGUF metadata: {0}")]
    Value(String),
    /// The tensor table does not give per-layer sizes.
    #[error(transparent)]
    Profile(#[from] ProfileError),
}

/// The placement profile of an opened GGUF model: hyper-parameters from its metadata, per-layer
/// bytes from its tensor table (the sizes of the tensors named `blk.<i>.*`), the KV cache sized
/// for `ctx` positions (the training context when `None`).
pub fn profile_from_gguf(
    file: &edgeray_model::gguf::GgufFile,
    ctx: Option<usize>,
    overhead_bytes: u64,
) -> Result<ModelProfile, GgufProfileError> {
    let md = file.metadata();
    let arch = md.get_str("general.architecture")?;
    let key = |k: &str| format!("{arch}.{k}");
    let n_layers = md.get_usize(&key("block_count"))?;
    let hidden = md.get_usize(&key("embedding_length"))?;
    let n_head = md.get_usize(&key("attention.head_count"))?;
    let n_kv = match md.get(&key("attention.head_count_kv")) {
        None => n_head,
        Some(v) => match v.as_integer() {
            Some(i) => usize::try_from(i)
                .map_err(|_| GgufProfileError::Value(format!("head_count_kv {i} out of range")))?,
            // per-layer arrays: size the cache for the largest layer
            None => md
                .get_u32_array(&key("attention.head_count_kv"))?
                .into_iter()
                .max()
                .unwrap_or(0) as usize,
        },
    };
    if n_head == 0 {
        return Err(GgufProfileError::Value("attention.head_count is 0".into()));
    }
    let head_dim = md
        .get_usize_opt(&key("attention.key_length"))?
        .unwrap_or(hidden / n_head);
    let value_dim = md
        .get_usize_opt(&key("attention.value_length"))?
        .unwrap_or(head_dim);
    let train_ctx = md.get_usize_opt(&key("context_length"))?.unwrap_or(2048);
    let name = md.get_str_opt("general.name")?.unwrap_or(arch).to_string();
    let mut params = ProfileParams::new(
        name,
        n_layers,
        hidden,
        n_kv,
        head_dim,
        ctx.unwrap_or(train_ctx),
    );
    params.value_dim = value_dim;
    params.stage_overhead_bytes = overhead_bytes;
    let tensors = file.tensors().iter().map(|t| (t.name.as_str(), t.size));
    Ok(profile_from_tensors(&params, tensors)?)
}
