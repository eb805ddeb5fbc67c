//! mDNS announce + browse with mdns-sd, restricted to the configured interfaces.

use super::txt::{Announcement, Candidate, SERVICE_TYPE, announces_own_id_elsewhere, candidate};
use crate::identity::NodeId;
use crate::security::ClusterId;
use mdns_sd::{IfKind, ScopedIp, ServiceDaemon, ServiceEvent, ServiceInfo};
use std::net::IpAddr;
use tokio::sync::mpsc;

/// Least time between two warnings about this node's id announced by another process.
pub const IMPOSTOR_WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Errors starting mDNS.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The mdns-sd daemon failed.
    #[error("mDNS: {0}")]
    Mdns(#[from] mdns_sd::Error),
}

/// A running mDNS announcer + browser. Dropping it without [`MdnsDiscovery::shutdown`] also stops
/// the daemon (without a goodbye).
pub struct MdnsDiscovery {
    daemon: ServiceDaemon,
    fullname: String,
}

/// Which interfaces mDNS uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interfaces {
    /// Every non-loopback interface.
    AllButLoopback,
    /// Only these (by name, e.g. `eth0`; `lo` is allowed for single-machine tests).
    Named(Vec<String>),
}

impl Interfaces {
    /// From the `interfaces` config key (empty = all but loopback).
    pub fn from_names(names: &[String]) -> Self {
        if names.is_empty() {
            Interfaces::AllButLoopback
        } else {
            Interfaces::Named(names.to_vec())
        }
    }

    fn kinds(&self) -> Vec<IfKind> {
        match self {
            Interfaces::AllButLoopback => vec![IfKind::All],
            Interfaces::Named(names) => names.iter().map(|n| IfKind::Name(n.clone())).collect(),
        }
    }
}

impl MdnsDiscovery {
    /// Start announcing `ann` (when given; `None` = browse only, e.g. `edgeray status`) on
    /// `interfaces` and browsing for other nodes of `cluster_id`. Candidates (never this node,
    /// never another cluster) arrive on the returned channel; a node resolved again (new
    /// addresses) is sent again: treat it as an update.
    pub fn start(
        ann: Option<&Announcement>,
        interfaces: &Interfaces,
        own_node: NodeId,
        cluster_id: ClusterId,
    ) -> Result<(MdnsDiscovery, mpsc::Receiver<Candidate>), DiscoveryError> {
        let daemon = ServiceDaemon::new()?;
        // Restrict interfaces first: mdns-sd otherwise uses every interface that is up,
        // loopback and IPv6 included.
        // The daemon applies these rules in order, the last matching one wins.
        daemon.disable_interface(IfKind::All)?;
        daemon.enable_interface(interfaces.kinds())?;
        if *interfaces == Interfaces::AllButLoopback {
            daemon.disable_interface(vec![IfKind::LoopbackV4, IfKind::LoopbackV6])?;
        }
        let mut fullname = String::new();
        if let Some(ann) = ann {
            let instance = ann.instance_name();
            let host = format!("{instance}.local.");
            let mut info =
                ServiceInfo::new(SERVICE_TYPE, &instance, &host, (), ann.port, ann.to_txt())?
                    .enable_addr_auto();
            info.set_interfaces(interfaces.kinds());
            fullname = info.get_fullname().to_string();
            daemon.register(info)?;
        }
        let events = daemon.browse(SERVICE_TYPE)?;
        let (tx, rx) = mpsc::channel(64);
        let own_incarnation = ann.and_then(|a| a.incarnation);
        tokio::spawn(async move {
            let mut warned: Option<std::time::Instant> = None;
            while let Ok(event) = events.recv_async().await {
                match event {
                    ServiceEvent::ServiceResolved(svc) => {
                        let props = svc.get_properties();
                        let ann = Announcement::from_txt(|k| props.get_property_val_str(k));
                        let addrs: Vec<(IpAddr, u32)> = svc
                            .get_addresses()
                            .iter()
                            .map(|a| match a {
                                ScopedIp::V6(v6) => (IpAddr::V6(*v6.addr()), v6.scope_id().index),
                                other => (other.to_ip_addr(), 0),
                            })
                            .collect();
                        if let Ok(a) = &ann
                            && announces_own_id_elsewhere(a, own_node, own_incarnation)
                            && warned.is_none_or(|t| t.elapsed() >= IMPOSTOR_WARN_EVERY)
                        {
                            warned = Some(std::time::Instant::now());
                            tracing::warn!(
                                "THIS NODE'S ID {} IS ANNOUNCED BY ANOTHER PROCESS (mDNS, incarnation {}, addresses {:?}, port {}): two nodes share one identity; only one of them can be a member. Was the state directory copied (a cloned SD card)? Give each node its own state_dir",
                                own_node.short(),
                                a.incarnation.map(|i| i.to_string()).unwrap_or_default(),
                                addrs.iter().map(|(ip, _)| *ip).collect::<Vec<_>>(),
                                a.port,
                            );
                        }
                        match candidate(ann, &addrs, own_node, cluster_id) {
                            Ok(c) => {
                                tracing::debug!(node = %c.node_id.short(), addrs = ?c.addrs, "mdns resolved");
                                if tx.send(c).await.is_err() {
                                    break;
                                }
                            }
                            Err(super::txt::Ignored::Own) => {}
                            Err(why) => {
                                tracing::debug!(instance = %svc.get_fullname(), "mdns record ignored: {why}")
                            }
                        }
                    }
                    // Removal is never proof of death (anyone on the LAN can send a goodbye);
                    // the transport and heartbeats decide.
                    ServiceEvent::ServiceRemoved(_, name) => {
                        tracing::debug!(%name, "mdns removal (ignored)")
                    }
                    _ => {}
                }
            }
        });
        Ok((MdnsDiscovery { daemon, fullname }, rx))
    }

    /// Unregister (sends the mDNS goodbye) and stop the daemon.
    pub async fn shutdown(self) {
        if !self.fullname.is_empty()
            && let Ok(rx) = self.daemon.unregister(&self.fullname)
        {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), rx.recv_async()).await;
        }
        if let Ok(rx) = self.daemon.shutdown() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), rx.recv_async()).await;
        }
    }
}
