//! Distributed pipeline inference: a model split into contiguous layer ranges, one stage actor
//! per range on the node the scheduler picked, hidden states flowing stage to stage over QUIC.
//!
//! - [`deploy`]: ask the head node's scheduler actor for a placement ([`scheduler_actor`]), ship
//!   each node its shard ([`weights`]), spawn the stage actors ([`StageActor`], which batch the
//!   sequences that arrive together, see [`batching`]) and the coordinator's token sink.
//! - [`Pipeline`]: admission and one driver per sequence; [`PipelineBackend`] serves it through
//!   the OpenAI-compatible gateway.
//! - [`registry`]: the actor kinds every node must register to host stages.

pub mod backend;
pub mod batching;
pub mod compute;
pub mod deploy;
pub mod engine;
pub mod hidden;
pub mod node_env;
pub mod protocol;
pub mod scheduler;
pub mod scheduler_actor;
pub mod service;
pub mod shard_store;
pub mod sink;
pub mod spares;
pub mod stage_actor;
pub mod weights;

pub use backend::PipelineBackend;
pub use compute::measure_compute_score;
pub use deploy::{
    DeployError, DeployOptions, DeployTimings, PlannedPlacement, deploy, deploy_with,
};
pub use engine::{Finish, GenOptions, GenSummary, GenToken, HopTotals, Pipeline, PipelineError};
pub use hidden::WireDtype;
pub use node_env::{set_shard_dir, shard_dir};
pub use scheduler_actor::SchedulerActor;
pub use service::{Resumable, Service, Stall};
pub use sink::SinkActor;
pub use stage_actor::StageActor;
pub use weights::WeightsActor;

use edgeray_runtime::actor::Registry;

/// A registry with the pipeline's actor kinds (stage, weight receiver, sink, scheduler).
pub fn registry() -> Registry {
    Registry::new()
        .with::<StageActor>()
        .with::<SchedulerActor>()
        .with::<WeightsActor>()
        .with::<SinkActor>()
}
