//! A board's Prometheus metrics (`edgeray node --http`), kept in a `prometheus-client`
//! registry and refreshed from a [`NodeSample`] at every scrape.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// A float gauge.
type FGauge = Gauge<f64, AtomicU64>;
/// Label pairs of a family.
type Labels = Vec<(String, String)>;

/// One link to a peer as the membership measures it.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkSample {
    /// The peer's name.
    pub peer: String,
    /// Round-trip time, when measured.
    pub rtt_s: Option<f64>,
    /// Bandwidth in bits per second, when measured.
    pub bandwidth_bps: Option<f64>,
}

/// What one scrape reports: the board, its cluster view and its shard cache.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeSample {
    /// Physical memory.
    pub memory_total_bytes: u64,
    /// Memory available to programs.
    pub memory_available_bytes: u64,
    /// Memory this node offers the cluster.
    pub memory_budget_bytes: u64,
    /// Power budget, when configured.
    pub power_budget_watts: Option<f64>,
    /// 1-minute load average.
    pub load1: f64,
    /// Highest thermal-zone temperature, where /sys exposes one.
    pub temperature_celsius: Option<f64>,
    /// CPUs available to the process.
    pub cpus: u64,
    /// Roles advertised (stages hosted).
    pub roles: u64,
    /// Members known, by state (`Up`, `Suspect`, …), this node included.
    pub members: Vec<(String, u64)>,
    /// Links to the other members.
    pub links: Vec<LinkSample>,
    /// Bytes of complete shards (with sidecars) in the cache.
    pub shard_cache_bytes: u64,
    /// Bytes of partial uploads in the cache.
    pub shard_partial_bytes: u64,
    /// Complete shards in the cache.
    pub shard_count: u64,
    /// The cache budget (`limits.shard_cache`).
    pub shard_cache_budget_bytes: u64,
}

/// The registry and its metrics.
#[derive(Debug)]
pub struct NodeMetrics {
    registry: Registry,
    memory_total: FGauge,
    memory_available: FGauge,
    memory_budget: FGauge,
    power_budget: FGauge,
    load1: FGauge,
    temperature: Family<Labels, FGauge>,
    cpus: FGauge,
    roles: FGauge,
    members: Family<Labels, FGauge>,
    link_rtt: Family<Labels, FGauge>,
    link_bandwidth: Family<Labels, FGauge>,
    shard_bytes: FGauge,
    shard_partial: FGauge,
    shard_count: FGauge,
    shard_budget: FGauge,
    peers_lost: Family<Labels, Counter>,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeMetrics {
    /// A registry with every metric registered (values 0 until the first [`NodeMetrics::update`]).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("edgeray");
        let g = |r: &mut Registry, name: &str, help: &str| {
            let m = FGauge::default();
            r.register(name, help, m.clone());
            m
        };
        let f = |r: &mut Registry, name: &str, help: &str| {
            let m = Family::<Labels, FGauge>::default();
            r.register(name, help, m.clone());
            m
        };
        let memory_total = g(&mut registry, "node_memory_total_bytes", "Physical memory");
        let memory_available = g(
            &mut registry,
            "node_memory_available_bytes",
            "Memory available to programs",
        );
        let memory_budget = g(
            &mut registry,
            "node_memory_budget_bytes",
            "Memory this node offers the cluster",
        );
        let power_budget = g(
            &mut registry,
            "node_power_budget_watts",
            "Power budget of the board (0 when not configured)",
        );
        let load1 = g(&mut registry, "node_load1", "1-minute load average");
        let temperature = f(
            &mut registry,
            "node_temperature_celsius",
            "Highest thermal-zone temperature (no series where /sys exposes none)",
        );
        let cpus = g(&mut registry, "node_cpus", "CPUs available to the node");
        let roles = g(
            &mut registry,
            "node_roles",
            "Roles the node advertises (pipeline stages it hosts)",
        );
        let members = f(
            &mut registry,
            "cluster_members",
            "Members this node knows, by state (itself included)",
        );
        let link_rtt = f(
            &mut registry,
            "link_rtt_seconds",
            "Measured round-trip time to a peer",
        );
        let link_bandwidth = f(
            &mut registry,
            "link_bandwidth_bits_per_second",
            "Measured bandwidth to a peer",
        );
        let shard_bytes = g(
            &mut registry,
            "shard_cache_bytes",
            "Bytes of complete shards (with their checksums) in the shard cache",
        );
        let shard_partial = g(
            &mut registry,
            "shard_cache_partial_bytes",
            "Bytes of partial shard uploads",
        );
        let shard_count = g(
            &mut registry,
            "shard_cache_shards",
            "Complete shards cached",
        );
        let shard_budget = g(
            &mut registry,
            "shard_cache_budget_bytes",
            "Shard cache budget (limits.shard_cache)",
        );
        let peers_lost = Family::<Labels, Counter>::default();
        registry.register(
            "peers_lost",
            "Members this node saw go Down since it started, by reason",
            peers_lost.clone(),
        );
        NodeMetrics {
            registry,
            memory_total,
            memory_available,
            memory_budget,
            power_budget,
            load1,
            temperature,
            cpus,
            roles,
            members,
            link_rtt,
            link_bandwidth,
            shard_bytes,
            shard_partial,
            shard_count,
            shard_budget,
            peers_lost,
        }
    }

    /// Counts one member going Down for `reason`.
    pub fn peer_lost(&self, reason: &str) {
        self.peers_lost
            .get_or_create(&vec![("reason".into(), reason.into())])
            .inc();
    }

    /// Sets every gauge from `s` (peers and states no longer present disappear).
    pub fn update(&self, s: &NodeSample) {
        self.memory_total.set(s.memory_total_bytes as f64);
        self.memory_available.set(s.memory_available_bytes as f64);
        self.memory_budget.set(s.memory_budget_bytes as f64);
        self.power_budget.set(s.power_budget_watts.unwrap_or(0.0));
        self.load1.set(s.load1);
        self.temperature.clear();
        if let Some(t) = s.temperature_celsius {
            self.temperature
                .get_or_create(&vec![("sensor".into(), "max".into())])
                .set(t);
        }
        self.cpus.set(s.cpus as f64);
        self.roles.set(s.roles as f64);
        self.members.clear();
        for (state, n) in &s.members {
            self.members
                .get_or_create(&vec![("state".into(), state.clone())])
                .set(*n as f64);
        }
        self.link_rtt.clear();
        self.link_bandwidth.clear();
        for l in &s.links {
            let labels = vec![("peer".into(), l.peer.clone())];
            if let Some(r) = l.rtt_s {
                self.link_rtt.get_or_create(&labels).set(r);
            }
            if let Some(b) = l.bandwidth_bps {
                self.link_bandwidth.get_or_create(&labels).set(b);
            }
        }
        self.shard_bytes.set(s.shard_cache_bytes as f64);
        self.shard_partial.set(s.shard_partial_bytes as f64);
        self.shard_count.set(s.shard_count as f64);
        self.shard_budget.set(s.shard_cache_budget_bytes as f64);
    }

    /// The exposition text (OpenMetrics text format, which Prometheus scrapes).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Content type of [`NodeMetrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn renders_every_sample_and_drops_gone_peers() {
        let m = NodeMetrics::new();
        let mut s = NodeSample {
            memory_total_bytes: 4 << 30,
            memory_available_bytes: 3 << 30,
            memory_budget_bytes: 1 << 30,
            power_budget_watts: Some(6.0),
            load1: 0.5,
            temperature_celsius: Some(48.5),
            cpus: 4,
            roles: 1,
            members: vec![("Up".into(), 2), ("Suspect".into(), 1)],
            links: vec![LinkSample {
                peer: "pi-02".into(),
                rtt_s: Some(0.0012),
                bandwidth_bps: None,
            }],
            shard_cache_bytes: 1000,
            shard_partial_bytes: 10,
            shard_count: 2,
            shard_cache_budget_bytes: 8 << 30,
        };
        m.peer_lost("silence");
        m.update(&s);
        let t = m.render();
        assert_eq!(
            value(&t, "edgeray_node_memory_total_bytes"),
            Some((4u64 << 30) as f64)
        );
        assert_eq!(
            value(&t, "edgeray_node_temperature_celsius{sensor=\"max\"}"),
            Some(48.5)
        );
        assert_eq!(
            value(&t, "edgeray_cluster_members{state=\"Up\"}"),
            Some(2.0)
        );
        assert_eq!(
            value(&t, "edgeray_link_rtt_seconds{peer=\"pi-02\"}"),
            Some(0.0012)
        );
        assert!(
            !t.contains("edgeray_link_bandwidth_bits_per_second{"),
            "{t}"
        );
        assert_eq!(value(&t, "edgeray_shard_cache_bytes"), Some(1000.0));
        assert_eq!(
            value(&t, "edgeray_peers_lost_total{reason=\"silence\"}"),
            Some(1.0)
        );
        assert!(t.ends_with("# EOF\n"));

        s.links.clear();
        s.temperature_celsius = None;
        m.update(&s);
        let t = m.render();
        assert!(!t.contains("peer=\"pi-02\""), "{t}");
        assert!(!t.contains("edgeray_node_temperature_celsius{"), "{t}");
    }
}
