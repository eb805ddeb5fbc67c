//! Shared by the node tests: free loopback ports and a node configuration with fast timings.

use edgeray_runtime::config::ClusterConfig;
use std::net::UdpSocket;
use std::time::Duration;

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A loopback node `name` on `port`, seeded to `seeds`, mDNS off, state under `dir/name`, with
/// heartbeats, failure detection and gossip in fractions of a second.
pub fn config(
    secret: [u8; 32],
    name: &str,
    port: u16,
    seeds: &[u16],
    dir: &std::path::Path,
) -> ClusterConfig {
    let mut c = ClusterConfig::with_secret(secret);
    c.name = Some(name.to_string());
    c.listen = format!("127.0.0.1:{port}").parse().unwrap();
    c.seeds = seeds.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    c.mdns = false;
    c.state_dir = dir.join(name);
    c.resources.compute_score = Some(100.0);
    c.timing.heartbeat = Duration::from_millis(200);
    c.timing.suspect_after = Duration::from_millis(1000);
    c.timing.down_after = Duration::from_millis(3000);
    c.timing.keep_alive = Duration::from_millis(300);
    c.timing.idle_timeout = Duration::from_secs(2);
    c.timing.gossip = Duration::from_millis(500);
    c.timing.seed_retry_min = Duration::from_millis(100);
    c.timing.seed_retry_max = Duration::from_millis(500);
    c
}
