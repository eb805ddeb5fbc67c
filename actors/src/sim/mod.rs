//! A pure discrete-event simulator of a deployed pipeline: no I/O, deterministic for a seed.
//!
//! It runs N concurrent streams (a prompt prefill, then one decode step per token) through a
//! pipeline of stages, each on one board or a tensor-parallel group: mailboxes queue the
//! sequences, an idle stage runs one forward over all it holds (cost growing sublinearly with
//! the batch), activations cross the links (RTT and bandwidth), a group pays its per-layer
//! synchronisation points, and a failed node is detected, the pipeline redeployed and each
//! stream's tokens replayed. It reports tokens/s (aggregate, decode, per stream), the
//! time-between-tokens distribution, energy per token and per-stage utilisation.
//!
//! - [`setup`]: the inputs (pipeline, model, workload, parameters, failures), and
//!   [`pipeline_from_placement`] from a placement policy's result;
//! - [`cost`]: one forward's duration;
//! - [`calibrate`]: per-node cost curves fitted to measured stage runs;
//! - [`engine`]: the event loop, [`simulate`];
//! - [`report`]: the outputs; [`plot`]: SVG charts of sweeps;
//! - [`queue`], [`rng`]: the event queue and the seeded generator.
//!
//! The per-forward cost reuses the placement cost model's inputs (weight bytes per layer, each
//! node's compute score, the links' RTT and bandwidth): with one stream its decode speed is the
//! placement's predicted single-stream tokens/s, less the attention's KV-cache reads, which the
//! closed-form model leaves out.

pub mod calibrate;
pub mod cost;
pub mod engine;
pub mod plot;
pub mod queue;
pub mod report;
pub mod rng;
pub mod setup;

#[cfg(test)]
mod tests;

pub use engine::simulate;
pub use report::{FailureReport, SimReport, StageReport, TbtStats};
pub use setup::{
    SetupError, SimFailure, SimModel, SimNode, SimParams, SimPipeline, SimStage, Workload,
    pipeline_from_placement, pipeline_with_groups, tensor_groups,
};
