//! A supervised deployment: when a stage (or its node) dies, the pipeline is redeployed on the
//! members still up, and new requests go to the new pipeline.
//!
//! Failure detection is the runtime's: a stage actor's death watch fires when it stops (a node
//! that drains on SIGTERM stops its stages at once) or when its node's QUIC connection times out
//! (membership then marks the node Down, and the scheduler leaves it out). Generations running
//! on the broken pipeline continue on the redeployed one ([`Service::generate`]); requests
//! arriving while it is rebuilt get "unavailable" (HTTP 503) until the new one is up.
//!
//! After every deployment, failover plans are prepared in the background ([`super::spares`]):
//! for each stage node, the placement without it, with its shards already on its nodes. A
//! redeploy after losing that node only starts the stage actors.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeray_runtime::cluster::Cluster;
use parking_lot::RwLock;
use tokio::sync::{mpsc, watch};

use super::deploy::{
    DeployError, DeployOptions, PlannedPlacement, Prepared, deploy_prepared, prepare,
};
use super::engine::{Admission, Finish, GenOptions, GenToken, Pipeline, PipelineError};
use super::scheduler::{cluster_view, place_id, runtime_id};
use super::spares::{FailoverPlans, prepare_failover_plans};

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
    /// The stall of each failover, as the client saw it.
    pub stalls: Vec<Stall>,
}

/// Where one failover's stall went: from the last token before the failure to the first
/// token after it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stall {
    /// Last token until the failure was noticed (QUIC idle timeout, or at once for a stage
    /// that stopped).
    pub detect: Duration,
    /// Failure noticed until the redeployed pipeline was up.
    pub redeploy: Duration,
    /// Redeployed until the next token: the prompt plus the tokens already sent replayed.
    pub replay: Duration,
}

impl Stall {
    /// The whole stall.
    pub fn total(&self) -> Duration {
        self.detect + self.redeploy + self.replay
    }
}

impl std::fmt::Display for Stall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stall {:.1} s (detection {:.1} s, redeploy {:.1} s, replay {:.1} s)",
            self.total().as_secs_f64(),
            self.detect.as_secs_f64(),
            self.redeploy.as_secs_f64(),
            self.replay.as_secs_f64()
        )
    }
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
    plans: Arc<FailoverPlans>,
    planning: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
    spares: bool,
    /// The model file as read once at start.
    prepared: Prepared,
    /// Generations waiting for their first token after a failover.
    resuming: Arc<std::sync::atomic::AtomicUsize>,
}

/// Counts a generation as resuming while it lives.
struct Resuming(Arc<std::sync::atomic::AtomicUsize>);

impl Resuming {
    fn new(n: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        n.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Resuming(n.clone())
    }
}

impl Drop for Resuming {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Longest the preparation of failover plans waits for resumed generations to be streaming
/// again (building and shipping spare shards would slow their replay).
const PLAN_AFTER_RESUME_WAIT: Duration = Duration::from_secs(30);

impl Service {
    /// Deploys `model` and keeps it deployed. The first deployment's error is returned;
    /// later failures are retried until [`Service::shutdown`].
    pub async fn start(
        cluster: Cluster,
        model: PathBuf,
        opts: DeployOptions,
    ) -> Result<Arc<Service>, DeployError> {
        Self::start_with(cluster, model, opts, true).await
    }

    /// Like [`Service::start`]; `spares: false` prepares no failover plans (a redeploy then
    /// builds and ships the shards it needs).
    pub async fn start_with(
        cluster: Cluster,
        model: PathBuf,
        opts: DeployOptions,
        spares: bool,
    ) -> Result<Arc<Service>, DeployError> {
        let t = Instant::now();
        let prepared = prepare(&model, &opts)?;
        let first =
            deploy_prepared(&cluster, &model, &opts, prepared.clone(), None, t.elapsed()).await?;
        let svc = Arc::new(Service {
            cluster,
            model,
            opts,
            current: RwLock::new(Some(first)),
            generation: watch::channel(1).0,
            stop: watch::channel(false).0,
            metrics: parking_lot::Mutex::new(None),
            plans: Arc::new(FailoverPlans::default()),
            planning: parking_lot::Mutex::new(None),
            spares,
            prepared,
            resuming: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        });
        svc.plan_failovers();
        tokio::spawn(svc.clone().supervise());
        Ok(svc)
    }

    /// The options of a redeploy: the stage count may no longer fit, so the policy chooses.
    fn redeploy_options(&self) -> DeployOptions {
        DeployOptions {
            stages: None,
            progress: false,
            ..self.opts.clone()
        }
    }

    /// Starts preparing failover plans for the current pipeline in the background.
    fn plan_failovers(self: &Arc<Self>) {
        if !self.spares {
            return;
        }
        let Some(p) = self.current() else { return };
        let me = Arc::downgrade(self);
        let placement = p.placement().clone();
        let task = tokio::spawn(async move {
            let Some(svc) = me.upgrade() else { return };
            let (cluster, opts, plans, prepared, resuming) = (
                svc.cluster.clone(),
                svc.redeploy_options(),
                svc.plans.clone(),
                svc.prepared.clone(),
                svc.resuming.clone(),
            );
            drop(svc);
            let t = Instant::now();
            while resuming.load(std::sync::atomic::Ordering::Acquire) > 0
                && t.elapsed() < PLAN_AFTER_RESUME_WAIT
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let ready = |n: usize| {
                let registry = me.upgrade().and_then(|s| s.metrics.lock().clone());
                if let Some(r) = &registry
                    && let Ok(g) = r.gauge(
                        "edgeray_failover_plans_ready",
                        "Stage nodes whose loss a prepared failover plan covers (spare shards in place).",
                        &[],
                    )
                {
                    g.set(n as f64);
                }
            };
            ready(0);
            match prepare_failover_plans(&cluster, &prepared, &opts, &placement, &plans).await {
                Ok(n) => ready(n),
                Err(e) => {
                    tracing::warn!(error = %e, "failover plans not prepared; a redeploy will ship shards")
                }
            }
        });
        if let Some(old) = self.planning.lock().replace(task) {
            old.abort();
        }
    }

    /// Failover plans ready for the current pipeline (one per stage node but this one).
    pub fn failover_plans(&self) -> usize {
        self.plans.len()
    }

    /// Waits (up to `timeout`) until the failover plans of the current pipeline are prepared
    /// (their spare shards in place); returns how many there are.
    pub async fn wait_failover_plans(&self, timeout: Duration) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.plans.ready_at().is_some() {
                return Some(self.plans.len());
            }
            let finished = self
                .planning
                .lock()
                .as_ref()
                .is_none_or(|t| t.is_finished());
            if finished || Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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
        let mut stalls = Vec::new();
        // The last token the client got (or when the generation started).
        let mut last_token = Instant::now();
        // After a failure: (noticed, redeployed) while the next token is awaited.
        let mut pending: Option<(Instant, Instant)> = None;
        let mut resuming: Option<Resuming> = None;
        loop {
            let admission = match slot.take() {
                Some(a) => a,
                None => pipeline.admit().await,
            };
            let (tx, mut rx) = mpsc::channel::<GenToken>(4);
            let fwd_out = out.clone();
            let on_first = pending.map(|(noticed, redeployed)| {
                let recorder = self.stall_recorder();
                let from = last_token;
                move |at: Instant| {
                    let stall = Stall {
                        detect: noticed.saturating_duration_since(from),
                        redeploy: redeployed.saturating_duration_since(noticed),
                        replay: at.saturating_duration_since(redeployed),
                    };
                    recorder(&stall);
                    stall
                }
            });
            let forward = tokio::spawn(async move {
                let mut ids = Vec::new();
                let mut on_first = on_first;
                let mut stall = None;
                let mut last = None;
                while let Some(t) = rx.recv().await {
                    let now = Instant::now();
                    if let Some(f) = on_first.take() {
                        stall = Some(f(now));
                    }
                    last = Some(now);
                    ids.push(t.id);
                    if fwd_out.send(t).await.is_err() {
                        break; // receiver gone: dropping rx cancels the generation
                    }
                }
                (ids, stall, last)
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
            let noticed = Instant::now();
            drop(tx);
            drop(admission);
            let (ids, stall, last) = forward.await.unwrap_or_default();
            if let Some(st) = stall {
                tracing::info!(
                    stall_ms = st.total().as_millis() as u64,
                    detect_ms = st.detect.as_millis() as u64,
                    redeploy_ms = st.redeploy.as_millis() as u64,
                    replay_ms = st.replay.as_millis() as u64,
                    "generation resumed after a failover"
                );
                stalls.push(st);
                pending = None;
                resuming = None;
            }
            if let Some(l) = last {
                last_token = l;
            }
            match result {
                Ok(s) => {
                    sent.extend(s.tokens);
                    return Ok(Resumable {
                        finish: s.finish,
                        tokens: sent,
                        resumed,
                        stalls,
                    });
                }
                Err(
                    e @ (PipelineError::Broken(_)
                    | PipelineError::StageFailed { .. }
                    | PipelineError::Unreachable(_)),
                ) if sent.len() + ids.len() < opts.max_tokens && broken_soon(&pipeline).await => {
                    sent.extend(ids);
                    resuming.get_or_insert_with(|| Resuming::new(&self.resuming));
                    // A failure during a replay counts from the first one's last token.
                    let noticed = pending.map_or(noticed, |(n, _)| n);
                    tracing::warn!(error = %e, tokens_sent = sent.len(), "generation interrupted by a failure; waiting for the redeployed pipeline");
                    pipeline = self
                        .wait_current(generation + 1)
                        .await
                        .map_err(|w| PipelineError::Broken(format!("{e}; {w}")))?;
                    generation = self.generation();
                    resumed += 1;
                    pending = Some((noticed, Instant::now()));
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

    /// What records a stall: metrics `edgeray_failover_resumed_total`,
    /// `edgeray_failover_stall_seconds` (last token before the failure to first token after)
    /// and `edgeray_failover_stall_phase_seconds{phase=detect|redeploy|replay}`.
    fn stall_recorder(&self) -> impl Fn(&Stall) + Send + 'static {
        let registry = self.metrics.lock().clone();
        move |st: &Stall| {
            let Some(r) = &registry else { return };
            if let Ok(c) = r.counter(
                "edgeray_failover_resumed_total",
                "Requests that continued on a redeployed pipeline after a failure.",
                &[],
            ) {
                c.inc();
            }
            let buckets = [0.5, 1.0, 2.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0, 64.0, 128.0];
            if let Ok(h) = r.histogram(
                "edgeray_failover_stall_seconds",
                "Stall of a request across a failover: last token before it to first token after.",
                &[],
                &buckets,
            ) {
                h.observe(st.total().as_secs_f64());
            }
            for (phase, d) in [
                ("detect", st.detect),
                ("redeploy", st.redeploy),
                ("replay", st.replay),
            ] {
                if let Ok(h) = r.histogram(
                    "edgeray_failover_stall_phase_seconds",
                    "Failover stall by phase: failure detection, redeploy, replay up to the next token.",
                    &[("phase", phase)],
                    &buckets,
                ) {
                    h.observe(d.as_secs_f64());
                }
            }
        }
    }

    /// Records one failover stall in the metrics (see [`Service::generate`]).
    pub fn record_stall(&self, stall: &Stall) {
        self.stall_recorder()(stall);
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
        if let Some(t) = self.planning.lock().take() {
            t.abort();
        }
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
            let broken_at = Instant::now();
            tracing::warn!(reason = %why, "pipeline broken; redeploying on the members still up");
            *self.current.write() = None;
            if let Some(t) = self.planning.lock().take() {
                t.abort();
            }
            let plan = self.usable_plan(&p);
            self.plans.clear();
            p.shutdown().await;
            let opts = self.redeploy_options();
            let mut attempt = 0u32;
            loop {
                // The first attempt at once; later ones after a pause.
                if attempt > 0 {
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
                attempt += 1;
                let planned = plan.as_ref().filter(|_| attempt == 1);
                let prepared = self.prepared.clone();
                match deploy_prepared(
                    &self.cluster,
                    &self.model,
                    &opts,
                    prepared,
                    planned,
                    Duration::ZERO,
                )
                .await
                {
                    Ok(p) => {
                        let stages = p.placement().stages.len();
                        if let Some(r) = &*self.metrics.lock() {
                            p.export_metrics(r);
                        }
                        let t = p.deploy_timings();
                        *self.current.write() = Some(p);
                        self.generation.send_modify(|g| *g += 1);
                        tracing::info!(
                            stages,
                            generation = self.generation(),
                            planned = t.planned,
                            redeploy_ms = broken_at.elapsed().as_millis() as u64,
                            shards_ms = t.shards.as_millis() as u64,
                            stages_ms = t.stages.as_millis() as u64,
                            "pipeline redeployed"
                        );
                        self.plan_failovers();
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, planned = planned.is_some(), "redeploy failed; retrying")
                    }
                }
            }
        }
    }

    /// The failover plan for the node whose stage broke `p`, if one is ready and every node
    /// it uses is still up.
    fn usable_plan(&self, p: &Pipeline) -> Option<PlannedPlacement> {
        let k = p.broken_stage()?;
        let lost = runtime_id(&p.placement().stages.get(k)?.node).ok()?;
        let Some(plan) = self.plans.for_loss(&lost) else {
            tracing::info!(lost = %lost.short(), "no failover plan ready for this node");
            return None;
        };
        let view = cluster_view(&self.cluster);
        let up = |id: &crate::placement::NodeId| view.nodes.iter().any(|n| &n.id == id);
        let usable = plan.placement.stages.iter().all(|s| up(&s.node))
            && !plan
                .placement
                .stages
                .iter()
                .any(|s| s.node == place_id(&lost));
        if !usable {
            tracing::info!(lost = %lost.short(), "the failover plan uses a node that is not up");
        }
        usable.then_some(plan)
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
