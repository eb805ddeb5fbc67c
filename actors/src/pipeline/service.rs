//! A supervised deployment: when a stage (or its node) dies, the pipeline is redeployed on the
//! members still up, and new requests go to the new pipeline.
//!
//! Failure detection is the runtime's: a stage actor's death watch fires when it stops or when
//! its node's QUIC connection times out (membership then marks the node Down, and the scheduler
//! leaves it out). Requests running on the broken pipeline end with an error; requests arriving
//! while it is rebuilt get "unavailable" (HTTP 503) until the new one is up.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use edgeray_runtime::cluster::Cluster;
use parking_lot::RwLock;
use tokio::sync::{mpsc, watch};

use super::deploy::{DeployError, DeployOptions, deploy};
use super::engine::{Admission, Finish, GenOptions, GenToken, Pipeline, PipelineError};

/// How long a request waits for a redeployed pipeline after a failure mid-answer.
pub const FAILOVER_WAIT: Duration = Duration::from_secs(120);

/// A generation that may have survived failovers.
#[derive(Debug, Clone)]
pub struct Resumable {
    /// Why it ended.
    pub finish: Finish,
    /// Every generated token, in order, each sent once.
    pub tokens: Vec<u32>,
    /// Failovers it survived.
    pub resumed: u32,
}

/// Pause between redeploy attempts.
const RETRY: Duration = Duration::from_secs(1);

/// A model kept deployed on a cluster.
pub struct Service {
    cluster: Cluster,
    model: PathBuf,
    opts: DeployOptions,
    current: RwLock<Option<Pipeline>>,
    generation: watch::Sender<u64>,
    stop: watch::Sender<bool>,
    metrics: parking_lot::Mutex<Option<crate::gateway::MetricsRegistry>>,
}

impl Service {
    /// Deploys `model` and keeps it deployed. The first deployment's error is returned;
    /// later failures are retried until [`Service::shutdown`].
    pub async fn start(
        cluster: Cluster,
        model: PathBuf,
        opts: DeployOptions,
    ) -> Result<Arc<Service>, DeployError> {
        let first = deploy(&cluster, &model, &opts).await?;
        let svc = Arc::new(Service {
            cluster,
            model,
            opts,
            current: RwLock::new(Some(first)),
            generation: watch::channel(1).0,
            stop: watch::channel(false).0,
            metrics: parking_lot::Mutex::new(None),
        });
        tokio::spawn(svc.clone().supervise());
        Ok(svc)
    }

    /// The pipeline serving now (`None` while it is being redeployed).
    pub fn current(&self) -> Option<Pipeline> {
        self.current.read().clone()
    }

    /// Generates from `prompt`, surviving failovers: when the pipeline breaks mid-answer, it waits
    /// for the redeployed pipeline and continues there, replaying the prompt plus the tokens
    /// already sent to rebuild the KV cache, so `out` receives every token once, in order
    /// (greedy output is that of an undisturbed run). `start` is a pipeline already admitted
    /// on (and the generation it belongs to); without it, the current one is used.
    pub async fn generate(
        &self,
        start: Option<(Pipeline, Admission, u64)>,
        prompt: Vec<u32>,
        opts: &GenOptions,
        out: &mpsc::Sender<GenToken>,
    ) -> Result<Resumable, PipelineError> {
        let (mut pipeline, first, mut generation) = match start {
            Some((p, a, g)) => (p, Some(a), g),
            None => {
                let g = self.generation();
                let p = match self.current() {
                    Some(p) => p,
                    None => self.wait_current(g + 1).await?,
                };
                (p, None, g)
            }
        };
        let mut slot = first;
        let mut sent: Vec<u32> = Vec::new();
        let mut resumed = 0;
        loop {
            let admission = match slot.take() {
                Some(a) => a,
                None => pipeline.admit().await,
            };
            let (tx, mut rx) = mpsc::channel::<GenToken>(4);
            let fwd_out = out.clone();
            let forward = tokio::spawn(async move {
                let mut ids = Vec::new();
                while let Some(t) = rx.recv().await {
                    ids.push(t.id);
                    if fwd_out.send(t).await.is_err() {
                        break; // receiver gone: dropping rx cancels the generation
                    }
                }
                ids
            });
            let mut input = prompt.clone();
            input.extend_from_slice(&sent);
            let step = GenOptions {
                max_tokens: opts.max_tokens.saturating_sub(sent.len()),
                sampling: opts.sampling.clone(),
            };
            let result = pipeline
                .generate_admitted(&admission, input, &step, &tx)
                .await;
            drop(tx);
            drop(admission);
            let ids = forward.await.unwrap_or_default();
            match result {
                Ok(s) => {
                    sent.extend(s.tokens);
                    return Ok(Resumable {
                        finish: s.finish,
                        tokens: sent,
                        resumed,
                    });
                }
                Err(
                    e @ (PipelineError::Broken(_)
                    | PipelineError::StageFailed { .. }
                    | PipelineError::Unreachable(_)),
                ) if sent.len() + ids.len() < opts.max_tokens && broken_soon(&pipeline).await => {
                    sent.extend(ids);
                    let stall = std::time::Instant::now();
                    tracing::warn!(error = %e, tokens_sent = sent.len(), "generation interrupted by a failure; waiting for the redeployed pipeline");
                    pipeline = self
                        .wait_current(generation + 1)
                        .await
                        .map_err(|w| PipelineError::Broken(format!("{e}; {w}")))?;
                    generation = self.generation();
                    resumed += 1;
                    self.record_stall(stall.elapsed());
                    tracing::info!(
                        stall_ms = stall.elapsed().as_millis() as u64,
                        tokens_sent = sent.len(),
                        "generation resumes on the redeployed pipeline"
                    );
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits (up to [`FAILOVER_WAIT`]) for pipeline generation `n` and returns the current one.
    async fn wait_current(&self, n: u64) -> Result<Pipeline, PipelineError> {
        if !self.wait_generation(n, FAILOVER_WAIT).await {
            return Err(PipelineError::Broken(format!(
                "no pipeline was redeployed within {FAILOVER_WAIT:?}"
            )));
        }
        self.current()
            .ok_or_else(|| PipelineError::Broken("the service is shutting down".into()))
    }

    /// Sends the metrics of this pipeline and of every redeployed one to `registry`.
    pub fn export_metrics(&self, registry: &crate::gateway::MetricsRegistry) {
        *self.metrics.lock() = Some(registry.clone());
        if let Some(p) = self.current() {
            p.export_metrics(registry);
        }
    }

    /// Records that a request waited `stall` for a redeployed pipeline (metrics
    /// `edgeray_failover_resumed_total` and `edgeray_failover_stall_seconds`).
    pub fn record_stall(&self, stall: Duration) {
        if let Some(r) = &*self.metrics.lock() {
            if let Ok(c) = r.counter(
                "edgeray_failover_resumed_total",
                "Requests that continued on a redeployed pipeline after a failure.",
                &[],
            ) {
                c.inc();
            }
            if let Ok(h) = r.histogram(
                "edgeray_failover_stall_seconds",
                "How long requests waited for a redeployed pipeline.",
                &[],
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0],
            ) {
                h.observe(stall.as_secs_f64());
            }
        }
    }

    /// How many pipelines have been deployed so far (1 before any failover).
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// Waits until at least `n` pipelines have been deployed, up to `timeout`.
    pub async fn wait_generation(&self, n: u64, timeout: Duration) -> bool {
        let mut rx = self.generation.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|g| *g >= n))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Stops supervising and shuts the current pipeline down.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let p = self.current.write().take();
        if let Some(p) = p {
            p.shutdown().await;
        }
    }

    async fn supervise(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        loop {
            let Some(p) = self.current() else { return };
            let why = tokio::select! {
                w = p.wait_broken() => w,
                _ = stop.wait_for(|s| *s) => return,
            };
            if *stop.borrow() {
                return;
            }
            tracing::warn!(reason = %why, "pipeline broken; redeploying on the members still up");
            *self.current.write() = None;
            p.shutdown().await;
            // The stage count may no longer fit: let the policy choose.
            let opts = DeployOptions {
                stages: None,
                progress: false,
                ..self.opts.clone()
            };
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                match deploy(&self.cluster, &self.model, &opts).await {
                    Ok(p) => {
                        let stages = p.placement().stages.len();
                        if let Some(r) = &*self.metrics.lock() {
                            p.export_metrics(r);
                        }
                        *self.current.write() = Some(p);
                        self.generation.send_modify(|g| *g += 1);
                        tracing::info!(
                            stages,
                            generation = self.generation(),
                            "pipeline redeployed"
                        );
                        break;
                    }
                    Err(e) => tracing::warn!(error = %e, "redeploy failed; retrying"),
                }
            }
        }
    }
}

/// Whether `p` is (or within a few seconds becomes) broken: a failed batch caused by a dying
/// stage is followed by its death watch; any other failure is the request's own.
async fn broken_soon(p: &Pipeline) -> bool {
    p.broken().is_some()
        || tokio::time::timeout(Duration::from_secs(10), p.wait_broken())
            .await
            .is_ok()
}
