//! Which addresses to dial and when: seeds (forever), nodes found by mDNS or gossip, and Down
//! members (until forgotten), each with exponential backoff. Pure bookkeeping: the node runs the
//! dials it is given and reports the outcomes.

use crate::identity::NodeId;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Most unverified node targets (from mDNS records or gossip) kept at once; further new ones
/// are ignored until some expire.
pub const MAX_UNVERIFIED_TARGETS: usize = 256;
/// Most addresses kept per target.
pub const MAX_ADDRS: usize = 8;

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
    /// The first addresses are proven: a dial to them reached this node (TLS checks the node
    /// id), or they belong to a member that was connected. Unverified hints (mDNS, gossip)
    /// never replace them, only follow them.
    verified: bool,
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
                verified: false,
            });
    }

    /// Add or refresh a node target from an unverified hint (mDNS record, gossip). The
    /// addresses replace those of an unverified target (a refresh with new addresses makes it
    /// due at once); a verified target keeps its proven addresses first and only gains the new
    /// ones after them (at most [`MAX_ADDRS`]). A new target is refused (returns false) while
    /// [`MAX_UNVERIFIED_TARGETS`] unverified ones exist: forged records cannot grow the list
    /// without bound. The expiry is renewed.
    pub fn add_node(&mut self, node: NodeId, addrs: Vec<SocketAddr>, now: Instant) -> bool {
        self.add(node, addrs, now, false)
    }

    /// Add or refresh a node target whose addresses are proven (a member that was connected
    /// from them, e.g. one that went Down). Never refused by the cap on unverified targets.
    pub fn add_verified(&mut self, node: NodeId, addrs: Vec<SocketAddr>, now: Instant) {
        self.add(node, addrs, now, true);
    }

    fn add(
        &mut self,
        node: NodeId,
        mut addrs: Vec<SocketAddr>,
        now: Instant,
        verified: bool,
    ) -> bool {
        addrs.truncate(MAX_ADDRS);
        if addrs.is_empty() {
            return false;
        }
        let key = TargetKey::Node(node);
        if !verified
            && !self.targets.contains_key(&key)
            && self.unverified() >= MAX_UNVERIFIED_TARGETS
        {
            return false;
        }
        let expires = Some(now + self.ttl);
        let (min, max) = (self.min, self.max);
        let t = self.targets.entry(key).or_insert_with(|| Target {
            addrs: Vec::new(),
            backoff: Backoff::new(min, max, now),
            in_flight: false,
            node: Some(node),
            expires,
            verified,
        });
        let merged = if t.verified && !verified {
            let mut m = t.addrs.clone();
            for a in addrs {
                if m.len() < MAX_ADDRS && !m.contains(&a) {
                    m.push(a);
                }
            }
            m
        } else {
            addrs
        };
        t.verified |= verified;
        if t.addrs != merged {
            t.addrs = merged;
            t.backoff = Backoff::new(min, max, now);
        }
        t.expires = expires;
        true
    }

    /// Node targets whose addresses are not proven.
    fn unverified(&self) -> usize {
        self.targets
            .iter()
            .filter(|(k, t)| matches!(k, TargetKey::Node(_)) && !t.verified)
            .count()
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
                    // A node target reached its own id: its addresses are proven.
                    if *key == TargetKey::Node(id) {
                        t.verified = true;
                    }
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

    #[test]
    fn unverified_targets_are_capped() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        let mut d = Dialer::new(ms(100), ms(400), ttl);
        let a: SocketAddr = "10.0.0.7:7070".parse().unwrap();
        let id = |i: usize| {
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&(i as u64).to_le_bytes());
            NodeId(b)
        };
        for i in 0..MAX_UNVERIFIED_TARGETS {
            assert!(d.add_node(id(i), vec![a], t0));
        }
        assert!(!d.add_node(id(100_000), vec![a], t0), "cap reached");
        assert!(
            d.add_node(id(3), vec![a], t0),
            "refreshing a known one is fine"
        );
        d.add_seed("127.0.0.1:7070", t0);
        d.add_verified(id(200_000), vec![a], t0);
        assert_eq!(
            d.len(),
            MAX_UNVERIFIED_TARGETS + 2,
            "seeds and members are not capped"
        );
        // Once the forged ones expire, new records are accepted again.
        assert!(d.due(t0 + ttl, |_| false).len() <= 2);
        assert!(d.add_node(id(100_000), vec![a], t0 + ttl));
        let many: Vec<SocketAddr> = (0..50)
            .map(|p| SocketAddr::new("10.0.0.9".parse().unwrap(), 7000 + p))
            .collect();
        d.add_node(id(300_000), many, t0 + ttl);
        let job = d
            .due(t0 + ttl, |_| false)
            .into_iter()
            .find(|j| j.key == TargetKey::Node(id(300_000)))
            .unwrap();
        assert_eq!(job.addrs.len(), MAX_ADDRS);
    }

    #[test]
    fn a_verified_address_is_never_replaced_by_a_hint() {
        let t0 = Instant::now();
        let mut d = Dialer::new(ms(100), ms(400), Duration::from_secs(10));
        let n = NodeId([7; 32]);
        let good: SocketAddr = "10.0.0.7:7070".parse().unwrap();
        let forged: SocketAddr = "10.6.6.6:7070".parse().unwrap();
        // Learned by mDNS, dialed successfully: proven.
        d.add_node(n, vec![good], t0);
        let jobs = d.due(t0, |_| false);
        d.report(&jobs[0].key, Ok(n), t0);
        // A forged record for the same node: the proven address stays first.
        d.add_node(n, vec![forged], t0);
        let jobs = d.due(t0 + Duration::from_secs(1), |_| false);
        assert_eq!(jobs[0].addrs, vec![good, forged]);
        d.report(&jobs[0].key, Err(()), t0);
        // A member's address (verified) is kept first too.
        let m = NodeId([8; 32]);
        d.add_verified(m, vec![good], t0);
        d.add_node(m, vec![forged], t0);
        let jobs = d.due(t0, |_| false);
        let job = jobs.iter().find(|j| j.key == TargetKey::Node(m)).unwrap();
        assert_eq!(job.addrs, vec![good, forged]);
        // An unverified target simply takes the newest hint.
        let u = NodeId([9; 32]);
        d.add_node(u, vec![good], t0);
        d.add_node(u, vec![forged], t0);
        let jobs = d.due(t0, |_| false);
        let job = jobs.iter().find(|j| j.key == TargetKey::Node(u)).unwrap();
        assert_eq!(job.addrs, vec![forged]);
    }
}
