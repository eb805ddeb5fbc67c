//! `edgeray serve --alias NAME` on the embedded 2-node cluster with the real gemma3 model: the
//! alias is the only model id served; `--alias` with a bad name is refused before deploying.

mod cli_util;

use cli_util::{Proc, edgeray, free_tcp_port, model};
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_under_its_alias_only() {
    let Some(model) = model("gemma-3-270m-q4_k_m.gguf") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_tcp_port();
    let mut cmd = edgeray();
    cmd.args(["serve", "--quiet", "--threads", "1", "--alias", "qwen"])
        .arg("--local-dir")
        .arg(dir.path())
        .arg("--model")
        .arg(&model)
        .args(["--http", &format!("127.0.0.1:{port}")]);
    let serve = tokio::task::spawn_blocking(move || {
        let p = Proc::spawn(cmd, "serve");
        let line = p.wait_for("serving", Duration::from_secs(180));
        assert!(line.contains("serving qwen at"), "{line}");
        p
    })
    .await
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();

    let models: Value = client
        .get(format!("{base}/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"].as_array().unwrap().len(), 1, "{models}");
    assert_eq!(models["data"][0]["id"], "qwen", "{models}");
    let health: Value = client
        .get(format!("{base}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["model"], "qwen");

    let ok = client
        .post(format!("{base}/v1/completions"))
        .json(&json!({"model": "qwen", "prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let v: Value = ok.json().await.unwrap();
    assert_eq!(v["model"], "qwen", "{v}");
    assert!(!v["choices"][0]["text"].as_str().unwrap().is_empty(), "{v}");

    // The GGUF's own name is no longer served.
    for name in ["gemma-3-270m-q4_k_m", "gemma-3-270m", "other"] {
        let r = client
            .post(format!("{base}/v1/chat/completions"))
            .json(&json!({"model": name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{name}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "model_not_found", "{v}");
    }
    let r = client
        .get(format!("{base}/v1/models/qwen"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(serve);
}

#[test]
fn a_bad_alias_is_refused_with_the_reason() {
    let out = edgeray()
        .args(["serve", "--alias", "my model", "--http", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--alias") && err.contains("' '"), "{err}");
}
