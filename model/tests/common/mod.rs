//! Helpers shared by the real-model tests of this crate.

use std::path::PathBuf;

/// File name of the Gemma 3 270M model under `models/`.
pub const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";
/// File name of the Qwen2.5-Coder-0.5B-Instruct model under `models/`.
pub const QWEN2: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";

/// Path of a real model under the workspace's `models/`; `None` (and a printed SKIP reason) when
/// it has not been fetched. In CI (`CI=true`) a missing model is a failure, not a skip.
pub fn real_model(file_name: &str) -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("models")
        .join(file_name);
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
