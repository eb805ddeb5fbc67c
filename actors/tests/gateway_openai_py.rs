//! Runs `scripts/openai_client_test.py` (the official Python `openai` client) against the
//! gateway with the `EchoBackend`. Needs python3 with the `openai` package, so it is ignored by
//! default: `OPENAI_PYTHON=/path/to/python cargo test -p edgeray --test gateway_openai_py -- --ignored`.

use edgeray::gateway::{EchoBackend, EchoConfig, Gateway, GatewayConfig};
use std::path::Path;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python3 with the `openai` package (set OPENAI_PYTHON)"]
async fn official_openai_client_works_against_the_gateway() {
    let backend = EchoBackend::new(EchoConfig::default());
    let gw = Gateway::new(Arc::new(backend), GatewayConfig::default()).unwrap();
    let running = gw.spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let python = std::env::var("OPENAI_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/openai_client_test.py");
    let base = running.base_url();
    let out = tokio::process::Command::new(python)
        .arg(script)
        .args(["--base-url", &base, "--model", "edgeray-echo"])
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .await
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "script failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.trim_end().ends_with("OK"), "{stdout}");
    running.shutdown().await.unwrap();
}
