//! Structured output through the OpenAI API on the real qwen2.5 instruct model:
//! `edgeray serve` (embedded 2-node cluster, so the constraint travels to a last stage in
//! another actor system) answers `scripts/openai_client_test.py --structured`: ten
//! `json_schema` prompts whose answers parse and validate (half of them `strict`), a streamed
//! answer equal to the whole one, three sampled `json_object` answers, and a 400 naming
//! `response_format` for a bad schema.

use std::process::{Command, Stdio};
use std::time::Duration;

use edgeray_tests::procs::{self, Proc, free_tcp_port, wait_for_line};
use edgeray_tests::{QWEN2, edgeray_bin, real_model, workspace_root};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_schema_answers_parse_and_validate_on_qwen() {
    let Some(model) = real_model(QWEN2) else {
        return;
    };
    let has_openai = Command::new("python3")
        .args(["-c", "import openai"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_openai {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "python3 `openai` package missing in CI (scripts/setup.sh installs it)"
        );
        eprintln!("SKIP structured output: python `openai` package not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_tcp_port();
    let mut child = Command::new(edgeray_bin())
        .current_dir(workspace_root())
        .args([
            "serve",
            "--quiet",
            "--threads",
            "1",
            "--ctx",
            "512",
            "--local-dir",
        ])
        .arg(dir.path())
        .arg("--model")
        .arg(&model)
        .args(["--http", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("edgeray serve starts");
    let rx = procs::stderr_lines(&mut child, "serve", true);
    let _guard = Proc(child);
    let line = tokio::task::spawn_blocking(move || {
        let l = wait_for_line(&rx, "serving", Duration::from_secs(180));
        (l, rx)
    })
    .await
    .unwrap()
    .0;
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("base url")
        .trim_end_matches('/')
        .to_string();
    let base = if base.ends_with("/v1") {
        base
    } else {
        format!("{base}/v1")
    };
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let models: serde_json::Value = client
        .get(format!("{base}/models"))
        .send()
        .await
        .expect("GET /v1/models")
        .json()
        .await
        .expect("models JSON");
    let model_id = models["data"][0]["id"]
        .as_str()
        .expect("a model id")
        .to_string();
    let out = tokio::process::Command::new("python3")
        .arg(workspace_root().join("scripts/openai_client_test.py"))
        .args([
            "--base-url",
            &base,
            "--model",
            &model_id,
            "--max-tokens",
            "160",
            "--structured",
        ])
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .await
        .expect("python runs");
    let so = String::from_utf8_lossy(&out.stdout);
    eprintln!("{so}");
    assert!(
        out.status.success() && so.trim_end().ends_with("OK"),
        "structured output test failed:\n{so}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
