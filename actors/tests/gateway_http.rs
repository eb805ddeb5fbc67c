//! The OpenAI-compatible gateway over real HTTP on 127.0.0.1, with the deterministic
//! `EchoBackend` behind it.

use edgeray::gateway::{EchoBackend, EchoConfig, Gateway, GatewayConfig, RunningGateway};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const MODEL: &str = "edgeray-echo";

async fn start(echo: EchoConfig, config: GatewayConfig) -> (RunningGateway, Gateway, EchoBackend) {
    let backend = EchoBackend::new(echo);
    let gw = Gateway::new(Arc::new(backend.clone()), config).unwrap();
    let running = gw.spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (running, gw, backend)
}

async fn start_default() -> (RunningGateway, Gateway, EchoBackend) {
    start(EchoConfig::default(), GatewayConfig::default()).await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn post(base: &str, path: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, String) {
    let r = client()
        .post(format!("{base}{path}"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

/// `data:` payloads of an SSE body, in order.
fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .map(str::to_string)
        .collect()
}

fn assert_error(body: &str, code: Option<&str>) -> Value {
    let v: Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("error body not JSON ({e}): {body}"));
    let err = &v["error"];
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(err["type"].is_string(), "{body}");
    assert!(
        err.get("param").is_some() && err.get("code").is_some(),
        "{body}"
    );
    if let Some(code) = code {
        assert_eq!(err["code"], code, "{body}");
    }
    v
}

#[tokio::test]
async fn lists_models_and_health() {
    let (gw, _, _) = start_default().await;
    let base = format!("http://{}", gw.local_addr);
    let v: Value = client()
        .get(format!("{base}/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], MODEL);
    assert_eq!(v["data"][0]["object"], "model");
    let r = client()
        .get(format!("{base}/v1/models/{MODEL}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .get(format!("{base}/v1/models/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let h: Value = client()
        .get(format!("{base}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["status"], "ok");
    let r = client()
        .get(format!("{base}/v2/whatever"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_error(&r.text().await.unwrap(), Some("unknown_url"));
    gw.shutdown().await.unwrap();
}

#[tokio::test]
async fn completion_without_streaming() {
    let (gw, _, _) = start_default().await;
    let base = format!("http://{}", gw.local_addr);
    let (status, _, body) = post(
        &base,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": "the quick brown fox", "max_tokens": 10}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "text_completion");
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(v["model"], MODEL);
    assert_eq!(v["choices"][0]["text"], "the quick brown fox");
    assert_eq!(v["choices"][0]["index"], 0);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8})
    );

    // max_tokens cuts the answer: finish_reason length
    let (status, _, body) = post(
        &base,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": ["a b c d e"], "max_tokens": 2}),
    )
    .await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["choices"][0]["text"], "a b");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 2);

    // stop strings end the answer and are not returned
    let (status, _, body) = post(
        &base,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": "one two three four", "stop": [" thr"]}),
    )
    .await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["choices"][0]["text"], "one two");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    gw.shutdown().await.unwrap();
}

#[tokio::test]
async fn chat_without_streaming() {
    let (gw, _, _) = start_default().await;
    let base = format!("http://{}", gw.local_addr);
    let req = json!({
        "model": MODEL,
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there world"}],
        "temperature": 0.0,
    });
    let (status, _, body) = post(&base, "/v1/chat/completions", &req).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(
        v["choices"][0]["message"],
        json!({"role": "assistant", "content": "hello there world"})
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // 2 messages: (1 + 2) + (1 + 3) prompt tokens
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10})
    );
    gw.shutdown().await.unwrap();
}

#[tokio::test]
async fn chat_streaming_sends_chunks_then_done() {
    let (gw, _, _) = start(
        EchoConfig {
            token_delay: Duration::from_millis(5),
            ..EchoConfig::default()
        },
        GatewayConfig::default(),
    )
    .await;
    let base = format!("http://{}", gw.local_addr);
    let req = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "alpha beta gamma delta"}],
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let mut r = client()
        .post(format!("{base}/v1/chat/completions"))
        .json(&req)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = String::new();
    let mut reads = 0;
    while let Some(chunk) = r.chunk().await.unwrap() {
        body.push_str(std::str::from_utf8(&chunk).unwrap());
        reads += 1;
    }
    assert!(reads >= 2, "events arrive over time, not in one piece");
    let data = sse_data(&body);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let id = chunks[0]["id"].clone();
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], id);
        assert_eq!(c["model"], MODEL);
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| {
            c["choices"]
                .get(0)
                .and_then(|ch| ch["delta"]["content"].as_str())
                .map(str::to_string)
        })
        .collect();
    assert_eq!(text, "alpha beta gamma delta");
    let finals: Vec<&Value> = chunks
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null())
        .collect();
    let finals: Vec<&Value> = finals
        .into_iter()
        .filter(|c| c["choices"].as_array().is_some_and(|a| !a.is_empty()))
        .collect();
    assert_eq!(finals.len(), 1);
    assert_eq!(finals[0]["choices"][0]["finish_reason"], "stop");
    assert_eq!(finals[0]["choices"][0]["delta"], json!({}));
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9})
    );
    // token-by-token: 1 role chunk + 4 content chunks + final + usage
    assert_eq!(chunks.len(), 7);
    gw.shutdown().await.unwrap();
}

#[tokio::test]
async fn completion_streaming_with_stop_and_length() {
    let (gw, _, _) = start_default().await;
    let base = format!("http://{}", gw.local_addr);
    let (status, _, body) = post(
        &base,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": "a b c d e f", "stream": true, "stop": "d"}),
    )
    .await;
    assert_eq!(status, 200);
    let data = sse_data(&body);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    let text: String = chunks
        .iter()
        .map(|c| c["choices"][0]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, "a b c ");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    assert!(chunks.last().unwrap().get("usage").is_none());

    let (_, _, body) = post(
        &base,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": "a b c d e f", "stream": true, "max_tokens": 3}),
    )
    .await;
    let data = sse_data(&body);
    let last: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    gw.shutdown().await.unwrap();
}

#[tokio::test]
async fn errors_use_openai_shape_and_status_codes() {
    let (gw, _, _) = start(
        EchoConfig {
            context_length: 8,
            ..EchoConfig::default()
        },
        GatewayConfig {
            max_body_bytes: 4096,
            ..GatewayConfig::default()
        },
    )
    .await;
    let base = format!("http://{}", gw.local_addr);
    let c = client();

    // invalid JSON
    let r = c
        .post(format!("{base}/v1/chat/completions"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_error(&r.text().await.unwrap(), Some("invalid_json"));
    // valid JSON, wrong schema
    let (s, _, b) = post(&base, "/v1/chat/completions", &json!({"model": MODEL})).await;
    assert_eq!(s, 400);
    assert_error(&b, None);
    // invalid parameter
    let (s, _, b) = post(
        &base,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": "x", "top_p": 7}),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(assert_error(&b, None)["error"]["param"], "top_p");
    // unknown model
    let (s, _, b) = post(
        &base,
        "/v1/completions",
        &json!({"model": "gpt-9", "prompt": "x"}),
    )
    .await;
    assert_eq!(s, 404);
    assert_error(&b, Some("model_not_found"));
    // body too large
    let big = "word ".repeat(2000);
    let (s, _, b) = post(
        &base,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": big}),
    )
    .await;
    assert_eq!(s, 413);
    assert_error(&b, Some("request_too_large"));
    // prompt longer than the context
    let (s, _, b) = post(
        &base,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": "1 2 3 4 5 6 7 8 9"}),
    )
    .await;
    assert_eq!(s, 400);
    let v = assert_error(&b, Some("context_length_exceeded"));
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("maximum context length is 8 tokens")
    );
    let (s, _, b) = post(
        &base,
        "/v1/chat/completions",
        &json!({"model": MODEL, "messages": [{"role": "user", "content": "1 2 3 4 5 6 7 8"}], "stream": true}),
    )
    .await;
    assert_eq!(s, 400, "context errors come before any stream starts");
    assert_error(&b, Some("context_length_exceeded"));
    // n > 1 unsupported
    let (s, _, _) = post(
        &base,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": "x", "n": 2}),
    )
    .await;
    assert_eq!(s, 400);
    gw.shutdown().await.unwrap();
}

#[tokio::test]
async fn backend_overload_is_429_with_retry_after() {
    let (gw, _, _) = start(
        EchoConfig {
            max_active: Some(0),
            ..EchoConfig::default()
        },
        GatewayConfig::default(),
    )
    .await;
    let base = format!("http://{}", gw.local_addr);
    let (s, h, b) = post(
        &base,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": "x"}),
    )
    .await;
    assert_eq!(s, 429);
    assert_eq!(h["retry-after"], "2");
    assert_error(&b, Some("rate_limit_exceeded"));
    gw.shutdown().await.unwrap();
}

#[tokio::test]
async fn overload_burst_rejects_extra_and_completes_every_accepted_request() {
    const CAPACITY: usize = 4;
    const BURST: usize = 24;
    let (running, gw, backend) = start(
        EchoConfig {
            token_delay: Duration::from_millis(40),
            max_active: Some(CAPACITY),
            retry_after: Duration::from_secs(1),
            ..EchoConfig::default()
        },
        GatewayConfig::default(),
    )
    .await;
    let base = format!("http://{}", running.local_addr);
    let c = client();
    let mut tasks = Vec::new();
    for i in 0..BURST {
        let c = c.clone();
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let stream = i % 2 == 0;
            let prompt = format!("req{i} w1 w2 w3 w4 w5");
            let r = c
                .post(format!("{base}/v1/chat/completions"))
                .json(&json!({"model": MODEL, "messages": [{"role": "user", "content": prompt}], "stream": stream}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            let body = r.text().await.unwrap();
            (i, stream, status, retry, body)
        }));
    }
    let mut ok = 0;
    let mut rejected = 0;
    for t in tasks {
        let (i, stream, status, retry, body) = t.await.unwrap();
        let expected = format!("req{i} w1 w2 w3 w4 w5");
        match status {
            200 => {
                ok += 1;
                let text = if stream {
                    let data = sse_data(&body);
                    assert_eq!(data.last().unwrap(), "[DONE]");
                    data[..data.len() - 1]
                        .iter()
                        .filter_map(|d| {
                            let v: Value = serde_json::from_str(d).unwrap();
                            v["choices"][0]["delta"]["content"]
                                .as_str()
                                .map(str::to_string)
                        })
                        .collect::<String>()
                } else {
                    let v: Value = serde_json::from_str(&body).unwrap();
                    v["choices"][0]["message"]["content"]
                        .as_str()
                        .unwrap()
                        .to_string()
                };
                assert_eq!(text, expected, "accepted request {i} completed in full");
            }
            429 => {
                rejected += 1;
                assert_eq!(retry.as_deref(), Some("1"));
                assert_error(&body, Some("rate_limit_exceeded"));
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert_eq!(ok + rejected, BURST);
    assert!(ok >= CAPACITY, "at least the capacity is served, got {ok}");
    assert!(
        rejected >= 1,
        "a burst of {BURST} over capacity {CAPACITY} is partly refused"
    );
    assert_eq!(gw.in_flight(), 0);
    assert_eq!(backend.active(), 0);
    let metrics = client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "edgeray_gateway_rejected_total{{reason=\"overloaded\"}} {rejected}"
        )),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "edgeray_gateway_requests_total{{code=\"200\",endpoint=\"chat_completions\"}} {ok}"
    )));
    assert!(metrics.contains("edgeray_gateway_in_flight_requests 0"));
    assert!(metrics.contains(&format!(
        "edgeray_gateway_completion_tokens_total {}",
        ok * 6
    )));
    assert!(metrics.contains("# TYPE edgeray_gateway_request_duration_seconds histogram"));
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn client_disconnect_cancels_generation() {
    let (running, gw, backend) = start(
        EchoConfig {
            token_delay: Duration::from_millis(50),
            ..EchoConfig::default()
        },
        GatewayConfig::default(),
    )
    .await;
    let base = format!("http://{}", running.local_addr);
    let words = "w ".repeat(200);
    let mut r = client()
        .post(format!("{base}/v1/completions"))
        .json(&json!({"model": MODEL, "prompt": words, "stream": true, "max_tokens": 200}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let first = r.chunk().await.unwrap();
    assert!(first.is_some());
    assert_eq!(backend.active(), 1);
    drop(r);
    for _ in 0..100 {
        if backend.active() == 0 && gw.in_flight() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(backend.active(), 0, "backend stopped generating");
    assert_eq!(gw.in_flight(), 0, "admission slot freed");
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn pipeline_metrics_share_the_registry() {
    let (running, gw, _) = start_default().await;
    let stage = gw
        .metrics()
        .gauge(
            "edgeray_stage_queue_depth",
            "Queue depth per stage.",
            &[("stage", "0")],
        )
        .unwrap();
    stage.set(3.0);
    let base = format!("http://{}", running.local_addr);
    let r = client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    assert!(
        text.contains(
            "# TYPE edgeray_stage_queue_depth gauge\nedgeray_stage_queue_depth{stage=\"0\"} 3\n"
        ),
        "{text}"
    );
    running.shutdown().await.unwrap();
}

// --- Access: API key, Host check, header-read timeout, open binds, CORS, deadline ---

use edgeray::gateway::{AccessConfig, ApiKey, GatewayError};
use std::io::{Read, Write};

const KEY: &str = "test-key-0123456789abcdef";

fn keyed() -> GatewayConfig {
    GatewayConfig {
        access: AccessConfig {
            api_key: Some(ApiKey::new(KEY).unwrap()),
            ..Default::default()
        },
        ..GatewayConfig::default()
    }
}

/// One raw HTTP/1.1 request (`Connection: close`) with the given Host; the whole response.
fn raw_request(addr: std::net::SocketAddr, host: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[tokio::test]
async fn api_key_guards_every_endpoint_but_health() {
    let (gw, _, _) = start(EchoConfig::default(), keyed()).await;
    let base = format!("http://{}", gw.local_addr);
    let c = client();
    for (auth, want) in [
        (None, 401),
        (Some("Bearer wrong-key-0123456789abcdef".to_string()), 401),
        (Some(format!("Basic {KEY}")), 401),
        (Some(KEY.to_string()), 401),
        (Some(format!("Bearer {KEY}")), 200),
        (Some(format!("bearer {KEY}")), 200),
    ] {
        for path in ["/v1/models", "/metrics", "/v1/models/edgeray-echo"] {
            let mut req = c.get(format!("{base}{path}"));
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), want, "{path} with {auth:?}");
            if want == 401 {
                assert_eq!(r.headers()["www-authenticate"], "Bearer");
                assert_error(&r.text().await.unwrap(), Some("invalid_api_key"));
            }
        }
    }
    let body = json!({"model": MODEL, "prompt": "a b c", "max_tokens": 2});
    let r = c
        .post(format!("{base}/v1/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(format!("{base}/v1/completions"))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(r.status(), 200, "/health stays open");
    gw.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_foreign_host_is_refused_on_a_loopback_bind() {
    let (gw, _, _) = start(EchoConfig::default(), keyed()).await;
    let addr = gw.local_addr;
    let port = addr.port();
    let verdicts = tokio::task::spawn_blocking(move || {
        [
            "evil.example.com".to_string(),
            format!("evil.example.com:{port}"),
            format!("127.0.0.1.nip.io:{port}"),
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            "[::1]".to_string(),
        ]
        .map(|h| {
            let resp = raw_request(addr, &h, "/v1/models");
            (h, resp)
        })
    })
    .await
    .unwrap();
    for (host, resp) in &verdicts[..3] {
        assert!(resp.starts_with("HTTP/1.1 403"), "{host}: {resp}");
        assert!(resp.contains("forbidden_host"), "{host}: {resp}");
    }
    for (host, resp) in &verdicts[3..] {
        assert!(resp.starts_with("HTTP/1.1 200"), "{host}: {resp}");
    }
    gw.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_client_with_incomplete_headers_is_disconnected_within_10s() {
    let (gw, _, _) = start_default().await;
    let addr = gw.local_addr;
    let (elapsed, got) = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            .unwrap();
        let t = std::time::Instant::now();
        let mut buf = Vec::new();
        // EOF (or a reset) ends the read; a read timeout would be an error after 20 s.
        let r = s.read_to_end(&mut buf);
        (t.elapsed(), (r.map_err(|e| e.kind()), buf))
    })
    .await
    .unwrap();
    let (r, buf) = got;
    assert!(
        !matches!(
            r,
            Err(std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
        ),
        "still open after {elapsed:?}"
    );
    assert!(
        elapsed >= Duration::from_secs(8) && elapsed <= Duration::from_secs(12),
        "closed after {elapsed:?}"
    );
    assert!(
        !String::from_utf8_lossy(&buf).contains("200 OK"),
        "answered an incomplete request"
    );
    // A normal client is unaffected.
    let r = client()
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    gw.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_non_loopback_bind_needs_a_key_or_an_explicit_no_auth() {
    let gw = Gateway::new(
        Arc::new(EchoBackend::new(EchoConfig::default())),
        GatewayConfig::default(),
    )
    .unwrap();
    let err = gw
        .spawn("0.0.0.0:0".parse().unwrap())
        .await
        .expect_err("open bind refused");
    assert!(matches!(err, GatewayError::Access(_)), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("--no-auth") && msg.contains("--api-key-file"),
        "{msg}"
    );
    // The CLI refuses it before deploying anything (no model needed to see the refusal).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgeray"))
        .args([
            "serve",
            "--http",
            "0.0.0.0:0",
            "--model",
            "no-such-model.gguf",
        ])
        .env_remove("EDGERAY_API_KEY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("without an API key") && stderr.contains("--no-auth"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("no-such-model"),
        "refused before deploying: {stderr}"
    );
    // A key file that is too short is a clear error too.
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "short\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgeray"))
        .args([
            "serve",
            "--http",
            "0.0.0.0:0",
            "--model",
            "no-such-model.gguf",
        ])
        .arg("--api-key-file")
        .arg(&key)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("invalid API key"), "{stderr}");
}

#[tokio::test]
async fn cors_headers_only_when_configured() {
    const ORIGIN: &str = "https://app.example.com";
    let (plain, _, _) = start_default().await;
    let r = client()
        .get(format!("http://{}/v1/models", plain.local_addr))
        .header("origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    plain.shutdown().await.unwrap();

    let mut config = keyed();
    config.access.cors_origins = vec![ORIGIN.to_string()];
    let (gw, _, _) = start(EchoConfig::default(), config).await;
    let base = format!("http://{}", gw.local_addr);
    // The preflight is answered without the key (browsers never send it there).
    let r = client()
        .request(
            reqwest::Method::OPTIONS,
            format!("{base}/v1/chat/completions"),
        )
        .header("origin", ORIGIN)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(r.headers()["access-control-allow-origin"], ORIGIN);
    let allowed = r.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");
    let r = client()
        .get(format!("{base}/v1/models"))
        .bearer_auth(KEY)
        .header("origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], ORIGIN);
    let r = client()
        .get(format!("{base}/v1/models"))
        .bearer_auth(KEY)
        .header("origin", "https://evil.example.com")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    gw.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_request_past_its_deadline_fails_clearly_and_stops_generating() {
    let (gw, gateway, backend) = start(
        EchoConfig {
            token_delay: Duration::from_millis(50),
            ..EchoConfig::default()
        },
        GatewayConfig {
            request_timeout: Some(Duration::from_millis(400)),
            ..GatewayConfig::default()
        },
    )
    .await;
    let base = format!("http://{}", gw.local_addr);
    let words = "w ".repeat(200);
    let (status, _, body) = post(
        &base,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": words, "max_tokens": 200}),
    )
    .await;
    assert_eq!(status, 504, "{body}");
    let v = assert_error(&body, Some("request_timeout"));
    assert!(
        v["error"]["message"].as_str().unwrap().contains("deadline"),
        "{body}"
    );
    let (status, _, body) = post(
        &base,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": words, "max_tokens": 200, "stream": true}),
    )
    .await;
    assert_eq!(status, 200);
    let data = sse_data(&body);
    let last = data.last().unwrap();
    assert!(last.contains("request_timeout"), "{body}");
    assert!(
        data.len() > 2,
        "tokens streamed before the deadline: {body}"
    );
    for _ in 0..100 {
        if backend.active() == 0 && gateway.in_flight() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(backend.active(), 0, "generation cancelled");
    assert_eq!(gateway.in_flight(), 0, "slot freed");
    gw.shutdown().await.unwrap();
}

/// Log-probabilities and echo in both layouts, streamed and not, with the request checks.
/// (The echo backend is certain of every word: log-probability 0; the values themselves are
/// checked against the real models in `pipeline_local` and the Python client test.)
#[tokio::test]
async fn logprobs_and_echo_in_openai_layouts() {
    let (gw, _, _) = start_default().await;
    let base = format!("http://{}", gw.local_addr);

    // Chat: one entry per token, the alternatives asked for, bytes spelling the content.
    let (s, _, body) = post(
        &base,
        "/v1/chat/completions",
        &json!({"model": MODEL, "messages": [{"role": "user", "content": "red green blue"}],
                "logprobs": true, "top_logprobs": 1}),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), 3);
    assert_eq!(content[1]["token"], " green");
    assert_eq!(content[1]["logprob"], 0.0);
    assert_eq!(content[1]["bytes"], json!(" green".as_bytes()));
    assert_eq!(content[1]["top_logprobs"][0]["token"], " green");
    // Without logprobs: null, as before.
    let (_, _, body) = post(
        &base,
        "/v1/chat/completions",
        &json!({"model": MODEL, "messages": [{"role": "user", "content": "red"}]}),
    )
    .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["choices"][0]["logprobs"].is_null());

    // Completions: echo + logprobs + max_tokens 0 scores the prompt.
    let (s, _, body) = post(
        &base,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": "one two three", "echo": true, "logprobs": 1, "max_tokens": 0}),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let c = &v["choices"][0];
    assert_eq!(c["text"], "one two three");
    assert_eq!(c["logprobs"]["tokens"], json!(["one", " two", " three"]));
    assert_eq!(c["logprobs"]["token_logprobs"], json!([null, 0.0, 0.0]));
    assert_eq!(c["logprobs"]["text_offset"], json!([0, 3, 7]));
    assert!(c["logprobs"]["top_logprobs"][0].is_null());
    assert_eq!(c["logprobs"]["top_logprobs"][1], json!({" two": 0.0}));
    assert_eq!(v["usage"]["completion_tokens"], 0);
    // Echo without logprobs returns the prompt before the completion.
    let (_, _, body) = post(
        &base,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": "a b", "echo": true, "max_tokens": 1}),
    )
    .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["choices"][0]["text"], "a ba");

    // Streamed: the echoed prompt with its scores first, then each token with its own.
    let (s, _, body) = post(
        &base,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": "x y", "echo": true, "logprobs": 0, "max_tokens": 2, "stream": true}),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let chunks: Vec<Value> = sse_data(&body)
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["text"], "x y");
    assert_eq!(
        chunks[0]["choices"][0]["logprobs"]["tokens"],
        json!(["x", " y"])
    );
    assert_eq!(chunks[1]["choices"][0]["text"], "x");
    assert_eq!(chunks[1]["choices"][0]["logprobs"]["tokens"], json!(["x"]));
    assert_eq!(
        chunks[1]["choices"][0]["logprobs"]["text_offset"],
        json!([3])
    );
    assert_eq!(
        chunks[1]["choices"][0]["logprobs"]["top_logprobs"],
        json!([{}])
    );
    let (s, _, body) = post(
        &base,
        "/v1/chat/completions",
        &json!({"model": MODEL, "messages": [{"role": "user", "content": "p q"}], "logprobs": true, "stream": true}),
    )
    .await;
    assert_eq!(s, 200);
    let tokens: Vec<String> = sse_data(&body)
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| c["choices"][0]["logprobs"]["content"].as_array().cloned())
        .flatten()
        .map(|e| e["token"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(tokens, vec!["p", " q"]);

    // Bad requests name the parameter.
    for (path, body, param) in [
        (
            "/v1/chat/completions",
            json!({"model": MODEL, "messages": [{"role": "user", "content": "a"}], "top_logprobs": 2}),
            "top_logprobs",
        ),
        (
            "/v1/chat/completions",
            json!({"model": MODEL, "messages": [{"role": "user", "content": "a"}], "logprobs": true, "top_logprobs": 21}),
            "top_logprobs",
        ),
        (
            "/v1/completions",
            json!({"model": MODEL, "prompt": "a", "logprobs": 21}),
            "logprobs",
        ),
        (
            "/v1/completions",
            json!({"model": MODEL, "prompt": "a", "max_tokens": 0}),
            "max_tokens",
        ),
    ] {
        let (s, _, text) = post(&base, path, &body).await;
        assert_eq!(s, 400, "{body}: {text}");
        let v = assert_error(&text, None);
        assert_eq!(v["error"]["param"], param, "{text}");
    }
}

/// Unknown fields are refused by name; harmless client fields and llama-server's `n_predict`
/// pass; bad tools are refused by parameter before any backend sees them.
#[tokio::test]
async fn strict_fields_n_predict_and_tool_checks() {
    let (gw, _, _) = start_default().await;
    let base = format!("http://{}", gw.local_addr);
    let chat = |extra: Value| {
        let mut body =
            json!({"model": MODEL, "messages": [{"role": "user", "content": "a b c d e"}]});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let (s, _, text) = post(&base, "/v1/chat/completions", &chat(json!({"made_up": 1}))).await;
    assert_eq!(s, 400);
    let v = assert_error(&text, None);
    assert_eq!(v["error"]["param"], "made_up");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Unrecognized request argument")
    );
    // `echo` is a completions field, not a chat one.
    let (s, _, _) = post(&base, "/v1/chat/completions", &chat(json!({"echo": true}))).await;
    assert_eq!(s, 400);
    let (s, _, text) = post(
        &base,
        "/v1/chat/completions",
        &chat(json!({"metadata": {"k": "v"}, "store": false})),
    )
    .await;
    assert_eq!(s, 200, "{text}");
    let (s, _, text) = post(
        &base,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": "a b c d e", "n_predict": 2}),
    )
    .await;
    assert_eq!(s, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 2);
    let (s, _, _) = post(
        &base,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": "a", "n_predict": -5}),
    )
    .await;
    assert_eq!(s, 400);
    for (extra, param) in [
        (
            json!({"tools": [{"type": "function", "function": {"name": "has space"}}]}),
            "tools[0].function.name",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "maybe"}),
            "tool_choice",
        ),
        (json!({"tool_choice": "required"}), "tool_choice"),
        (
            json!({"messages": [{"role": "tool", "content": "x"}]}),
            "messages[0].tool_call_id",
        ),
    ] {
        let (s, _, text) = post(&base, "/v1/chat/completions", &chat(extra)).await;
        assert_eq!(s, 400, "{text}");
        let v = assert_error(&text, None);
        assert_eq!(v["error"]["param"], param, "{text}");
    }
    // The echo backend has no tokenizer: a clear 400; bad bodies too.
    let (s, _, text) = post(&base, "/tokenize", &json!({"content": "a b"})).await;
    assert_eq!(s, 400, "{text}");
    assert!(text.contains("no tokenizer"), "{text}");
    let (s, _, _) = post(&base, "/detokenize", &json!({"tokens": "x"})).await;
    assert_eq!(s, 400);
    // Embeddings: request checks first, then the echo backend's refusal (it is not a model).
    for (body, param) in [
        (json!({"model": MODEL, "input": 5}), "input"),
        (
            json!({"model": MODEL, "input": "a", "encoding_format": "hex"}),
            "encoding_format",
        ),
        (
            json!({"model": MODEL, "input": "a", "dimensions": 8}),
            "dimensions",
        ),
    ] {
        let (s, _, text) = post(&base, "/v1/embeddings", &body).await;
        assert_eq!(s, 400, "{text}");
        assert_eq!(assert_error(&text, None)["error"]["param"], param);
    }
    let (s, _, text) = post(
        &base,
        "/v1/embeddings",
        &json!({"model": MODEL, "input": "a", "x": 1}),
    )
    .await;
    assert_eq!(s, 400, "{text}");
    let (s, _, text) = post(
        &base,
        "/v1/embeddings",
        &json!({"model": MODEL, "input": "a"}),
    )
    .await;
    assert_eq!(s, 400, "{text}");
    assert!(text.contains("no embeddings"), "{text}");
    // Valid tools reach the backend, which says it cannot offer them (no chat template).
    let (s, _, text) = post(
        &base,
        "/v1/chat/completions",
        &chat(json!({"tools": [{"type": "function", "function": {"name": "f"}}]})),
    )
    .await;
    assert_eq!(s, 400, "{text}");
    assert!(text.contains("tools"), "{text}");
}
