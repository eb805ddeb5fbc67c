//! GGUF models on burn.
pub mod gguf;
pub mod quant;
