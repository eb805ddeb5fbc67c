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

/// Path of a real model under `models/`; `None` (and a printed SKIP reason) when it has not been
/// fetched. In CI (`CI=true`) a missing model is a failure, not a skip.
pub fn real_model(file_name: &str) -> Option<PathBuf> {
    let path = workspace_root().join("models").join(file_name);
    if path.exists() {
        return Some(path);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "{} is missing in CI: run scripts/fetch-models.sh",
            path.display()
        );
    }
    eprintln!(
        "SKIP: {} not found (run scripts/fetch-models.sh)",
        path.display()
    );
    None
}

/// File name of the Gemma 3 270M model under `models/`.
pub const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";
/// File name of the Qwen2.5-Coder-0.5B-Instruct model under `models/`.
pub const QWEN2: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";

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
