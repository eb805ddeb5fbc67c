//! GGUF models on burn: everything edgeray needs to run a quantized transformer on one
//! machine, and nothing of networking.
//!
//! - [`gguf`]: the file format (metadata, tensor table, memory-mapped tensors).
//! - [`quant`]: ggml's quantization formats, bit-exact dequantization and the matrix kernels
//!   (scalar reference, AVX2, AVX-512 VNNI, NEON), on a kernel thread pool.
//! - [`arch`]: the model architectures (Llama-style: Qwen2, Gemma 3) as burn modules,
//!   [`arch::Stage`] (a range of layers, the unit a pipeline places on a board), KV caches,
//!   multi-sequence batches and tensor-parallel slices; [`arch::Generator`] for one machine.
//! - [`tokenizer`], [`chat`], [`sampling`]: the llama.cpp-identical tokenizer, chat templates,
//!   samplers and structured-output constraints.
//! - [`scoring`]: perplexity, log-probabilities and KL divergence against llama.cpp.
//! - [`shard`]: the bytes of a stage's tensors as a file of their own (weight shipping).
//! - [`test_models`]: small random-weight GGUF models for tests and examples.
//!
//! Greedy output is bit-identical whatever the batch, the thread count, the stage split or a
//! tensor-parallel split; the kernels perform ggml's float operations in ggml's order.
//!
//! ```
//! use edgeray_model::arch::{GenerateOptions, Generator};
//! use edgeray_model::test_models::RandomModel;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A tiny random-weight Qwen2-style model (use a real GGUF file the same way).
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("tiny.gguf");
//! std::fs::write(&path, RandomModel::small("qwen2", 7).to_bytes())?;
//!
//! let g = Generator::load(&path, 1, Some(64), |_done, _total| {})?;
//! let prompt = g.encode("hello world")?;
//! let opts = GenerateOptions { max_tokens: 4, ..Default::default() };
//! let out = g.generate_tokens(&prompt, &opts, |_token| true)?;
//! assert!(out.tokens.len() <= 4);
//! // The same prompt gives the same tokens every time (greedy is the default).
//! assert_eq!(g.generate_tokens(&prompt, &opts, |_| true)?.tokens, out.tokens);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod arch;
pub mod chat;
pub mod gguf;
pub mod ops;
pub mod quant;
pub mod sampling;
pub mod scoring;
pub mod shard;
pub mod test_models;
pub mod tokenizer;
