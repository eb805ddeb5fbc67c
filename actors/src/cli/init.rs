//! `edgeray init`: write a fresh `cluster.toml` with a new random cluster secret.

use anyhow::{Context, bail};
use edgeray_runtime::config::ClusterConfig;
use std::io::Write;
use std::path::{Path, PathBuf};

/// File name written by `edgeray init`.
pub const FILE_NAME: &str = "cluster.toml";

/// Arguments of `edgeray init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Folder to write `cluster.toml` into (created if missing).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Overwrite an existing `cluster.toml` (its old secret is lost: every board needs the new file).
    #[arg(long)]
    pub force: bool,
}

/// Run the subcommand.
pub fn run(args: InitArgs) -> anyhow::Result<()> {
    let path = write_config(&args.dir, args.force)?;
    println!(
        "wrote {} (mode 0600) with a new cluster secret",
        path.display()
    );
    println!(
        "copy this file to every board, then run on each: edgeray node --config {FILE_NAME} --name <board-name>"
    );
    Ok(())
}

/// Write `dir/cluster.toml` with a fresh secret; refuses to overwrite unless `force`.
pub fn write_config(dir: &Path, force: bool) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(FILE_NAME);
    if path.exists() && !force {
        bail!(
            "{} already exists; it holds this cluster's secret. Use --force to replace it \
             (every board then needs the new file)",
            path.display()
        );
    }
    let secret: [u8; 32] = rand::random();
    let text = ClusterConfig::sample_toml(secret);
    // Parse back what we write: a template error must never produce an unusable file.
    ClusterConfig::from_toml_str(&text)
        .context("internal error: generated config does not parse")?;
    let tmp = dir.join(format!(".{FILE_NAME}.tmp"));
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_private_file_and_refuses_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_config(dir.path(), false).unwrap();
        let cfg = ClusterConfig::load(&p).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let err = write_config(dir.path(), false).unwrap_err().to_string();
        assert!(
            err.contains("already exists") && err.contains("--force"),
            "{err}"
        );
        assert_eq!(
            ClusterConfig::load(&p).unwrap().secret,
            cfg.secret,
            "not overwritten"
        );
        write_config(dir.path(), true).unwrap();
        assert_ne!(
            ClusterConfig::load(&p).unwrap().secret,
            cfg.secret,
            "--force writes a new secret"
        );
    }
}
