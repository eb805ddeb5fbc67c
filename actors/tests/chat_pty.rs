//! `edgeray chat` driven through a pseudo-terminal (`chat_pty.py`, Python's `pty`): against a
//! gateway with the slowed-down echo backend (streaming, Ctrl-C stops an answer and the program
//! goes on, history, `/exit`), and against gemma3 deployed by chat itself on `--local 2`.

mod cli_util;

use edgeray::gateway::{EchoBackend, EchoConfig, Gateway, GatewayConfig};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

fn driver(mode: &str, args: &[String]) -> std::process::Output {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/chat_pty.py");
    Command::new("python3")
        .arg(script)
        .arg(mode)
        .arg(env!("CARGO_BIN_EXE_edgeray"))
        .args(args)
        .output()
        .expect("python3 runs (scripts/setup.sh installs it)")
}

fn assert_ok(out: &std::process::Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("OK"),
        "pty driver failed:\n{stdout}\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_streams_stops_on_ctrl_c_and_keeps_history() {
    let echo = EchoBackend::new(EchoConfig {
        token_delay: Duration::from_millis(40),
        ..EchoConfig::default()
    });
    let gw = Gateway::new(Arc::new(echo), GatewayConfig::default()).unwrap();
    let running = gw.spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let url = format!("http://{}", running.local_addr);
    let args: Vec<String> = ["chat", "--url", &url, "--max-tokens", "1000"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let out = tokio::task::spawn_blocking(move || driver("echo", &args))
        .await
        .unwrap();
    assert_ok(&out);
    running.shutdown().await.unwrap();
}

#[test]
fn chat_with_a_model_deployed_on_the_embedded_cluster() {
    let Some(model) = cli_util::model("gemma-3-270m-q4_k_m.gguf") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = vec![
        "chat".into(),
        "--quiet".into(),
        "--threads".into(),
        "1".into(),
        "--temperature".into(),
        "0".into(),
        "--max-tokens".into(),
        "12".into(),
        "--local-dir".into(),
        dir.path().display().to_string(),
        "--model".into(),
        model.display().to_string(),
    ];
    assert_ok(&driver("model", &args));
}

#[test]
fn chat_refuses_url_with_a_cluster_and_a_bad_temperature() {
    let out = cli_util::edgeray()
        .args(["chat", "--url", "http://127.0.0.1:1", "--local", "2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
    let out = cli_util::edgeray()
        .args(["chat", "--url", "http://127.0.0.1:1", "--temperature", "5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--temperature must be between 0 and 2"));
}
