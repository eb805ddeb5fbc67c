//! Admission control: at most a fixed number of requests in flight or queued; beyond it new
//! requests are refused at once (HTTP 429). An admitted request keeps its permit until its
//! response is complete, so nothing accepted is dropped for load.

use super::metrics::Gauge;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The admission gate.
#[derive(Debug, Clone)]
pub struct Admission {
    permits: Arc<Semaphore>,
    capacity: usize,
    in_flight: Gauge,
}

/// Proof of admission; dropping it frees the slot.
#[derive(Debug)]
pub struct AdmissionPermit {
    _permit: OwnedSemaphorePermit,
    in_flight: Gauge,
}

impl Drop for AdmissionPermit {
    fn drop(&mut self) {
        self.in_flight.dec();
    }
}

impl Admission {
    /// A gate for `capacity` concurrent requests (at least 1), reporting to `in_flight`.
    pub fn new(capacity: usize, in_flight: Gauge) -> Self {
        let capacity = capacity.max(1);
        Admission {
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
            in_flight,
        }
    }

    /// Admit a request now, or `None` when full.
    pub fn try_admit(&self) -> Option<AdmissionPermit> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        self.in_flight.inc();
        Some(AdmissionPermit {
            _permit: permit,
            in_flight: self.in_flight.clone(),
        })
    }

    /// Requests currently admitted.
    pub fn in_flight(&self) -> usize {
        self.capacity - self.permits.available_permits()
    }

    /// The limit.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_capacity() {
        let g = Gauge::default();
        let a = Admission::new(2, g.clone());
        let p1 = a.try_admit().unwrap();
        let _p2 = a.try_admit().unwrap();
        assert!(a.try_admit().is_none());
        assert_eq!(g.get(), 2.0);
        drop(p1);
        assert_eq!(a.in_flight(), 1);
        assert!(a.try_admit().is_some());
    }
}
