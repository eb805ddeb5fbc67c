//! `edgeray node` (placeholder until its issue lands).

/// Arguments of `edgeray node`.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {}

/// Run the subcommand.
pub fn run(_args: NodeArgs) -> anyhow::Result<()> {
    anyhow::bail!("`node` is not implemented yet")
}
