//! `edgeray serve --alias NAME` on the embedded 2-node cluster with the real gemma3 model: the
//! alias is the only model id served; the dashboard page and `/api/cluster` (the status schema
//! with both members and the 2-stage placement); `--alias` with a bad name is refused before
//! deploying.

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

    // The dashboard: the page (embedded, no external asset) and the JSON it polls.
    let page = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("/api/cluster") && html.contains("/v1/chat/completions"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external asset"
    );
    // Roles travel in heartbeats: poll until every stage node advertises its stage.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let c: Value = loop {
        let c: Value = client
            .get(format!("{base}/api/cluster"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let all_roles = c["members"].as_array().is_some_and(|ms| {
            ms.iter()
                .all(|m| m["roles"].as_array().is_some_and(|r| !r.is_empty()))
        });
        if all_roles || std::time::Instant::now() > deadline {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(c["schema"], 1, "{c}");
    assert_eq!(c["model"], "qwen");
    assert_eq!(c["serving"], "ok");
    let members = c["members"].as_array().unwrap();
    assert_eq!(members.len(), 2, "{c}");
    assert!(members.iter().all(|m| m["state"] == "Up"), "{c}");
    let stages = c["placement"]["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 2, "{c}");
    // Each stage's node is a member that advertises the stage as a role.
    for st in stages {
        let node = st["node_name"].as_str().unwrap();
        let m = members
            .iter()
            .find(|m| m["name"] == node)
            .expect("stage node is a member");
        assert!(!m["roles"].as_array().unwrap().is_empty(), "{m}");
    }
    assert_eq!(stages[0]["layers"]["start"], 0);
    assert_eq!(stages[0]["layers"]["end"], stages[1]["layers"]["start"]);
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
