//! `edgeray bench` (placeholder until its issue lands).

/// Arguments of `edgeray bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {}

/// Run the subcommand.
pub fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("`bench` is not implemented yet")
}
