//! `edgeray revoke --config cluster.toml NODE`: add a node to `revoked` in cluster.toml.
//!
//! NODE is a full node id (64 hex), or a name or unique id prefix as `edgeray status` shows
//! them (resolved by asking the running cluster). The file is edited in place: comments,
//! order and every other key are kept. Nodes running with this file re-read it within
//! seconds (or on SIGHUP) and close the revoked node's connections; copy the updated file to
//! every board.

use anyhow::{Context, bail};
use edgeray_runtime::config::{ClusterConfig, parse_duration};
use edgeray_runtime::identity::NodeId;
use edgeray_runtime::membership::status::ClusterStatus;
use edgeray_runtime::node::status_client::{StatusTarget, query_status};
use std::path::{Path, PathBuf};

/// Arguments of `edgeray revoke`.
#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    /// The cluster configuration to edit.
    #[arg(long, default_value = "cluster.toml")]
    pub config: PathBuf,
    /// The node: its id (64 hex), or a name or unique id prefix as `edgeray status` lists.
    pub node: String,
    /// Per-node timeout when asking the cluster to resolve a name or prefix, e.g. `3s`.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
}

/// Run the subcommand.
pub fn run(args: RevokeArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read {}", args.config.display()))?;
    let config = ClusterConfig::from_toml_str(&text)
        .with_context(|| format!("invalid {}", args.config.display()))?;
    let (id, label) =
        match args.node.trim().parse::<NodeId>() {
            Ok(id) => (id, id.short()),
            Err(_) => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let target = StatusTarget {
                    timeout: args.timeout,
                    ..Default::default()
                };
                let status = rt.block_on(query_status(&config, &target)).with_context(|| {
                format!(
                    "cannot reach the cluster to resolve `{}`; give the full 64-hex node id \
                     (`edgeray status --json` lists them)",
                    args.node
                )
            })?;
                resolve(&status, &args.node)?
            }
        };
    match add_revoked(&text, id)? {
        None => eprintln!(
            "{label} ({}) is already revoked in {}",
            id.to_hex(),
            args.config.display()
        ),
        Some(edited) => {
            ClusterConfig::from_toml_str(&edited).context("the edited file would not parse")?;
            write_keeping_mode(&args.config, &edited)?;
            eprintln!(
                "revoked {label} ({}) in {}: nodes running with this file close its connections \
                 within seconds (or on SIGHUP); copy the file to every board",
                id.to_hex(),
                args.config.display()
            );
        }
    }
    Ok(())
}

/// The member a name or id prefix designates in `status`: `(id, "name (short id)")`. Exact
/// name matches win over id prefixes; anything ambiguous or unknown is an error listing the
/// members.
pub fn resolve(status: &ClusterStatus, node: &str) -> anyhow::Result<(NodeId, String)> {
    let node = node.trim();
    let by_name: Vec<_> = status.members.iter().filter(|m| m.name == node).collect();
    let prefix = node.to_ascii_lowercase();
    let matches = if !by_name.is_empty() {
        by_name
    } else if !prefix.is_empty() && prefix.chars().all(|c| c.is_ascii_hexdigit()) {
        status
            .members
            .iter()
            .filter(|m| m.node_id.starts_with(&prefix))
            .collect()
    } else {
        Vec::new()
    };
    let list = || {
        status
            .members
            .iter()
            .map(|m| format!("{} ({})", m.name, m.node_id_short))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match matches.as_slice() {
        [m] => {
            let id = m
                .node_id
                .parse::<NodeId>()
                .map_err(|e| anyhow::anyhow!("status lists a malformed node id: {e}"))?;
            Ok((id, format!("{} ({})", m.name, m.node_id_short)))
        }
        [] => bail!(
            "no member is named `{node}` or has an id starting with it; members: {}",
            list()
        ),
        many => bail!(
            "`{node}` matches {} members: {}; give more of the node id",
            many.len(),
            many.iter()
                .map(|m| format!("{} ({})", m.name, m.node_id))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `text` with `id` appended to the top-level `revoked` array (created when absent), or `None`
/// when it is already there. Comments, order and formatting of everything else are kept.
pub fn add_revoked(text: &str, id: NodeId) -> anyhow::Result<Option<String>> {
    let mut doc: toml_edit::DocumentMut = text.parse().context("cluster.toml is not TOML")?;
    let hex = id.to_hex();
    let item = doc
        .entry("revoked")
        .or_insert(toml_edit::value(toml_edit::Array::new()));
    let array = item
        .as_array_mut()
        .context("`revoked` in cluster.toml is not an array of node ids")?;
    if array.iter().any(|v| {
        v.as_str()
            .is_some_and(|s| s.trim().eq_ignore_ascii_case(&hex))
    }) {
        return Ok(None);
    }
    array.push(hex);
    Ok(Some(doc.to_string()))
}

/// Replaces `path` with `text` atomically (temp file + rename), keeping its permissions (the
/// file holds the cluster secret: mode 0600).
fn write_keeping_mode(path: &Path, text: &str) -> anyhow::Result<()> {
    let perms = std::fs::metadata(path)
        .with_context(|| format!("cannot stat {}", path.display()))?
        .permissions();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cluster.toml".into());
    let tmp = path.with_file_name(format!(".{name}.revoke.tmp"));
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, perms)
        .with_context(|| format!("cannot set the mode of {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeray_runtime::membership::status::MemberStatus;

    const SAMPLE: &str =
        "# cluster\nsecret = \"ab\" # keep me\nname = \"x\"\n\n[timing]\nheartbeat = \"1s\"\n";

    #[test]
    fn revoked_array_is_added_and_extended_keeping_the_rest() {
        let a = NodeId([1; 32]);
        let b = NodeId([2; 32]);
        let once = add_revoked(SAMPLE, a).unwrap().unwrap();
        assert!(
            once.contains("# keep me") && once.contains("[timing]"),
            "{once}"
        );
        let doc: toml::Table = toml::from_str(&once).unwrap();
        assert_eq!(doc["revoked"].as_array().unwrap().len(), 1);
        assert!(
            doc["timing"].get("revoked").is_none(),
            "top-level key, not inside [timing]: {once}"
        );
        assert_eq!(add_revoked(&once, a).unwrap(), None, "already revoked");
        let twice = add_revoked(&once, b).unwrap().unwrap();
        let doc: toml::Table = toml::from_str(&twice).unwrap();
        let ids: Vec<&str> = doc["revoked"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(ids, [a.to_hex(), b.to_hex()]);
        assert!(add_revoked("revoked = 3\n", a).is_err());
    }

    fn member(name: &str, id: NodeId) -> MemberStatus {
        let json = serde_json::json!({
            "name": name, "node_id": id.to_hex(), "node_id_short": id.short(),
            "incarnation": "0", "address": null, "state": "Up", "down_reason": null,
            "is_head": false, "is_self": false, "memory_total_bytes": null,
            "memory_free_bytes": null, "memory_budget_bytes": null, "power_budget_mw": null,
            "backend": null, "compute_score": null, "load1": null, "temperature_c": null,
            "cpus": null, "rtt_ms": null, "uptime_s": 0.0, "last_heard_ms": 0
        });
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn names_and_prefixes_resolve_uniquely() {
        let mut x = [0xab; 32];
        x[1] = 0x01;
        let mut y = [0xab; 32];
        y[1] = 0x02;
        let (x, y) = (NodeId(x), NodeId(y));
        let status = ClusterStatus {
            schema: 1,
            cluster_name: "c".into(),
            cluster_id: "00".into(),
            answered_by: x.to_hex(),
            head: None,
            members: vec![member("pi-01", x), member("pi-02", y)],
        };
        assert_eq!(resolve(&status, "pi-02").unwrap().0, y);
        assert_eq!(resolve(&status, "ab01").unwrap().0, x);
        assert_eq!(resolve(&status, "AB02").unwrap().0, y);
        let e = resolve(&status, "ab").unwrap_err().to_string();
        assert!(e.contains("matches 2 members"), "{e}");
        let e = resolve(&status, "pi-09").unwrap_err().to_string();
        assert!(e.contains("pi-01") && e.contains("pi-02"), "{e}");
    }
}
