//! Shared helpers for edgeray's integration tests (see `tests/tests/`).

pub mod netlab;
pub mod procs;

use std::path::PathBuf;

/// The workspace root (the folder holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

pub use edgeray_model::test_models::{GEMMA3, QWEN2, real_model};

/// Ten prompts for gemma3 of the default-wire exactness tests (one line each, so they also
/// make a `--prompt-file`).
pub const GEMMA3_PROMPTS: [&str; 10] = [
    "The capital of France is",
    "My favourite recipe for pancakes",
    "The tallest mountain in the world is",
    "Once upon a time, in a small village,",
    "The best way to learn a new language is",
    "Water boils at a temperature of",
    "The first person to walk on the moon was",
    "In the morning I like to drink",
    "The three primary colours are",
    "A good night's sleep helps you",
];

/// Ten prompts for qwen2.5-coder, as [`GEMMA3_PROMPTS`].
pub const QWEN2_PROMPTS: [&str; 10] = [
    "def fibonacci(n):",
    "The difference between TCP and UDP is",
    "def is_prime(n):",
    "# Read a CSV file with pandas",
    "SELECT name FROM users WHERE",
    "fn main() {",
    "The time complexity of quicksort is",
    "class Stack:",
    "import numpy as np; def mean(xs):",
    "A linked list is",
];

/// Writes `prompts` as a `--prompt-file` (one per line) into `dir`; returns its path.
pub fn prompt_file(dir: &std::path::Path, name: &str, prompts: &[&str]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, prompts.join("\n") + "\n").expect("prompt file written");
    path
}

/// Path of the `edgeray` binary built by `cargo build` (the test command builds it first).
pub fn edgeray_bin() -> PathBuf {
    if let Ok(p) = std::env::var("EDGERAY_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("target"));
    let bin = target.join("debug").join("edgeray");
    assert!(
        bin.exists(),
        "{} not built: run `cargo build -p edgeray` first (scripts/test.sh does)",
        bin.display()
    );
    bin
}
