//! edgeray: a Ray-style actor cluster for edge boards that runs a quantized LLM as a pipeline.
//!
//! This crate joins [`edgeray_runtime`] (cluster, transport, remote actors — no ML) and
//! [`edgeray_model`] (GGUF models on burn — no networking): scheduler, stage and gateway actors,
//! and the `edgeray` command-line interface.
//!
//! - [`placement`]: pure placement policies (which layers go to which board) over memory,
//!   speed and power budgets, and the cost model.
//! - [`pipeline`]: deploying a model over a cluster ([`pipeline::deploy`]), the stage actors,
//!   the coordinator that drives sequences (continuous batching, failover that keeps the
//!   answer) and the head's scheduler.
//! - [`gateway`]: the OpenAI-compatible HTTP API over a deployed pipeline.
//! - [`cli`]: the `edgeray` binary's subcommands.
//!
//! A model pipeline deployed from code over two nodes of an embedded cluster (real loopback
//! QUIC with mutual TLS, here on a tiny random-weight model):
//!
//! ```
//! use edgeray::pipeline::{DeployOptions, GenOptions, GenToken, deploy, embedded_cluster};
//! use edgeray::model::sampling::SamplingParams;
//! use edgeray::model::test_models::RandomModel;
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let model = dir.path().join("tiny.gguf");
//! std::fs::write(&model, RandomModel::small("gemma3", 3).to_bytes())?;
//!
//! let nodes = embedded_cluster(2, &dir.path().join("nodes"), 1).await?;
//! let opts = DeployOptions { stages: Some(2), ctx: 64, progress: false, ..Default::default() };
//! let pipeline = deploy(&nodes[0], &model, &opts).await?;
//! assert_eq!(pipeline.placement().stages.len(), 2);
//!
//! let (tx, mut rx) = tokio::sync::mpsc::channel::<GenToken>(16);
//! let printer = tokio::spawn(async move {
//!     while let Some(t) = rx.recv().await {
//!         print!("{}", t.text);
//!     }
//! });
//! let options = GenOptions { max_tokens: 8, sampling: SamplingParams::greedy(), ..Default::default() };
//! let answer = pipeline.generate(pipeline.encode("hello")?, &options, &tx).await?;
//! drop(tx);
//! printer.await?;
//! assert!(answer.tokens.len() <= 8);
//!
//! pipeline.shutdown().await;
//! for n in nodes.into_iter().rev() {
//!     n.shutdown().await;
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub use edgeray_model as model;
pub use edgeray_runtime as runtime;

pub mod cli;
pub mod gateway;
pub mod pipeline;
pub mod placement;
pub mod sim;
