//! GGUF models on burn.
