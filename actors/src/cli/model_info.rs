//! `edgeray model_info` (placeholder until its issue lands).

/// Arguments of `edgeray model_info`.
#[derive(Debug, clap::Args)]
pub struct ModelInfoArgs {}

/// Run the subcommand.
pub fn run(_args: ModelInfoArgs) -> anyhow::Result<()> {
    anyhow::bail!("`model_info` is not implemented yet")
}
