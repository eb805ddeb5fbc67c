//! The member table as `edgeray status` prints it, and its stable JSON form.
//!
//! # JSON schema (`edgeray status --json`), version 1
//!
//! ```json
//! {
//!   "schema": 1,
//!   "cluster_name": "edgeray",
//!   "cluster_id": "<64 hex: SHA-256 of the cluster CA certificate>",
//!   "answered_by": "<64 hex node id of the node that answered>",
//!   "head": "<64 hex node id of the head, or null>",
//!   "members": [
//!     {
//!       "name": "pi-01",
//!       "node_id": "<64 hex>",
//!       "node_id_short": "<first 8 hex>",
//!       "incarnation": "<16 hex>",
//!       "address": "10.0.0.2:7070",        // or null
//!       "state": "Up",                     // "Joining" | "Up" | "Suspect" | "Down"
//!       "down_reason": null,               // "silence" | "disconnected" | "left" | "restarted" | null
//!       "is_head": true,
//!       "is_self": true,                   // the node that answered
//!       "memory_total_bytes": 8589934592,  // null until the first heartbeat
//!       "memory_free_bytes": 6442450944,
//!       "memory_budget_bytes": 3221225472,
//!       "power_budget_mw": 6000,           // null when not configured
//!       "backend": "cpu",                  // "cpu" | "wgpu" | null
//!       "compute_score": 812.4,            // relative, higher is faster; null before heartbeat
//!       "load1": 0.31,
//!       "temperature_c": 48.2,             // null when unknown
//!       "cpus": 4,
//!       "rtt_ms": 0.42,                    // from the answering node; null for itself / unknown
//!       "bandwidth_mbit": 94.1,            // measured by the answering node's probes; null for itself / unknown
//!       "uptime_s": 3605.2,
//!       "last_heard_ms": 120,              // ms since the answering node heard from it
//!       "roles": [                         // what it hosts ([] when nothing or unknown)
//!         "stage 1/3 layers 6..12 gemma-3-270m (coordinator local-0)"
//!       ],
//!       "revoked": false                   // in `revoked` of the answering node's cluster.toml
//!     }
//!   ]
//! }
//! ```
//!
//! Members are sorted by name, then node id. Fields are only ever added (incompatible changes
//! raise `schema`); existing fields keep their meaning.
//!
//! `roles` (added within schema 1; readers of older replies get `[]`): short strings a node
//! advertises for what it hosts (`NodeHandle::set_roles`), carried in its heartbeats, at most 16
//! of at most 200 characters each, control characters replaced by spaces. The table prints them
//! under their member's row as `    role: ...`.
//!
//! `revoked` (added within schema 1; older replies read as `false`): the member is listed in
//! `revoked` of the answering node's cluster.toml; it is disconnected and never admitted again
//! (its `state` goes Down). The table shows its STATE as `Revoked`.

use super::{Member, Membership};
use crate::config::{ByteSize, ComputeBackend, Power};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::time::Instant;

/// Current schema version of [`ClusterStatus`].
pub const STATUS_SCHEMA: u32 = 1;

/// The member table of one node, as sent to `edgeray status` (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// [`STATUS_SCHEMA`].
    pub schema: u32,
    /// Configured cluster name of the answering node.
    pub cluster_name: String,
    /// Public cluster id (hex).
    pub cluster_id: String,
    /// Node id (hex) of the node that answered.
    pub answered_by: String,
    /// Node id (hex) of the head.
    pub head: Option<String>,
    /// Every member.
    pub members: Vec<MemberStatus>,
}

/// One row of [`ClusterStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Display name.
    pub name: String,
    /// Node id, 64 hex.
    pub node_id: String,
    /// First 8 hex characters of the node id.
    pub node_id_short: String,
    /// Incarnation, 16 hex.
    pub incarnation: String,
    /// `ip:port` it accepts connections on.
    pub address: Option<String>,
    /// `Joining`, `Up`, `Suspect` or `Down`.
    pub state: String,
    /// Why it is Down.
    pub down_reason: Option<String>,
    /// Holds the head role.
    pub is_head: bool,
    /// Is the node that answered.
    pub is_self: bool,
    /// Physical memory, bytes.
    pub memory_total_bytes: Option<u64>,
    /// Available memory, bytes.
    pub memory_free_bytes: Option<u64>,
    /// Memory offered to the cluster, bytes.
    pub memory_budget_bytes: Option<u64>,
    /// Power budget, milliwatts.
    pub power_budget_mw: Option<u64>,
    /// `cpu` or `wgpu`.
    pub backend: Option<String>,
    /// Relative compute score.
    pub compute_score: Option<f64>,
    /// 1-minute load average.
    pub load1: Option<f32>,
    /// Hottest thermal zone, °C.
    pub temperature_c: Option<f32>,
    /// CPUs available.
    pub cpus: Option<u32>,
    /// Round-trip time from the answering node, ms.
    pub rtt_ms: Option<f64>,
    /// Bandwidth from the answering node, measured by its probes, Mbit/s.
    #[serde(default)]
    pub bandwidth_mbit: Option<f64>,
    /// Uptime of the member's process, seconds.
    pub uptime_s: f64,
    /// Milliseconds since the answering node last heard from it.
    pub last_heard_ms: u64,
    /// What it hosts, e.g. `stage 1/3 layers 6..12 gemma-3-270m (coordinator local-0)`; empty
    /// when nothing or before its first heartbeat.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Listed in `revoked` of the answering node's cluster.toml: refused and disconnected.
    #[serde(default)]
    pub revoked: bool,
}

impl MemberStatus {
    /// The row for one member.
    pub fn from_member(m: &Member, head: bool, now: Instant) -> Self {
        let r = m.resources.as_ref();
        MemberStatus {
            name: m.name.clone(),
            node_id: m.node_id.to_hex(),
            node_id_short: m.node_id.short(),
            incarnation: m.incarnation.to_string(),
            address: m.addr.map(|a| a.to_string()),
            state: m.state.as_str().to_string(),
            down_reason: m.down_reason.map(|r| r.to_string()),
            is_head: head,
            is_self: m.is_self,
            memory_total_bytes: r.map(|r| r.memory_total),
            memory_free_bytes: r.map(|r| r.memory_free),
            memory_budget_bytes: r.map(|r| r.memory_budget),
            power_budget_mw: r.and_then(|r| r.power_budget_mw),
            backend: r.map(|r| r.backend.to_string()),
            compute_score: r.map(|r| r.compute_score),
            load1: r.map(|r| r.load1),
            temperature_c: r.and_then(|r| r.temperature_c),
            cpus: r.map(|r| r.cpus),
            rtt_ms: m.rtt.map(|d| (d.as_secs_f64() * 1e5).round() / 100.0),
            bandwidth_mbit: m.bandwidth_bps.map(|b| (b / 1e5).round() / 10.0),
            uptime_s: (m.uptime_at(now).as_secs_f64() * 10.0).round() / 10.0,
            last_heard_ms: now.saturating_duration_since(m.last_heard).as_millis() as u64,
            roles: r.map(|r| r.roles.clone()).unwrap_or_default(),
            revoked: false,
        }
    }
}

impl ClusterStatus {
    /// Snapshot of a membership table.
    pub fn from_membership(
        membership: &Membership,
        cluster_name: &str,
        cluster_id_hex: &str,
        now: Instant,
    ) -> Self {
        let head = membership.head();
        let mut members: Vec<MemberStatus> = membership
            .members()
            .map(|m| MemberStatus::from_member(m, Some(m.node_id) == head, now))
            .collect();
        members.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.node_id.cmp(&b.node_id)));
        ClusterStatus {
            schema: STATUS_SCHEMA,
            cluster_name: cluster_name.to_string(),
            cluster_id: cluster_id_hex.to_string(),
            answered_by: membership.me().to_hex(),
            head: head.map(|h| h.to_hex()),
            members,
        }
    }

    /// Members in a given state.
    pub fn count(&self, state: &str) -> usize {
        self.members.iter().filter(|m| m.state == state).count()
    }

    /// A human table: one line per member, followed by one indented `role:` line per role.
    pub fn render_table(&self) -> String {
        let header = [
            "NAME",
            "ID",
            "ADDRESS",
            "STATE",
            "MEM TOTAL",
            "MEM FREE",
            "BUDGET",
            "POWER",
            "BACKEND",
            "SCORE",
            "RTT",
            "BANDWIDTH",
            "UPTIME",
        ];
        let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
        let dash = || "-".to_string();
        for m in &self.members {
            let name = if m.is_head {
                format!("{} *", m.name)
            } else {
                m.name.clone()
            };
            rows.push(vec![
                name,
                m.node_id_short.clone(),
                m.address.clone().unwrap_or_else(dash),
                if m.revoked {
                    "Revoked".to_string()
                } else {
                    m.state.clone()
                },
                m.memory_total_bytes
                    .map_or_else(dash, |b| ByteSize(b).to_string()),
                m.memory_free_bytes
                    .map_or_else(dash, |b| ByteSize(b).to_string()),
                m.memory_budget_bytes
                    .map_or_else(dash, |b| ByteSize(b).to_string()),
                m.power_budget_mw
                    .map_or_else(dash, |p| Power(p).to_string()),
                m.backend.clone().unwrap_or_else(dash),
                m.compute_score.map_or_else(dash, |s| format!("{s:.0}")),
                if m.is_self {
                    "self".to_string()
                } else {
                    m.rtt_ms.map_or_else(dash, |r| format!("{r:.2}ms"))
                },
                if m.is_self {
                    "self".to_string()
                } else {
                    m.bandwidth_mbit
                        .map_or_else(dash, |b| format!("{b:.1}Mbit/s"))
                },
                format_uptime(m.uptime_s),
            ]);
        }
        let widths: Vec<usize> = (0..header.len())
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "cluster {} ({}), {} members, {} up, head {}  (answered by {})",
            self.cluster_name,
            &self.cluster_id[..self.cluster_id.len().min(8)],
            self.members.len(),
            self.count("Up"),
            self.members
                .iter()
                .find(|m| m.is_head)
                .map_or("-", |m| m.name.as_str()),
            self.members
                .iter()
                .find(|m| m.is_self)
                .map_or("-", |m| m.name.as_str()),
        );
        let no_roles: &[String] = &[];
        let roles =
            std::iter::once(no_roles).chain(self.members.iter().map(|m| m.roles.as_slice()));
        for (r, roles) in rows.into_iter().zip(roles) {
            let line: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            let _ = writeln!(out, "{}", line.join("  ").trim_end());
            for role in roles {
                // Control characters are replaced on the node already; a hand-made status
                // must not break the layout either.
                let role: String = role
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                let _ = writeln!(out, "    role: {role}");
            }
        }
        out
    }
}

/// `3d 4h`, `2h 05m`, `4m 10s`, `12s`.
pub fn format_uptime(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    let (d, h, m, s) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

/// Convenience for callers that only need the backend enum back.
pub fn parse_backend(s: &str) -> Option<ComputeBackend> {
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Incarnation, NodeId};
    use crate::membership::{MemberSummary, MembershipTiming};
    use crate::resources::ResourceReport;
    use std::time::Duration;

    fn res() -> ResourceReport {
        ResourceReport {
            memory_total: 8 << 30,
            memory_free: 6 << 30,
            memory_budget: 3 << 30,
            power_budget_mw: Some(6000),
            load1: 0.5,
            temperature_c: Some(47.5),
            compute_score: 812.0,
            backend: ComputeBackend::Cpu,
            cpus: 4,
            roles: vec!["stage 0/2 layers 0..9 gemma-3-270m (coordinator pi-02)".into()],
        }
    }

    #[test]
    fn json_and_table() {
        let t0 = Instant::now();
        let timing = MembershipTiming {
            suspect_after: Duration::from_secs(3),
            down_after: Duration::from_secs(8),
            forget_after: Duration::from_secs(60),
        };
        let me = MemberSummary {
            node_id: NodeId([9; 32]),
            incarnation: Incarnation(1),
            name: "pi-02".into(),
            addr: Some("10.0.0.2:7070".parse().unwrap()),
        };
        let mut m = Membership::new(me, res(), timing, 8, t0);
        let peer = MemberSummary {
            node_id: NodeId([1; 32]),
            incarnation: Incarnation(2),
            name: "pi-01".into(),
            addr: Some("10.0.0.1:7070".parse().unwrap()),
        };
        m.on_connected(peer, t0).unwrap();
        m.on_heartbeat(
            NodeId([1; 32]),
            Incarnation(2),
            res(),
            Duration::from_secs(100),
            t0,
        );
        m.set_rtt(NodeId([1; 32]), Duration::from_micros(420));
        m.tick(t0 + Duration::from_secs(5));
        let st = ClusterStatus::from_membership(
            &m,
            "lab",
            &"ab".repeat(32),
            t0 + Duration::from_secs(5),
        );
        assert_eq!(st.members[0].name, "pi-01");
        assert!(st.members[0].is_head);
        assert_eq!(st.members[0].state, "Suspect");
        assert_eq!(st.members[0].rtt_ms, Some(0.42));
        assert_eq!(st.members[0].uptime_s, 105.0);
        assert_eq!(st.members[0].last_heard_ms, 5000);
        assert!(st.members[1].is_self);
        assert_eq!(st.head.as_deref(), Some(NodeId([1; 32]).to_hex().as_str()));
        let json = serde_json::to_value(&st).unwrap();
        assert_eq!(json["schema"], 1);
        assert_eq!(json["members"][0]["memory_budget_bytes"], 3u64 << 30);
        assert_eq!(json["members"][0]["power_budget_mw"], 6000);
        assert_eq!(json["members"][1]["node_id_short"], "09090909");
        assert_eq!(
            json["members"][0]["roles"][0],
            "stage 0/2 layers 0..9 gemma-3-270m (coordinator pi-02)"
        );
        let back: ClusterStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back, st);
        let table = st.render_table();
        assert!(table.contains("pi-01 *"), "{table}");
        assert!(
            table.contains("3.0GiB") && table.contains("6W") && table.contains("0.42ms"),
            "{table}"
        );
        // Roles print under their member's row.
        let lines: Vec<&str> = table.lines().collect();
        let row = lines.iter().position(|l| l.starts_with("pi-01 *")).unwrap();
        assert_eq!(
            lines[row + 1],
            "    role: stage 0/2 layers 0..9 gemma-3-270m (coordinator pi-02)"
        );
        // A reply without `roles` (older node) still parses.
        let mut old = serde_json::to_value(&st).unwrap();
        old["members"][0].as_object_mut().unwrap().remove("roles");
        let back: ClusterStatus = serde_json::from_value(old).unwrap();
        assert!(back.members[0].roles.is_empty());
        assert_eq!(format_uptime(3725.0), "1h 02m");
        assert_eq!(format_uptime(59.0), "59s");
        assert_eq!(parse_backend("wgpu"), Some(ComputeBackend::Wgpu));
    }
}
