//! Link bandwidth to peers: the pure part — when to probe which peer, and what a timed transfer
//! says about the link. The I/O (a probe stream carrying [`PROBE_BYTES`]) lives in the node.
//!
//! A probe is a bounded burst: [`PROBE_BYTES`] in [`PROBE_CHUNK`]-byte frames on a stream of its
//! own, answered by one acknowledgement. Each peer is probed [`FIRST_PROBE_AFTER`] after it
//! joins and then every [`PROBE_INTERVAL`]; one probe runs at a time per node. So probe traffic
//! averages a few kB/s and a running pipeline sees at most a short burst every few minutes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::identity::NodeId;

/// Bytes one probe transfers.
pub const PROBE_BYTES: usize = 4 << 20;

/// Bytes per probe frame (sent as the frame's raw tail).
pub const PROBE_CHUNK: usize = 256 << 10;

/// Delay between a peer joining and its first probe (lets the connection settle).
pub const FIRST_PROBE_AFTER: Duration = Duration::from_secs(2);

/// Delay between two probes of the same peer.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(600);

/// Weight of a new sample in the running estimate.
const SMOOTHING: f64 = 0.5;

/// The link rate a timed transfer shows, in bits per second: `bytes` took `elapsed` from the
/// first byte sent to the acknowledgement received, which includes one round trip (`rtt`) that
/// carried no data. `None` when the timing cannot be trusted (nothing sent, zero time).
pub fn estimate_bps(bytes: u64, elapsed: Duration, rtt: Option<Duration>) -> Option<f64> {
    if bytes == 0 || elapsed.is_zero() {
        return None;
    }
    // Never let a large or stale RTT leave less than half the measured time.
    let transfer = elapsed
        .saturating_sub(rtt.unwrap_or_default())
        .max(elapsed / 2);
    Some(bytes as f64 * 8.0 / transfer.as_secs_f64())
}

/// A running bandwidth estimate (exponentially smoothed samples).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BandwidthEstimate {
    bps: Option<f64>,
}

impl BandwidthEstimate {
    /// Folds in one sample.
    pub fn update(&mut self, sample_bps: f64) {
        if !sample_bps.is_finite() || sample_bps <= 0.0 {
            return;
        }
        self.bps = Some(match self.bps {
            None => sample_bps,
            Some(old) => old + SMOOTHING * (sample_bps - old),
        });
    }

    /// The estimate, bits per second.
    pub fn bps(&self) -> Option<f64> {
        self.bps
    }
}

/// Which peer to probe next, and when.
#[derive(Debug, Clone)]
pub struct ProbeSchedule {
    first_after: Duration,
    interval: Duration,
    due: HashMap<NodeId, Instant>,
}

impl ProbeSchedule {
    /// A schedule probing a new peer `first_after` its arrival, then every `interval`.
    pub fn new(first_after: Duration, interval: Duration) -> Self {
        ProbeSchedule {
            first_after,
            interval,
            due: HashMap::new(),
        }
    }

    /// Brings the schedule in line with the connected peers at `now`: new ones get their first
    /// probe, departed ones are forgotten.
    pub fn sync(&mut self, peers: &[NodeId], now: Instant) {
        self.due.retain(|id, _| peers.contains(id));
        for p in peers {
            self.due.entry(*p).or_insert(now + self.first_after);
        }
    }

    /// The peer whose probe is most overdue at `now`, if any; its next probe is then one
    /// interval away (whether this one succeeds or not).
    pub fn next_due(&mut self, now: Instant) -> Option<NodeId> {
        let (id, _) = self
            .due
            .iter()
            .filter(|(_, t)| **t <= now)
            .min_by_key(|(id, t)| (**t, **id))?;
        let id = *id;
        self.due.insert(id, now + self.interval);
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_removes_one_round_trip() {
        // 4 MiB in 0.35 s with 0.015 s RTT: 4 MiB over 0.335 s.
        let bps = estimate_bps(
            4 << 20,
            Duration::from_millis(350),
            Some(Duration::from_millis(15)),
        )
        .unwrap();
        let want = (4u64 << 20) as f64 * 8.0 / 0.335;
        assert!((bps - want).abs() / want < 1e-9, "{bps} vs {want}");
        // An RTT larger than the transfer leaves half the time, not a negative one.
        let bps = estimate_bps(
            1000,
            Duration::from_millis(10),
            Some(Duration::from_secs(1)),
        )
        .unwrap();
        assert!((bps - 1000.0 * 8.0 / 0.005).abs() < 1e-6);
        assert_eq!(estimate_bps(0, Duration::from_secs(1), None), None);
        assert_eq!(estimate_bps(10, Duration::ZERO, None), None);
    }

    #[test]
    fn estimate_is_smoothed_and_ignores_nonsense() {
        let mut e = BandwidthEstimate::default();
        assert_eq!(e.bps(), None);
        e.update(100e6);
        assert_eq!(e.bps(), Some(100e6));
        e.update(50e6);
        assert_eq!(e.bps(), Some(75e6));
        e.update(f64::NAN);
        e.update(-1.0);
        e.update(0.0);
        assert_eq!(e.bps(), Some(75e6));
    }

    #[test]
    fn schedule_probes_new_peers_once_per_interval() {
        let t0 = Instant::now();
        let (a, b) = (NodeId([1; 32]), NodeId([2; 32]));
        let mut s = ProbeSchedule::new(Duration::from_secs(2), Duration::from_secs(600));
        s.sync(&[a], t0);
        assert_eq!(s.next_due(t0), None, "not before the first delay");
        let t1 = t0 + Duration::from_secs(2);
        s.sync(&[a, b], t1);
        assert_eq!(s.next_due(t1), Some(a));
        assert_eq!(
            s.next_due(t1),
            None,
            "b joined later; a is done for an interval"
        );
        let t2 = t1 + Duration::from_secs(2);
        assert_eq!(s.next_due(t2), Some(b));
        assert_eq!(s.next_due(t2 + Duration::from_secs(100)), None);
        let t3 = t1 + Duration::from_secs(600);
        assert_eq!(s.next_due(t3), Some(a));
        // A peer that leaves is forgotten; if it comes back it waits for its first delay again.
        s.sync(&[a], t3);
        s.sync(&[a, b], t3);
        assert_eq!(s.next_due(t3 + Duration::from_secs(1)), None);
        assert_eq!(s.next_due(t3 + Duration::from_secs(2)), Some(b));
    }
}
