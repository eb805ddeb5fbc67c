//! Deploying a model on the cluster: ask the head node's scheduler for a placement, ship each stage node its shard, spawn the stage
//! actors wired point-to-point (last to first, so each knows its successor), and the sink.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use edgeray_model::arch::{ModelConfig, StageSpec};
use edgeray_model::chat::ChatTemplate;
use edgeray_model::gguf::GgufFile;
use edgeray_model::shard::build_stage_shard;
use edgeray_model::tokenizer::Tokenizer;
use edgeray_runtime::actor::{Resources, SpawnError};
use edgeray_runtime::cluster::{Cluster, SpawnOptions};

use super::engine::{Deployed, Pipeline};
use super::placement_check::{KnownMember, PlacementCheckError, check_placement};
use super::shipping::{ShipError, node_has_shard, ship_shard};
use super::sink::{Routes, SinkActor, SinkSenders, register_routes, unregister_routes};
use crate::pipeline::head::{PlaceAsk, PolicySpec, ask_placement};
use crate::pipeline::head::{ScheduleError, cluster_view, place_id, runtime_id};
use crate::pipeline::protocol::WireDtype;
use crate::pipeline::protocol::{StageArgs, StageMsg, TpArgs};
use crate::pipeline::stage::StageActor;
use crate::pipeline::stage::shard_store::content_hash;
use crate::placement::GroupSlot;
use crate::placement::Placement;
use crate::placement::types::DEFAULT_STAGE_OVERHEAD_BYTES;
use edgeray_runtime::actor::ActorRef;

/// How to deploy.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    /// Placement policy name (`throughput`, `memory`, `power`).
    pub policy: String,
    /// Exactly this many stages (the policy's best such candidate); `None`: the policy decides.
    pub stages: Option<usize>,
    /// Positions per sequence (KV cache size).
    pub ctx: usize,
    /// Kernel threads per stage.
    pub threads: usize,
    /// Element type of hidden states between stages.
    pub dtype: WireDtype,
    /// Sequences generated at once.
    pub max_sequences: usize,
    /// Requests allowed to wait for a slot before new ones are refused.
    pub max_queued: usize,
    /// Progress bars on stderr.
    pub progress: bool,
    /// Boards per stage (tensor-parallel group size, 1: a plain stage). Each stage's group is
    /// its placed node (the leader) plus `tp - 1` nodes no stage uses.
    pub tp: usize,
    /// With too few nodes for groups of `tp`, fail (`true`, a first deployment) or make the
    /// groups as wide as the nodes allow (`false`, a redeploy after a loss: still exact).
    pub tp_strict: bool,
}

impl Default for DeployOptions {
    fn default() -> Self {
        DeployOptions {
            policy: "throughput".into(),
            stages: None,
            ctx: 2048,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            dtype: WireDtype::default(),
            max_sequences: 4,
            max_queued: 16,
            progress: false,
            tp: 1,
            tp_strict: true,
        }
    }
}

/// Why a deployment failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The model file is unusable.
    #[error("model {path}: {reason}")]
    Model {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Invalid options.
    #[error("{0}")]
    Options(String),
    /// No placement.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// The head's placement did not pass the coordinator's own checks (nothing was shipped).
    #[error("the head's placement was refused: {0}")]
    Placement(#[from] PlacementCheckError),
    /// A shard could not be built.
    #[error("cannot build the shard of stage {stage}: {reason}")]
    Shard {
        /// Stage index.
        stage: usize,
        /// Why.
        reason: String,
    },
    /// A shard could not be shipped.
    #[error(transparent)]
    Ship(#[from] ShipError),
    /// An actor could not be spawned.
    #[error("cannot start {what} on node {node}: {error}")]
    Spawn {
        /// Which actor.
        what: String,
        /// Node name.
        node: String,
        /// Why.
        error: SpawnError,
    },
}

impl DeployError {
    /// Whether a stage node has no room for its shard (cache budget, free disk space, or a
    /// disk that filled up): deploying again the same way cannot succeed until an operator
    /// frees space or raises `limits.shard_cache`.
    pub fn is_no_room(&self) -> bool {
        matches!(self, DeployError::Ship(ShipError::NoRoom { .. }))
    }
}

/// What a deployment reads from the model file once: its configuration, tokenizer, chat
/// template and the placement profile.
#[derive(Clone)]
pub(crate) struct Prepared {
    pub file: Arc<GgufFile>,
    pub config: ModelConfig,
    pub tokenizer: Arc<Tokenizer>,
    pub chat: Arc<ChatTemplate>,
    pub ctx: usize,
    pub profile: crate::placement::ModelProfile,
}

/// Opens `model` and checks `opts`.
pub(crate) fn prepare(model: &Path, opts: &DeployOptions) -> Result<Prepared, DeployError> {
    let model_err = |reason: String| DeployError::Model {
        path: model.display().to_string(),
        reason,
    };
    if opts.max_sequences == 0 || opts.ctx < 2 || opts.threads == 0 || opts.tp == 0 {
        return Err(DeployError::Options(
            "max_sequences and threads must be > 0 and the context at least 2".into(),
        ));
    }
    let file = Arc::new(GgufFile::open(model).map_err(|e| model_err(e.to_string()))?);
    let config = ModelConfig::from_gguf(&file).map_err(|e| model_err(e.to_string()))?;
    let tokenizer = Arc::new(Tokenizer::from_gguf(&file).map_err(|e| model_err(e.to_string()))?);
    let chat = Arc::new(
        ChatTemplate::from_metadata(file.metadata()).map_err(|e| model_err(e.to_string()))?,
    );
    let ctx = opts.ctx.min(config.context_length);
    let profile =
        crate::placement::profile_from_gguf(&file, Some(ctx), DEFAULT_STAGE_OVERHEAD_BYTES)
            .map_err(|e| model_err(e.to_string()))?;
    Ok(Prepared {
        file,
        config,
        tokenizer,
        chat,
        ctx,
        profile,
    })
}

/// Builds stage `k`'s shard (all metadata, only the tensors of `layers`) off the async threads.
pub(crate) async fn build_shard(
    file: &Arc<GgufFile>,
    config: &ModelConfig,
    k: usize,
    layers: std::ops::Range<usize>,
) -> Result<Vec<u8>, DeployError> {
    let spec = StageSpec::for_range(layers, config.n_layers);
    let f = file.clone();
    tokio::task::spawn_blocking(move || build_stage_shard(&f, &spec))
        .await
        .map_err(|e| DeployError::Shard {
            stage: k,
            reason: e.to_string(),
        })?
        .map_err(|e| DeployError::Shard {
            stage: k,
            reason: e.to_string(),
        })
}

/// A placement decided in advance (a failover plan), with each stage's shard as content hash
/// and length: a stage node that already holds its shard gets nothing, not even a rebuild.
#[derive(Debug, Clone)]
pub struct PlannedPlacement {
    /// Where each stage goes.
    pub placement: Placement,
    /// `(content hash, bytes)` of each stage's shard.
    pub shards: Vec<(String, u64)>,
}

/// Where the time of a deployment went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DeployTimings {
    /// Opening the model file (config, tokenizer, profile).
    pub prepare: Duration,
    /// Choosing the placement.
    pub placement: Duration,
    /// Building and shipping shards (or finding them cached).
    pub shards: Duration,
    /// Spawning the sink and the stage actors (loading their layers).
    pub stages: Duration,
    /// Whether a placement planned in advance was used.
    pub planned: bool,
}

/// Deploys the GGUF model at `model` on `cluster` (this node coordinates).
pub async fn deploy(
    cluster: &Cluster,
    model: &Path,
    opts: &DeployOptions,
) -> Result<Pipeline, DeployError> {
    deploy_with(cluster, model, opts, None).await
}

/// Like [`deploy`]; with `plan`, its placement is used instead of scheduling, and shards the
/// stage nodes already hold are neither built nor sent.
pub async fn deploy_with(
    cluster: &Cluster,
    model: &Path,
    opts: &DeployOptions,
    plan: Option<&PlannedPlacement>,
) -> Result<Pipeline, DeployError> {
    let t = Instant::now();
    let prepared = prepare(model, opts)?;
    deploy_prepared(cluster, model, opts, prepared, plan, t.elapsed()).await
}

/// [`deploy_with`] with the model file already read (`prepare_time`: what that took).
pub(crate) async fn deploy_prepared(
    cluster: &Cluster,
    model: &Path,
    opts: &DeployOptions,
    prepared: Prepared,
    plan: Option<&PlannedPlacement>,
    prepare_time: Duration,
) -> Result<Pipeline, DeployError> {
    let mut timings = DeployTimings::default();
    let Prepared {
        file,
        config,
        tokenizer,
        chat,
        ctx,
        profile,
    } = prepared;
    timings.prepare = prepare_time;
    let t = Instant::now();
    let placement = match plan {
        Some(p) => {
            timings.planned = true;
            p.placement.clone()
        }
        None => {
            // The head node's scheduler actor places the model on its view of the cluster.
            let policy = PolicySpec::named(&opts.policy);
            policy
                .build()
                .map_err(|e| DeployError::Options(e.to_string()))?;
            // With groups, as many stages as the live nodes make whole groups unless told.
            let stages = match opts.stages {
                None if opts.tp > 1 => Some((live_nodes(cluster).len() / opts.tp).max(1)),
                s => s,
            };
            let ask = PlaceAsk {
                profile: profile.clone(),
                policy,
                stages,
                known: Vec::new(),
            };
            let answer = ask_placement(cluster, &ask)
                .await
                .map_err(|e| ScheduleError::Scheduler(e.to_string()))?;
            let placement = answer.placement.map_err(ScheduleError::Rejected)?;
            // The head is just another member: its answer is checked against what this node
            // knows itself before any shard leaves it.
            check_placement(&placement, config.n_layers, &known_members(cluster))?;
            placement
        }
    };
    let mut placement = placement;
    if opts.tp > 1 {
        assign_groups(cluster, &file, &config, &mut placement, opts)?;
    }
    timings.placement = t.elapsed();
    // Admission: never more sequences than every stage's node can hold KV caches for.
    let kv_capacity = placement.kv_sequence_capacity();
    let max_sequences = opts.max_sequences.min(kv_capacity);
    if max_sequences < opts.max_sequences {
        tracing::warn!(
            asked = opts.max_sequences,
            kv_capacity,
            ctx,
            "fewer concurrent sequences than asked: their KV caches at this context would not fit the nodes' memory budgets"
        );
    }
    let opts = &DeployOptions {
        max_sequences,
        ..opts.clone()
    };
    tracing::info!(
        policy = %placement.policy,
        stages = placement.stages.len(),
        predicted_tokens_per_s = placement.prediction.tokens_per_s,
        "placement chosen"
    );

    // Ship every stage its shard (one shard in memory at a time).
    let t = Instant::now();
    let mut shards = Vec::new();
    let mut shipped = 0u64;
    let bars = opts.progress.then(indicatif::MultiProgress::new);
    for (k, st) in placement.stages.iter().enumerate() {
        let node = runtime_id(&st.node)?;
        if let Some((hash, len)) = plan.and_then(|p| p.shards.get(k))
            && node_has_shard(cluster, node, hash, *len).await?
            && st.group.is_empty()
        {
            tracing::info!(stage = k, node = %st.node_name, "planned shard already in place");
            shards.push(hash.clone());
            continue;
        }
        let bytes = build_shard(&file, &config, k, st.layers.clone()).await?;
        // Every other member of a group loads the same shard and slices it (it maps the file
        // and reads only its rows).
        for slot in st.group.iter().skip(1) {
            let m = runtime_id(&slot.node)?;
            let hash = content_hash(&bytes);
            if node_has_shard(cluster, m, &hash, bytes.len() as u64).await? {
                continue;
            }
            let report =
                ship_shard(cluster, m, &hash, Bytes::from(bytes.clone()), |_, _| {}).await?;
            tracing::info!(stage = k, member = slot.member, node = %slot.node_name, sent = report.bytes_sent, "group member's shard in place");
            shipped += report.bytes_sent;
        }
        let hash = content_hash(&bytes);
        let bar = bars.as_ref().map(|m| {
            let b = m.add(indicatif::ProgressBar::new(bytes.len() as u64));
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{prefix:>18} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_prefix(format!(
                "stage {k} {}..{} → {}",
                st.layers.start, st.layers.end, st.node_name
            ));
            b
        });
        let report = ship_shard(cluster, node, &hash, Bytes::from(bytes), |done, _| {
            if let Some(b) = &bar {
                b.set_position(done);
            }
        })
        .await?;
        if let Some(b) = bar {
            b.finish();
        }
        tracing::info!(
            stage = k,
            node = %st.node_name,
            sent = report.bytes_sent,
            cached = report.cached_bytes,
            attempts = report.attempts,
            "shard in place"
        );
        shipped += report.bytes_sent;
        shards.push(hash);
    }
    timings.shards = t.elapsed();
    let t = Instant::now();

    // The sink on this node, then the stages from last to first.
    let routes: Arc<Routes> = Arc::new(Routes::new());
    let sink_key = register_routes(cluster, routes.clone(), sink_senders(&placement)?);
    let mailbox = opts.max_sequences * 2 + 4;
    let sink = match cluster
        .spawn::<SinkActor>(
            sink_key,
            SpawnOptions::new().on(cluster.node_id()).mailbox(mailbox),
        )
        .await
    {
        Ok(s) => s,
        Err(error) => {
            unregister_routes(cluster, sink_key);
            return Err(DeployError::Spawn {
                what: "the token sink".into(),
                node: "this node".into(),
                error,
            });
        }
    };
    let model_name = model_display_name(&file, model);
    let coordinator = cluster
        .node()
        .map(|n| n.name().to_string())
        .unwrap_or_else(|| cluster.node_id().short());
    let mut stages = Vec::new();
    let mut members: Vec<Vec<ActorRef<StageActor>>> = Vec::new();
    let mut next = None;
    for (k, st) in placement.stages.iter().enumerate().rev() {
        let node = runtime_id(&st.node)?;
        // The node whose batches this stage runs (the coordinator feeds the first).
        let upstream = match k {
            0 => None,
            _ => Some(runtime_id(&placement.stages[k - 1].node)?),
        };
        let n_group = st.group.len().max(1);
        let speeds = vec![1.0; n_group];
        let tp_args = |member: usize| {
            (n_group > 1).then(|| TpArgs {
                member,
                speeds: speeds.clone(),
            })
        };
        // The other members first (they hand nothing on), then the leader.
        let mut group_refs: Vec<ActorRef<StageActor>> = Vec::new();
        let mut failed = None;
        for slot in st.group.iter().skip(1) {
            let m = runtime_id(&slot.node)?;
            let args = StageArgs {
                shard: shards[k].clone(),
                layers: st.layers.clone(),
                n_layers: config.n_layers,
                index: k as u16,
                ctx,
                threads: opts.threads,
                max_sequences: opts.max_sequences,
                next: None,
                sink: sink.id(),
                upstream,
                dtype: opts.dtype,
                label: format!(
                    "stage {}/{} layers {}..{} member {}/{n_group} of {model_name} (coordinator {coordinator})",
                    k + 1,
                    placement.stages.len(),
                    st.layers.start,
                    st.layers.end,
                    slot.member + 1,
                ),
                tp: tp_args(slot.member),
            };
            match cluster
                .spawn::<StageActor>(
                    args,
                    SpawnOptions::new()
                        .on(m)
                        .mailbox(mailbox * 4 + 16)
                        .resources(Resources::none().memory(st.memory_bytes / n_group as u64)),
                )
                .await
            {
                Ok(r) => group_refs.push(r),
                Err(error) => {
                    failed = Some(DeployError::Spawn {
                        what: format!("stage {k} member {}", slot.member),
                        node: slot.node_name.clone(),
                        error,
                    });
                    break;
                }
            }
        }
        if let Some(e) = failed {
            for s in stages
                .iter()
                .chain(group_refs.iter())
                .chain(members.iter().flatten())
            {
                s.stop().await;
            }
            sink.stop().await;
            unregister_routes(cluster, sink_key);
            return Err(e);
        }
        let args = StageArgs {
            shard: shards[k].clone(),
            layers: st.layers.clone(),
            n_layers: config.n_layers,
            index: k as u16,
            ctx,
            threads: opts.threads,
            max_sequences: opts.max_sequences,
            next,
            sink: sink.id(),
            upstream,
            dtype: opts.dtype,
            label: format!(
                "stage {}/{} layers {}..{} of {model_name} (coordinator {coordinator})",
                k + 1,
                placement.stages.len(),
                st.layers.start,
                st.layers.end
            ),
            tp: tp_args(0),
        };
        let (mailbox, memory) = if n_group > 1 {
            (mailbox * 4 + 16, st.memory_bytes / n_group as u64)
        } else {
            (mailbox, st.memory_bytes)
        };
        let spawned = cluster
            .spawn::<StageActor>(
                args,
                SpawnOptions::new()
                    .on(node)
                    .mailbox(mailbox)
                    .resources(Resources::none().memory(memory)),
            )
            .await;
        let spawned = match spawned {
            Ok(s) if n_group > 1 => {
                // Every member learns the roster (in member order) before any batch comes.
                let mut ids = vec![s.id()];
                ids.extend(group_refs.iter().map(|r| r.id()));
                let mut told = Ok(s.clone());
                for r in std::iter::once(&s).chain(group_refs.iter()) {
                    if let Err(e) = r
                        .ask(StageMsg::TpRoster(ids.clone()), Duration::from_secs(10))
                        .await
                    {
                        told = Err(SpawnError::NodeDown(format!("group roster not taken: {e}")));
                        break;
                    }
                }
                if told.is_err() {
                    s.stop().await;
                }
                told
            }
            other => other,
        };
        match spawned {
            Ok(s) => {
                next = Some(s.id());
                stages.push(s);
                members.push(group_refs);
            }
            Err(error) => {
                for s in stages
                    .iter()
                    .chain(group_refs.iter())
                    .chain(members.iter().flatten())
                {
                    s.stop().await;
                }
                sink.stop().await;
                unregister_routes(cluster, sink_key);
                return Err(DeployError::Spawn {
                    what: format!("stage {k} (layers {:?})", st.layers),
                    node: st.node_name.clone(),
                    error,
                });
            }
        }
    }
    stages.reverse();
    members.reverse();
    timings.stages = t.elapsed();
    tracing::info!(
        prepare_ms = timings.prepare.as_millis() as u64,
        placement_ms = timings.placement.as_millis() as u64,
        shards_ms = timings.shards.as_millis() as u64,
        stages_ms = timings.stages.as_millis() as u64,
        planned = timings.planned,
        "deployed"
    );
    let model_id = model_name;
    Ok(Pipeline::new(Deployed {
        cluster: cluster.clone(),
        stages,
        members,
        placement,
        sink,
        sink_key,
        routes,
        tokenizer,
        chat,
        model_id,
        ctx,
        dtype: opts.dtype,
        max_sequences: opts.max_sequences,
        max_queued: opts.max_queued,
        shipped_bytes: shipped,
        timings,
    }))
}

/// The nodes the sink of `placement`'s pipeline takes messages from.
fn sink_senders(placement: &Placement) -> Result<SinkSenders, DeployError> {
    let last = placement
        .stages
        .last()
        .ok_or_else(|| DeployError::Options("a placement without stages".into()))?;
    let mut stages = Vec::new();
    for st in &placement.stages {
        stages.push(runtime_id(&st.node)?);
        for slot in &st.group {
            stages.push(runtime_id(&slot.node)?);
        }
    }
    Ok(SinkSenders {
        last: runtime_id(&last.node)?,
        stages,
    })
}

/// The model's id: GGUF `general.name`, else the file stem.
fn model_display_name(file: &GgufFile, path: &Path) -> String {
    file.metadata()
        .get_str_opt("general.name")
        .ok()
        .flatten()
        .map(str::to_string)
        .unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into())
        })
}

/// The live members this node reaches, with the memory budgets their heartbeats report.
fn known_members(cluster: &Cluster) -> Vec<KnownMember> {
    let live: Vec<_> = live_nodes(cluster)
        .into_iter()
        .map(|m| place_id(&m.node_id))
        .collect();
    cluster_view(cluster)
        .nodes
        .into_iter()
        .filter(|n| live.contains(&n.id))
        .map(|n| KnownMember {
            id: n.id,
            memory_budget_bytes: n.memory_budget_bytes,
        })
        .collect()
}

/// The live members of the cluster (this node included) this node is connected to (a member
/// whose connection just died may still count as live in the membership for a while).
fn live_nodes(cluster: &Cluster) -> Vec<edgeray_runtime::membership::Member> {
    let transport = cluster.transport();
    cluster
        .members()
        .into_iter()
        .filter(|m| m.state.is_live())
        .filter(|m| m.is_self || transport.is_none_or(|t| t.peer(m.node_id).is_some()))
        .collect()
}

/// Makes every stage of `placement` a tensor-parallel group of `opts.tp` boards: its placed
/// node (the leader) and nodes no stage uses (other boards first, this coordinator's node
/// last), with the slice each holds. Too few nodes: an error, or (`!opts.tp_strict`) groups as
/// wide as the nodes allow.
fn assign_groups(
    cluster: &Cluster,
    file: &GgufFile,
    config: &ModelConfig,
    placement: &mut Placement,
    opts: &DeployOptions,
) -> Result<(), DeployError> {
    use edgeray_model::arch::tensor_parallel::{SliceOptions, plan_stage};
    let used: Vec<String> = placement.stages.iter().map(|s| s.node.0.clone()).collect();
    let mut free: Vec<(bool, String, String)> = live_nodes(cluster)
        .into_iter()
        .map(|m| (m.is_self, m.node_id.to_string(), m.name.clone()))
        .filter(|(_, id, _)| !used.contains(id))
        .collect();
    free.sort();
    let n_stages = placement.stages.len();
    let want = opts.tp.saturating_sub(1) * n_stages;
    let width = if free.len() >= want {
        opts.tp
    } else if opts.tp_strict {
        return Err(DeployError::Options(format!(
            "--tp {} with {n_stages} stage(s) needs {} nodes; the cluster has {} live",
            opts.tp,
            opts.tp * n_stages,
            n_stages + free.len()
        )));
    } else {
        let w = 1 + free.len() / n_stages;
        tracing::warn!(
            asked = opts.tp,
            width = w,
            "too few nodes left for the tensor-parallel groups asked for; narrower groups (still exact)"
        );
        w
    };
    if width < 2 {
        return Ok(());
    }
    let mut free = free.into_iter();
    for st in placement.stages.iter_mut() {
        let spec = StageSpec::for_range(st.layers.clone(), config.n_layers);
        let plan = plan_stage(file, &spec, &vec![1.0; width], SliceOptions::default())
            .map_err(|e| DeployError::Options(format!("no tensor-parallel plan: {e}")))?;
        let mut boards = vec![(st.node.clone(), st.node_name.clone())];
        for _ in 1..width {
            let (_, id, name) = free.next().expect("counted above");
            boards.push((crate::placement::MemberId(id), name));
        }
        let n_ff = config.n_ff.max(1) as f64;
        st.group = boards
            .into_iter()
            .enumerate()
            .map(|(m, (node, node_name))| {
                let l = &plan.layers[0].members[m];
                GroupSlot {
                    member: m,
                    node,
                    node_name,
                    q_heads: l.q_heads.clone(),
                    kv_heads: l.kv_heads.clone(),
                    ffn_rows: l.ffn_rows.clone(),
                    down_rows: l.down_rows.clone(),
                    vocab_rows: plan.head_rows.as_ref().map(|r| r[m].clone()),
                    // Most of a layer's bytes are split like the MLP rows.
                    weight_bytes: (st.weight_bytes as f64 * l.ffn_rows.len() as f64 / n_ff) as u64,
                }
            })
            .collect();
    }
    Ok(())
}
