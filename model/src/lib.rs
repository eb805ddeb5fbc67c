//! GGUF models on burn.
pub mod gguf;
pub mod quant;
pub mod sampling;
pub mod chat;
pub mod tokenizer;
