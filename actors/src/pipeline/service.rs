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
use tokio::sync::watch;

use super::deploy::{DeployError, DeployOptions, deploy};
use super::engine::Pipeline;

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
