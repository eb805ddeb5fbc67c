//! The HTTP server: routes, handlers, streaming, admission and metrics wiring.

use super::access::{AccessConfig, AccessError};
use super::answer::{AnswerReader, Step, UNFINISHED};
use super::backend::{
    CompletionBackend, FinishReason, GenerationEvent, PromptInput, PromptToken, TokenLogprob,
    TokenStream,
};
use super::error::ApiError;
use super::in_flight::{InFlight, InFlightGuard};
use super::logprobs;
use super::metrics::{Counter, Gauge, Histogram, LATENCY_BUCKETS, MetricsError, MetricsRegistry};
use super::openai::{
    ChatChoice, ChatChunk, ChatRequest, ChatResponse, ChunkChoice, CompletionChoice,
    CompletionRequest, CompletionResponse, Delta, DeltaToolCall, Prepared, ResponseMessage, Usage,
    check_fields, prepare_chat, prepare_completion,
};
use super::tools;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Gateway settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    /// Largest request body accepted (413 beyond it). Default 1 MiB.
    pub max_body_bytes: usize,
    /// Interval of SSE keep-alive comments. Default 15 s.
    pub sse_keep_alive: Duration,
    /// API key, CORS origins, and whether a non-loopback bind may go without a key
    /// (see [`super::AccessConfig`]). Default: no key, no CORS, loopback only.
    pub access: AccessConfig,
    /// Longest a completion request may take, streamed answers included; past it the
    /// generation is cancelled and the client gets a `timeout` error (504, or an SSE error
    /// event once streaming started). `None` = no deadline. Default 600 s.
    pub request_timeout: Option<Duration>,
    /// A client whose request headers are not complete this long after it starts sending
    /// them (or after it connects) is disconnected. Default 10 s.
    pub header_read_timeout: Duration,
    /// Routes added beside the API (e.g. `serve`'s dashboard), behind the same access layers.
    pub extra_routes: super::ExtraRoutes,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            max_body_bytes: 1 << 20,
            sse_keep_alive: Duration::from_secs(15),
            access: AccessConfig::default(),
            request_timeout: Some(Duration::from_secs(600)),
            header_read_timeout: Duration::from_secs(10),
            extra_routes: super::ExtraRoutes::default(),
        }
    }
}

/// The gateway's own metrics (names start with `edgeray_gateway_`).
#[derive(Debug, Clone)]
struct GatewayMetrics {
    registry: MetricsRegistry,
    prompt_tokens: Counter,
    completion_tokens: Counter,
    rejected_overload: Counter,
    in_flight: Gauge,
    ttft: Histogram,
}

impl GatewayMetrics {
    /// A reader of one answer, reporting its first token and its tokens here.
    fn reader(&self, stops: &[String], started: Instant) -> AnswerReader {
        AnswerReader::new(
            stops,
            started,
            self.ttft.clone(),
            self.completion_tokens.clone(),
        )
    }

    fn new(registry: MetricsRegistry) -> Result<Self, MetricsError> {
        Ok(GatewayMetrics {
            prompt_tokens: registry.counter(
                "edgeray_gateway_prompt_tokens_total",
                "Prompt tokens processed.",
                &[],
            )?,
            completion_tokens: registry.counter(
                "edgeray_gateway_completion_tokens_total",
                "Tokens generated and returned.",
                &[],
            )?,
            rejected_overload: registry.counter(
                "edgeray_gateway_rejected_total",
                "Requests refused with 429 because the gateway or backend was full.",
                &[("reason", "overloaded")],
            )?,
            in_flight: registry.gauge(
                "edgeray_gateway_in_flight_requests",
                "Requests admitted and not yet finished.",
                &[],
            )?,
            ttft: registry.histogram(
                "edgeray_gateway_time_to_first_token_seconds",
                "Time from admission to the first generated token.",
                &[],
                LATENCY_BUCKETS,
            )?,
            registry,
        })
    }

    fn request(&self, endpoint: &str, status: StatusCode) {
        if let Ok(c) = self.registry.counter(
            "edgeray_gateway_requests_total",
            "HTTP requests by endpoint and status code.",
            &[("endpoint", endpoint), ("code", status.as_str())],
        ) {
            c.inc();
        }
    }

    fn latency(&self, endpoint: &str, secs: f64) {
        if let Ok(h) = self.registry.histogram(
            "edgeray_gateway_request_duration_seconds",
            "Time from admission to the end of the response, by endpoint.",
            &[("endpoint", endpoint)],
            LATENCY_BUCKETS,
        ) {
            h.observe(secs);
        }
    }
}

struct Inner {
    backend: Arc<dyn CompletionBackend>,
    config: GatewayConfig,
    metrics: GatewayMetrics,
    in_flight: InFlight,
    next_id: AtomicU64,
    id_salt: u32,
}

/// The OpenAI-compatible HTTP gateway in front of a [`CompletionBackend`].
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

/// Why the gateway could not be built or started.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Its metrics clash with ones already in the registry.
    #[error("gateway metrics: {0}")]
    Metrics(#[from] MetricsError),
    /// Binding or serving failed.
    #[error("gateway I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The access settings are invalid, or the bind address needs an API key.
    #[error(transparent)]
    Access(#[from] AccessError),
}

/// A gateway serving in a background task.
#[derive(Debug)]
pub struct RunningGateway {
    /// The address it listens on.
    pub local_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), GatewayError>>,
}

impl RunningGateway {
    /// Base URL for OpenAI clients, e.g. `http://127.0.0.1:8080/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.local_addr)
    }

    /// Stop accepting connections, finish open ones, and wait.
    pub async fn shutdown(mut self) -> Result<(), GatewayError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(GatewayError::Io(std::io::Error::other(e))),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Gateway {
    /// A gateway with its own metrics registry.
    pub fn new(
        backend: Arc<dyn CompletionBackend>,
        config: GatewayConfig,
    ) -> Result<Self, GatewayError> {
        Self::with_metrics(backend, config, MetricsRegistry::new())
    }

    /// A gateway that registers its metrics in `registry` (shared with the pipeline, whose
    /// metrics then appear on `/metrics` too).
    pub fn with_metrics(
        backend: Arc<dyn CompletionBackend>,
        config: GatewayConfig,
        registry: MetricsRegistry,
    ) -> Result<Self, GatewayError> {
        config.access.validate()?;
        let metrics = GatewayMetrics::new(registry)?;
        let in_flight = InFlight::new(metrics.in_flight.clone());
        Ok(Gateway {
            inner: Arc::new(Inner {
                backend,
                config,
                metrics,
                in_flight,
                next_id: AtomicU64::new(1),
                id_salt: rand::random(),
            }),
        })
    }

    /// The metrics registry served on `/metrics`.
    pub fn metrics(&self) -> &MetricsRegistry {
        &self.inner.metrics.registry
    }

    /// Completion and embedding requests in flight (accepted, response not complete).
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.get()
    }

    /// The axum router: `/v1/models`, `/v1/completions`, `/v1/chat/completions`, `/metrics`,
    /// `/health`, and [`GatewayConfig::extra_routes`].
    pub fn router(&self) -> Router {
        let api = Router::new()
            .route("/v1/models", get(models))
            .route("/v1/models/{id}", get(model_by_id))
            .route("/v1/completions", post(completions))
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/embeddings", post(embeddings))
            .route("/tokenize", post(tokenize))
            .route("/detokenize", post(detokenize))
            .route("/metrics", get(metrics))
            .route("/health", get(health))
            .fallback(fallback)
            .layer(DefaultBodyLimit::max(self.inner.config.max_body_bytes))
            .with_state(self.inner.clone());
        match &self.inner.config.extra_routes.0 {
            Some(extra) => api.merge(extra.clone()),
            None => api,
        }
    }

    /// [`Gateway::router`] behind the access layers (API key, CORS, and on a loopback
    /// `local` address the Host check) of [`GatewayConfig::access`].
    pub fn router_for(&self, local: SocketAddr) -> Result<Router, GatewayError> {
        Ok(self.inner.config.access.wrap(self.router(), local)?)
    }

    /// Serve on `listener` until `shutdown` completes, then finish open requests. Refuses
    /// (before serving anything) a non-loopback listener without an API key unless
    /// [`AccessConfig::allow_no_auth`]. HTTP/1.1 through hyper, with
    /// [`GatewayConfig::header_read_timeout`] on every request's headers.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), GatewayError> {
        let local = listener.local_addr()?;
        self.inner.config.access.check_bind(local)?;
        let app = self.router_for(local)?;
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(self.inner.config.header_read_timeout);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors and similar: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let svc = hyper_util::service::TowerToHyperService::new(app.clone());
            let conn = http.serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, "HTTP connection ended: {e}");
                }
            });
        }
        drop(listener);
        graceful.shutdown().await;
        Ok(())
    }

    /// Bind `addr` (e.g. `127.0.0.1:0`) and serve in a background task. A non-loopback
    /// address without an API key is refused before binding (see [`Gateway::serve`]).
    pub async fn spawn(&self, addr: SocketAddr) -> Result<RunningGateway, GatewayError> {
        self.inner.config.access.check_bind(addr)?;
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let this = self.clone();
        let task = tokio::spawn(async move {
            this.serve(listener, async move {
                let _ = rx.await;
            })
            .await
        });
        Ok(RunningGateway {
            local_addr,
            shutdown: Some(tx),
            task,
        })
    }
}

async fn models(State(s): State<Arc<Inner>>) -> Response {
    let id = s.backend.model_id();
    let body = serde_json::json!({
        "object": "list",
        "data": [{ "id": id, "object": "model", "created": 0, "owned_by": "edgeray" }],
    });
    s.metrics.request("models", StatusCode::OK);
    axum::Json(body).into_response()
}

async fn model_by_id(
    State(s): State<Arc<Inner>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let resp = if id == s.backend.model_id() {
        axum::Json(
            serde_json::json!({ "id": id, "object": "model", "created": 0, "owned_by": "edgeray" }),
        )
        .into_response()
    } else {
        ApiError::model_not_found(&id).into_response()
    };
    s.metrics.request("models", resp.status());
    resp
}

async fn metrics(State(s): State<Arc<Inner>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.registry.render(),
    )
        .into_response()
}

/// `GET /health`: 200 `{"status": "ok", …}` while the backend serves; 503 with `"status":
/// "redeploying"` (a failover in progress) or `"failed"` (and a `reason`) when it cannot.
async fn health(State(s): State<Arc<Inner>>) -> Response {
    let readiness = s.backend.readiness();
    let mut body = serde_json::json!({
        "status": readiness.status_word(),
        "model": s.backend.model_id(),
        "in_flight": s.in_flight.get(),
        "capacity": s.backend.capacity(),
    });
    if let super::Readiness::Failed(why) = &readiness {
        body["reason"] = why.clone().into();
    }
    let code = if readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

/// `POST /v1/embeddings`: `{"model", "input": text or [texts], "encoding_format": "float" |
/// "base64"}` → one embedding per input, each the mean of the final-normed hidden states of
/// the input's positions (as llama-server pools a decoder model), L2-normalised, computed on
/// the pipeline.
async fn embeddings(State(s): State<Arc<Inner>>, body: Result<Bytes, BytesRejection>) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Req {
        model: String,
        input: serde_json::Value,
        #[serde(default)]
        encoding_format: Option<String>,
        #[serde(default)]
        dimensions: Option<u32>,
        #[serde(default)]
        user: Option<String>,
    }
    let resp = async {
        let body = body.map_err(|e| ApiError::invalid_request(e.to_string(), None))?;
        let req: Req = serde_json::from_slice(&body).map_err(|e| {
            let mut a = ApiError::invalid_json(&e);
            if e.to_string().contains("unknown field") {
                a.message = format!("Unrecognized request argument supplied: {e}");
            }
            a
        })?;
        let _ = req.user;
        if req.model != s.backend.model_id() {
            return Err(ApiError::model_not_found(&req.model));
        }
        let base64 = match req.encoding_format.as_deref() {
            None | Some("float") => false,
            Some("base64") => true,
            Some(other) => {
                return Err(ApiError::invalid_request(
                    format!("encoding_format {other:?} is not float or base64"),
                    Some("encoding_format"),
                ));
            }
        };
        if req.dimensions.is_some() {
            return Err(ApiError::invalid_request(
                "dimensions is not supported: the embedding has the model's hidden size",
                Some("dimensions"),
            ));
        }
        let inputs: Vec<String> = match req.input {
            serde_json::Value::String(t) => vec![t],
            serde_json::Value::Array(v) if !v.is_empty() && v.iter().all(|x| x.is_string()) => v
                .into_iter()
                .map(|x| x.as_str().unwrap_or_default().to_string())
                .collect(),
            _ => {
                return Err(ApiError::invalid_request(
                    "input must be a string or a non-empty list of strings",
                    Some("input"),
                ));
            }
        };
        let permit = s.in_flight.enter();
        let mut data = Vec::with_capacity(inputs.len());
        let mut prompt_tokens = 0u32;
        for (index, text) in inputs.into_iter().enumerate() {
            let request = super::backend::GenerationRequest {
                max_tokens: Some(0),
                embed: true,
                ..super::backend::GenerationRequest::new(
                    format!("embd-{index}"),
                    PromptInput::Text(text),
                )
            };
            let backend = s.backend.clone();
            let mut stream = tokio::task::spawn_blocking(move || backend.submit(request))
                .await
                .map_err(|e| ApiError::internal(format!("preparing the input failed: {e}")))?
                .map_err(ApiError::from)?;
            prompt_tokens += stream.prompt_tokens;
            let mut vector = None;
            loop {
                match stream.events.recv().await {
                    Some(GenerationEvent::Embedding(v)) => vector = Some(v),
                    Some(GenerationEvent::Done { .. }) => break,
                    Some(GenerationEvent::Error(m)) => {
                        return Err(ApiError::internal(format!("embedding failed: {m}")));
                    }
                    Some(_) => {}
                    None => return Err(ApiError::internal(UNFINISHED)),
                }
            }
            let mut v =
                vector.ok_or_else(|| ApiError::internal("the backend sent no embedding"))?;
            let norm = v
                .iter()
                .map(|x| f64::from(*x) * f64::from(*x))
                .sum::<f64>()
                .sqrt();
            if norm > 0.0 {
                v.iter_mut()
                    .for_each(|x| *x = (f64::from(*x) / norm) as f32);
            }
            let embedding = if base64 {
                use base64::Engine;
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                serde_json::Value::from(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                serde_json::Value::from(v)
            };
            data.push(
                serde_json::json!({"object": "embedding", "index": index, "embedding": embedding}),
            );
        }
        drop(permit);
        s.metrics.prompt_tokens.add(u64::from(prompt_tokens));
        Ok::<_, ApiError>(
            axum::Json(serde_json::json!({
                "object": "list",
                "data": data,
                "model": s.backend.model_id(),
                "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
            }))
            .into_response(),
        )
    }
    .await
    .unwrap_or_else(IntoResponse::into_response);
    s.metrics.request("embeddings", resp.status());
    resp
}

/// Runs a tokenizer call of the backend off the async threads (they also drive the cluster's
/// QUIC keep-alives).
async fn off_thread<T: Send + 'static>(
    s: &Arc<Inner>,
    f: impl FnOnce(&dyn CompletionBackend) -> Result<T, super::backend::SubmitError> + Send + 'static,
) -> Result<T, ApiError> {
    let backend = s.backend.clone();
    tokio::task::spawn_blocking(move || f(backend.as_ref()))
        .await
        .map_err(|e| ApiError::internal(format!("tokenizer task failed: {e}")))?
        .map_err(ApiError::from)
}

/// `POST /tokenize` (llama-server's): `{"content": …, "add_special": false, "parse_special":
/// true, "with_pieces": false}` → `{"tokens": [ids]}`, or `[{"id", "piece"}]` with pieces.
async fn tokenize(State(s): State<Arc<Inner>>, body: Result<Bytes, BytesRejection>) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Req {
        content: String,
        #[serde(default)]
        add_special: bool,
        #[serde(default = "yes")]
        parse_special: bool,
        #[serde(default)]
        with_pieces: bool,
    }
    fn yes() -> bool {
        true
    }
    let resp = async {
        let body = body.map_err(|e| ApiError::invalid_request(e.to_string(), None))?;
        let req: Req = serde_json::from_slice(&body).map_err(ApiError::invalid_json)?;
        let with_pieces = req.with_pieces;
        let tokens = off_thread(&s, move |b| {
            b.tokenize(&req.content, req.add_special, req.parse_special)
        })
        .await?;
        let out = if with_pieces {
            let list: Vec<_> = tokens
                .iter()
                .map(|(id, piece)| serde_json::json!({"id": id, "piece": piece}))
                .collect();
            serde_json::json!({ "tokens": list })
        } else {
            let ids: Vec<u32> = tokens.iter().map(|(id, _)| *id).collect();
            serde_json::json!({ "tokens": ids })
        };
        Ok::<_, ApiError>(axum::Json(out).into_response())
    }
    .await
    .unwrap_or_else(IntoResponse::into_response);
    s.metrics.request("tokenize", resp.status());
    resp
}

/// `POST /detokenize`: `{"tokens": [ids]}` → `{"content": …}`.
async fn detokenize(State(s): State<Arc<Inner>>, body: Result<Bytes, BytesRejection>) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Req {
        tokens: Vec<u32>,
    }
    let resp = async {
        let body = body.map_err(|e| ApiError::invalid_request(e.to_string(), None))?;
        let req: Req = serde_json::from_slice(&body).map_err(ApiError::invalid_json)?;
        let content = off_thread(&s, move |b| b.detokenize(&req.tokens)).await?;
        Ok::<_, ApiError>(axum::Json(serde_json::json!({ "content": content })).into_response())
    }
    .await
    .unwrap_or_else(IntoResponse::into_response);
    s.metrics.request("detokenize", resp.status());
    resp
}

async fn fallback(uri: Uri) -> Response {
    ApiError::route_not_found(uri.path()).into_response()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Completion,
    Chat,
}

impl Kind {
    fn endpoint(self) -> &'static str {
        match self {
            Kind::Completion => "completions",
            Kind::Chat => "chat_completions",
        }
    }
}

async fn completions(State(s): State<Arc<Inner>>, body: Result<Bytes, BytesRejection>) -> Response {
    handle(s, Kind::Completion, body).await
}

async fn chat_completions(
    State(s): State<Arc<Inner>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(s, Kind::Chat, body).await
}

async fn handle(s: Arc<Inner>, kind: Kind, body: Result<Bytes, BytesRejection>) -> Response {
    let resp = match generate(&s, kind, body).await {
        Ok(r) => r,
        Err(e) => {
            if e.status == StatusCode::TOO_MANY_REQUESTS {
                s.metrics.rejected_overload.inc();
            }
            e.into_response()
        }
    };
    s.metrics.request(kind.endpoint(), resp.status());
    resp
}

fn parse(
    s: &Inner,
    kind: Kind,
    body: Result<Bytes, BytesRejection>,
    id: String,
) -> Result<Prepared, ApiError> {
    let body = body.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::body_too_large(s.config.max_body_bytes)
        } else {
            ApiError::invalid_request(format!("could not read the request body: {rej}"), None)
        }
    })?;
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(ApiError::invalid_json)?;
    check_fields(&value, kind == Kind::Chat)?;
    let prepared = match kind {
        Kind::Completion => {
            let req: CompletionRequest =
                serde_json::from_value(value).map_err(ApiError::invalid_json)?;
            prepare_completion(req, id)?
        }
        Kind::Chat => {
            let req: ChatRequest = serde_json::from_value(value).map_err(ApiError::invalid_json)?;
            prepare_chat(req, id)?
        }
    };
    if prepared.model != s.backend.model_id() {
        return Err(ApiError::model_not_found(&prepared.model));
    }
    Ok(prepared)
}

async fn generate(
    s: &Arc<Inner>,
    kind: Kind,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let n = s.next_id.fetch_add(1, Ordering::Relaxed);
    let prefix = match kind {
        Kind::Completion => "cmpl",
        Kind::Chat => "chatcmpl",
    };
    let id = format!("{prefix}-{:08x}{n:08x}", s.id_salt);
    let prepared = parse(s, kind, body, id.clone())?;
    let permit = s.in_flight.enter();
    let started = Instant::now();
    let deadline = s
        .config
        .request_timeout
        .map(|t| (tokio::time::Instant::now() + t, t));
    let stops = prepared.request.stop.clone();
    let echo = match (&prepared.request.prompt, prepared.echo) {
        (PromptInput::Text(t), true) => Some(t.clone()),
        _ => None,
    };
    let logprobs = prepared.request.logprobs.is_some();
    let tools = prepared
        .tools
        .tools
        .clone()
        .map(|t| (prepared.tools.reply_prefix.clone(), t));
    // Submitting renders the chat template and tokenizes the prompt: CPU work kept off the
    // async threads (they also drive the cluster's QUIC keep-alives).
    let backend = s.backend.clone();
    let request = prepared.request;
    let submitted = tokio::task::spawn_blocking(move || backend.submit(request))
        .await
        .map_err(|e| ApiError::internal(format!("preparing the prompt failed: {e}")))?;
    let stream = submitted.map_err(|e| {
        let mut a = ApiError::from(e);
        if a.code == Some("context_length_exceeded") && kind == Kind::Completion {
            a.param = Some("prompt".to_string());
        }
        a
    })?;
    s.metrics.prompt_tokens.add(stream.prompt_tokens as u64);
    let ctx = ResponseCtx {
        id,
        created: unix_now(),
        model: prepared.model,
        kind,
        started,
        echo,
        logprobs,
        tools,
    };
    if prepared.stream {
        Ok(sse_response(
            s.clone(),
            ctx,
            stream,
            stops,
            prepared.include_usage,
            permit,
            deadline,
        ))
    } else {
        let out = match deadline {
            // Dropping the stream on the deadline cancels the generation.
            Some((at, t)) => tokio::time::timeout_at(at, collect(s, &ctx, stream, &stops))
                .await
                .unwrap_or_else(|_| Err(deadline_error(t))),
            None => collect(s, &ctx, stream, &stops).await,
        };
        drop(permit);
        s.metrics
            .latency(kind.endpoint(), started.elapsed().as_secs_f64());
        let out = out?;
        let usage = Usage::new(out.prompt_tokens, out.completion_tokens);
        let body = match kind {
            Kind::Completion => serde_json::to_value(CompletionResponse {
                id: ctx.id,
                object: "text_completion",
                created: ctx.created,
                model: ctx.model,
                system_fingerprint: None,
                choices: vec![CompletionChoice {
                    text: match ctx.echo {
                        Some(prompt) => prompt + &out.text,
                        None => out.text,
                    },
                    index: 0,
                    logprobs: ctx.logprobs.then(|| {
                        logprobs::CompletionLists::default().lists(&out.prompt, &out.entries)
                    }),
                    finish_reason: Some(out.finish.as_str()),
                }],
                usage: Some(usage),
            }),
            Kind::Chat => {
                let (content, calls) = match &ctx.tools {
                    Some((prefix, offered)) => tools::split_answer(
                        &format!("{prefix}{}", out.text),
                        ctx.call_id_base(),
                        offered,
                    ),
                    None => (Some(out.text), Vec::new()),
                };
                let finish_reason = if calls.is_empty() {
                    out.finish.as_str()
                } else {
                    "tool_calls"
                };
                serde_json::to_value(ChatResponse {
                    id: ctx.id,
                    object: "chat.completion",
                    created: ctx.created,
                    model: ctx.model,
                    system_fingerprint: None,
                    choices: vec![ChatChoice {
                        index: 0,
                        message: ResponseMessage {
                            role: "assistant",
                            content,
                            tool_calls: (!calls.is_empty()).then_some(calls),
                        },
                        logprobs: ctx.logprobs.then(|| logprobs::chat(&out.entries)),
                        finish_reason,
                    }],
                    usage,
                })
            }
        }
        .map_err(|e| ApiError::internal(format!("could not encode the response: {e}")))?;
        Ok(axum::Json(body).into_response())
    }
}

struct ResponseCtx {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
    started: Instant,
    /// The prompt's text, returned before the completion (`echo`).
    echo: Option<String>,
    /// The request asked for log-probabilities.
    logprobs: bool,
    /// Tool calling: the answer is searched for calls; the text the reply was forced to start
    /// with, and the offered tools.
    tools: Option<(String, serde_json::Value)>,
}

impl ResponseCtx {
    /// The base of this response's tool call ids.
    fn call_id_base(&self) -> &str {
        self.id.rsplit('-').next().unwrap_or(&self.id)
    }
}

struct Collected {
    text: String,
    finish: FinishReason,
    prompt_tokens: u32,
    completion_tokens: u32,
    /// The scored prompt (`echo` with `logprobs`).
    prompt: Vec<PromptToken>,
    /// The returned tokens' log-probabilities.
    entries: Vec<TokenLogprob>,
}

/// The error of a request past [`GatewayConfig::request_timeout`].
fn deadline_error(t: Duration) -> ApiError {
    ApiError {
        status: StatusCode::GATEWAY_TIMEOUT,
        message: format!(
            "the request exceeded its deadline of {} s (edgeray serve --request-timeout); \
             the generation was cancelled",
            t.as_secs_f64()
        ),
        kind: "timeout_error",
        param: None,
        code: Some("request_timeout"),
        retry_after: None,
    }
}

async fn collect(
    s: &Inner,
    ctx: &ResponseCtx,
    mut stream: TokenStream,
    stops: &[String],
) -> Result<Collected, ApiError> {
    let mut reader = s.metrics.reader(stops, ctx.started);
    let mut text = String::new();
    let mut prompt = Vec::new();
    let mut entries = Vec::new();
    loop {
        let event = stream.events.recv().await;
        match reader.step(event, stream.prompt_tokens) {
            Step::Nothing => {}
            Step::Prompt(p) => prompt = p,
            Step::Text(out, released) => {
                text.push_str(&out);
                entries.extend(released);
            }
            Step::End {
                text: out,
                entries: released,
                finish,
                usage,
            } => {
                text.push_str(&out);
                entries.extend(released);
                return Ok(Collected {
                    text,
                    finish,
                    prompt_tokens: usage.prompt_tokens,
                    completion_tokens: usage.completion_tokens,
                    prompt,
                    entries,
                });
            }
            Step::Failed(e) => return Err(e),
        }
    }
}

/// State of one streamed response.
struct Streamer {
    s: Arc<Inner>,
    ctx: ResponseCtx,
    events: Option<TokenStream>,
    reader: AnswerReader,
    include_usage: bool,
    permit: Option<InFlightGuard>,
    queue: VecDeque<Event>,
    /// The opening chunk (chat: the role; completions: an echoed prompt) went out.
    opened: bool,
    /// When the request must end, and the configured timeout (for the message).
    deadline: Option<(tokio::time::Instant, Duration)>,
    /// Completions' offsets across chunks.
    lists: logprobs::CompletionLists,
    /// Tool calling: splits the answer into content and calls.
    splitter: Option<tools::ToolCallSplitter>,
}

impl Streamer {
    fn data<T: serde::Serialize>(value: &T) -> Event {
        Event::default().data(serde_json::to_string(value).unwrap_or_else(|_| "{}".to_string()))
    }

    /// A chunk of text; with log-probabilities, those of `prompt` (an echoed prompt's tokens)
    /// and `entries` (the generated tokens the text starts).
    fn text_chunk(
        &mut self,
        text: String,
        finish: Option<FinishReason>,
        prompt: &[PromptToken],
        entries: &[TokenLogprob],
    ) -> Event {
        let called = self.splitter.as_ref().is_some_and(|s| s.calls() > 0);
        let finish_reason = finish.map(|f| if called { "tool_calls" } else { f.as_str() });
        let with_logprobs = self.ctx.logprobs && finish.is_none();
        match self.ctx.kind {
            Kind::Completion => Self::data(&CompletionResponse {
                id: self.ctx.id.clone(),
                object: "text_completion",
                created: self.ctx.created,
                model: self.ctx.model.clone(),
                system_fingerprint: None,
                choices: vec![CompletionChoice {
                    text,
                    index: 0,
                    logprobs: with_logprobs.then(|| self.lists.lists(prompt, entries)),
                    finish_reason,
                }],
                usage: None,
            }),
            Kind::Chat => self.chat_chunk(
                vec![ChunkChoice {
                    index: 0,
                    delta: Delta {
                        role: None,
                        content: if finish.is_some() { None } else { Some(text) },
                        tool_calls: None,
                    },
                    logprobs: with_logprobs.then(|| logprobs::chat(entries)),
                    finish_reason,
                }],
                None,
            ),
        }
    }

    /// A `chat.completion.chunk` of this response.
    fn chat_chunk(&self, choices: Vec<ChunkChoice>, usage: Option<Usage>) -> Event {
        Self::data(&ChatChunk {
            id: self.ctx.id.clone(),
            object: "chat.completion.chunk",
            created: self.ctx.created,
            model: self.ctx.model.clone(),
            system_fingerprint: None,
            choices,
            usage,
        })
    }

    fn usage_chunk(&self, usage: Usage) -> Event {
        match self.ctx.kind {
            Kind::Completion => Self::data(&CompletionResponse {
                id: self.ctx.id.clone(),
                object: "text_completion",
                created: self.ctx.created,
                model: self.ctx.model.clone(),
                system_fingerprint: None,
                choices: vec![],
                usage: Some(usage),
            }),
            Kind::Chat => self.chat_chunk(vec![], Some(usage)),
        }
    }

    /// Queues generated text (with the log-probabilities of the tokens it starts): as content
    /// chunks, or — tool calling — split into content and whole tool calls.
    fn emit(&mut self, text: String, entries: Vec<TokenLogprob>) {
        let Some(splitter) = self.splitter.as_mut() else {
            if !text.is_empty() || !entries.is_empty() {
                let ev = self.text_chunk(text, None, &[], &entries);
                self.queue.push_back(ev);
            }
            return;
        };
        let pieces = splitter.push(&text);
        self.emit_pieces(pieces, entries);
    }

    fn emit_pieces(&mut self, pieces: Vec<tools::Piece>, mut entries: Vec<TokenLogprob>) {
        for p in pieces {
            let ev = match p {
                tools::Piece::Text(t) => self.text_chunk(t, None, &[], &entries),
                tools::Piece::Call(call) => {
                    let index = self.splitter.as_ref().map_or(1, |s| s.calls()) as u32 - 1;
                    self.chat_chunk(
                        vec![ChunkChoice {
                            index: 0,
                            delta: Delta {
                                role: None,
                                content: None,
                                tool_calls: Some(vec![DeltaToolCall { index, call }]),
                            },
                            logprobs: (self.ctx.logprobs && !entries.is_empty())
                                .then(|| logprobs::chat(&entries)),
                            finish_reason: None,
                        }],
                        None,
                    )
                }
            };
            entries.clear();
            self.queue.push_back(ev);
        }
    }

    /// End of generation: final chunk, optional usage chunk, `[DONE]`; frees the slot.
    /// `entries`: the log-probabilities still to go out with `pending` text.
    fn finish(
        &mut self,
        pending: String,
        entries: Vec<TokenLogprob>,
        finish: FinishReason,
        usage: Usage,
    ) {
        self.emit(pending, entries);
        if let Some(s) = self.splitter.as_mut() {
            let rest = s.finish();
            self.emit_pieces(rest, Vec::new());
        }
        let ev = self.text_chunk(String::new(), Some(finish), &[], &[]);
        self.queue.push_back(ev);
        if self.include_usage {
            let ev = self.usage_chunk(usage);
            self.queue.push_back(ev);
        }
        self.queue.push_back(Event::default().data("[DONE]"));
        self.close();
    }

    fn fail(&mut self, error: ApiError) {
        self.queue.push_back(Event::default().data(error.to_json()));
        self.close();
    }

    fn close(&mut self) {
        self.events = None;
        if self.permit.take().is_some() {
            self.s.metrics.latency(
                self.ctx.kind.endpoint(),
                self.ctx.started.elapsed().as_secs_f64(),
            );
        }
    }

    /// Next SSE event, or `None` at the end.
    async fn next(&mut self) -> Option<Event> {
        // An echoed prompt goes first; when it is scored, with the scores (they arrive first).
        if self.ctx.kind == Kind::Completion
            && !self.opened
            && !(self.ctx.echo.is_some() && self.ctx.logprobs)
        {
            self.opened = true;
            if let Some(prompt) = self.ctx.echo.clone() {
                return Some(self.text_chunk(prompt, None, &[], &[]));
            }
        }
        if self.ctx.kind == Kind::Chat && !self.opened {
            self.opened = true;
            return Some(self.chat_chunk(
                vec![ChunkChoice {
                    index: 0,
                    delta: Delta {
                        role: Some("assistant"),
                        content: Some(String::new()),
                        tool_calls: None,
                    },
                    logprobs: None,
                    finish_reason: None,
                }],
                None,
            ));
        }
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return Some(ev);
            }
            let stream = self.events.as_mut()?;
            let prompt_tokens = stream.prompt_tokens;
            let next = match self.deadline {
                Some((at, t)) => tokio::time::timeout_at(at, stream.events.recv())
                    .await
                    .map_err(|_| t),
                None => Ok(stream.events.recv().await),
            };
            let next = match next {
                Ok(n) => n,
                Err(t) => {
                    self.fail(deadline_error(t));
                    continue;
                }
            };
            match self.reader.step(next, prompt_tokens) {
                Step::Nothing => {}
                Step::Prompt(p) => {
                    self.opened = true;
                    let text = self.ctx.echo.clone().unwrap_or_default();
                    return Some(self.text_chunk(text, None, &p, &[]));
                }
                Step::Text(out, entries) => self.emit(out, entries),
                Step::End {
                    text,
                    entries,
                    finish,
                    usage,
                } => self.finish(text, entries, finish, usage),
                Step::Failed(e) => self.fail(e),
            }
        }
    }
}

fn sse_response(
    s: Arc<Inner>,
    ctx: ResponseCtx,
    stream: TokenStream,
    stops: Vec<String>,
    include_usage: bool,
    permit: InFlightGuard,
    deadline: Option<(tokio::time::Instant, Duration)>,
) -> Response {
    let keep_alive = s.config.sse_keep_alive;
    let reader = s.metrics.reader(&stops, ctx.started);
    let mut streamer = Streamer {
        s,
        ctx,
        reader,
        events: Some(stream),
        include_usage,
        permit: Some(permit),
        queue: VecDeque::new(),
        opened: false,
        deadline,
        lists: logprobs::CompletionLists::default(),
        splitter: None,
    };
    if let Some((prefix, offered)) = streamer.ctx.tools.clone() {
        let mut s = tools::ToolCallSplitter::new(streamer.ctx.call_id_base()).with_tools(&offered);
        // The forced start of the reply is part of the answer the splitter reads.
        let pieces = s.push(&prefix);
        streamer.splitter = Some(s);
        streamer.emit_pieces(pieces, Vec::new());
    }
    let events = futures::stream::unfold(streamer, |mut st| async move {
        st.next().await.map(|ev| (Ok::<Event, Infallible>(ev), st))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(keep_alive))
        .into_response()
}
