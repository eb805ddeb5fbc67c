//! The process-wide policy registry: custom [`PlacementPolicy`] implementations registered
//! here are found by name wherever edgeray resolves a policy — [`super::policy_by_name`], so
//! the head node's scheduler actor, the failover planner, `edgeray placement preview
//! --policy NAME`, `edgeray sim --policy NAME` — and [`super::all_policies`] (what
//! `placement preview --compare` runs).
//!
//! A library user registers a policy before deploying with `DeployOptions { policy: NAME }`; a
//! binary built with extra policies registers them before calling [`crate::cli::main`]. The
//! scheduler runs on the cluster's head node: in a multi-process cluster that node's binary
//! must have registered the policy too (an in-process cluster shares one registry).

use super::plan::{Candidate, Placement, Unplaceable};
use super::types::{ClusterView, ModelProfile};
use super::{POLICY_NAMES, PlacementPolicy};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

static REGISTRY: RwLock<BTreeMap<String, Arc<dyn PlacementPolicy>>> = RwLock::new(BTreeMap::new());

/// Why a policy cannot be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The name is a built-in policy's.
    #[error("`{0}` is a built-in placement policy; give the custom policy another name")]
    Builtin(String),
    /// The name is empty or holds whitespace.
    #[error("a placement policy name must be non-empty without whitespace (got `{0}`)")]
    BadName(String),
}

/// Register `policy` under its [`PlacementPolicy::name`] (replacing a custom policy of that
/// name registered before).
pub fn register_policy(policy: Arc<dyn PlacementPolicy>) -> Result<(), RegistryError> {
    let name = policy.name().to_string();
    if POLICY_NAMES.contains(&name.as_str()) {
        return Err(RegistryError::Builtin(name));
    }
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        return Err(RegistryError::BadName(name));
    }
    REGISTRY
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name, policy);
    Ok(())
}

/// Remove the custom policy `name`; whether there was one.
pub fn unregister_policy(name: &str) -> bool {
    REGISTRY
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .remove(name)
        .is_some()
}

/// The custom policy registered as `name`.
pub fn registered_policy(name: &str) -> Option<Box<dyn PlacementPolicy>> {
    REGISTRY
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(name)
        .map(|p| Box::new(Shared(p.clone())) as Box<dyn PlacementPolicy>)
}

/// Names of the registered custom policies, sorted.
pub fn registered_names() -> Vec<String> {
    REGISTRY
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .keys()
        .cloned()
        .collect()
}

/// A registered policy handed out as a box.
struct Shared(Arc<dyn PlacementPolicy>);

impl PlacementPolicy for Shared {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn place(&self, model: &ModelProfile, cluster: &ClusterView) -> Result<Placement, Unplaceable> {
        self.0.place(model, cluster)
    }

    fn candidates(&self, model: &ModelProfile, cluster: &ClusterView) -> Vec<Candidate> {
        self.0.candidates(model, cluster)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::{
        ClusterView, MemberId, NodeView, PlacementBench, ThroughputPolicy, policy_by_name,
        policy_names,
    };

    struct Renamed(&'static str);

    impl PlacementPolicy for Renamed {
        fn name(&self) -> &str {
            self.0
        }
        fn place(&self, m: &ModelProfile, c: &ClusterView) -> Result<Placement, Unplaceable> {
            let mut p = ThroughputPolicy.place(m, c)?;
            p.policy = self.0.into();
            Ok(p)
        }
        fn candidates(&self, m: &ModelProfile, c: &ClusterView) -> Vec<Candidate> {
            ThroughputPolicy.candidates(m, c)
        }
    }

    #[test]
    fn registered_policies_are_found_by_name_and_compared() {
        let name = "registry-test-renamed";
        assert!(policy_by_name(name).is_err());
        register_policy(Arc::new(Renamed(name))).unwrap();
        assert_eq!(policy_by_name(name).unwrap().name(), name);
        assert!(policy_names().iter().any(|n| n == name));
        let model = ModelProfile {
            name: "m".into(),
            layer_bytes: vec![10; 4],
            embedding_bytes: 1,
            head_bytes: 1,
            tied_embeddings: false,
            kv_bytes_per_token_per_layer: 0,
            context_length: 16,
            hidden_size: 8,
            activation_bytes_per_token: 16,
            stage_overhead_bytes: 0,
        };
        let node = NodeView {
            id: MemberId("a".into()),
            name: "a".into(),
            memory_budget_bytes: 1 << 20,
            memory_free_bytes: 1 << 20,
            power_watts: 1.0,
            compute_bytes_per_s: 1e3,
            backend: "flex".into(),
            up: true,
        };
        let bench = PlacementBench::registered(&model, &ClusterView::new(vec![node]));
        let row = bench.rows.iter().find(|r| r.policy == name).unwrap();
        assert!(row.placement.is_some());
        assert_eq!(bench.rows[0].policy, "memory");
        // built-in names are refused, bad names too
        assert_eq!(
            register_policy(Arc::new(Renamed("power"))),
            Err(RegistryError::Builtin("power".into()))
        );
        assert!(matches!(
            register_policy(Arc::new(Renamed("a b"))),
            Err(RegistryError::BadName(_))
        ));
        assert!(unregister_policy(name));
        let err = policy_by_name(name).err().unwrap().to_string();
        assert!(
            err.contains("valid policies: memory, power, throughput"),
            "{err}"
        );
    }
}
