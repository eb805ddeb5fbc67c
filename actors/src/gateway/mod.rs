//! The OpenAI-compatible HTTP gateway (axum): `GET /v1/models`, `POST /v1/completions`,
//! `POST /v1/chat/completions` (streamed as server-sent events or whole), `GET /metrics`
//! (Prometheus text) and `GET /health`.
//!
//! The gateway talks to token generation only through [`CompletionBackend`]; the pipeline
//! implements it. The backend's `submit` is the one admission point (for a pipeline: its
//! sequence slots and bounded queue); a request it refuses for load gets 429 with
//! `Retry-After` at once, and an admitted request is never dropped for load. Errors use
//! OpenAI's JSON error shape.
//!
//! ```no_run
//! use edgeray::gateway::{EchoBackend, EchoConfig, Gateway, GatewayConfig};
//! use std::sync::Arc;
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let gw = Gateway::new(Arc::new(EchoBackend::new(EchoConfig::default())), GatewayConfig::default())?;
//! let running = gw.spawn("127.0.0.1:0".parse()?).await?;
//! println!("OpenAI base URL: {}", running.base_url());
//! running.shutdown().await?;
//! # Ok(()) }
//! ```

mod access;
mod answer;
mod backend;
mod echo;
mod error;
mod extra_routes;
mod in_flight;
mod logprobs;
mod metrics;
pub mod openai;
mod readiness;
mod server;
mod stop;
mod structured;
mod tools;

pub use access::{AccessConfig, AccessError, ApiKey};
pub use backend::{
    ChatMessage, CompletionBackend, FinishReason, GenerationEvent, GenerationRequest, PromptInput,
    PromptToken, RequestSampling, SubmitError, TokenLogprob, TokenStream, TopLogprob,
};
pub use echo::{EchoBackend, EchoConfig};
pub use error::ApiError;
pub use extra_routes::ExtraRoutes;
pub use metrics::{Counter, Gauge, Histogram, MetricsError, MetricsRegistry};
pub use readiness::Readiness;
pub use server::{Gateway, GatewayConfig, GatewayError, RunningGateway};
pub use stop::{StopMatcher, StopOutcome};
pub use tools::{ToolCallSplitter, join_pieces, split_answer};
