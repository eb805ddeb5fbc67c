//! What runs where requests enter (the process running `run`, `serve` or `bench`): deploying a
//! model (a placement from the head, shards shipped to the stage nodes, stage actors spawned),
//! the deployed [`Pipeline`] with one driver per sequence, the token sink the last stage
//! answers to, the supervised [`Service`] that redeploys on failure with prepared failover
//! plans, and the adapter that serves it through the OpenAI gateway.

mod backend;
mod deploy;
mod driver;
mod engine;
pub mod latency_window;
pub mod placement_check;
pub mod sequence;
mod service;
mod shipping;
mod sink;
mod spares;
#[cfg(test)]
mod tests;

pub use backend::{PipelineBackend, sampling_for};
pub use deploy::{
    DeployError, DeployOptions, DeployTimings, PlannedPlacement, deploy, deploy_with,
};
pub use driver::TokenSink;
pub use engine::{
    Admission, GenOptions, GenSummary, GenToken, HopTotals, PREFILL_CHUNK, PREFILL_CHUNK_SHARED,
    Pipeline, PipelineError,
};
pub use sequence::{Finish, Stall, Watchdog};
pub use service::{FAILOVER_WAIT, Resumable, Service};
pub use shipping::{ShipError, ShipReport, node_has_shard, ship_shard, ship_shard_windowed};
pub use sink::{SinkActor, SinkSenders, sink_refusals};
pub use spares::{FailoverPlans, failover_view, nodes_to_cover};
