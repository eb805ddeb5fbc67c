//! GGUF models on burn.
pub mod gguf;
pub mod quant;
pub mod arch;
pub mod ops;
pub mod sampling;
pub mod chat;
pub mod tokenizer;
pub mod shard;
