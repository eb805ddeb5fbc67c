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
