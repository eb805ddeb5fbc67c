//! Supervision: [`Cluster::supervise`] spawns an actor and restarts it under a
//! [`RestartPolicy`], wherever in the cluster it runs. The supervising task runs on the node that
//! called `supervise` and watches the child across nodes; when the child's node is gone (or shut
//! down) the restarted child is placed on another node that fits its resource needs.

use std::time::Instant;

use tokio::sync::watch;

use super::actor_ref::ActorRef;
use super::cluster::{Cluster, SpawnOptions, WeakCluster};
use super::error::SpawnError;
use super::kind::RemoteActor;
use super::lifecycle::StopReason;
use super::restart::{RestartBudget, RestartPolicy};
use crate::identity::NodeId;

/// How a supervised actor's supervision ended (an error where a running actor was expected).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Outcome {
    /// The actor stopped for a reason its policy does not restart.
    #[error("supervised actor stopped ({0:?}); its policy does not restart it")]
    Stopped(StopReason),
    /// The policy's restart limit was reached; `last` says what the last incarnation or
    /// re-spawn attempt ended with.
    #[error("supervisor gave up after {restarts} restarts; last: {last}")]
    GaveUp {
        /// Restart attempts made.
        restarts: u32,
        /// The last stop reason or spawn error, as text.
        last: String,
    },
    /// [`Supervised::stop`] ended it (the actor was asked to stop).
    #[error("supervision was stopped")]
    Cancelled,
}

/// Where a supervised actor stands.
pub enum ChildState<A: RemoteActor> {
    /// An incarnation is running.
    Running(ActorRef<A>),
    /// The last incarnation stopped; the next starts after the backoff delay.
    Restarting {
        /// Why the last incarnation (or re-spawn attempt) ended.
        last: String,
    },
    /// Supervision is over.
    Finished(Outcome),
}

impl<A: RemoteActor> std::fmt::Debug for ChildState<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChildState::Running(r) => f.debug_tuple("Running").field(r).finish(),
            ChildState::Restarting { last } => {
                f.debug_struct("Restarting").field("last", last).finish()
            }
            ChildState::Finished(o) => f.debug_tuple("Finished").field(o).finish(),
        }
    }
}

impl<A: RemoteActor> Clone for ChildState<A> {
    fn clone(&self) -> Self {
        match self {
            ChildState::Running(r) => ChildState::Running(r.clone()),
            ChildState::Restarting { last } => ChildState::Restarting { last: last.clone() },
            ChildState::Finished(o) => ChildState::Finished(o.clone()),
        }
    }
}

/// A snapshot of a supervised actor: its state and the restart attempts made so far.
struct Status<A: RemoteActor> {
    restarts: u32,
    state: ChildState<A>,
}

/// Handle on a supervised actor. Dropping it ends supervision (the current incarnation keeps
/// running, unsupervised); [`Supervised::stop`] ends supervision and stops the actor.
pub struct Supervised<A: RemoteActor> {
    status: watch::Receiver<Status<A>>,
    cancel: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl<A: RemoteActor> std::fmt::Debug for Supervised<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.status.borrow();
        f.debug_struct("Supervised")
            .field("restarts", &s.restarts)
            .field("state", &s.state)
            .finish()
    }
}

impl<A: RemoteActor> Drop for Supervised<A> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<A: RemoteActor> Supervised<A> {
    /// The current state.
    pub fn state(&self) -> ChildState<A> {
        self.status.borrow().state.clone()
    }

    /// Restart attempts made so far (failed re-spawns included).
    pub fn restarts(&self) -> u32 {
        self.status.borrow().restarts
    }

    /// The running incarnation, if one is running now.
    pub fn current(&self) -> Option<ActorRef<A>> {
        match &self.status.borrow().state {
            ChildState::Running(r) => Some(r.clone()),
            _ => None,
        }
    }

    /// Waits until an incarnation started after at least `restarts` restart attempts is
    /// running, and returns it; `Err` with the outcome if supervision ends first.
    pub async fn running_after(&self, restarts: u32) -> Result<ActorRef<A>, Outcome> {
        let mut rx = self.status.clone();
        let s = rx
            .wait_for(|s| {
                matches!(s.state, ChildState::Finished(_))
                    || (s.restarts >= restarts && matches!(s.state, ChildState::Running(_)))
            })
            .await
            .map_err(|_| Outcome::Cancelled)?;
        match &s.state {
            ChildState::Running(r) => Ok(r.clone()),
            ChildState::Finished(o) => Err(o.clone()),
            ChildState::Restarting { .. } => unreachable!("waited for running or finished"),
        }
    }

    /// Waits until supervision ends.
    pub async fn finished(&self) -> Outcome {
        let mut rx = self.status.clone();
        let s = rx
            .wait_for(|s| matches!(s.state, ChildState::Finished(_)))
            .await;
        match s.as_deref().map(|s| &s.state) {
            Ok(ChildState::Finished(o)) => o.clone(),
            _ => Outcome::Cancelled,
        }
    }

    /// Ends supervision and stops the current incarnation; returns the outcome.
    pub async fn stop(mut self) -> Outcome {
        if let Some(c) = self.cancel.take() {
            let _ = c.send(());
        }
        self.finished().await
    }
}

/// What a supervision task needs to re-spawn its child.
struct Child<A: RemoteActor> {
    cluster: WeakCluster,
    args: A::Args,
    opts: SpawnOptions,
    policy: RestartPolicy,
    status: watch::Sender<Status<A>>,
}

impl Cluster {
    /// Spawns an actor like [`Cluster::spawn`] and supervises it under `policy`: when it stops,
    /// the policy decides whether it is restarted (with `args` again), after which delay, and when
    /// to give up. A child pinned to a node (`opts.node`) is restarted there while that node is
    /// up; once its node is down or shut down, the child is placed anew among the other nodes
    /// that fit `opts.resources` (by this node's placement function). The supervisor runs on
    /// this node: if this node goes away, its children are no longer supervised.
    ///
    /// ```
    /// # use edgeray_runtime::actor::{ActorCtx, ActorError, Envelope, RemoteActor};
    /// use edgeray_runtime::actor::{Backoff, Outcome, RestartPolicy, StopReason};
    /// use edgeray_runtime::cluster::{Cluster, SpawnOptions};
    /// # struct Fragile;
    /// # impl RemoteActor for Fragile {
    /// #     type Args = (); type Msg = bool; type Reply = ();
    /// #     fn kind() -> &'static str { "doc.fragile" }
    /// #     fn create(_: (), _: ActorCtx) -> Result<Self, ActorError> { Ok(Fragile) }
    /// #     async fn handle(&mut self, m: Envelope<bool>) -> Result<Envelope<()>, ActorError> {
    /// #         if m.msg { panic!("asked to") }
    /// #         Ok(().into())
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let cluster = Cluster::builder().register::<Fragile>().local().unwrap();
    /// let policy = RestartPolicy::on_failure().backoff(Backoff::NONE);
    /// let child = cluster.supervise::<Fragile>((), SpawnOptions::new(), policy).await.unwrap();
    /// let t = std::time::Duration::from_secs(5);
    /// // `true` makes it panic: it is restarted as a new actor.
    /// let _ = child.current().unwrap().ask(true, t).await;
    /// let again = child.running_after(1).await.unwrap();
    /// again.ask(false, t).await.unwrap();
    /// // A normal stop is not restarted under `on_failure`.
    /// again.stop().await;
    /// assert_eq!(child.finished().await, Outcome::Stopped(StopReason::Stopped));
    /// cluster.shutdown().await;
    /// # }
    /// ```
    pub async fn supervise<A: RemoteActor>(
        &self,
        args: A::Args,
        opts: SpawnOptions,
        policy: RestartPolicy,
    ) -> Result<Supervised<A>, SpawnError>
    where
        A::Args: Clone + Sync,
    {
        let first = self.spawn::<A>(args.clone(), opts.clone()).await?;
        let (tx, rx) = watch::channel(Status {
            restarts: 0,
            state: ChildState::Running(first.clone()),
        });
        let (cancel, cancelled) = tokio::sync::oneshot::channel();
        let child = Child {
            cluster: self.downgrade(),
            args,
            opts,
            policy,
            status: tx,
        };
        let task = tokio::spawn(child.run(first, cancelled));
        Ok(Supervised {
            status: rx,
            cancel: Some(cancel),
            task,
        })
    }
}

impl<A: RemoteActor> Child<A>
where
    A::Args: Clone + Sync,
{
    fn set(&self, restarts: u32, state: ChildState<A>) {
        self.status.send_replace(Status { restarts, state });
    }

    async fn run(self, first: ActorRef<A>, mut cancelled: tokio::sync::oneshot::Receiver<()>) {
        let mut budget = RestartBudget::new(self.policy);
        let mut restarts = 0u32;
        let mut current = first;
        loop {
            let reason = tokio::select! {
                r = current.watch() => r,
                _ = &mut cancelled => {
                    current.stop().await;
                    self.set(restarts, ChildState::Finished(Outcome::Cancelled));
                    return;
                }
            };
            tracing::info!(kind = A::kind(), actor = %current.id(), ?reason, "supervised actor stopped");
            if !self.policy.restart.applies(&reason) {
                self.set(restarts, ChildState::Finished(Outcome::Stopped(reason)));
                return;
            }
            // A child whose node is gone (or going) is placed elsewhere from now on.
            let mut avoid: Vec<NodeId> = Vec::new();
            if matches!(reason, StopReason::NodeDown | StopReason::Shutdown) {
                avoid.push(current.node());
            }
            let mut last = format!("{reason:?}");
            current = loop {
                let Some(delay) = budget.next(Instant::now()) else {
                    let outcome = Outcome::GaveUp { restarts, last };
                    tracing::warn!(kind = A::kind(), ?outcome, "supervisor gives up");
                    self.set(restarts, ChildState::Finished(outcome));
                    return;
                };
                self.set(restarts, ChildState::Restarting { last: last.clone() });
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = &mut cancelled => {
                        self.set(restarts, ChildState::Finished(Outcome::Cancelled));
                        return;
                    }
                }
                restarts += 1;
                match self.respawn(&avoid).await {
                    Ok(r) => break r,
                    Err((e, node)) => {
                        tracing::info!(kind = A::kind(), error = %e, "supervised re-spawn failed");
                        if let (SpawnError::NodeDown(_), Some(n)) = (&e, node) {
                            avoid.push(n);
                        }
                        if matches!(e, SpawnError::Shutdown) {
                            self.set(
                                restarts,
                                ChildState::Finished(Outcome::Stopped(StopReason::Shutdown)),
                            );
                            return;
                        }
                        last = e.to_string();
                    }
                }
            };
            tracing::info!(kind = A::kind(), actor = %current.id(), restarts, "supervised actor restarted");
            self.set(restarts, ChildState::Running(current.clone()));
        }
    }

    /// Spawns the next incarnation, never on a node in `avoid`; on failure also returns the node
    /// that was tried.
    async fn respawn(&self, avoid: &[NodeId]) -> Result<ActorRef<A>, (SpawnError, Option<NodeId>)> {
        let cluster = self.cluster.upgrade().ok_or((SpawnError::Shutdown, None))?;
        let mut opts = self.opts.clone();
        if opts.node.is_some_and(|n| avoid.contains(&n)) {
            opts.node = None;
        }
        if opts.node.is_none() {
            let candidates: Vec<_> = cluster
                .candidates(A::kind())
                .await
                .into_iter()
                .filter(|c| !avoid.contains(&c.node))
                .collect();
            let node = cluster
                .inner
                .placement
                .place(&opts.resources, &candidates)
                .ok_or_else(|| {
                    (
                        SpawnError::NoNodeFits(format!("{:?}", opts.resources)),
                        None,
                    )
                })?;
            opts.node = Some(node);
        }
        let node = opts.node;
        cluster
            .spawn::<A>(self.args.clone(), opts)
            .await
            .map_err(|e| (e, node))
    }
}
