//! The real models the tests run on: their file names and where `scripts/fetch-models.sh`
//! puts them. One place for every crate's real-model tests (they skip when a model has not
//! been fetched, and fail instead under `CI=true`).

use std::path::PathBuf;

/// File name of the Gemma 3 270M model under `models/`.
pub const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";
/// File name of the Qwen2.5-Coder-0.5B-Instruct model under `models/`.
pub const QWEN2: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";

/// The workspace's `models/` folder.
pub fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("model/ has a parent")
        .join("models")
}

/// Path of a real model under `models/`; `None` (and a printed SKIP reason) when it has not
/// been fetched. In CI (`CI=true`) a missing model is a failure, not a skip.
pub fn real_model(file_name: &str) -> Option<PathBuf> {
    let path = models_dir().join(file_name);
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
