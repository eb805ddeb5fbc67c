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
//! and finally nodes found by mDNS (browse only) within the discovery timeout. Every address of
//! a host or an mDNS announcement is tried, in [`super::dial_order`]'s order (IPv4 first, then
//! IPv6, link-local ones with their scope id from a second, IPv6 endpoint), not only the first.

use super::dial_order::{dial_order, skipped_reason, untried};
use super::messages::{STATUS_STREAM_KIND, StatusReply, StatusRequest, status_reply_types};
use crate::config::ClusterConfig;
use crate::discovery::{Interfaces, MdnsDiscovery};
use crate::identity::NodeIdentity;
use crate::membership::status::{ClusterStatus, STATUS_SCHEMA};
use crate::security::{ClusterSecret, ClusterSecurity};
use crate::transport::{Transport, TransportConfig};
use bytes::Bytes;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
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

/// The client's QUIC endpoints: an IPv4 one, and an IPv6 one where the host has IPv6 (a
/// link-local `fe80::…%scope` address is only dialable from it).
struct Dialers {
    v4: Transport,
    v6: Option<Transport>,
    /// Nodes send their Join/Heartbeat control messages to every peer; they are accepted (and
    /// ignored) as long as these receivers live: an unhandled control type would be a protocol
    /// violation.
    _control: Vec<tokio::sync::mpsc::Receiver<crate::transport::ControlMessage>>,
}

impl Dialers {
    async fn bind(config: &ClusterConfig) -> Result<Dialers, StatusError> {
        let v4 = bind_one(config, IpAddr::V4(Ipv4Addr::UNSPECIFIED)).await?;
        let v6 = match bind_one(config, IpAddr::V6(Ipv6Addr::UNSPECIFIED)).await {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::debug!("no IPv6 endpoint for status: {e}");
                None
            }
        };
        let _control = std::iter::once(&v4)
            .chain(v6.as_ref())
            .map(|t| t.control_messages(super::messages::CONTROL_TYPES, 256))
            .collect();
        Ok(Dialers { v4, v6, _control })
    }

    fn ipv6(&self) -> bool {
        self.v6.is_some()
    }

    /// The endpoint that can dial `addr`.
    fn for_addr(&self, addr: &SocketAddr) -> &Transport {
        match (addr, &self.v6) {
            (SocketAddr::V6(_), Some(t)) => t,
            _ => &self.v4,
        }
    }

    async fn shutdown(self) {
        self.v4.shutdown().await;
        if let Some(t) = self.v6 {
            t.shutdown().await;
        }
    }
}

async fn bind_one(config: &ClusterConfig, ip: IpAddr) -> Result<Transport, StatusError> {
    let secret = ClusterSecret::from_bytes(config.secret_bytes()?);
    let identity = NodeIdentity::generate().map_err(|e| StatusError::Setup(e.to_string()))?;
    let security =
        ClusterSecurity::new(&secret, &identity).map_err(|e| StatusError::Setup(e.to_string()))?;
    let mut tc = TransportConfig::new(SocketAddr::new(ip, 0), "edgeray-status");
    tc.keep_alive = config.timing.keep_alive;
    tc.idle_timeout = config.timing.idle_timeout;
    Transport::bind(tc, security, crate::identity::Incarnation::random())
        .await
        .map_err(|e| StatusError::Setup(e.to_string()))
}

/// Query the member table (see the module documentation). Must run inside a tokio runtime.
pub async fn query_status(
    config: &ClusterConfig,
    target: &StatusTarget,
) -> Result<ClusterStatus, StatusError> {
    let dialers = Dialers::bind(config).await?;
    let timeout = if target.timeout.is_zero() {
        Duration::from_secs(3)
    } else {
        target.timeout
    };
    let result = run(config, target, &dialers, timeout).await;
    dialers.shutdown().await;
    result
}

/// The addresses tried and the last failure, for the error message.
#[derive(Default)]
struct Attempts {
    tried: Vec<String>,
    dialed: Vec<SocketAddr>,
    last: Option<String>,
}

impl Attempts {
    /// Dials each of `addrs` (already in dial order, `note` appended in `tried`) until one
    /// answers.
    async fn try_all(
        &mut self,
        dialers: &Dialers,
        addrs: &[SocketAddr],
        note: &str,
        timeout: Duration,
    ) -> Option<ClusterStatus> {
        for &a in addrs {
            self.tried.push(format!("{a}{note}"));
            self.dialed.push(a);
            match ask(dialers.for_addr(&a), a, timeout).await {
                Ok(s) => return Some(s),
                Err(e) => self.last = Some(format!("{a}: {e}")),
            }
        }
        None
    }

    /// Notes the addresses of `all` that are not dialed at all, with the reason.
    fn skipped(&mut self, all: &[SocketAddr], ipv6: bool) {
        for a in all {
            if let Some(why) = skipped_reason(a, ipv6)
                && !self.tried.iter().any(|t| t.starts_with(&a.to_string()))
            {
                self.tried.push(format!("{a} (skipped: {why})"));
            }
        }
    }
}

async fn run(
    config: &ClusterConfig,
    target: &StatusTarget,
    dialers: &Dialers,
    timeout: Duration,
) -> Result<ClusterStatus, StatusError> {
    let mut at = Attempts::default();
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
                at.tried.push(host.clone());
                at.last = Some(format!("{host}: {e}"));
                continue;
            }
        };
        let order = dial_order(&addrs, dialers.ipv6());
        if let Some(s) = at.try_all(dialers, &order, "", timeout).await {
            return Ok(s);
        }
        at.skipped(&addrs, dialers.ipv6());
    }
    if target.node.is_none() && config.mdns && !target.discovery_timeout.is_zero() {
        match browse(config, dialers, target.discovery_timeout, timeout, &mut at).await {
            Ok(s) => return Ok(s),
            Err(e) => at.last = Some(at.last.take().map_or(e.clone(), |l| format!("{l}; {e}"))),
        }
    }
    Err(StatusError::NoAnswer {
        tried: at.tried.join(", "),
        last: at.last.unwrap_or_else(|| "no candidate address".into()),
    })
}

/// Browses mDNS for up to `wait`, dialing every address nodes of this cluster announce (in
/// [`dial_order`], IPv4 first; a node resolved again with more addresses gets those tried too)
/// until one answers.
async fn browse(
    config: &ClusterConfig,
    dialers: &Dialers,
    wait: Duration,
    timeout: Duration,
    at: &mut Attempts,
) -> Result<ClusterStatus, String> {
    let (d, mut rx) = MdnsDiscovery::start(
        None,
        &Interfaces::from_names(&config.interfaces),
        dialers.v4.node_id(),
        dialers.v4.cluster_id(),
    )
    .map_err(|e| format!("mDNS: {e}"))?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut announced = false;
    let found = loop {
        let c = match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(c)) => c,
            _ => break None,
        };
        announced = true;
        let fresh = untried(&c.addrs, &at.dialed, dialers.ipv6());
        if let Some(s) = at.try_all(dialers, &fresh, " (mDNS)", timeout).await {
            break Some(s);
        }
        at.skipped(&c.addrs, dialers.ipv6());
    };
    d.shutdown().await;
    match found {
        Some(s) => Ok(s),
        None if announced => Err(format!(
            "no announced address answered within the {wait:?} of mDNS discovery"
        )),
        None => Err(format!(
            "no node of this cluster announced itself by mDNS within {wait:?}"
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
