//! GGUF models on burn.
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
