//! Distributed pipeline inference: a model split into contiguous layer ranges, one stage actor
//! per range on the node the scheduler picked, hidden states flowing stage to stage over QUIC.
//!
//! The code is in rooms by where it runs:
//! - [`stage`]: on every board that hosts stages (the stage actor and its batching, the weight
//!   receiver, the shard cache, the compute score);
//! - [`coordinator`]: where requests enter (deploy, the [`Pipeline`] and its sequence drivers,
//!   the token sink, failover, the gateway adapter);
//! - [`head`]: on the head node (the scheduler actor placing against the live cluster view);
//! - [`protocol`]: what travels between them (messages, and the hidden-state wire codec).
//!
//! `hosting` starts a node that can take part in all three ([`start_hosting_node`]) and the
//! embedded cluster ([`embedded_cluster`]).

pub mod coordinator;
pub mod head;
mod hosting;
pub mod protocol;
pub mod stage;

pub use coordinator::{
    DeployError, DeployOptions, DeployTimings, Finish, GenOptions, GenSummary, GenToken, HopTotals,
    Pipeline, PipelineBackend, PipelineError, PlannedPlacement, Resumable, Service, SinkActor,
    Stall, deploy, deploy_with,
};
pub use head::SchedulerActor;
pub use hosting::{
    HostingError, default_local_dir, embedded_cluster, start_hosting_node, wait_for_members,
};
pub use protocol::WireDtype;
pub use stage::{
    StageActor, WeightsActor, measure_compute_score, set_shard_cache_budget, set_shard_dir,
    shard_dir,
};

use edgeray_runtime::actor::Registry;

/// A registry with the pipeline's actor kinds (stage, weight receiver, sink, scheduler). The
/// scheduler's name is reserved for the scheduler kind, and cluster-wide for the head's own
/// scheduler: no other member can squat it.
pub fn registry() -> Registry {
    Registry::new()
        .with::<StageActor>()
        .with::<SchedulerActor>()
        .with::<WeightsActor>()
        .with::<SinkActor>()
        .with_reserved_name::<SchedulerActor>(head::SCHEDULER_NAME)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_scheduler_name_is_reserved_for_the_scheduler() {
        let r = super::registry();
        assert_eq!(
            r.reserved_for(super::head::SCHEDULER_NAME),
            Some("edgeray.scheduler")
        );
    }
}
