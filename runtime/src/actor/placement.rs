//! Resource needs, per-node budgets and reservations, and the placement choice (pure logic).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::identity::NodeId;

/// What an actor needs from its node (all zero = fits anywhere).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Power in watts.
    pub power_watts: f64,
    /// Custom quantities by name (e.g. `"gpu": 1.0`, `"camera": 1.0`).
    pub custom: BTreeMap<String, f64>,
}

impl Resources {
    /// No needs.
    pub fn none() -> Self {
        Resources::default()
    }

    /// Sets the memory need.
    pub fn memory(mut self, bytes: u64) -> Self {
        self.memory_bytes = bytes;
        self
    }

    /// Sets the power need.
    pub fn power(mut self, watts: f64) -> Self {
        self.power_watts = watts;
        self
    }

    /// Sets a custom need.
    pub fn custom(mut self, key: impl Into<String>, amount: f64) -> Self {
        self.custom.insert(key.into(), amount);
        self
    }

    /// Whether `need` fits into `self` (taken as free capacity). A custom key absent from
    /// `self` has capacity 0.
    pub fn fits(&self, need: &Resources) -> bool {
        need.memory_bytes <= self.memory_bytes
            && need.power_watts <= self.power_watts + 1e-9
            && need
                .custom
                .iter()
                .all(|(k, v)| *v <= 0.0 || *v <= self.custom.get(k).copied().unwrap_or(0.0) + 1e-9)
    }

    fn add(&mut self, other: &Resources) {
        self.memory_bytes = self.memory_bytes.saturating_add(other.memory_bytes);
        self.power_watts += other.power_watts;
        for (k, v) in &other.custom {
            *self.custom.entry(k.clone()).or_insert(0.0) += v;
        }
    }

    /// `self - other`, floored at zero.
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        let mut out = self.clone();
        out.memory_bytes = out.memory_bytes.saturating_sub(other.memory_bytes);
        out.power_watts = (out.power_watts - other.power_watts).max(0.0);
        for (k, v) in &other.custom {
            if let Some(c) = out.custom.get_mut(k) {
                *c = (*c - v).max(0.0);
            }
        }
        out
    }
}

/// A node's capacity and what is reserved on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// Total capacity offered to actors.
    pub capacity: Resources,
    /// Sum of the reservations of live actors.
    pub reserved: Resources,
}

impl Budget {
    /// What is still free.
    pub fn free(&self) -> Resources {
        self.capacity.saturating_sub(&self.reserved)
    }
}

/// A placement candidate: a node and its current budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The node.
    pub node: NodeId,
    /// Its budget.
    pub budget: Budget,
}

/// Chooses a node for an actor with the given needs. Candidates are the Up nodes, the local
/// node first.
pub trait SpawnPlacement: Send + Sync + 'static {
    /// The chosen node, or `None` when no candidate fits.
    fn place(&self, need: &Resources, candidates: &[Candidate]) -> Option<NodeId>;
}

/// The default placement: the first candidate whose free budget fits.
#[derive(Debug, Clone, Copy, Default)]
pub struct FirstFit;

impl SpawnPlacement for FirstFit {
    fn place(&self, need: &Resources, candidates: &[Candidate]) -> Option<NodeId> {
        candidates
            .iter()
            .find(|c| c.budget.free().fits(need))
            .map(|c| c.node)
    }
}

/// The reservation ledger of one node: admission check and release on actor stop.
#[derive(Debug)]
pub struct Ledger {
    capacity: Resources,
    reservations: BTreeMap<u64, Resources>,
}

/// A reservation did not fit into the node's free budget.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("needs {need:?} but only {free:?} is free")]
pub struct DoesNotFit {
    /// What was asked.
    pub need: Resources,
    /// What was free.
    pub free: Resources,
}

impl Ledger {
    /// An empty ledger for a node with this capacity.
    pub fn new(capacity: Resources) -> Self {
        Ledger {
            capacity,
            reservations: BTreeMap::new(),
        }
    }

    /// The current budget.
    pub fn budget(&self) -> Budget {
        let mut reserved = Resources::default();
        for r in self.reservations.values() {
            reserved.add(r);
        }
        Budget {
            capacity: self.capacity.clone(),
            reserved,
        }
    }

    /// Reserves `need` under `key` if it fits.
    pub fn reserve(&mut self, key: u64, need: &Resources) -> Result<(), DoesNotFit> {
        let free = self.budget().free();
        if !free.fits(need) {
            return Err(DoesNotFit {
                need: need.clone(),
                free,
            });
        }
        self.reservations.insert(key, need.clone());
        Ok(())
    }

    /// Moves a reservation to a new key (e.g. from a spawn ticket to the actor's id).
    pub fn rekey(&mut self, from: u64, to: u64) {
        if let Some(r) = self.reservations.remove(&from) {
            self.reservations.insert(to, r);
        }
    }

    /// Releases the reservation under `key` (no-op when absent).
    pub fn release(&mut self, key: u64) {
        self.reservations.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(b: u8) -> NodeId {
        NodeId([b; 32])
    }

    #[test]
    fn fits_checks_every_dimension() {
        let cap = Resources::none().memory(100).power(5.0).custom("gpu", 1.0);
        assert!(cap.fits(&Resources::none()));
        assert!(cap.fits(&Resources::none().memory(100).power(5.0).custom("gpu", 1.0)));
        assert!(!cap.fits(&Resources::none().memory(101)));
        assert!(!cap.fits(&Resources::none().power(5.5)));
        assert!(!cap.fits(&Resources::none().custom("gpu", 2.0)));
        assert!(!cap.fits(&Resources::none().custom("camera", 1.0)));
    }

    #[test]
    fn first_fit_skips_full_nodes() {
        let full = Candidate {
            node: node(1),
            budget: Budget {
                capacity: Resources::none().memory(100),
                reserved: Resources::none().memory(90),
            },
        };
        let roomy = Candidate {
            node: node(2),
            budget: Budget {
                capacity: Resources::none().memory(100),
                reserved: Resources::none(),
            },
        };
        let need = Resources::none().memory(50);
        assert_eq!(
            FirstFit.place(&need, &[full.clone(), roomy.clone()]),
            Some(node(2))
        );
        assert_eq!(FirstFit.place(&need, &[full]), None);
        assert_eq!(FirstFit.place(&Resources::none(), &[roomy]), Some(node(2)));
    }

    #[test]
    fn ledger_reserves_and_releases() {
        let mut l = Ledger::new(Resources::none().memory(100).power(10.0));
        l.reserve(1, &Resources::none().memory(60).power(4.0))
            .unwrap();
        let err = l.reserve(2, &Resources::none().memory(60)).unwrap_err();
        assert_eq!(err.free.memory_bytes, 40);
        l.reserve(2, &Resources::none().memory(40).power(6.0))
            .unwrap();
        assert!(l.reserve(3, &Resources::none().power(0.5)).is_err());
        l.release(1);
        assert_eq!(l.budget().free().memory_bytes, 60);
        l.rekey(2, 7);
        l.release(2);
        assert_eq!(l.budget().free().memory_bytes, 60);
        l.release(7);
        assert_eq!(l.budget().free(), l.budget().capacity);
    }
}
