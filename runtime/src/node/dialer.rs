//! Which addresses to dial and when: seeds (forever), nodes found by mDNS or gossip, and Down
//! members (until forgotten), each with exponential backoff. Pure bookkeeping: the node runs the
//! dials it is given and reports the outcomes.

use crate::identity::NodeId;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Exponential backoff: `min`, doubling per failure, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
    next_at: Instant,
}

impl Backoff {
    /// Due immediately.
    pub fn new(min: Duration, max: Duration, now: Instant) -> Self {
        Backoff {
            min,
            max: max.max(min),
            failures: 0,
            next_at: now,
        }
    }
    /// Whether an attempt is due.
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next_at
    }
    /// The delay after the current number of failures.
    pub fn delay(&self) -> Duration {
        if self.failures == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32 << (self.failures - 1).min(16);
        self.min.saturating_mul(factor).min(self.max)
    }
    /// An attempt failed: wait longer before the next.
    pub fn failed(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        self.next_at = now + self.delay();
    }
    /// An attempt succeeded (or the peer is connected): next attempt, if ever needed, after `min`.
    pub fn reset(&mut self, now: Instant) {
        self.failures = 0;
        self.next_at = now + self.min;
    }
    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// What identifies a dial target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetKey {
    /// A configured seed, `host:port` (resolved at each attempt).
    Seed(String),
    /// A known node (from mDNS, gossip, or a member that went Down).
    Node(NodeId),
}

/// One dial to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialJob {
    /// Which target (report the outcome with it).
    pub key: TargetKey,
    /// Addresses to try in order (empty for seeds: resolve the host).
    pub addrs: Vec<SocketAddr>,
    /// The node id the peer must have (verified by TLS), when known.
    pub expected: Option<NodeId>,
}

#[derive(Debug, Clone)]
struct Target {
    addrs: Vec<SocketAddr>,
    backoff: Backoff,
    in_flight: bool,
    /// For seeds: the node id learned at the last successful dial.
    node: Option<NodeId>,
    /// Node targets are dropped at this time unless refreshed (seeds never expire).
    expires: Option<Instant>,
}

/// The set of dial targets.
#[derive(Debug, Clone)]
pub struct Dialer {
    min: Duration,
    max: Duration,
    ttl: Duration,
    targets: HashMap<TargetKey, Target>,
}

impl Dialer {
    /// Backoff from `min` to `max`; node targets not refreshed for `ttl` are dropped.
    pub fn new(min: Duration, max: Duration, ttl: Duration) -> Self {
        Dialer {
            min,
            max,
            ttl,
            targets: HashMap::new(),
        }
    }

    /// Add a seed (dialed whenever its node is not connected).
    pub fn add_seed(&mut self, seed: &str, now: Instant) {
        self.targets
            .entry(TargetKey::Seed(seed.to_string()))
            .or_insert_with(|| Target {
                addrs: Vec::new(),
                backoff: Backoff::new(self.min, self.max, now),
                in_flight: false,
                node: None,
                expires: None,
            });
    }

    /// Add or refresh a node target (addresses replace the old ones; the expiry is renewed; a
    /// refresh with new addresses makes it due at once).
    pub fn add_node(&mut self, node: NodeId, addrs: Vec<SocketAddr>, now: Instant) {
        if addrs.is_empty() {
            return;
        }
        let expires = Some(now + self.ttl);
        let (min, max) = (self.min, self.max);
        let t = self
            .targets
            .entry(TargetKey::Node(node))
            .or_insert_with(|| Target {
                addrs: Vec::new(),
                backoff: Backoff::new(min, max, now),
                in_flight: false,
                node: Some(node),
                expires,
            });
        if t.addrs != addrs {
            t.addrs = addrs;
            t.backoff = Backoff::new(min, max, now);
        }
        t.expires = expires;
    }

    /// Forget a target (e.g. the seed turned out to be this node).
    pub fn remove(&mut self, key: &TargetKey) {
        self.targets.remove(key);
    }

    /// Number of targets.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether there are no targets.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The dials due now. `connected(id)` tells whether a node is connected: connected targets
    /// are not dialed (their backoff is reset). Marks returned jobs in flight.
    pub fn due(&mut self, now: Instant, connected: impl Fn(NodeId) -> bool) -> Vec<DialJob> {
        self.targets
            .retain(|_, t| t.expires.is_none_or(|e| now < e) || t.in_flight);
        let mut jobs = Vec::new();
        for (key, t) in self.targets.iter_mut() {
            if t.in_flight {
                continue;
            }
            if let Some(id) = t.node
                && connected(id)
            {
                t.backoff.reset(now);
                if let Some(e) = t.expires.as_mut() {
                    *e = now + self.ttl;
                }
                continue;
            }
            if !t.backoff.due(now) {
                continue;
            }
            t.in_flight = true;
            let expected = match key {
                TargetKey::Node(id) => Some(*id),
                TargetKey::Seed(_) => None,
            };
            jobs.push(DialJob {
                key: key.clone(),
                addrs: t.addrs.clone(),
                expected,
            });
        }
        jobs
    }

    /// Report a dial outcome: the node reached, or a failure.
    pub fn report(&mut self, key: &TargetKey, outcome: Result<NodeId, ()>, now: Instant) {
        if let Some(t) = self.targets.get_mut(key) {
            t.in_flight = false;
            match outcome {
                Ok(id) => {
                    t.node = Some(id);
                    t.backoff.reset(now);
                }
                Err(()) => t.backoff.failed(now),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let t0 = Instant::now();
        let mut b = Backoff::new(ms(250), ms(1000), t0);
        assert!(b.due(t0));
        b.failed(t0);
        assert_eq!(b.delay(), ms(250));
        assert!(!b.due(t0 + ms(249)));
        assert!(b.due(t0 + ms(250)));
        b.failed(t0);
        assert_eq!(b.delay(), ms(500));
        b.failed(t0);
        b.failed(t0);
        b.failed(t0);
        assert_eq!(b.delay(), ms(1000));
        for _ in 0..100 {
            b.failed(t0);
        }
        assert_eq!(b.delay(), ms(1000));
        b.reset(t0);
        assert_eq!(b.failures(), 0);
        assert!(b.due(t0 + ms(250)));
    }

    #[test]
    fn seeds_retry_until_connected() {
        let t0 = Instant::now();
        let mut d = Dialer::new(ms(100), ms(400), Duration::from_secs(10));
        d.add_seed("127.0.0.1:7070", t0);
        let jobs = d.due(t0, |_| false);
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].expected, None);
        assert!(d.due(t0, |_| false).is_empty(), "in flight");
        d.report(&jobs[0].key, Err(()), t0);
        assert!(d.due(t0 + ms(99), |_| false).is_empty());
        let jobs = d.due(t0 + ms(100), |_| false);
        assert_eq!(jobs.len(), 1);
        let node = NodeId([4; 32]);
        d.report(&jobs[0].key, Ok(node), t0 + ms(100));
        // Connected: never dialed, even much later.
        assert!(
            d.due(t0 + Duration::from_secs(100), |id| id == node)
                .is_empty()
        );
        // Disconnected: dialed again (seeds never expire).
        assert_eq!(d.due(t0 + Duration::from_secs(101), |_| false).len(), 1);
    }

    #[test]
    fn node_targets_expire_and_refresh() {
        let t0 = Instant::now();
        let mut d = Dialer::new(ms(100), ms(400), Duration::from_secs(10));
        let n = NodeId([7; 32]);
        let a: SocketAddr = "10.0.0.7:7070".parse().unwrap();
        d.add_node(n, vec![a], t0);
        d.add_node(n, vec![], t0);
        let jobs = d.due(t0, |_| false);
        assert_eq!(
            jobs,
            vec![DialJob {
                key: TargetKey::Node(n),
                addrs: vec![a],
                expected: Some(n)
            }]
        );
        d.report(&jobs[0].key, Err(()), t0);
        d.report(&jobs[0].key, Err(()), t0);
        // New addresses make it due at once.
        let b: SocketAddr = "10.0.1.7:7070".parse().unwrap();
        d.add_node(n, vec![b], t0 + ms(1));
        assert_eq!(d.due(t0 + ms(1), |_| false)[0].addrs, vec![b]);
        d.report(&TargetKey::Node(n), Err(()), t0 + ms(1));
        assert_eq!(d.len(), 1);
        assert!(d.due(t0 + Duration::from_secs(11), |_| false).is_empty());
        assert!(d.is_empty(), "expired");
    }
}
