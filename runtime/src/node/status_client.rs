//! The `edgeray status` client: a short-lived, authenticated peer that asks one node for its
//! member table.
//!
//! It generates a throw-away node identity, derives the cluster certificates from the secret in
//! `cluster.toml` like any node (so it passes mutual TLS), binds an ephemeral UDP port, dials one
//! node, opens a [`super::messages::STATUS_STREAM_KIND`] stream and reads one
//! [`super::messages::StatusReply`]. It never sends `Join`, so it never becomes a member.
//!
//! Which node it asks, first answer wins: `--node host:port` if given; otherwise the local node
//! (`127.0.0.1:<port of listen>`), the `listen` address itself if it is specific, every seed,
//! and finally nodes found by mDNS (browse only) within the discovery timeout.

use super::messages::{STATUS_STREAM_KIND, StatusReply, StatusRequest, status_reply_types};
use crate::config::ClusterConfig;
use crate::discovery::{Interfaces, MdnsDiscovery};
use crate::identity::NodeIdentity;
use crate::membership::status::{ClusterStatus, STATUS_SCHEMA};
use crate::security::{ClusterSecret, ClusterSecurity};
use crate::transport::{Transport, TransportConfig};
use bytes::Bytes;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Errors querying the cluster.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Local setup (identity, certificates, socket) failed.
    #[error("status client setup: {0}")]
    Setup(String),
    /// No node answered.
    #[error("no node answered (tried {tried}): {last}")]
    NoAnswer {
        /// The addresses tried.
        tried: String,
        /// The last error.
        last: String,
    },
}

/// Where to look for a node.
#[derive(Debug, Clone, Default)]
pub struct StatusTarget {
    /// Explicit `host:port`; when set, nothing else is tried.
    pub node: Option<String>,
    /// How long to browse mDNS when nothing else answered.
    pub discovery_timeout: Duration,
    /// Per-node connect + reply timeout.
    pub timeout: Duration,
}

/// Query the member table (see the module documentation). Must run inside a tokio runtime.
pub async fn query_status(
    config: &ClusterConfig,
    target: &StatusTarget,
) -> Result<ClusterStatus, StatusError> {
    let secret = ClusterSecret::from_bytes(config.secret_bytes()?);
    let identity = NodeIdentity::generate().map_err(|e| StatusError::Setup(e.to_string()))?;
    let security =
        ClusterSecurity::new(&secret, &identity).map_err(|e| StatusError::Setup(e.to_string()))?;
    let bind: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
    let mut tc = TransportConfig::new(bind, "edgeray-status");
    tc.keep_alive = config.timing.keep_alive;
    tc.idle_timeout = config.timing.idle_timeout;
    let transport = Transport::bind(tc, security, crate::identity::Incarnation::random())
        .await
        .map_err(|e| StatusError::Setup(e.to_string()))?;
    // Nodes send their Join/Heartbeat control messages to every peer; accept (and ignore) them,
    // an unhandled control type would be a protocol violation.
    let _control = transport.control_messages(super::messages::CONTROL_TYPES, 256);
    let timeout = if target.timeout.is_zero() {
        Duration::from_secs(3)
    } else {
        target.timeout
    };
    let result = run(config, target, &transport, timeout).await;
    transport.shutdown().await;
    result
}

async fn run(
    config: &ClusterConfig,
    target: &StatusTarget,
    transport: &Transport,
    timeout: Duration,
) -> Result<ClusterStatus, StatusError> {
    let mut tried: Vec<String> = Vec::new();
    let mut last = String::from("no candidate address");
    let hosts: Vec<String> = match &target.node {
        Some(n) => vec![n.clone()],
        None => {
            let mut h = Vec::new();
            let port = config.listen.port();
            h.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port).to_string());
            if !config.listen.ip().is_unspecified() {
                h.push(config.listen.to_string());
            }
            h.extend(config.seeds.iter().cloned());
            h.dedup();
            h
        }
    };
    for host in &hosts {
        let addrs: Vec<SocketAddr> = match tokio::net::lookup_host(host.as_str()).await {
            Ok(a) => a.collect(),
            Err(e) => {
                tried.push(host.clone());
                last = format!("{host}: {e}");
                continue;
            }
        };
        for a in addrs {
            tried.push(a.to_string());
            match ask(transport, a, timeout).await {
                Ok(s) => return Ok(s),
                Err(e) => last = format!("{a}: {e}"),
            }
        }
    }
    if target.node.is_none() && config.mdns && !target.discovery_timeout.is_zero() {
        let found = browse(config, transport, target.discovery_timeout).await;
        match found {
            Ok(cands) => {
                for a in cands {
                    tried.push(format!("{a} (mDNS)"));
                    match ask(transport, a, timeout).await {
                        Ok(s) => return Ok(s),
                        Err(e) => last = format!("{a}: {e}"),
                    }
                }
            }
            Err(e) => last = format!("mDNS: {e}"),
        }
    }
    Err(StatusError::NoAnswer {
        tried: tried.join(", "),
        last,
    })
}

/// Browse mDNS for up to `wait`; returns the first resolved node's addresses.
async fn browse(
    config: &ClusterConfig,
    transport: &Transport,
    wait: Duration,
) -> Result<Vec<SocketAddr>, String> {
    let (d, mut rx) = MdnsDiscovery::start(
        None,
        &Interfaces::from_names(&config.interfaces),
        transport.node_id(),
        transport.cluster_id(),
    )
    .map_err(|e| e.to_string())?;
    let got = tokio::time::timeout(wait, rx.recv()).await;
    d.shutdown().await;
    match got {
        Ok(Some(c)) => Ok(c.addrs),
        _ => Err(format!(
            "no node of this cluster announced itself within {wait:?}"
        )),
    }
}

async fn ask(
    transport: &Transport,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<ClusterStatus, String> {
    let fut = async {
        let peer = transport
            .connect(addr, None)
            .await
            .map_err(|e| e.to_string())?;
        let (mut w, mut r) = transport
            .open_bi(peer.node_id, STATUS_STREAM_KIND, 0, status_reply_types())
            .await
            .map_err(|e| e.to_string())?;
        w.send(
            &StatusRequest {
                schema: STATUS_SCHEMA,
            },
            Bytes::new(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let reply = r
            .read_message::<StatusReply>()
            .await
            .map_err(|e| e.to_string())?;
        let _ = w.finish();
        transport.disconnect(peer.node_id, "status done");
        match reply {
            Some((rep, _)) => Ok(rep.status),
            None => Err("node closed the status stream without an answer".to_string()),
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}
