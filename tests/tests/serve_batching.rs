//! Continuous batching as an OpenAI client sees it: `edgeray serve` on one board (an embedded
//! one-node cluster) and on a two-stage embedded pipeline, four concurrent streaming requests
//! with different prompts and lengths, one of them joining while the others are mid-answer.
//! Every answer is byte-identical to the same request served alone, and `/metrics` shows that
//! the stage ran sequences together (time between tokens, batch sizes, queue times).

use std::process::{Command, Stdio};
use std::time::Duration;

use edgeray_tests::procs::{Proc, free_tcp_port, stderr_lines, wait_for_line};
use edgeray_tests::{GEMMA3, QWEN2, edgeray_bin, real_model, workspace_root};
use serde_json::{Value, json};

/// (prompt, max_tokens) of the four requests; the last one joins mid-way with a long prompt
/// (see [`prompt`]).
const REQUESTS: [(&str, u32); 4] = [
    ("The capital of France is", 24),
    ("Here is a short poem about the sea:", 32),
    ("def fibonacci(n):", 16),
    ("The three primary colours are", 20),
];

/// Request `i`'s prompt. The late one is a few hundred tokens long: served alone it is
/// prefilled in one batch, while the others generate in 32-token chunks that share the stage
/// runs with their decode steps, and the answer must not change.
fn prompt(i: usize) -> String {
    if i == 3 {
        let notes = "Notes from the art class, week by week, with the teacher's remarks. ";
        format!("{}{}", notes.repeat(20), REQUESTS[3].0)
    } else {
        REQUESTS[i].0.to_string()
    }
}

/// Starts `edgeray serve --local <nodes>` on `model` with its nodes' state under `dir` (tests
/// run in parallel: each needs its own); returns the process and the API base.
async fn serve(model: &std::path::Path, nodes: usize, dir: &std::path::Path) -> (Proc, String) {
    let port = free_tcp_port();
    let mut child = Command::new(edgeray_bin())
        .current_dir(workspace_root())
        .args(["serve", "--local", &nodes.to_string()])
        .arg("--local-dir")
        .arg(dir)
        .args(["--threads", "1", "--ctx", "512", "--max-sequences", "4"])
        .arg("--http")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--model")
        .arg(model)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("edgeray serve starts");
    let rx = stderr_lines(&mut child, "serve", true);
    tokio::task::spawn_blocking(move || {
        wait_for_line(&rx, "serving", Duration::from_secs(300));
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || while rx.recv().is_ok() {});
    })
    .await
    .unwrap();
    (Proc(child), format!("http://127.0.0.1:{port}/v1"))
}

/// Streams one greedy completion; `started` is told when its first token arrived.
async fn complete(
    client: &reqwest::Client,
    base: &str,
    model: &str,
    prompt: &str,
    max_tokens: u32,
    started: Option<tokio::sync::oneshot::Sender<()>>,
) -> String {
    let mut resp = client
        .post(format!("{base}/completions"))
        .json(
            &json!({"model": model, "prompt": prompt, "max_tokens": max_tokens,
                      "temperature": 0, "stream": true}),
        )
        .send()
        .await
        .expect("request sent");
    assert_eq!(resp.status().as_u16(), 200, "{prompt:?} accepted");
    let mut started = started;
    let mut pending = String::new();
    let mut text = String::new();
    let mut done = false;
    while let Some(chunk) = resp.chunk().await.expect("the stream is not cut") {
        pending.push_str(std::str::from_utf8(&chunk).expect("UTF-8 stream"));
        while let Some(end) = pending.find("\n\n") {
            let event: String = pending.drain(..end + 2).collect();
            let Some(data) = event.trim().strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                done = true;
                continue;
            }
            let v: Value = serde_json::from_str(data).expect("SSE chunk is JSON");
            assert!(v.get("error").is_none(), "error in the stream: {v}");
            if let Some(t) = v["choices"][0]["text"].as_str() {
                text.push_str(t);
                if !t.is_empty()
                    && let Some(s) = started.take()
                {
                    let _ = s.send(());
                }
            }
        }
    }
    assert!(done, "{prompt:?}: the stream ends with [DONE]");
    text
}

/// The value of the series `name` (exact text before the value) in a Prometheus page.
fn metric(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

async fn concurrent_answers_equal_solo_answers(model_name: &str, nodes: usize) {
    let Some(model) = real_model(model_name) else {
        return;
    };
    let dir = tempfile::tempdir().expect("a state directory");
    let (_server, base) = serve(&model, nodes, dir.path()).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let models: Value = client
        .get(format!("{base}/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = models["data"][0]["id"]
        .as_str()
        .expect("a model id")
        .to_string();
    // Each request alone.
    let mut solo = Vec::new();
    for (i, (_, n)) in REQUESTS.iter().enumerate() {
        solo.push(complete(&client, &base, &id, &prompt(i), *n, None).await);
    }
    // Three at once; the fourth joins when the first has streamed a token.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tasks: Vec<_> = REQUESTS
        .iter()
        .copied()
        .take(3)
        .enumerate()
        .map(|(i, (_, n))| (i, prompt(i), n, client.clone(), format!("{base} {id}")))
        .collect();
    let mut tx = Some(tx);
    let handles: Vec<_> = tasks
        .into_iter()
        .map(|(i, prompt, n, client, at)| {
            let started = if i == 0 { tx.take() } else { None };
            tokio::spawn(async move {
                let (base, id) = at.split_once(' ').expect("base and id");
                complete(&client, base, id, &prompt, n, started).await
            })
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(300), rx)
        .await
        .expect("the first stream starts")
        .expect("signal");
    let (late_prompt, n) = (prompt(3), REQUESTS[3].1);
    let late = {
        let (client, base, id) = (client.clone(), base.clone(), id.clone());
        tokio::spawn(async move { complete(&client, &base, &id, &late_prompt, n, None).await })
    };
    let mut together = Vec::new();
    for h in handles {
        together.push(
            tokio::time::timeout(Duration::from_secs(600), h)
                .await
                .expect("completes")
                .unwrap(),
        );
    }
    together.push(late.await.unwrap());
    for (i, (got, want)) in together.iter().zip(&solo).enumerate() {
        assert_eq!(
            got, want,
            "{model_name} on {nodes} node(s): request {i} ({:?}) served with others differs from its solo answer",
            REQUESTS[i].0
        );
    }
    // The metrics saw it: gaps between tokens, queue times, and runs of several sequences.
    let page = client
        .get(base.replace("/v1", "/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let gaps = metric(&page, "edgeray_time_between_tokens_seconds_count").expect("gap histogram");
    assert!(
        gaps >= 20.0,
        "gaps between tokens are counted for every token after a sequence's first: {gaps}\n{page}"
    );
    assert!(metric(&page, "edgeray_time_between_tokens_p99_seconds").is_some());
    assert!(metric(&page, "edgeray_pipeline_queue_seconds_count").unwrap_or(0.0) >= 8.0);
    let runs = metric(&page, "edgeray_stage_batch_sequences_count{stage=\"0\"}").unwrap();
    let alone = metric(
        &page,
        "edgeray_stage_batch_sequences_bucket{stage=\"0\",le=\"1\"}",
    )
    .unwrap();
    assert!(
        alone < runs,
        "stage 0 never ran two sequences together ({alone} of {runs} alone)"
    );
    assert_eq!(
        metric(&page, "edgeray_pipeline_sequence_slots"),
        Some(4.0),
        "the KV budget of this machine holds the 4 asked sequences at ctx 512"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gemma3_one_board_concurrent_streams_equal_solo() {
    concurrent_answers_equal_solo_answers(GEMMA3, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn qwen2_two_stages_concurrent_streams_equal_solo() {
    concurrent_answers_equal_solo_answers(QWEN2, 2).await;
}
