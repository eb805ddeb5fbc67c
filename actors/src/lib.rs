//! edgeray: a Ray-style actor cluster for edge boards that runs a quantized LLM as a pipeline.
//!
//! This crate joins [`edgeray_runtime`] (cluster, transport, remote actors — no ML) and
//! [`edgeray_model`] (GGUF models on burn — no networking): scheduler, stage and gateway actors,
//! and the `edgeray` command-line interface.

pub use edgeray_model as model;
pub use edgeray_runtime as runtime;

pub mod cli;
pub mod gateway;
pub mod pipeline;
pub mod placement;
pub mod sim;
