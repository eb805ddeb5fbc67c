//! A supervised deployment: when a stage (or its node) dies, the pipeline is redeployed on the
//! members still up, and new requests go to the new pipeline.
//!
//! Failure detection is the runtime's: a stage actor's death watch fires when it stops (a node
//! that drains on SIGTERM stops its stages at once) or when its node's QUIC connection times out
//! (membership then marks the node Down, and the scheduler leaves it out). Generations running
//! on the broken pipeline continue on the redeployed one ([`Service::generate`]); requests
//! arriving while it is rebuilt get "unavailable" (HTTP 503) until the new one is up.
//! A redeploy that fails because a node has no room for its shard (its `limits.shard_cache`
//! budget or its disk) is not retried: the service stops redeploying and every waiting or new
//! request fails at once with that reason ([`Service::failure`]).
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
use super::driver::{Resume, Slot, TokenSink, drive};
use super::engine::{Admission, GenOptions, GenToken, Pipeline, PipelineError};
use super::sequence::{Finish, Stall};
use super::spares::{FailoverPlans, prepare_failover_plans};
use crate::pipeline::head::{cluster_view, place_id, runtime_id};

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

/// Pause between redeploy attempts.
const RETRY: Duration = Duration::from_secs(1);

/// A model kept deployed on a cluster.
pub struct Service {
    cluster: Cluster,
    model: PathBuf,
    opts: DeployOptions,
    current: RwLock<Option<Pipeline>>,
    generation: watch::Sender<u64>,
    /// Why redeploying was given up, if it was.
    failed: watch::Sender<Option<String>>,
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
pub(crate) struct Resuming(Arc<std::sync::atomic::AtomicUsize>);

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
            failed: watch::channel(None).0,
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
            tp_strict: false,
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
    /// (greedy output is that of an undisturbed run). `start` is a pipeline the request was already
    /// checked ([`Pipeline::check`]) and admitted on, and the generation it belongs to; without
    /// it, the request is checked against the current one and waits for a slot there.
    pub async fn generate(
        &self,
        start: Option<(Pipeline, Admission, u64)>,
        prompt: Vec<u32>,
        opts: &GenOptions,
        out: &mpsc::Sender<GenToken>,
    ) -> Result<Resumable, PipelineError> {
        self.generate_into(start, prompt, opts, out).await
    }

    /// Like [`Service::generate`], handing the tokens to any [`TokenSink`] (the gateway's
    /// event stream).
    pub(crate) async fn generate_into(
        &self,
        start: Option<(Pipeline, Admission, u64)>,
        prompt: Vec<u32>,
        opts: &GenOptions,
        out: &impl TokenSink,
    ) -> Result<Resumable, PipelineError> {
        let (pipeline, slot, generation) = match start {
            Some((p, a, g)) => (p, Slot::Owned(a), g),
            None => {
                let g = self.generation();
                let p = match self.current() {
                    Some(p) => p,
                    None => self.wait_current(g + 1).await?,
                };
                p.check(prompt.len(), 0, opts)?;
                (p, Slot::Wait, g)
            }
        };
        let resume = Resume {
            service: self,
            generation,
        };
        let o = drive(pipeline, slot, Some(resume), prompt, opts, out).await?;
        Ok(Resumable {
            finish: o.summary.finish,
            tokens: o.summary.tokens,
            resumed: o.resumed,
            stalls: o.stalls,
        })
    }

    /// Counts a generation as waiting to resume after a failover while the guard lives.
    pub(crate) fn resuming(&self) -> Resuming {
        Resuming::new(&self.resuming)
    }

    /// Why the service gave up redeploying (a node without room for its shard), if it did.
    pub fn failure(&self) -> Option<String> {
        self.failed.borrow().clone()
    }

    /// Waits (up to [`FAILOVER_WAIT`]) for pipeline generation `n` and returns the current one;
    /// fails at once when the service has given up redeploying.
    pub(crate) async fn wait_current(&self, n: u64) -> Result<Pipeline, PipelineError> {
        let gave_up = |why: &str| {
            PipelineError::Broken(format!(
                "the pipeline broke and cannot be redeployed: {why}"
            ))
        };
        if let Some(why) = self.failure() {
            return Err(gave_up(&why));
        }
        let mut failed = self.failed.subscribe();
        let redeployed = tokio::select! {
            ok = self.wait_generation(n, FAILOVER_WAIT) => ok,
            _ = failed.wait_for(|f| f.is_some()) => false,
        };
        if let Some(why) = self.failure() {
            return Err(gave_up(&why));
        }
        if !redeployed {
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
    pub(crate) fn record_stall(&self, stall: &Stall) {
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
                    Err(e) if e.is_no_room() => {
                        tracing::error!(error = %e, "redeploy failed: a node has no room for its shard; not retrying (free disk space or raise limits.shard_cache, then restart)");
                        self.failed.send_replace(Some(e.to_string()));
                        return;
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
        let up = |id: &crate::placement::MemberId| view.nodes.iter().any(|n| &n.id == id);
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
