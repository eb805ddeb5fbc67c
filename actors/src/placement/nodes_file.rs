//! Synthetic cluster descriptions (TOML) for previewing placements offline.
//!
//! ```toml
//! # optional: link assumed between nodes without a [[link]] entry (default 1 ms, 100 Mbit/s)
//! [default_link]
//! rtt_ms = 1.0
//! bandwidth_mbit = 100.0
//!
//! [[node]]
//! name = "pi-01"          # required, unique
//! id = "pi-01"            # optional, defaults to the name
//! memory_mib = 2048       # memory budget edgeray may use
//! free_mib = 1800         # optional, defaults to memory_mib
//! power_w = 6.5           # power drawn while computing (0 = unknown)
//! compute_mib_s = 900     # measured weight MiB/s the node streams through its kernels
//! backend = "flex"        # optional, default "flex"
//! up = true               # optional, default true
//!
//! [[link]]                # optional, symmetric
//! a = "pi-01"             # node names or ids
//! b = "pi-02"
//! rtt_ms = 0.4
//! bandwidth_mbit = 940.0
//! ```

use super::types::{ClusterView, LinkView, MemberId, NodeView};
use serde::Deserialize;
use std::collections::BTreeMap;

const MIB: f64 = 1024.0 * 1024.0;

/// Why a nodes file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum NodesFileError {
    /// Not valid TOML or wrong field types.
    #[error("invalid nodes file: {0}")]
    Toml(#[from] toml::de::Error),
    /// No `[[node]]` entries.
    #[error("the nodes file defines no [[node]] entries")]
    NoNodes,
    /// Two nodes share a name or id.
    #[error("duplicate node name or id `{0}`")]
    Duplicate(String),
    /// A number is negative, NaN or otherwise out of range.
    #[error("node or link `{what}`: {field} must be a finite number ≥ 0 (got {value})")]
    BadNumber {
        /// The node name or link.
        what: String,
        /// The field.
        field: &'static str,
        /// The value given.
        value: f64,
    },
    /// A `[[link]]` names an unknown node.
    #[error("link names unknown node `{0}`")]
    UnknownLinkNode(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLink {
    rtt_ms: f64,
    bandwidth_mbit: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNode {
    name: String,
    id: Option<String>,
    memory_mib: f64,
    free_mib: Option<f64>,
    #[serde(default)]
    power_w: f64,
    compute_mib_s: f64,
    backend: Option<String>,
    up: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNodeLink {
    a: String,
    b: String,
    rtt_ms: f64,
    bandwidth_mbit: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodesFile {
    default_link: Option<FileLink>,
    #[serde(default)]
    node: Vec<FileNode>,
    #[serde(default)]
    link: Vec<FileNodeLink>,
}

fn check(what: &str, field: &'static str, value: f64) -> Result<f64, NodesFileError> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(NodesFileError::BadNumber {
            what: what.to_string(),
            field,
            value,
        })
    }
}

fn link(what: &str, rtt_ms: f64, bandwidth_mbit: f64) -> Result<LinkView, NodesFileError> {
    let rtt = check(what, "rtt_ms", rtt_ms)?;
    let bw = check(what, "bandwidth_mbit", bandwidth_mbit)?;
    if bw == 0.0 {
        return Err(NodesFileError::BadNumber {
            what: what.to_string(),
            field: "bandwidth_mbit",
            value: bw,
        });
    }
    Ok(LinkView {
        rtt_s: rtt / 1e3,
        bandwidth_bytes_per_s: bw * 1e6 / 8.0,
    })
}

/// Parse a nodes file (see the module docs) into a [`ClusterView`].
pub fn parse_nodes_toml(text: &str) -> Result<ClusterView, NodesFileError> {
    let file: NodesFile = toml::from_str(text)?;
    if file.node.is_empty() {
        return Err(NodesFileError::NoNodes);
    }
    let mut by_key: BTreeMap<String, MemberId> = BTreeMap::new();
    let mut nodes = Vec::new();
    for n in &file.node {
        let id = MemberId(n.id.clone().unwrap_or_else(|| n.name.clone()));
        for key in [n.name.clone(), id.0.clone()] {
            if by_key.get(&key).is_some_and(|other| *other != id)
                || nodes.iter().any(|x: &NodeView| x.id == id)
            {
                return Err(NodesFileError::Duplicate(key));
            }
            by_key.insert(key, id.clone());
        }
        let memory = check(&n.name, "memory_mib", n.memory_mib)?;
        let free = check(&n.name, "free_mib", n.free_mib.unwrap_or(memory))?;
        nodes.push(NodeView {
            id,
            name: n.name.clone(),
            memory_budget_bytes: (memory * MIB) as u64,
            memory_free_bytes: (free * MIB) as u64,
            power_watts: check(&n.name, "power_w", n.power_w)?,
            compute_bytes_per_s: check(&n.name, "compute_mib_s", n.compute_mib_s)? * MIB,
            backend: n.backend.clone().unwrap_or_else(|| "flex".to_string()),
            up: n.up.unwrap_or(true),
        });
    }
    let mut view = ClusterView::new(nodes);
    if let Some(l) = &file.default_link {
        view.default_link = link("default_link", l.rtt_ms, l.bandwidth_mbit)?;
    }
    for l in &file.link {
        let a = by_key
            .get(&l.a)
            .ok_or_else(|| NodesFileError::UnknownLinkNode(l.a.clone()))?
            .clone();
        let b = by_key
            .get(&l.b)
            .ok_or_else(|| NodesFileError::UnknownLinkNode(l.b.clone()))?
            .clone();
        let lv = link(&format!("{}–{}", l.a, l.b), l.rtt_ms, l.bandwidth_mbit)?;
        view.set_link(&a, &b, lv);
    }
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nodes_and_links() {
        let v = parse_nodes_toml(
            r#"
            [default_link]
            rtt_ms = 2.0
            bandwidth_mbit = 80.0
            [[node]]
            name = "a"
            memory_mib = 1024
            power_w = 5
            compute_mib_s = 100
            [[node]]
            name = "b"
            id = "42"
            memory_mib = 512
            free_mib = 256
            compute_mib_s = 50
            up = false
            [[link]]
            a = "a"
            b = "42"
            rtt_ms = 0.5
            bandwidth_mbit = 800
            "#,
        )
        .unwrap();
        assert_eq!(v.nodes.len(), 2);
        assert_eq!(v.nodes[1].id, MemberId("42".into()));
        assert_eq!(v.nodes[1].usable_bytes(), 256 << 20);
        assert!(!v.nodes[1].up);
        let l = v.link(&MemberId("42".into()), &MemberId("a".into()));
        assert_eq!(l.rtt_s, 0.0005);
        assert_eq!(l.bandwidth_bytes_per_s, 100e6);
        assert_eq!(v.default_link.rtt_s, 0.002);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(parse_nodes_toml(""), Err(NodesFileError::NoNodes)));
        let dup = "[[node]]\nname='a'\nmemory_mib=1\ncompute_mib_s=1\n[[node]]\nname='a'\nmemory_mib=1\ncompute_mib_s=1\n";
        assert!(matches!(
            parse_nodes_toml(dup),
            Err(NodesFileError::Duplicate(_))
        ));
        let neg = "[[node]]\nname='a'\nmemory_mib=-1\ncompute_mib_s=1\n";
        assert!(matches!(
            parse_nodes_toml(neg),
            Err(NodesFileError::BadNumber { .. })
        ));
        let unk = "[[node]]\nname='a'\nmemory_mib=1\ncompute_mib_s=1\n[[link]]\na='a'\nb='zz'\nrtt_ms=1\nbandwidth_mbit=1\n";
        assert!(matches!(
            parse_nodes_toml(unk),
            Err(NodesFileError::UnknownLinkNode(_))
        ));
        assert!(matches!(
            parse_nodes_toml("[[node]]\nname=3"),
            Err(NodesFileError::Toml(_))
        ));
    }
}
