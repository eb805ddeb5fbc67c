//! Requests in flight at the gateway: a count (and its gauge) of completion and embedding
//! requests from acceptance to the end of their response. It refuses nothing — the one
//! admission point is the backend's `submit` (a pipeline's slots and bounded queue), whose
//! `Overloaded` becomes HTTP 429.

use super::metrics::Gauge;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The count of requests in flight.
#[derive(Debug, Clone)]
pub struct InFlight {
    count: Arc<AtomicUsize>,
    gauge: Gauge,
}

/// One request in flight; dropping it ends it.
#[derive(Debug)]
pub struct InFlightGuard {
    count: Arc<AtomicUsize>,
    gauge: Gauge,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
        self.gauge.dec();
    }
}

impl InFlight {
    /// A count reporting to `gauge`.
    pub fn new(gauge: Gauge) -> Self {
        InFlight {
            count: Arc::new(AtomicUsize::new(0)),
            gauge,
        }
    }

    /// Counts a request until the guard is dropped.
    pub fn enter(&self) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        self.gauge.inc();
        InFlightGuard {
            count: self.count.clone(),
            gauge: self.gauge.clone(),
        }
    }

    /// Requests in flight now.
    pub fn get(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_until_each_guard_drops() {
        let g = Gauge::default();
        let f = InFlight::new(g.clone());
        let a = f.enter();
        let b = f.enter();
        assert_eq!((f.get(), g.get()), (2, 2.0));
        drop(a);
        assert_eq!((f.get(), g.get()), (1, 1.0));
        drop(b);
        assert_eq!((f.get(), g.get()), (0, 0.0));
    }
}
