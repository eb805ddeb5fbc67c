//! `serve`'s first dashboard: `GET /` (one HTML page with its script and style embedded in the
//! binary: a Pi LAN has no CDN) and `GET /api/cluster`, the JSON it polls: the
//! `edgeray status --json` schema (members, roles, head; see
//! `edgeray_runtime::membership::status`) as the coordinator sees it, plus `placement` (the
//! pipeline serving now, `null` while it is redeployed) and `serving` (`ok`, `redeploying` or
//! `failed`, as `/health` says). The page lists the members and the placement every 2 s and has
//! a chat box that streams an answer through `/v1/chat/completions`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use edgeray_runtime::cluster::Cluster;

use crate::gateway::CompletionBackend;
use crate::pipeline::{PipelineBackend, Service};

/// The page, embedded at build time.
const INDEX_HTML: &str = include_str!("index.html");

struct Inner {
    cluster: Cluster,
    service: Arc<Service>,
    backend: Arc<PipelineBackend>,
}

/// The dashboard's routes for the coordinator node `cluster`, its supervised `service` and the
/// `backend` the API serves (for the model id and readiness).
pub fn routes(
    cluster: Cluster,
    service: Arc<Service>,
    backend: Arc<PipelineBackend>,
) -> axum::Router {
    axum::Router::new()
        .route("/", get(index))
        .route("/api/cluster", get(api_cluster))
        .with_state(Arc::new(Inner {
            cluster,
            service,
            backend,
        }))
}

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX_HTML,
    )
        .into_response()
}

async fn api_cluster(State(inner): State<Arc<Inner>>) -> Response {
    let Some(node) = inner.cluster.node() else {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "the coordinator has no cluster node",
        )
            .into_response();
    };
    let mut v = match serde_json::to_value(node.status()) {
        Ok(v) => v,
        Err(e) => {
            return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
        }
    };
    let placement = inner
        .service
        .current()
        .and_then(|p| serde_json::to_value(p.placement()).ok())
        .unwrap_or(serde_json::Value::Null);
    v["placement"] = placement;
    v["model"] = inner.backend.model_id().into();
    v["serving"] = inner.backend.readiness().status_word().into();
    axum::Json(v).into_response()
}
