//! Helpers shared by the real-model tests of this crate.

pub use edgeray_model::test_models::{GEMMA3, QWEN2, real_model};
