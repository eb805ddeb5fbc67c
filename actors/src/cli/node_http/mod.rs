//! `edgeray node --http ADDR`: a board's own HTTP endpoint, `GET /metrics` (Prometheus /
//! OpenMetrics text from the `prometheus-client` crate: memory, load, temperature, shard cache,
//! link RTT and bandwidth, members by state, peers lost) and `GET /health`. Read-only; it
//! serves no API and needs no key.

pub mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use edgeray_runtime::cluster::Cluster;
use edgeray_runtime::config::ClusterConfig;
use edgeray_runtime::membership::{MemberState, MembershipEvent};
use parking_lot::Mutex;

use metrics::{CONTENT_TYPE, LinkSample, NodeMetrics, NodeSample};

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeHttpError {
    /// The address could not be bound.
    #[error("cannot listen on {addr} (--http): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The cluster has no node (an actor system without networking).
    #[error("the actor system has no node")]
    NoNode,
}

struct Inner {
    cluster: Cluster,
    config: ClusterConfig,
    metrics: Mutex<NodeMetrics>,
}

/// The running endpoint.
pub struct NodeHttp {
    /// The bound address.
    pub local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl NodeHttp {
    /// Binds `addr` and serves `/metrics` and `/health` for the node of `cluster` (`config`:
    /// its configuration, for the resource overrides and the shard cache budget).
    pub async fn start(
        addr: SocketAddr,
        cluster: Cluster,
        config: ClusterConfig,
    ) -> Result<NodeHttp, NodeHttpError> {
        let node = cluster.node().ok_or(NodeHttpError::NoNode)?.clone();
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| NodeHttpError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| NodeHttpError::Bind { addr, source })?;
        let inner = Arc::new(Inner {
            cluster,
            config,
            metrics: Mutex::new(NodeMetrics::new()),
        });
        // Count members going Down from now on.
        let mut events = node.subscribe();
        let counting = inner.clone();
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match events.recv().await {
                    Ok(MembershipEvent::MemberDown { reason, .. }) => {
                        counting.metrics.lock().peer_lost(&reason.to_string())
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                }
            }
        });
        let app = axum::Router::new()
            .route("/metrics", get(scrape))
            .route("/health", get(health))
            .with_state(inner);
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "node HTTP endpoint stopped");
            }
        });
        Ok(NodeHttp { local_addr, task })
    }

    /// Stops serving.
    pub fn stop(self) {
        self.task.abort();
    }
}

/// Reads the board, the member table and the shard cache (blocking file reads).
fn sample(inner: &Inner) -> NodeSample {
    let r = edgeray_runtime::resources::measure(&inner.config, 0.0);
    let members = inner.cluster.members();
    let mut by_state: Vec<(String, u64)> = Vec::new();
    for m in &members {
        let s = m.state.to_string();
        match by_state.iter_mut().find(|(k, _)| *k == s) {
            Some((_, n)) => *n += 1,
            None => by_state.push((s, 1)),
        }
    }
    let links = members
        .iter()
        .filter(|m| !m.is_self && m.state != MemberState::Down)
        .map(|m| LinkSample {
            peer: m.name.clone(),
            rtt_s: m.rtt.map(|d| d.as_secs_f64()),
            bandwidth_bps: m.bandwidth_bps.filter(|b| b.is_finite() && *b > 0.0),
        })
        .collect();
    let mut s = NodeSample {
        memory_total_bytes: r.memory_total,
        memory_available_bytes: r.memory_free,
        memory_budget_bytes: r.memory_budget,
        power_budget_watts: r.power_budget_mw.map(|mw| mw as f64 / 1000.0),
        load1: f64::from(r.load1),
        temperature_celsius: r.temperature_c.map(f64::from),
        cpus: u64::from(r.cpus),
        roles: inner.cluster.node().map_or(0, |n| n.roles().len() as u64),
        members: by_state,
        links,
        ..NodeSample::default()
    };
    match crate::pipeline::stage::open_shard_store(&inner.cluster).and_then(|st| {
        let l = st.list()?;
        Ok((l, st.budget()))
    }) {
        Ok((l, budget)) => {
            s.shard_cache_bytes = l.shards.iter().map(|x| x.bytes).sum();
            s.shard_partial_bytes = l.partial_bytes;
            s.shard_count = l.shards.len() as u64;
            s.shard_cache_budget_bytes = budget;
        }
        Err(e) => tracing::debug!(error = %e, "shard cache not readable for /metrics"),
    }
    s
}

async fn scrape(State(inner): State<Arc<Inner>>) -> Response {
    let text = tokio::task::spawn_blocking(move || {
        let s = sample(&inner);
        let m = inner.metrics.lock();
        m.update(&s);
        m.render()
    })
    .await;
    match text {
        Ok(t) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], t).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn health(State(inner): State<Arc<Inner>>) -> Response {
    let members = inner.cluster.members();
    let name = inner
        .cluster
        .node()
        .map(|n| n.name().to_string())
        .unwrap_or_default();
    axum::Json(serde_json::json!({
        "status": "ok",
        "node": name,
        "node_id": inner.cluster.node_id().to_hex(),
        "members_up": members.iter().filter(|m| m.state == MemberState::Up).count(),
    }))
    .into_response()
}
