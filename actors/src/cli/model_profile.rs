//! `edgeray model profile`: a model's simulator profile (per-layer quantized bytes, KV and
//! activation sizes, MLP width) as JSON, so its splits can be simulated without the file.

use crate::sim::SimModel;
use anyhow::{Context, Result};
use edgeray_model::arch::ModelConfig;
use edgeray_model::gguf::GgufFile;
use std::path::{Path, PathBuf};

/// Arguments of `edgeray model profile`.
#[derive(Debug, clap::Args)]
pub struct ModelProfileArgs {
    /// GGUF model file.
    pub path: PathBuf,
    /// Context length the KV cache is sized for (default: the model's training context).
    #[arg(long)]
    pub ctx: Option<usize>,
}

/// The simulator profile of the GGUF model at `path`.
pub fn sim_model_from_gguf(path: &Path, ctx: Option<usize>) -> Result<SimModel> {
    let profile = super::placement::profile_from_gguf(
        path,
        ctx,
        crate::placement::types::DEFAULT_STAGE_OVERHEAD_BYTES,
    )?;
    let file =
        GgufFile::open(path).with_context(|| format!("cannot open model {}", path.display()))?;
    let cfg = ModelConfig::from_gguf(&file)
        .with_context(|| format!("cannot read the configuration of {}", path.display()))?;
    Ok(SimModel {
        profile,
        ffn_size: Some(cfg.n_ff),
        source: path.file_name().map(|n| n.to_string_lossy().into_owned()),
    })
}

/// Run the subcommand: print the profile as JSON.
pub fn run(args: ModelProfileArgs) -> Result<()> {
    let m = sim_model_from_gguf(&args.path, args.ctx)?;
    println!("{}", serde_json::to_string_pretty(&m)?);
    Ok(())
}
