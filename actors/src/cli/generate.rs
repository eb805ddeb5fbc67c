//! `edgeray generate` (placeholder until its issue lands).

/// Arguments of `edgeray generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {}

/// Run the subcommand.
pub fn run(_args: GenerateArgs) -> anyhow::Result<()> {
    anyhow::bail!("`generate` is not implemented yet")
}
