//! A node's local actors: starting them on the actor threads, the table of live actors (by id
//! and by name), typed delivery for in-process callers and encoded delivery for remote ones.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tokio::sync::oneshot;

use super::envelope::Envelope;
use super::error::{ActorError, AskError, SpawnError, TellError};
use super::host::{Deliver, Host, ReplyTo, StopNow};
use super::kind::{ActorCtx, RemoteActor};
use super::lifecycle::{Lifecycle, StopReason};
use super::mailbox::{Mailbox, MailboxClosed, Slot};
use super::threads::{ActorThreads, ThreadsError};

/// Reply channel of a remote ask: encoded (body, tail) or the handler's error.
pub(crate) type EncodedReply = oneshot::Sender<Result<(Bytes, Bytes), ActorError>>;

/// A live local actor, with its kind erased (used by remote delivery, lookup and watch).
pub(crate) trait LocalCell: Send + Sync + 'static {
    fn local_id(&self) -> u64;
    fn kind(&self) -> &'static str;
    fn mailbox(&self) -> &Mailbox;
    fn life(&self) -> &Lifecycle;
    /// Decodes `body` as the actor's message from the peer `sender` and queues it in the
    /// reserved `slot`.
    fn deliver_encoded(
        &self,
        slot: Slot,
        body: &[u8],
        tail: Bytes,
        sender: crate::identity::NodeId,
        reply: Option<EncodedReply>,
    ) -> Result<(), TellError>;
    /// The peer node that asked for this actor (`None`: spawned by its own node).
    fn spawned_by(&self) -> Option<crate::identity::NodeId>;
    fn stop(&self);
    fn as_any(&self) -> &dyn Any;
}

/// A typed handle to a live local actor.
pub(crate) struct LocalActor<A: RemoteActor> {
    local_id: u64,
    name: Option<String>,
    spawned_by: Option<crate::identity::NodeId>,
    addr: Addr<Host<A>>,
    mailbox: Mailbox,
    life: Lifecycle,
}

impl<A: RemoteActor> Clone for LocalActor<A> {
    fn clone(&self) -> Self {
        LocalActor {
            local_id: self.local_id,
            name: self.name.clone(),
            spawned_by: self.spawned_by,
            addr: self.addr.clone(),
            mailbox: self.mailbox.clone(),
            life: self.life.clone(),
        }
    }
}

impl<A: RemoteActor> LocalActor<A> {
    fn push(&self, d: Deliver<A>) -> Result<(), TellError> {
        match self.addr.try_send(d) {
            Ok(()) => Ok(()),
            Err(SendError::Closed(_)) => Err(TellError::ActorDead),
            // Unreachable by construction (actix's queue is larger than our mailbox); the
            // message still holds its mailbox slot, so queueing it cannot grow memory unboundedly.
            Err(SendError::Full(d)) => {
                self.addr.do_send(d);
                Ok(())
            }
        }
    }

    /// Waits for mailbox space, then queues the message.
    pub(crate) async fn tell(&self, env: Envelope<A::Msg>) -> Result<(), TellError> {
        let slot = self
            .mailbox
            .reserve()
            .await
            .map_err(|MailboxClosed| TellError::ActorDead)?;
        self.push(Deliver {
            env,
            reply: ReplyTo::None,
            slot,
        })
    }

    /// Queues the message if the mailbox has room right now.
    pub(crate) fn try_tell(&self, env: Envelope<A::Msg>) -> Result<(), TellError> {
        let slot = match self.mailbox.try_reserve() {
            Some(Ok(slot)) => slot,
            Some(Err(MailboxClosed)) => return Err(TellError::ActorDead),
            None => return Err(TellError::MailboxFull),
        };
        self.push(Deliver {
            env,
            reply: ReplyTo::None,
            slot,
        })
    }

    /// Queues the message and waits for the reply, all within `timeout`.
    pub(crate) async fn ask(
        &self,
        env: Envelope<A::Msg>,
        timeout: Duration,
    ) -> Result<Envelope<A::Reply>, AskError> {
        let fut = async {
            let slot = self
                .mailbox
                .reserve()
                .await
                .map_err(|MailboxClosed| AskError::ActorDead)?;
            let (tx, rx) = oneshot::channel();
            self.push(Deliver {
                env,
                reply: ReplyTo::Typed(tx),
                slot,
            })?;
            match rx.await {
                Ok(Ok(r)) => Ok(r),
                Ok(Err(e)) => Err(e.into()),
                Err(_) => Err(AskError::ActorDead),
            }
        };
        tokio::time::timeout(timeout, fut)
            .await
            .unwrap_or(Err(AskError::Timeout))
    }

    pub(crate) fn local_id(&self) -> u64 {
        self.local_id
    }

    pub(crate) fn mailbox(&self) -> &Mailbox {
        &self.mailbox
    }

    pub(crate) fn life(&self) -> &Lifecycle {
        &self.life
    }

    pub(crate) fn stop(&self) {
        if self.life.stopped().is_none() {
            self.addr.do_send(StopNow);
        }
    }
}

impl<A: RemoteActor> LocalCell for LocalActor<A> {
    fn local_id(&self) -> u64 {
        self.local_id
    }
    fn kind(&self) -> &'static str {
        A::kind()
    }
    fn mailbox(&self) -> &Mailbox {
        &self.mailbox
    }
    fn life(&self) -> &Lifecycle {
        &self.life
    }
    fn deliver_encoded(
        &self,
        slot: Slot,
        body: &[u8],
        tail: Bytes,
        sender: crate::identity::NodeId,
        reply: Option<EncodedReply>,
    ) -> Result<(), TellError> {
        let msg: A::Msg =
            crate::codec::decode(body).map_err(|e| TellError::Codec(e.to_string()))?;
        let reply = match reply {
            Some(tx) => ReplyTo::Encoded(tx),
            None => ReplyTo::None,
        };
        self.push(Deliver {
            env: Envelope::from_peer(msg, tail, sender),
            reply,
            slot,
        })
    }
    fn spawned_by(&self) -> Option<crate::identity::NodeId> {
        self.spawned_by
    }
    fn stop(&self) {
        LocalActor::stop(self)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Options for starting a local actor.
#[derive(Debug, Clone, Default)]
pub(crate) struct LocalSpawn {
    pub(crate) name: Option<String>,
    pub(crate) mailbox: usize,
    pub(crate) node: Option<crate::identity::NodeId>,
    pub(crate) cluster: Option<crate::actor::cluster::WeakCluster>,
    /// The peer node whose request this spawn serves (`None`: this node's own).
    pub(crate) spawned_by: Option<crate::identity::NodeId>,
}

/// Callback run once an actor has stopped (e.g. to release its resource reservation).
pub(crate) type OnStop = Box<dyn FnOnce(&StopReason) + Send + 'static>;

/// How many stopped actors' reasons a node remembers (see [`Tombstones`]).
const TOMBSTONES: usize = 4096;

/// Why recently stopped actors stopped, so that a watch arriving just after the stop (a remote
/// watch and stop travel on separate streams) still learns the reason instead of `NotFound`.
/// Bounded: the earliest buried are forgotten first.
#[derive(Debug)]
pub(crate) struct Tombstones {
    cap: usize,
    reasons: parking_lot::Mutex<Buried>,
}

/// Stop reasons by id, and the ids in the order they were buried.
#[derive(Debug, Default)]
struct Buried {
    by_id: std::collections::HashMap<u64, StopReason>,
    order: std::collections::VecDeque<u64>,
}

impl Tombstones {
    pub(crate) fn new(cap: usize) -> Self {
        Tombstones {
            cap: cap.max(1),
            reasons: parking_lot::Mutex::new(Buried::default()),
        }
    }
    /// Remember why `local_id` stopped.
    pub(crate) fn bury(&self, local_id: u64, reason: StopReason) {
        let mut r = self.reasons.lock();
        if r.by_id.insert(local_id, reason).is_none() {
            r.order.push_back(local_id);
        }
        while r.order.len() > self.cap {
            if let Some(old) = r.order.pop_front() {
                r.by_id.remove(&old);
            }
        }
    }
    /// Why `local_id` stopped, if it stopped recently.
    pub(crate) fn reason(&self, local_id: u64) -> Option<StopReason> {
        self.reasons.lock().by_id.get(&local_id).cloned()
    }
}

/// A fresh local actor id: random (so a member cannot guess the ids of other members'
/// actors), never 0, and not `taken` by a live actor.
fn fresh_id(taken: impl Fn(u64) -> bool) -> u64 {
    loop {
        let id: u64 = rand::random();
        if id != 0 && !taken(id) {
            return id;
        }
    }
}

/// The live actors of one node.
pub(crate) struct LocalActors {
    threads: ActorThreads,
    by_id: Arc<DashMap<u64, Arc<dyn LocalCell>>>,
    by_name: Arc<DashMap<String, u64>>,
    stopped: Arc<Tombstones>,
}

impl LocalActors {
    /// Starts the actor threads.
    pub(crate) fn start(workers: usize) -> Result<Self, ThreadsError> {
        Ok(LocalActors {
            threads: ActorThreads::start(workers)?,
            by_id: Arc::new(DashMap::new()),
            by_name: Arc::new(DashMap::new()),
            stopped: Arc::new(Tombstones::new(TOMBSTONES)),
        })
    }

    /// Creates an actor of kind `A` on one of the actor threads.
    pub(crate) async fn spawn<A: RemoteActor>(
        &self,
        args: A::Args,
        opts: LocalSpawn,
        on_stop: Option<OnStop>,
    ) -> Result<LocalActor<A>, SpawnError> {
        let local_id = fresh_id(|id| self.by_id.contains_key(&id));
        // Reserve the name first so two concurrent spawns cannot both take it.
        if let Some(name) = &opts.name {
            match self.by_name.entry(name.clone()) {
                Entry::Occupied(_) => return Err(SpawnError::NameTaken(name.clone())),
                Entry::Vacant(v) => {
                    v.insert(local_id);
                }
            }
        }
        let res = self.start_host::<A>(local_id, args, &opts).await;
        let actor = match res {
            Ok(a) => a,
            Err(e) => {
                if let Some(name) = &opts.name {
                    self.by_name.remove_if(name, |_, id| *id == local_id);
                }
                if let Some(f) = on_stop {
                    f(&StopReason::NotFound);
                }
                return Err(e);
            }
        };
        self.by_id.insert(local_id, Arc::new(actor.clone()));
        let (by_id, by_name, name) = (self.by_id.clone(), self.by_name.clone(), opts.name.clone());
        let stopped = self.stopped.clone();
        let wait = actor.life.wait();
        let cleanup = async move {
            let reason = wait.await;
            // Buried before it leaves the table, so a watch finds one or the other.
            stopped.bury(local_id, reason.clone());
            by_id.remove(&local_id);
            if let Some(name) = name {
                by_name.remove_if(&name, |_, id| *id == local_id);
            }
            if let Some(f) = on_stop {
                f(&reason);
            }
        };
        // The cleanup runs on the actor thread; if that thread is gone the system is shutting
        // down and `shutdown` clears the tables.
        self.threads.pick().spawn(cleanup);
        Ok(actor)
    }

    async fn start_host<A: RemoteActor>(
        &self,
        local_id: u64,
        args: A::Args,
        opts: &LocalSpawn,
    ) -> Result<LocalActor<A>, SpawnError> {
        let mailbox = Mailbox::new(if opts.mailbox == 0 {
            super::DEFAULT_MAILBOX
        } else {
            opts.mailbox
        });
        let life = Lifecycle::new();
        let ctx = ActorCtx::new(
            local_id,
            opts.name.clone(),
            opts.node,
            opts.cluster.clone(),
            opts.spawned_by,
        );
        let (tx, rx) = oneshot::channel();
        let (mb, lf) = (mailbox.clone(), life.clone());
        let started = self.threads.pick().spawn(async move {
            let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                A::create(args, ctx.clone())
            }));
            let r = match made {
                Ok(Ok(actor)) => Ok(Host::new(actor, ctx, lf, mb).start()),
                Ok(Err(e)) => Err(SpawnError::Create(e.to_string())),
                Err(_) => Err(SpawnError::Create("constructor panicked".into())),
            };
            let _ = tx.send(r);
        });
        if !started {
            return Err(SpawnError::Shutdown);
        }
        let addr = rx.await.map_err(|_| SpawnError::Shutdown)??;
        Ok(LocalActor {
            local_id,
            name: opts.name.clone(),
            spawned_by: opts.spawned_by,
            addr,
            mailbox,
            life,
        })
    }

    /// The live actor with this id.
    pub(crate) fn get(&self, local_id: u64) -> Option<Arc<dyn LocalCell>> {
        self.by_id.get(&local_id).map(|e| e.value().clone())
    }

    /// Why the actor with this id stopped, when it stopped recently (`None` if it is alive,
    /// never existed, or stopped long ago).
    pub(crate) fn stop_reason(&self, local_id: u64) -> Option<StopReason> {
        self.stopped.reason(local_id)
    }

    /// The live actor with this name.
    pub(crate) fn by_name(&self, name: &str) -> Option<Arc<dyn LocalCell>> {
        let id = *self.by_name.get(name)?.value();
        self.get(id)
    }

    /// The typed handle of a live local actor of kind `A`.
    pub(crate) fn typed<A: RemoteActor>(&self, local_id: u64) -> Option<LocalActor<A>> {
        let cell = self.get(local_id)?;
        cell.as_any().downcast_ref::<LocalActor<A>>().cloned()
    }

    /// Number of live actors.
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Every live actor.
    pub(crate) fn cells(&self) -> Vec<Arc<dyn LocalCell>> {
        self.by_id.iter().map(|e| e.value().clone()).collect()
    }

    /// Stops every actor (their watchers see `Shutdown`) and the actor threads.
    pub(crate) fn shutdown(&self) {
        let cells: Vec<_> = self.by_id.iter().map(|e| e.value().clone()).collect();
        for c in &cells {
            c.life().mark_stopped(StopReason::Shutdown);
            c.mailbox().close();
            c.stop();
        }
        self.threads.shutdown();
        self.by_id.clear();
        self.by_name.clear();
    }
}
