//! The pipeline across OS processes on 127.0.0.1, driven through the `edgeray` binary:
//!
//! - two `edgeray node` processes plus `edgeray run --config` (the coordinator, a third member)
//!   split each real model in 3 and in 2 stages; the workers have no model file and receive their
//!   shards; the streamed answer equals the single-node greedy output byte for byte with the
//!   default wire (no `--wire-dtype`: f32, exact), and no lossy-wire warning is printed;
//! - `edgeray generate` and `edgeray run --local 2` / `--local 3` (embedded cluster, default
//!   wire) print byte-identical greedy answers;
//! - `edgeray serve` (embedded 2-node cluster) answers the official Python `openai` client,
//!   streams 4 concurrent requests with the single-request output, and answers an overload
//!   burst with 429 + Retry-After while every accepted request completes.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use edgeray_model::arch::{GenerateOptions, Generator};
use edgeray_tests::procs::{
    self, Proc, free_tcp_port, free_udp_port, wait_for_line, write_cluster_config,
};
use edgeray_tests::{
    GEMMA3, GEMMA3_PROMPTS, QWEN2, QWEN2_PROMPTS, edgeray_bin, prompt_file, real_model,
    workspace_root,
};

const SECRET: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";

fn write_config(dir: &Path, name: &str, port: u16, seeds: &[u16]) -> std::path::PathBuf {
    write_cluster_config(dir, SECRET, name, port, seeds)
}

/// Lines of a child's stderr, forwarded to the test output and to a channel.
fn stderr_lines(child: &mut Child, tag: &'static str) -> mpsc::Receiver<String> {
    procs::stderr_lines(child, tag, true)
}

fn single_node_text(model: &Path, prompt: &str, tokens: usize) -> String {
    let g = Generator::load(model, 1, Some(512), |_, _| {}).expect("model loads");
    let opts = GenerateOptions {
        max_tokens: tokens,
        ..Default::default()
    };
    g.generate(prompt, &opts, |_| {}).expect("generates").text
}

/// `edgeray run --config cfg` as the coordinator (a third member): greedy, default wire, `stages`
/// stages, 32 tokens. Returns stdout and stderr; panics if the run fails.
fn coordinator_run(model: &Path, cfg: &Path, stages: usize, prompt: &str) -> (String, String) {
    let out = Command::new(edgeray_bin())
        .current_dir(workspace_root())
        .args([
            "run",
            "--quiet",
            "--min-nodes",
            "3",
            "--discover",
            "30s",
            "--listen",
            "127.0.0.1:0",
            "--stages",
            &stages.to_string(),
            "--threads",
            "1",
            "--ctx",
            "512",
            "--max-tokens",
            "32",
            "--temperature",
            "0",
            "--prompt",
            prompt,
            "--model",
        ])
        .arg(model)
        .arg("--config")
        .arg(cfg)
        .output()
        .expect("edgeray run");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "edgeray run failed:\n{stderr}");
    assert!(
        !stderr.contains("answers may depend on the placement"),
        "the default wire is exact: no warning\n{stderr}"
    );
    (stdout, stderr)
}

/// The `.gguf` shards in a worker's cache.
fn cached_shards(dir: &Path, worker: &str) -> usize {
    std::fs::read_dir(dir.join(worker).join("shards"))
        .expect("worker shard cache")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "gguf"))
        .count()
}

#[test]
fn three_processes_two_and_three_stages_match_single_node() {
    let Some(gemma) = real_model(GEMMA3) else {
        return;
    };
    let Some(qwen) = real_model(QWEN2) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_udp_port(), free_udp_port());
    let cfg_a = write_config(dir.path(), "worker-a", pa, &[pb]);
    let cfg_b = write_config(dir.path(), "worker-b", pb, &[pa]);
    let cfg_c = write_config(dir.path(), "coord", 0, &[pa, pb]);
    let mut workers = Vec::new();
    for (cfg, tag) in [(&cfg_a, "worker-a"), (&cfg_b, "worker-b")] {
        // Workers run from an empty folder: they have no model file.
        let empty = dir.path().join(format!("{tag}-cwd"));
        std::fs::create_dir_all(&empty).unwrap();
        let mut c = Command::new(edgeray_bin())
            .current_dir(&empty)
            .args(["node", "--threads", "1", "--config"])
            .arg(cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("edgeray node starts");
        let rx = stderr_lines(&mut c, tag);
        workers.push((Proc(c), rx));
    }
    for (_, rx) in &workers {
        wait_for_line(rx, "listening on", Duration::from_secs(60));
    }

    // First run, 3 stages: one stage per process, and each worker receives exactly its shard.
    let prompt = "The capital of France is";
    let want = single_node_text(&gemma, prompt, 32);
    let (stdout, stderr) = coordinator_run(&gemma, &cfg_c, 3, prompt);
    assert_eq!(
        stdout,
        format!("{want}\n"),
        "gemma3, 3 stages; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("worker-a") && stderr.contains("worker-b"),
        "{stderr}"
    );
    assert!(stderr.contains("MiB shipped"), "{stderr}");
    for name in ["worker-a", "worker-b"] {
        assert_eq!(
            cached_shards(dir.path(), name),
            1,
            "{name} holds exactly its own shard"
        );
    }

    // The same workers serve other splits and the other model: 2 stages of gemma3, then both
    // splits of qwen2 (whose workers receive qwen2 shards now).
    let runs = [
        (&gemma, "gemma3", 2, prompt),
        (&qwen, "qwen2", 3, "def fibonacci(n):"),
        (&qwen, "qwen2", 2, "def fibonacci(n):"),
    ];
    for (model, name, stages, prompt) in runs {
        let want = single_node_text(model, prompt, 32);
        let (stdout, stderr) = coordinator_run(model, &cfg_c, stages, prompt);
        assert_eq!(
            stdout,
            format!("{want}\n"),
            "{name}, {stages} stages; stderr:\n{stderr}"
        );
        eprintln!("{name} over {stages} stages matches the single node");
    }
}

/// stdout of a successful `edgeray` command run from the workspace root, and its stderr.
fn edgeray_output(args: &[&str]) -> (String, String) {
    let out = Command::new(edgeray_bin())
        .current_dir(workspace_root())
        .args(args)
        .output()
        .expect("edgeray runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "edgeray {args:?} failed:\n{stderr}");
    (stdout, stderr)
}

/// `edgeray generate` against `edgeray run --local 2` and `--local 3` (embedded clusters sharing
/// one shard cache), both with the default wire: byte-identical greedy answers to ten prompts
/// per model (`--prompt-file`: one load, one deployment); `--wire-dtype f16` prints the
/// lossy-wire warning.
#[test]
fn generate_and_embedded_run_print_identical_answers_with_the_default_wire() {
    let dir = tempfile::tempdir().unwrap();
    let local_dir = dir.path().join("local");
    let local_dir = local_dir.to_str().unwrap();
    for (name, prompts) in [(GEMMA3, &GEMMA3_PROMPTS), (QWEN2, &QWEN2_PROMPTS)] {
        let Some(model) = real_model(name) else {
            return;
        };
        let model = model.to_str().unwrap();
        let file = prompt_file(dir.path(), "prompts.txt", prompts);
        let common = [
            "--model",
            model,
            "--prompt-file",
            file.to_str().unwrap(),
            "--max-tokens",
            "16",
            "--temperature",
            "0",
            "--threads",
            "1",
            "--ctx",
            "512",
        ];
        let (want, _) = edgeray_output(&[&["generate"][..], &common].concat());
        assert_eq!(
            want.lines().count(),
            prompts.len(),
            "one JSON line per prompt:\n{want}"
        );
        for (line, prompt) in want.lines().zip(prompts.iter()) {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON answer line");
            assert_eq!(v["prompt"], *prompt);
            assert!(v["text"].as_str().is_some_and(|t| !t.is_empty()), "{line}");
        }
        for nodes in ["2", "3"] {
            let (got, stderr) = edgeray_output(
                &[
                    &["run", "--quiet", "--local", nodes, "--local-dir", local_dir][..],
                    &common,
                ]
                .concat(),
            );
            assert_eq!(
                got,
                want,
                "{name}: generate vs run --local {nodes} on {} prompts; stderr:\n{stderr}",
                prompts.len()
            );
            assert!(
                !stderr.contains("answers may depend on the placement"),
                "{stderr}"
            );
        }
    }
    let Some(gemma) = real_model(GEMMA3) else {
        return;
    };
    let (_, stderr) = edgeray_output(&[
        "run",
        "--quiet",
        "--local",
        "2",
        "--local-dir",
        local_dir,
        "--wire-dtype",
        "f16",
        "--threads",
        "1",
        "--ctx",
        "512",
        "--max-tokens",
        "2",
        "--prompt",
        "Hi",
        "--model",
        gemma.to_str().unwrap(),
    ]);
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("f16") && l.contains("answers may depend on the placement")),
        "a lossy wire warns:\n{stderr}"
    );
}

/// `edgeray run --config cfg` on 3 stages, default wire, greedy.
fn run_command(model: &Path, cfg: &Path, prompt: &str, tokens: usize) -> Command {
    let mut c = Command::new(edgeray_bin());
    c.current_dir(workspace_root())
        .args([
            "run",
            "--quiet",
            "--min-nodes",
            "3",
            "--discover",
            "30s",
            "--listen",
            "127.0.0.1:0",
            "--stages",
            "3",
            "--threads",
            "1",
            "--ctx",
            "512",
            "--temperature",
            "0",
            "--max-tokens",
        ])
        .arg(tokens.to_string())
        .args(["--prompt", prompt, "--model"])
        .arg(model)
        .arg("--config")
        .arg(cfg);
    c
}

#[test]
fn a_dead_coordinators_stages_are_released_and_workers_serve_the_next() {
    let Some(model) = real_model(GEMMA3) else {
        return;
    };
    let prompt = "The capital of France is";
    let want = single_node_text(&model, prompt, 12);
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_udp_port(), free_udp_port());
    let cfg_a = write_config(dir.path(), "worker-a", pa, &[pb]);
    let cfg_b = write_config(dir.path(), "worker-b", pb, &[pa]);
    let cfg_c = write_config(dir.path(), "coord", 0, &[pa, pb]);
    let mut workers = Vec::new();
    for (cfg, tag) in [(&cfg_a, "worker-a"), (&cfg_b, "worker-b")] {
        let mut c = Command::new(edgeray_bin())
            .current_dir(dir.path())
            .args(["node", "--threads", "1", "--config"])
            .arg(cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("edgeray node starts");
        let rx = stderr_lines(&mut c, tag);
        workers.push((Proc(c), rx));
    }
    // A coordinator dies (SIGKILL) mid-answer: its client loses the answer, and each worker
    // stops that coordinator's stage (its sequences and memory released) once the coordinator's
    // node is found gone.
    let out_path = dir.path().join("first.out");
    let mut first = run_command(&model, &cfg_c, prompt, 200)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("edgeray run starts");
    let start = std::time::Instant::now();
    while std::fs::read_to_string(&out_path).unwrap_or_default().len() < 24 {
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first coordinator ended before answering"
        );
        assert!(start.elapsed() < Duration::from_secs(300), "no answer");
        std::thread::sleep(Duration::from_millis(100));
    }
    first.kill().unwrap();
    let _ = first.wait();
    for (_, rx) in &workers {
        wait_for_line(
            rx,
            "the coordinator of this stage is gone",
            Duration::from_secs(30),
        );
    }
    // The workers serve the next coordinator.
    let out = run_command(&model, &cfg_c, prompt, 12)
        .output()
        .expect("edgeray run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "edgeray run failed:\n{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{want}\n"));
}

/// One streamed completion over raw HTTP (SSE): the concatenated text, or the HTTP status.
async fn stream_completion(
    client: &reqwest::Client,
    base: &str,
    model: &str,
    prompt: &str,
    max_tokens: u32,
) -> Result<String, (u16, Option<String>)> {
    let resp = client
        .post(format!("{base}/completions"))
        .json(&serde_json::json!({
            "model": model, "prompt": prompt, "max_tokens": max_tokens,
            "temperature": 0, "stream": true
        }))
        .send()
        .await
        .expect("request sent");
    let status = resp.status().as_u16();
    if status != 200 {
        let retry = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        return Err((status, retry));
    }
    let body = resp.text().await.expect("body");
    let mut text = String::new();
    let mut done = false;
    for line in body.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(data).expect("SSE chunk is JSON");
        if let Some(t) = v["choices"][0]["text"].as_str() {
            text.push_str(t);
        }
    }
    assert!(done, "stream ended with [DONE]: {body}");
    Ok(text)
}

/// Starts `edgeray serve --local 2` on `model` (state in `dir`, `args` added); returns the
/// process guard and the API's base URL (`http://…/v1`).
async fn start_serve(model: &Path, dir: &Path, args: &[&str]) -> (Proc, String) {
    let port = free_tcp_port();
    let mut child = Command::new(edgeray_bin())
        .current_dir(workspace_root())
        .args(["serve", "--quiet", "--threads", "1"])
        .args(args)
        .arg("--local-dir")
        .arg(dir)
        .arg("--model")
        .arg(model)
        .args(["--http", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("edgeray serve starts");
    let rx = stderr_lines(&mut child, "serve");
    let guard = Proc(child);
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
    (guard, base)
}

/// The model id `GET /v1/models` lists first.
async fn served_model_id(client: &reqwest::Client, base: &str) -> String {
    let models: serde_json::Value = client
        .get(format!("{base}/models"))
        .send()
        .await
        .expect("GET /v1/models")
        .json()
        .await
        .expect("models JSON");
    models["data"][0]["id"]
        .as_str()
        .expect("a model id")
        .to_string()
}

/// Runs a Python `openai` client check script against `base` and asserts it ends with `OK`;
/// skipped where the package is missing (never in CI).
async fn run_client_script(script: &str, base: &str, model_id: &str, extra: &[&str]) {
    let has_openai = Command::new("python3")
        .args(["-c", "import openai"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_openai {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "python3 `openai` package missing in CI (scripts/setup.sh installs it)"
        );
        eprintln!("SKIP python openai client: package not installed");
        return;
    }
    let out = tokio::process::Command::new("python3")
        .arg(workspace_root().join("scripts").join(script))
        .args(["--base-url", base, "--model", model_id])
        .args(extra)
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .await
        .expect("python runs");
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && so.trim_end().ends_with("OK"),
        "{script} failed:\n{so}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Tool calling, strict validation, penalties, embeddings, `n_predict` and structured output
/// through the Python `openai` client against `serve` on qwen2.5 (whose chat template offers
/// tools): `scripts/openai_tools_test.py` and `scripts/openai_client_test.py --structured`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_qwen_calls_tools_and_refuses_unknown_fields() {
    let Some(model) = real_model(QWEN2) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_guard, base) = start_serve(&model, dir.path(), &["--ctx", "1024"]).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let model_id = served_model_id(&client, &base).await;
    // /tokenize and /detokenize round trip (llama-server's endpoints).
    let tok: serde_json::Value = client
        .post(format!("{}/tokenize", base.trim_end_matches("/v1")))
        .json(&serde_json::json!({"content": "def add(a, b):", "with_pieces": true}))
        .send()
        .await
        .expect("POST /tokenize")
        .json()
        .await
        .expect("tokenize JSON");
    let pieces = tok["tokens"].as_array().expect("tokens");
    let joined: String = pieces
        .iter()
        .map(|p| p["piece"].as_str().unwrap())
        .collect();
    assert_eq!(joined, "def add(a, b):", "{tok}");
    let ids: Vec<u64> = pieces.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    let back: serde_json::Value = client
        .post(format!("{}/detokenize", base.trim_end_matches("/v1")))
        .json(&serde_json::json!({ "tokens": ids }))
        .send()
        .await
        .expect("POST /detokenize")
        .json()
        .await
        .expect("detokenize JSON");
    assert_eq!(back["content"], "def add(a, b):");
    run_client_script("openai_tools_test.py", &base, &model_id, &[]).await;
    // Structured output: ten json_schema prompts whose answers parse and validate (half of
    // them strict), a streamed answer equal to the whole one, three sampled json_object
    // answers, a bad schema's 400 naming response_format.
    run_client_script(
        "openai_client_test.py",
        &base,
        &model_id,
        &["--max-tokens", "160", "--structured"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_openai_clients_concurrency_and_overload() {
    let Some(model) = real_model(GEMMA3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_guard, base) = start_serve(
        &model,
        dir.path(),
        &["--ctx", "512", "--max-sequences", "2"],
    )
    .await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let model_id = served_model_id(&client, &base).await;

    // gemma3's chat template has no tool format: a clear 400, not ignored tools.
    let r = client
        .post(format!("{base}/chat/completions"))
        .json(
            &serde_json::json!({"model": model_id, "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f"}}]}),
        )
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 400);
    let body = r.text().await.unwrap();
    assert!(body.contains("tool"), "{body}");

    // The official Python client (installed by scripts/setup.sh; required in CI).
    run_client_script(
        "openai_client_test.py",
        &base,
        &model_id,
        &["--max-tokens", "8"],
    )
    .await;

    // Four concurrent streams give the single-stream text.
    let prompts = [
        "The capital of France is",
        "Once upon a time",
        "The best way to learn Rust is",
        "My favourite recipe for pancakes",
    ];
    let mut alone = Vec::new();
    for p in prompts {
        alone.push(
            stream_completion(&client, &base, &model_id, p, 12)
                .await
                .expect("200"),
        );
    }
    let together = futures_join(prompts.iter().map(|p| {
        let c = client.clone();
        let b = base.clone();
        let m = model_id.clone();
        let p = p.to_string();
        async move { stream_completion(&c, &b, &m, &p, 12).await }
    }))
    .await;
    for ((a, t), p) in alone.iter().zip(&together).zip(prompts) {
        assert_eq!(t.as_ref().expect("200 while 4 ran together"), a, "{p:?}");
    }

    // A burst larger than 2 running + 8 queued: some get 429 with Retry-After, none fail
    // otherwise, and every accepted one completes with the same text.
    let burst = futures_join((0..16).map(|_| {
        let c = client.clone();
        let b = base.clone();
        let m = model_id.clone();
        async move { stream_completion(&c, &b, &m, prompts[0], 12).await }
    }))
    .await;
    let mut ok = 0;
    let mut refused = 0;
    for r in burst {
        match r {
            Ok(t) => {
                assert_eq!(t, alone[0]);
                ok += 1;
            }
            Err((429, retry)) => {
                assert!(retry.is_some(), "429 carries Retry-After");
                refused += 1;
            }
            Err(other) => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(refused > 0, "the burst was throttled");
    assert!(ok >= 2, "accepted requests completed: {ok}");
}

/// Runs futures concurrently and collects their outputs in order.
async fn futures_join<F: std::future::Future + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

/// A POST /v1/completions (not streamed, greedy); `Ok(text)` on 200, else the status.
async fn complete(
    client: &reqwest::Client,
    base: &str,
    prompt: &str,
    max_tokens: u32,
) -> Result<String, u16> {
    let resp = client
        .post(format!("{base}/completions"))
        .json(&serde_json::json!({
            "model": "Gemma 3 270m", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0
        }))
        .send()
        .await
        .map_err(|_| 0u16)?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(status);
    }
    let v: serde_json::Value = resp.json().await.map_err(|_| 1u16)?;
    Ok(v["choices"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

/// Two `edgeray node` workers plus `edgeray serve --config` (3 stages, default wire, greedy), with
/// the failover plans of the first deployment ready (spare shards in place).
struct ServeCluster {
    workers: Vec<(Proc, mpsc::Receiver<String>)>,
    _coord: Proc,
    base: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn serve_cluster(model: &Path) -> ServeCluster {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_udp_port(), free_udp_port());
    let cfg_a = write_config(dir.path(), "worker-a", pa, &[pb]);
    let cfg_b = write_config(dir.path(), "worker-b", pb, &[pa]);
    let cfg_c = write_config(dir.path(), "coord", 0, &[pa, pb]);
    let mut workers = Vec::new();
    for (cfg, tag) in [(&cfg_a, "worker-a"), (&cfg_b, "worker-b")] {
        let mut c = Command::new(edgeray_bin())
            .current_dir(dir.path())
            .args(["node", "--threads", "1", "--config"])
            .arg(cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("edgeray node starts");
        let rx = stderr_lines(&mut c, tag);
        workers.push((Proc(c), rx));
    }
    let port = free_tcp_port();
    let mut coord = Command::new(edgeray_bin())
        .current_dir(workspace_root())
        .args([
            "serve",
            "--quiet",
            "--min-nodes",
            "3",
            "--discover",
            "30s",
            "--listen",
            "127.0.0.1:0",
            "--stages",
            "3",
            "--threads",
            "1",
            "--ctx",
            "512",
            "--http",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--model")
        .arg(model)
        .arg("--config")
        .arg(&cfg_c)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("edgeray serve starts");
    let rx = stderr_lines(&mut coord, "coord");
    let _coord = Proc(coord);
    // Serving, then the failover plans for losing either worker are ready.
    tokio::task::spawn_blocking(move || {
        wait_for_line(&rx, "serving", Duration::from_secs(180));
        let l = wait_for_line(&rx, "failover: ", Duration::from_secs(300));
        assert!(l.contains("2 plan(s) ready"), "a plan per worker: {l}");
        // Keep draining the coordinator's stderr.
        std::thread::spawn(move || while rx.recv().is_ok() {});
    })
    .await
    .unwrap();
    ServeCluster {
        workers,
        _coord,
        base: format!("http://127.0.0.1:{port}/v1"),
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        _dir: dir,
    }
}

/// The failover stall figures from `/metrics`: (total, detect, redeploy, replay) sums in
/// seconds, and the number of resumed requests.
async fn stall_metrics(c: &ServeCluster) -> (f64, f64, f64, f64, f64) {
    let text = c
        .client
        .get(c.base.replace("/v1", "/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    (
        value("edgeray_failover_stall_seconds_sum"),
        value("edgeray_failover_stall_phase_seconds_sum{phase=\"detect\"}"),
        value("edgeray_failover_stall_phase_seconds_sum{phase=\"redeploy\"}"),
        value("edgeray_failover_stall_phase_seconds_sum{phase=\"replay\"}"),
        value("edgeray_failover_resumed_total"),
    )
}

/// Streams a long greedy answer, applies `disturb` to worker-b once tokens flow, and checks
/// the stream ends with exactly the undisturbed text and the service answers again; returns
/// the stall figures (total, detect, redeploy, replay).
async fn stream_through(
    c: &mut ServeCluster,
    model: &Path,
    disturb: impl FnOnce(&mut Proc),
) -> (f64, f64, f64, f64) {
    let prompt = "The capital of France is";
    let want = single_node_text(model, prompt, 12);
    assert_eq!(
        complete(&c.client, &c.base, prompt, 12).await,
        Ok(want.clone())
    );
    // Long enough to still be streaming when the worker is disturbed 1.5 s in (64 tokens were
    // done by then once the Q5_0 kernels got faster).
    const LONG: usize = 200;
    let long_want = single_node_text(model, prompt, LONG);
    let streaming = {
        let (cl, b) = (c.client.clone(), c.base.clone());
        tokio::spawn(async move {
            stream_completion(&cl, &b, "Gemma 3 270m", prompt, LONG as u32).await
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // `/health` every 50 ms through the failover: 503 "redeploying" while there is no pipeline.
    let polling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let health = {
        let (cl, url, on) = (
            c.client.clone(),
            c.base.replace("/v1", "/health"),
            polling.clone(),
        );
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while on.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok(r) = cl.get(&url).send().await {
                    let code = r.status().as_u16();
                    let v: serde_json::Value = r.json().await.unwrap_or_default();
                    seen.push((code, v["status"].as_str().unwrap_or("").to_string()));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            seen
        })
    };
    disturb(&mut c.workers[1].0);
    let t0 = std::time::Instant::now();
    let streamed = tokio::time::timeout(Duration::from_secs(180), streaming)
        .await
        .expect("the interrupted stream finishes")
        .unwrap();
    eprintln!(
        "interrupted stream finished {:.1} s after the disturbance",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(
        streamed,
        Ok(long_want),
        "every token once, in order, as undisturbed"
    );
    let (total, detect, redeploy, replay, resumed) = stall_metrics(c).await;
    eprintln!(
        "failover stall {total:.2} s (detection {detect:.2} s, redeploy {redeploy:.2} s, replay {replay:.2} s)"
    );
    assert_eq!(resumed, 1.0, "the stream was resumed once");
    let mut last = Err(0);
    while t0.elapsed() < Duration::from_secs(120) {
        last = complete(&c.client, &c.base, prompt, 12).await;
        if last.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        last,
        Ok(want),
        "the same answer from the redeployed pipeline"
    );
    polling.store(false, std::sync::atomic::Ordering::SeqCst);
    let seen = health.await.unwrap();
    assert!(
        seen.iter()
            .all(|(code, st)| (*code, st.as_str()) == (200, "ok")
                || (*code, st.as_str()) == (503, "redeploying")),
        "{seen:?}"
    );
    // A redeploy of 0.3 s or more spans several polls: at least one must have seen it.
    if redeploy >= 0.3 {
        assert!(
            seen.iter().any(|(code, _)| *code == 503),
            "no 503 during a {redeploy:.2} s redeploy: {seen:?}"
        );
    }
    assert_eq!(seen.last().map(|(c, _)| *c), Some(200), "{seen:?}");
    eprintln!(
        "/health during the failover: {} polls, {} answered 503 redeploying",
        seen.len(),
        seen.iter().filter(|(c, _)| *c == 503).count()
    );
    (total, detect, redeploy, replay)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_survives_a_killed_worker() {
    let Some(model) = real_model(GEMMA3) else {
        return;
    };
    let mut c = serve_cluster(&model).await;
    // worker-b is unplugged while a long answer streams (SIGKILL, no goodbye; only QUIC's idle
    // timeout notices): the stream stalls, continues on the pipeline of the prepared failover
    // plan, and the client gets exactly the undisturbed text.
    let (total, detect, _, _) = stream_through(&mut c, &model, |w| {
        w.0.kill().unwrap();
        let _ = w.0.wait();
    })
    .await;
    // Detection alone is the idle timeout; a generous bound, not a timing test.
    assert!(
        detect > 1.0 && total < 60.0,
        "stall {total} s, detection {detect} s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_survives_a_drained_worker() {
    let Some(model) = real_model(GEMMA3) else {
        return;
    };
    let mut c = serve_cluster(&model).await;
    // SIGTERM: worker-b drains (stops its stage at once, says goodbye) and exits 0; the
    // coordinator fails over without waiting for a timeout.
    let mut status = None;
    let (total, detect, _, _) = stream_through(&mut c, &model, |w| {
        let pid = w.0.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            if let Some(s) = w.0.try_wait().unwrap() {
                status = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await;
    let status = status.expect("the drained worker exits within 15 s");
    assert!(status.success(), "the drained worker exits 0: {status}");
    let lines: Vec<String> = c.workers[1].1.try_iter().collect();
    assert!(
        lines.iter().any(|l| l.contains("draining"))
            && lines.iter().any(|l| l.contains("left the cluster")),
        "the worker reports its drain: {lines:?}"
    );
    // No idle timeout in a drain: the failure is noticed at once.
    assert!(
        detect < 3.0 && total < 60.0,
        "stall {total} s, detection {detect} s"
    );
}
