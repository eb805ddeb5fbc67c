//! `edgeray init` (placeholder until its issue lands).

/// Arguments of `edgeray init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {}

/// Run the subcommand.
pub fn run(_args: InitArgs) -> anyhow::Result<()> {
    anyhow::bail!("`init` is not implemented yet")
}
