//! What a node announces in its mDNS TXT record, and the pure filter that turns a resolved
//! record into a dial candidate.
//!
//! TXT keys (all public data; the cluster secret is never announced):
//!
//! | key | value                                                        |
//! |-----|--------------------------------------------------------------|
//! | `c` | cluster id: 64 hex, SHA-256 of the cluster CA certificate     |
//! | `n` | node id: 64 hex                                              |
//! | `p` | QUIC port (decimal)                                          |
//! | `v` | supported protocol versions, comma separated (e.g. `1`)      |
//! | `i` | incarnation: 16 hex, random per process start (optional)      |
//!
//! A record is only a hint: the node dials the address and admits the peer after the mutually
//! authenticated handshake proves the same cluster and the announced node id.

use crate::identity::{Incarnation, NodeId};
use crate::security::ClusterId;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// The mDNS service type of edgeray nodes.
pub const SERVICE_TYPE: &str = "_edgeray._udp.local.";

/// TXT key of the cluster id.
pub const KEY_CLUSTER: &str = "c";
/// TXT key of the node id.
pub const KEY_NODE: &str = "n";
/// TXT key of the port.
pub const KEY_PORT: &str = "p";
/// TXT key of the protocol versions.
pub const KEY_VERSIONS: &str = "v";
/// TXT key of the incarnation (optional: records of older nodes lack it).
pub const KEY_INCARNATION: &str = "i";

/// What one node announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// Public cluster id.
    pub cluster_id: ClusterId,
    /// The announcing node.
    pub node_id: NodeId,
    /// Its QUIC port.
    pub port: u16,
    /// Protocol versions it speaks.
    pub versions: Vec<u16>,
    /// The announcing process's incarnation (absent in records of older nodes).
    pub incarnation: Option<Incarnation>,
}

/// Why a TXT record was not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxtError {
    /// A key is missing.
    #[error("TXT record lacks `{0}`")]
    Missing(&'static str),
    /// A value is malformed.
    #[error("TXT `{key}` is malformed: {value:?}")]
    Malformed {
        /// The key.
        key: &'static str,
        /// The value.
        value: String,
    },
}

impl Announcement {
    /// The mDNS instance name: `edgeray-<first 16 hex of the node id>` (unique per node, fits a
    /// DNS label).
    pub fn instance_name(&self) -> String {
        format!("edgeray-{}", &self.node_id.to_hex()[..16])
    }

    /// TXT properties.
    pub fn to_txt(&self) -> HashMap<String, String> {
        let versions: Vec<String> = self.versions.iter().map(u16::to_string).collect();
        let mut txt = HashMap::from([
            (KEY_CLUSTER.to_string(), self.cluster_id.to_hex()),
            (KEY_NODE.to_string(), self.node_id.to_hex()),
            (KEY_PORT.to_string(), self.port.to_string()),
            (KEY_VERSIONS.to_string(), versions.join(",")),
        ]);
        if let Some(i) = self.incarnation {
            txt.insert(KEY_INCARNATION.to_string(), i.to_string());
        }
        txt
    }

    /// Parse TXT properties (`get` returns the value of a key).
    pub fn from_txt<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Announcement, TxtError> {
        let field = |k: &'static str| get(k).ok_or(TxtError::Missing(k));
        let bad = |key: &'static str, value: &str| TxtError::Malformed {
            key,
            value: value.to_string(),
        };
        let c = field(KEY_CLUSTER)?;
        let cluster_id = hex32(c).map(ClusterId).ok_or_else(|| bad(KEY_CLUSTER, c))?;
        let n = field(KEY_NODE)?;
        let node_id = n.parse::<NodeId>().map_err(|_| bad(KEY_NODE, n))?;
        let p = field(KEY_PORT)?;
        let port = p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad(KEY_PORT, p))?;
        let v = field(KEY_VERSIONS)?;
        let versions = v
            .split(',')
            .map(|s| s.trim().parse::<u16>())
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| bad(KEY_VERSIONS, v))?;
        let incarnation = match get(KEY_INCARNATION) {
            None => None,
            Some(i) => Some(
                u64::from_str_radix(i, 16)
                    .ok()
                    .filter(|_| i.len() == 16)
                    .map(Incarnation)
                    .ok_or_else(|| bad(KEY_INCARNATION, i))?,
            ),
        };
        Ok(Announcement {
            cluster_id,
            node_id,
            port,
            versions,
            incarnation,
        })
    }
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    <[u8; 32]>::try_from(hex::decode(s).ok()?.as_slice()).ok()
}

/// Whether a record announces this node's id from another process: same node id, another
/// incarnation. Two processes then share one identity (a copied state directory, a cloned SD
/// card); only one of them can be a member.
pub fn announces_own_id_elsewhere(
    ann: &Announcement,
    own_node: NodeId,
    own_incarnation: Option<Incarnation>,
) -> bool {
    ann.node_id == own_node
        && matches!((ann.incarnation, own_incarnation), (Some(a), Some(b)) if a != b)
}

/// A node found by discovery: where to dial it. Not yet admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The node id it announces (verified by the handshake).
    pub node_id: NodeId,
    /// Addresses to try, IPv4 first.
    pub addrs: Vec<SocketAddr>,
}

/// Why a resolved record was ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    /// Our own announcement.
    #[error("own announcement")]
    Own,
    /// Another cluster's node (different secret).
    #[error("other cluster {0}")]
    OtherCluster(String),
    /// The record has no usable address.
    #[error("no usable address")]
    NoAddress,
    /// The TXT record is malformed.
    #[error("{0}")]
    Txt(#[from] TxtError),
}

/// Turn a resolved announcement and its addresses into a dial candidate, or say why not.
/// Addresses: IPv4 first (sorted), then IPv6 (link-local ones need the scope id, given as
/// `(addr, scope)`; unspecified/multicast addresses are dropped).
pub fn candidate(
    ann: Result<Announcement, TxtError>,
    addrs: &[(IpAddr, u32)],
    own_node: NodeId,
    own_cluster: ClusterId,
) -> Result<Candidate, Ignored> {
    let ann = ann?;
    if ann.node_id == own_node {
        return Err(Ignored::Own);
    }
    if ann.cluster_id != own_cluster {
        return Err(Ignored::OtherCluster(ann.cluster_id.short()));
    }
    let mut v4: Vec<SocketAddr> = Vec::new();
    let mut v6: Vec<SocketAddr> = Vec::new();
    for &(ip, scope) in addrs {
        if ip.is_unspecified() || ip.is_multicast() {
            continue;
        }
        match ip {
            IpAddr::V4(a) => v4.push(SocketAddr::new(IpAddr::V4(a), ann.port)),
            IpAddr::V6(a) => {
                let link_local = (a.segments()[0] & 0xffc0) == 0xfe80;
                if link_local && scope == 0 {
                    continue;
                }
                v6.push(SocketAddr::V6(std::net::SocketAddrV6::new(
                    a,
                    ann.port,
                    0,
                    if link_local { scope } else { 0 },
                )));
            }
        }
    }
    v4.sort();
    v4.dedup();
    v6.sort();
    v6.dedup();
    v4.extend(v6);
    if v4.is_empty() {
        return Err(Ignored::NoAddress);
    }
    Ok(Candidate {
        node_id: ann.node_id,
        addrs: v4,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(node: u8, cluster: u8) -> Announcement {
        Announcement {
            cluster_id: ClusterId([cluster; 32]),
            node_id: NodeId([node; 32]),
            port: 7070,
            versions: vec![1],
            incarnation: Some(Incarnation(0x0123_4567_89ab_cdef)),
        }
    }

    #[test]
    fn own_id_from_another_incarnation_is_detected() {
        let me = NodeId([3; 32]);
        let a = ann(3, 9);
        assert!(!announces_own_id_elsewhere(&a, me, a.incarnation));
        assert!(announces_own_id_elsewhere(&a, me, Some(Incarnation(7))));
        assert!(!announces_own_id_elsewhere(
            &a,
            NodeId([4; 32]),
            Some(Incarnation(7))
        ));
        let old = Announcement {
            incarnation: None,
            ..a.clone()
        };
        assert!(!announces_own_id_elsewhere(&old, me, Some(Incarnation(7))));
    }

    #[test]
    fn txt_roundtrip_has_no_secret() {
        let a = ann(3, 9);
        let txt = a.to_txt();
        assert_eq!(txt.len(), 5);
        assert_eq!(txt["i"], "0123456789abcdef");
        assert!(txt.values().all(|v| v.len() <= 64));
        let back = Announcement::from_txt(|k| txt.get(k).map(String::as_str)).unwrap();
        assert_eq!(back, a);
        assert_eq!(a.instance_name(), "edgeray-0303030303030303");
    }

    #[test]
    fn malformed_txt() {
        let good = ann(3, 9).to_txt();
        for (key, value) in [
            ("c", "zz"),
            ("n", "1234"),
            ("p", "0"),
            ("p", "70000"),
            ("v", ""),
            ("v", "1,x"),
            ("i", "xyz"),
            ("i", "12"),
        ] {
            let mut t = good.clone();
            t.insert(key.into(), value.into());
            let e = Announcement::from_txt(|k| t.get(k).map(String::as_str)).unwrap_err();
            assert!(
                matches!(e, TxtError::Malformed { .. }),
                "{key}={value}: {e}"
            );
        }
        let mut t = good.clone();
        t.remove("i");
        assert_eq!(
            Announcement::from_txt(|k| t.get(k).map(String::as_str))
                .unwrap()
                .incarnation,
            None,
            "records of older nodes have no incarnation"
        );
        let mut t = good.clone();
        t.remove("n");
        assert_eq!(
            Announcement::from_txt(|k| t.get(k).map(String::as_str)),
            Err(TxtError::Missing("n"))
        );
    }

    #[test]
    fn filtering() {
        let me = NodeId([1; 32]);
        let cl = ClusterId([9; 32]);
        let v4: IpAddr = "10.0.0.3".parse().unwrap();
        let ll: IpAddr = "fe80::1".parse().unwrap();
        let g: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(
            candidate(Ok(ann(1, 9)), &[(v4, 0)], me, cl),
            Err(Ignored::Own)
        );
        assert!(matches!(
            candidate(Ok(ann(3, 8)), &[(v4, 0)], me, cl),
            Err(Ignored::OtherCluster(_))
        ));
        assert_eq!(
            candidate(Ok(ann(3, 9)), &[(ll, 0)], me, cl),
            Err(Ignored::NoAddress)
        );
        let c = candidate(Ok(ann(3, 9)), &[(ll, 2), (g, 5), (v4, 0), (v4, 0)], me, cl).unwrap();
        assert_eq!(c.node_id, NodeId([3; 32]));
        assert_eq!(c.addrs[0], "10.0.0.3:7070".parse::<SocketAddr>().unwrap());
        assert_eq!(c.addrs.len(), 3);
        assert!(
            c.addrs
                .iter()
                .any(|a| matches!(a, SocketAddr::V6(v) if v.scope_id() == 2))
        );
        assert!(
            c.addrs
                .iter()
                .any(|a| matches!(a, SocketAddr::V6(v) if v.scope_id() == 0 && v.ip().segments()[0] == 0x2001))
        );
        assert!(matches!(
            candidate(Err(TxtError::Missing("c")), &[(v4, 0)], me, cl),
            Err(Ignored::Txt(_))
        ));
    }
}
