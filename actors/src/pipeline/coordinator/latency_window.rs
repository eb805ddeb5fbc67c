//! [`LatencyWindow`]: the most recent latency samples and their quantiles (pure, no clock),
//! for the p50/p99 series `/metrics` shows next to the histograms.

use std::time::Duration;

/// The last `capacity` samples, oldest overwritten first.
#[derive(Debug, Clone)]
pub struct LatencyWindow {
    samples: Vec<Duration>,
    next: usize,
    capacity: usize,
}

impl LatencyWindow {
    /// A window of the last `capacity` samples (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            samples: Vec::with_capacity(capacity),
            next: 0,
            capacity,
        }
    }

    /// Adds a sample, dropping the oldest when full.
    pub fn push(&mut self, d: Duration) {
        if self.samples.len() < self.capacity {
            self.samples.push(d);
        } else {
            self.samples[self.next] = d;
        }
        self.next = (self.next + 1) % self.capacity;
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no sample was added.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The nearest-rank quantiles `qs` (each in 0..=1) of the samples held, in order; `None`
    /// when empty.
    pub fn quantiles(&self, qs: &[f64]) -> Option<Vec<Duration>> {
        if self.samples.is_empty() {
            return None;
        }
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        let n = sorted.len();
        Some(
            qs.iter()
                .map(|q| {
                    let rank = (q.clamp(0.0, 1.0) * n as f64).ceil() as usize;
                    sorted[rank.clamp(1, n) - 1]
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn nearest_rank_quantiles() {
        let mut w = LatencyWindow::new(1000);
        assert_eq!(w.quantiles(&[0.5]), None);
        for v in 1..=100 {
            w.push(ms(v));
        }
        assert_eq!(
            w.quantiles(&[0.0, 0.5, 0.99, 1.0]).unwrap(),
            vec![ms(1), ms(50), ms(99), ms(100)]
        );
    }

    #[test]
    fn only_the_latest_samples_count() {
        let mut w = LatencyWindow::new(3);
        for v in [100, 200, 300, 1, 2, 3] {
            w.push(ms(v));
        }
        assert_eq!(w.len(), 3);
        assert_eq!(w.quantiles(&[1.0]).unwrap(), vec![ms(3)]);
        assert_eq!(w.quantiles(&[0.5]).unwrap(), vec![ms(2)]);
    }
}
