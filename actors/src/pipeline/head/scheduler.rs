//! The scheduler actor (`edgeray.scheduler`): one per cluster, on the head node (the lowest
//! NodeId among the Up members, see `NodeHandle::head`).
//!
//! It answers placement asks — a model profile, a policy with its settings, and constraints
//! (an exact number of stages) — from its node's view of the cluster: every Up member's
//! heartbeat report (memory, power, backend, measured compute score) and the links its node
//! measured (RTT). The policy itself stays a pure [`PlacementPolicy`]; this actor only runs it.
//!
//! A coordinator asks with [`ask_placement`]: it finds (or starts) the scheduler on the current
//! head and asks it; if the ask fails or the head changed meanwhile, it asks the new head.

use std::time::Duration;

use bytes::Bytes;
use edgeray_runtime::actor::{ActorCtx, ActorError, ActorRef, Envelope, RemoteActor, SpawnError};
use edgeray_runtime::cluster::{Cluster, SpawnOptions};
use edgeray_runtime::identity::NodeId;
use serde::{Deserialize, Serialize};

use super::view::{ScheduleError, cluster_view, schedule};
use crate::placement::{
    Candidate, ClusterView, MemberId, ModelProfile, Placement, PlacementPolicy, PowerPolicy,
    policy_by_name,
};

/// The name the scheduler is registered under on the head node.
pub const SCHEDULER_NAME: &str = "edgeray.scheduler";

/// How long one placement ask may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// Heads tried before giving up (the head can change while we ask).
const ATTEMPTS: usize = 4;

/// Longest the scheduler waits for its view to hold the members the asker sees.
const VIEW_WAIT: Duration = Duration::from_secs(5);

/// A placement policy by name, with its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicySpec {
    /// `memory`, `power` or `throughput`.
    pub name: String,
    /// Power policy: latency slack as a factor of the best achievable latency.
    pub latency_factor: Option<f64>,
    /// Power policy: absolute per-token latency target, seconds.
    pub latency_target_s: Option<f64>,
}

impl PolicySpec {
    /// The policy `name` with its default settings.
    pub fn named(name: impl Into<String>) -> Self {
        PolicySpec {
            name: name.into(),
            latency_factor: None,
            latency_target_s: None,
        }
    }

    /// Builds the policy; an unknown name or settings for the wrong policy are an error.
    pub fn build(&self) -> Result<Box<dyn PlacementPolicy>, ScheduleError> {
        let base = policy_by_name(&self.name).map_err(|e| ScheduleError::Policy(e.to_string()))?;
        if base.name() == "power" {
            if let Some(f) = self.latency_factor {
                return Ok(Box::new(PowerPolicy::with_factor(f)));
            }
            if let Some(s) = self.latency_target_s {
                return Ok(Box::new(PowerPolicy::with_target_s(s)));
            }
        } else if self.latency_factor.is_some() || self.latency_target_s.is_some() {
            return Err(ScheduleError::Policy(
                "a latency factor or target applies only to the power policy".into(),
            ));
        }
        Ok(base)
    }
}

/// A placement ask.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlaceAsk {
    /// The model.
    pub profile: ModelProfile,
    /// The policy.
    pub policy: PolicySpec,
    /// Exactly this many stages (the policy's best such candidate); `None`: the policy decides.
    pub stages: Option<usize>,
    /// The members the asking node sees (filled in by [`ask_placement`]): the scheduler waits
    /// briefly until its own view holds them too, so a member that joined a moment ago is not
    /// missed because its heartbeat reached the asker first.
    pub known: Vec<MemberId>,
}

/// What the scheduler answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlaceAnswer {
    /// The head node that answered.
    pub head: String,
    /// The cluster as the scheduler saw it.
    pub view: ClusterView,
    /// Every candidate the policy weighed.
    pub candidates: Vec<Candidate>,
    /// The placement for the ask's constraints, or why there is none.
    pub placement: Result<Placement, String>,
}

/// Messages to the scheduler.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SchedulerMsg {
    /// Place a model (ask). The reply's tail holds the [`PlaceAnswer`] as CBOR (placements
    /// carry tagged enums, which the message codec cannot hold).
    Place(PlaceAsk),
}

/// Replies of the scheduler.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SchedulerReply {
    /// The [`PlaceAnswer`] is in the tail.
    Answer,
}

/// Why asking the scheduler failed.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerAskError {
    /// This process is not a cluster node (no membership, so no head).
    #[error("not a cluster member: no head to ask")]
    NoNode,
    /// No head answered.
    #[error("no head node answered the placement ask after {attempts} tries: {last}")]
    NoAnswer {
        /// Heads tried.
        attempts: usize,
        /// The last failure.
        last: String,
    },
    /// The answer could not be decoded.
    #[error("the scheduler's answer is unreadable: {0}")]
    Decode(String),
}

/// The scheduler actor.
pub struct SchedulerActor {
    ctx: ActorCtx,
}

impl RemoteActor for SchedulerActor {
    type Args = ();
    type Msg = SchedulerMsg;
    type Reply = SchedulerReply;

    fn kind() -> &'static str {
        "edgeray.scheduler"
    }

    fn create(_args: (), ctx: ActorCtx) -> Result<Self, ActorError> {
        if ctx.cluster().is_none() {
            return Err(ActorError::new("the scheduler needs a cluster"));
        }
        Ok(SchedulerActor { ctx })
    }

    async fn handle(
        &mut self,
        msg: Envelope<SchedulerMsg>,
    ) -> Result<Envelope<SchedulerReply>, ActorError> {
        let cluster = self
            .ctx
            .cluster()
            .ok_or_else(|| ActorError::new("the cluster has shut down"))?;
        let SchedulerMsg::Place(ask) = msg.msg;
        let deadline = tokio::time::Instant::now() + VIEW_WAIT;
        let view = loop {
            let view = cluster_view(&cluster);
            if holds_all(&view, &ask.known) || tokio::time::Instant::now() >= deadline {
                break view;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let answer = answer(&ask, view, cluster.node_id().to_string())
            .map_err(|e| ActorError::new(e.to_string()))?;
        let body = edgeray_runtime::codec::encode_self_describing(&answer)
            .map_err(|e| ActorError::new(format!("cannot encode the answer: {e}")))?;
        Ok(Envelope::with_tail(
            SchedulerReply::Answer,
            Bytes::from(body),
        ))
    }
}

/// Whether `view` holds every node of `known`.
pub fn holds_all(view: &ClusterView, known: &[MemberId]) -> bool {
    known
        .iter()
        .all(|id| view.nodes.iter().any(|n| &n.id == id))
}

/// Runs the ask's policy on `view` (pure: the scheduler's whole decision).
pub fn answer(
    ask: &PlaceAsk,
    view: ClusterView,
    head: String,
) -> Result<PlaceAnswer, ScheduleError> {
    let policy = ask.policy.build()?;
    let candidates = policy.candidates(&ask.profile, &view);
    let placement =
        schedule(policy.as_ref(), &ask.profile, &view, ask.stages).map_err(|e| e.to_string());
    Ok(PlaceAnswer {
        head,
        view,
        candidates,
        placement,
    })
}

/// The scheduler on `node`: the one registered there, or a new one started there.
async fn scheduler_on(cluster: &Cluster, node: NodeId) -> Result<ActorRef<SchedulerActor>, String> {
    if let Some(r) = cluster
        .lookup_on::<SchedulerActor>(node, SCHEDULER_NAME)
        .await
    {
        return Ok(r);
    }
    let opts = SpawnOptions::new().on(node).name(SCHEDULER_NAME);
    match cluster.spawn::<SchedulerActor>((), opts).await {
        Ok(r) => Ok(r),
        // Another coordinator started it meanwhile.
        Err(SpawnError::NameTaken(_)) => cluster
            .lookup_on::<SchedulerActor>(node, SCHEDULER_NAME)
            .await
            .ok_or_else(|| format!("the scheduler on {node} vanished")),
        Err(e) => Err(format!("cannot start the scheduler on {node}: {e}")),
    }
}

/// Asks the head node's scheduler to place a model; on failure (or when the head changed while
/// asking) asks the head again, up to a few times.
pub async fn ask_placement(
    cluster: &Cluster,
    ask: &PlaceAsk,
) -> Result<PlaceAnswer, SchedulerAskError> {
    let node = cluster.node().ok_or(SchedulerAskError::NoNode)?;
    let mut ask = ask.clone();
    ask.known = cluster_view(cluster)
        .nodes
        .into_iter()
        .map(|n| n.id)
        .collect();
    let mut last = String::from("no head elected");
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(250 * attempt as u64)).await;
        }
        let Some(head) = node.head() else { continue };
        let r = match scheduler_on(cluster, head).await {
            Ok(r) => r,
            Err(e) => {
                last = e;
                continue;
            }
        };
        match r
            .ask(SchedulerMsg::Place(ask.clone()), ASK_TIMEOUT + VIEW_WAIT)
            .await
        {
            Ok(env) => {
                let answer: PlaceAnswer =
                    edgeray_runtime::codec::decode_self_describing(env.tail.as_ref())
                        .map_err(|e| SchedulerAskError::Decode(e.to_string()))?;
                if node.head() != Some(head) {
                    last = format!("the head changed from {head} while asking");
                    continue;
                }
                tracing::debug!(head = %head, "placement from the head's scheduler");
                return Ok(answer);
            }
            Err(e) => last = format!("scheduler on {head}: {e}"),
        }
    }
    Err(SchedulerAskError::NoAnswer {
        attempts: ATTEMPTS,
        last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::{LinkView, NodeView};

    fn view() -> ClusterView {
        let node = |id: &str, gib: u64| NodeView {
            id: MemberId(id.into()),
            name: id.into(),
            memory_budget_bytes: gib << 30,
            memory_free_bytes: gib << 30,
            power_watts: 5.0,
            compute_bytes_per_s: 1e9,
            backend: "cpu".into(),
            up: true,
        };
        ClusterView::new(vec![node("a", 2), node("b", 2)]).with_link(
            &MemberId("a".into()),
            &MemberId("b".into()),
            LinkView {
                rtt_s: 0.002,
                ..LinkView::DEFAULT
            },
        )
    }

    fn profile() -> ModelProfile {
        ModelProfile {
            name: "m".into(),
            layer_bytes: vec![10 << 20; 4],
            embedding_bytes: 20 << 20,
            head_bytes: 20 << 20,
            tied_embeddings: true,
            kv_bytes_per_token_per_layer: 1024,
            context_length: 128,
            hidden_size: 64,
            activation_bytes_per_token: 128,
            stage_overhead_bytes: 1 << 20,
        }
    }

    #[test]
    fn answers_survive_the_wire_and_match_the_local_policy() {
        let ask = PlaceAsk {
            profile: profile(),
            policy: PolicySpec::named("throughput"),
            stages: Some(2),
            known: Vec::new(),
        };
        assert!(holds_all(
            &view(),
            &[MemberId("a".into()), MemberId("b".into())]
        ));
        assert!(!holds_all(&view(), &[MemberId("c".into())]));
        let a = answer(&ask, view(), "head".into()).expect("answer");
        let body = edgeray_runtime::codec::encode_self_describing(&a).unwrap();
        let back: PlaceAnswer = edgeray_runtime::codec::decode_self_describing(&body).unwrap();
        assert_eq!(back.view, a.view);
        assert_eq!(back.candidates, a.candidates);
        let p = back.placement.expect("placed");
        assert_eq!(p.stages.len(), 2);
        let local = crate::placement::ThroughputPolicy.candidates(&ask.profile, &view());
        assert_eq!(back.candidates, local);
    }

    #[test]
    fn policy_specs_are_checked() {
        assert!(PolicySpec::named("nope").build().is_err());
        let mut s = PolicySpec::named("memory");
        s.latency_factor = Some(2.0);
        assert!(s.build().is_err());
        let mut s = PolicySpec::named("power");
        s.latency_target_s = Some(0.5);
        assert_eq!(s.build().unwrap().name(), "power");
    }
}
