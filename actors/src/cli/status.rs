//! `edgeray status` (placeholder until its issue lands).

/// Arguments of `edgeray status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {}

/// Run the subcommand.
pub fn run(_args: StatusArgs) -> anyhow::Result<()> {
    anyhow::bail!("`status` is not implemented yet")
}
