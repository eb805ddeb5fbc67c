//! A bounded overload soak on loopback: two `edgeray node` workers and `edgeray serve --config`
//! (3 processes, 3 pipeline stages) under concurrent streaming completions for
//! `EDGERAY_SOAK_SECS` seconds (default 120), with bursts beyond the admission bound (429s),
//! clients that hang up mid-stream, and hostile requests (invalid JSON, unknown model, oversized
//! body, prompt longer than the context) mixed in.
//!
//! It asserts that every accepted request completes with its reference text, that every hostile
//! request gets a 4xx with OpenAI's error JSON, and that no process's resident memory grows
//! past [`rss_growth_bound_kib`] between the end of the warm-up and the end of the run. The
//! figures are printed (run with `--nocapture` to see them).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edgeray_tests::procs::{
    Proc, free_tcp_port, free_udp_port, rss_anon_file_kib, rss_kib, stderr_lines, wait_for_line,
    write_cluster_config,
};
use edgeray_tests::{GEMMA3, edgeray_bin, real_model, workspace_root};
use serde_json::{Value, json};

const SECRET: &str = "50a450a450a450a450a450a450a450a450a450a450a450a450a450a450a450a4";
const PROMPTS: [&str; 3] = [
    "The capital of France is",
    "Once upon a time",
    "The best way to learn Rust is",
];
/// Tokens per soak request: short requests mean many requests, i.e. many allocations and
/// releases of sequences, KV caches and streams per process.
const TOKENS: u32 = 12;
/// Context of the deployment (the too-long prompt exceeds it).
const CTX: usize = 256;
/// Pipeline sequences at once; the admission bound is 5x this (running + 4x queued).
const MAX_SEQUENCES: usize = 2;

fn soak_duration() -> Duration {
    let secs = std::env::var("EDGERAY_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    Duration::from_secs(secs)
}

/// How much a process's resident memory may grow between the end of the warm-up and the end
/// of the soak, in KiB.
///
/// By the end of the warm-up every code path of the run has executed (streams through every
/// stage, 429s, hang-ups, every hostile request), every weight page has been touched and the
/// allocator's arenas have reached their working size; a quiet run then stays within about
/// 1 MiB. What may still move is allocator noise (one more thread's arena, fragmentation of
/// freed sequence buffers), which 16 MiB plus 5% of the warm figure covers. A leak it catches:
/// the KV cache of every finished sequence (about 0.6 MiB each at these lengths, most of it on
/// the 16-layer stage) over the hundred-odd requests of a 2-minute run.
fn rss_growth_bound_kib(warm_kib: u64) -> u64 {
    16 * 1024 + warm_kib / 20
}

struct Counters {
    completed: AtomicU64,
    tokens_chars: AtomicU64,
    refused_429: AtomicU64,
    hung_up: AtomicU64,
    hostile: AtomicU64,
}

/// Outcome of a streamed completion.
enum Streamed {
    /// 200 and a full stream: the text.
    Done(String),
    /// Refused before the stream started.
    Refused(u16, Option<String>),
}

fn request_body(model: &str, prompt: &str) -> Value {
    json!({"model": model, "prompt": prompt, "max_tokens": TOKENS, "temperature": 0, "stream": true})
}

/// Streams one completion, reading the SSE body chunk by chunk.
async fn stream(client: &reqwest::Client, base: &str, model: &str, prompt: &str) -> Streamed {
    let mut resp = client
        .post(format!("{base}/completions"))
        .json(&request_body(model, prompt))
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
        return Streamed::Refused(status, retry);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.expect("the stream is not cut") {
        body.extend_from_slice(&chunk);
    }
    let body = String::from_utf8(body).expect("UTF-8 stream");
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
        let v: Value = serde_json::from_str(data).expect("SSE chunk is JSON");
        assert!(v.get("error").is_none(), "error in an accepted stream: {v}");
        if let Some(t) = v["choices"][0]["text"].as_str() {
            text.push_str(t);
        }
    }
    assert!(done, "an accepted stream ends with [DONE]: {body}");
    Streamed::Done(text)
}

/// Starts a stream and hangs up after its first chunk of data.
async fn hang_up_mid_stream(client: &reqwest::Client, base: &str, model: &str) -> bool {
    let mut resp = client
        .post(format!("{base}/completions"))
        .json(&request_body(model, PROMPTS[1]))
        .send()
        .await
        .expect("request sent");
    if resp.status() != 200 {
        return false;
    }
    let got = resp.chunk().await.expect("first chunk").is_some();
    drop(resp);
    got
}

/// Sends one hostile request of kind `i` and checks the 4xx and OpenAI's error shape.
async fn hostile(client: &reqwest::Client, base: &str, model: &str, i: u64) {
    let url = format!("{base}/completions");
    let (what, req, want) = match i % 4 {
        0 => (
            "invalid JSON",
            client
                .post(&url)
                .header("content-type", "application/json")
                .body("{\"model\": [}"),
            400,
        ),
        1 => (
            "unknown model",
            client
                .post(&url)
                .json(&json!({"model": "gpt-9", "prompt": "x"})),
            404,
        ),
        2 => (
            "oversized body",
            client
                .post(&url)
                .json(&json!({"model": model, "prompt": "a ".repeat(600 * 1024)})),
            413,
        ),
        _ => (
            "prompt longer than the context",
            client
                .post(&url)
                .json(&json!({"model": model, "prompt": "word ".repeat(4 * CTX), "stream": true})),
            400,
        ),
    };
    let resp = req.send().await.expect("hostile request sent");
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.expect("an error body in JSON");
    assert_eq!(status, want, "{what}: {body}");
    let e = &body["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()) && e["type"].is_string(),
        "{what}: OpenAI error shape: {body}"
    );
}

/// RSS of every process, KiB, in `names` order.
fn sample(pids: &[(String, u32)]) -> Vec<u64> {
    pids.iter()
        .map(|(name, pid)| rss_kib(*pid).unwrap_or_else(|| panic!("{name} (pid {pid}) is gone")))
        .collect()
}

/// (anonymous, file-backed) RSS of every process, KiB.
fn split(pids: &[(String, u32)]) -> Vec<(u64, u64)> {
    pids.iter()
        .map(|(_, pid)| rss_anon_file_kib(*pid).unwrap_or_default())
        .collect()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_streams_bursts_and_hangups_with_flat_memory() {
    let Some(model) = real_model(GEMMA3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_udp_port(), free_udp_port());
    let cfg_a = write_cluster_config(dir.path(), SECRET, "soak-a", pa, &[pb]);
    let cfg_b = write_cluster_config(dir.path(), SECRET, "soak-b", pb, &[pa]);
    let cfg_c = write_cluster_config(dir.path(), SECRET, "soak-coord", 0, &[pa, pb]);
    let mut procs: Vec<(String, Proc, std::sync::mpsc::Receiver<String>)> = Vec::new();
    for (cfg, tag) in [(&cfg_a, "soak-a"), (&cfg_b, "soak-b")] {
        let mut c = Command::new(edgeray_bin())
            .current_dir(dir.path())
            .args(["node", "--threads", "1", "--config"])
            .arg(cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("edgeray node starts");
        let rx = stderr_lines(&mut c, tag, false);
        procs.push((tag.to_string(), Proc(c), rx));
    }
    let port = free_tcp_port();
    let mut coord = Command::new(edgeray_bin())
        .current_dir(workspace_root())
        .args(["serve", "--quiet", "--min-nodes", "3", "--discover", "30s"])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--stages",
            "3",
            "--wire-dtype",
            "f32",
        ])
        .args(["--threads", "1", "--ctx", &CTX.to_string()])
        .args(["--max-sequences", &MAX_SEQUENCES.to_string()])
        .arg("--http")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--model")
        .arg(&model)
        .arg("--config")
        .arg(&cfg_c)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("edgeray serve starts");
    let rx = stderr_lines(&mut coord, "soak-coord", true);
    let rx = tokio::task::spawn_blocking(move || {
        wait_for_line(&rx, "serving", Duration::from_secs(240));
        rx
    })
    .await
    .unwrap();
    procs.push(("serve".to_string(), Proc(coord), rx));
    let pids: Vec<(String, u32)> = procs.iter().map(|(n, p, _)| (n.clone(), p.pid())).collect();

    let base = format!("http://127.0.0.1:{port}/v1");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let models: Value = client
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

    // Warm-up: each prompt alone (its reference text), then one round of everything the soak
    // does, so every code path has run before the first memory figure.
    let mut reference = Vec::new();
    for p in PROMPTS {
        match stream(&client, &base, &model_id, p).await {
            Streamed::Done(t) => reference.push(t),
            Streamed::Refused(s, _) => panic!("warm-up request refused with {s}"),
        }
    }
    let reference = Arc::new(reference);
    let counters = Arc::new(Counters {
        completed: AtomicU64::new(0),
        tokens_chars: AtomicU64::new(0),
        refused_429: AtomicU64::new(0),
        hung_up: AtomicU64::new(0),
        hostile: AtomicU64::new(0),
    });
    let warm_up = Duration::from_secs(20);
    let soak = soak_duration();
    let t0 = Instant::now();
    run_load(&client, &base, &model_id, &reference, &counters, warm_up).await;
    let warm = sample(&pids);
    let warm_split = split(&pids);
    let warm_done = counters.completed.load(Ordering::Relaxed);
    eprintln!(
        "soak: warm-up done after {:.0} s ({warm_done} requests); RSS {}",
        t0.elapsed().as_secs_f64(),
        pids.iter()
            .zip(&warm)
            .map(|((n, _), k)| format!("{n} {:.1} MiB", mib(*k)))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // The soak itself, with a memory sample every 15 s.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        let pids = pids.clone();
        tokio::spawn(async move {
            let mut series = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(15)).await;
                series.push(sample(&pids));
            }
            series
        })
    };
    let started = Instant::now();
    run_load(&client, &base, &model_id, &reference, &counters, soak).await;
    stop.store(true, Ordering::Relaxed);
    let series = sampler.await.unwrap();
    let elapsed = started.elapsed();

    // Still serving, with the same answer, after the soak.
    match stream(&client, &base, &model_id, PROMPTS[0]).await {
        Streamed::Done(t) => assert_eq!(t, reference[0]),
        Streamed::Refused(s, _) => panic!("refused after the soak: {s}"),
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let end = sample(&pids);
    let end_split = split(&pids);

    let done = counters.completed.load(Ordering::Relaxed) - warm_done;
    eprintln!(
        "soak: {:.0} s, {done} streamed requests completed with their reference text ({} total \
         with the warm-up), {} refused with 429, {} hung up mid-stream, {} hostile requests \
         answered 4xx",
        elapsed.as_secs_f64(),
        counters.completed.load(Ordering::Relaxed),
        counters.refused_429.load(Ordering::Relaxed),
        counters.hung_up.load(Ordering::Relaxed),
        counters.hostile.load(Ordering::Relaxed),
    );
    let mut over = Vec::new();
    for (i, (name, _)) in pids.iter().enumerate() {
        let trail: Vec<String> = series.iter().map(|s| format!("{:.1}", mib(s[i]))).collect();
        let growth = end[i] as i64 - warm[i] as i64;
        let bound = rss_growth_bound_kib(warm[i]);
        eprintln!(
            "soak: RSS {name:>10}: warm {:.1} MiB, end {:.1} MiB, growth {:+.1} MiB (bound {:.1} \
             MiB; anon {:.1} -> {:.1}, file {:.1} -> {:.1}); every 15 s: [{}]",
            mib(warm[i]),
            mib(end[i]),
            growth as f64 / 1024.0,
            mib(bound),
            mib(warm_split[i].0),
            mib(end_split[i].0),
            mib(warm_split[i].1),
            mib(end_split[i].1),
            trail.join(", ")
        );
        if growth > bound as i64 {
            over.push(name.clone());
        }
    }
    assert!(done > 0, "requests completed during the soak");
    assert!(
        counters.refused_429.load(Ordering::Relaxed) > 0,
        "the bursts went past the admission bound"
    );
    assert!(
        over.is_empty(),
        "resident memory grew past the bound: {over:?}"
    );
    drop(procs);
}

/// Runs the load for `duration`: 4 clients streaming back to back, one client that hangs up
/// after the first chunk, one sending hostile requests, and a burst of 16 streams every 20 s.
/// Every accepted stream must complete with its prompt's reference text.
async fn run_load(
    client: &reqwest::Client,
    base: &str,
    model: &str,
    reference: &Arc<Vec<String>>,
    counters: &Arc<Counters>,
    duration: Duration,
) {
    let until = Instant::now() + duration;
    let mut tasks = Vec::new();
    for w in 0..4u64 {
        let (c, b, m, r, k) = (
            client.clone(),
            base.to_string(),
            model.to_string(),
            reference.clone(),
            counters.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while Instant::now() < until {
                let p = (i % PROMPTS.len() as u64) as usize;
                match stream(&c, &b, &m, PROMPTS[p]).await {
                    Streamed::Done(t) => {
                        assert_eq!(t, r[p], "prompt {p} under load");
                        k.completed.fetch_add(1, Ordering::Relaxed);
                        k.tokens_chars.fetch_add(t.len() as u64, Ordering::Relaxed);
                    }
                    Streamed::Refused(429, retry) => {
                        assert!(retry.is_some(), "429 carries Retry-After");
                        k.refused_429.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Streamed::Refused(s, _) => panic!("unexpected status {s}"),
                }
                i += 1;
            }
        }));
    }
    {
        let (c, b, m, k) = (
            client.clone(),
            base.to_string(),
            model.to_string(),
            counters.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                if hang_up_mid_stream(&c, &b, &m).await {
                    k.hung_up.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }));
    }
    {
        let (c, b, m, k) = (
            client.clone(),
            base.to_string(),
            model.to_string(),
            counters.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while Instant::now() < until {
                hostile(&c, &b, &m, i).await;
                k.hostile.fetch_add(1, Ordering::Relaxed);
                i += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
    }
    {
        let (c, b, m, r, k) = (
            client.clone(),
            base.to_string(),
            model.to_string(),
            reference.clone(),
            counters.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let burst: Vec<_> = (0..16)
                    .map(|j| {
                        let (c, b, m) = (c.clone(), b.clone(), m.clone());
                        tokio::spawn(async move {
                            let p = j % PROMPTS.len();
                            (p, stream(&c, &b, &m, PROMPTS[p]).await)
                        })
                    })
                    .collect();
                for h in burst {
                    match h.await.expect("burst request") {
                        (p, Streamed::Done(t)) => {
                            assert_eq!(t, r[p], "prompt {p} in a burst");
                            k.completed.fetch_add(1, Ordering::Relaxed);
                        }
                        (_, Streamed::Refused(429, retry)) => {
                            assert!(retry.is_some(), "429 carries Retry-After");
                            k.refused_429.fetch_add(1, Ordering::Relaxed);
                        }
                        (_, Streamed::Refused(s, _)) => panic!("unexpected status {s} in a burst"),
                    }
                }
                if Instant::now() + Duration::from_secs(20) >= until {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(20)).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("load task");
    }
}
