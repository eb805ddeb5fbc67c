//! Remote delivery over the QUIC transport.
//!
//! Two stream kinds (numbers from the actor range of [`crate::protocol`]):
//!
//! - **mail** ([`KIND_MAIL`], target = the actor's local id): one bidirectional stream per
//!   (sending node, target actor). The sender writes `TELL`/`ASK` frames (body = the codec
//!   encoding of the actor's message, tail = the envelope's raw tail); the receiver answers asks
//!   in order with `REPLY_OK`/`REPLY_ERR`, and sends `GONE` when the actor stops. The receiver
//!   reserves a mailbox slot *before* reading each frame, so a full mailbox stops the reading,
//!   QUIC's stream window fills up and the sender's writes (and thus `tell`) wait.
//! - **rpc** ([`KIND_RPC`]): one short bidirectional stream per request (spawn, budget, lookup,
//!   stop), or held open until the actor stops (watch). A lost connection ends the stream, which
//!   the caller reports as "node down".

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::actor_ref::ActorId;
use super::error::{ActorError, AskError, SpawnError, TellError};
use super::lifecycle::{Lifecycle, StopReason};
use super::local::LocalCell;
use super::placement::{Budget, Resources};
use crate::actor::cluster::{Cluster, SpawnOptions};
use crate::identity::NodeId;
use crate::membership::MembershipEvent;
use crate::transport::{IncomingStream, PeerEvent, Transport};
use crate::wire::{Frame, FrameReader, FrameWriter, TypeSet, WireMessage};

/// Stream kind: messages to one actor.
pub const KIND_MAIL: u16 = 0x0200;
/// Stream kind: one actor-system request.
pub const KIND_RPC: u16 = 0x0201;

const T_TELL: u16 = 0x0210;
const T_ASK: u16 = 0x0211;
const T_REPLY_OK: u16 = 0x0212;
const T_REPLY_ERR: u16 = 0x0213;
const T_GONE: u16 = 0x0214;
const T_FAULT: u16 = 0x0215;
const T_OPEN_OK: u16 = 0x0216;
const T_RPC_REQ: u16 = 0x0220;
const T_RPC_RESP: u16 = 0x0221;

/// Stream error code: the target actor does not exist (any more).
const CODE_GONE: u32 = 0x200;

/// Time limit of a non-watch request.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// A request on an rpc stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum RpcRequest {
    Spawn {
        kind: String,
        args: Vec<u8>,
        name: Option<String>,
        resources: Resources,
        mailbox: u32,
    },
    Budget {
        kind: String,
    },
    Lookup {
        name: String,
        kind: String,
    },
    Watch {
        local: u64,
    },
    Stop {
        local: u64,
    },
    // Added after the variants above so their encodings are unchanged.
    JoinGroup {
        group: String,
        local: u64,
    },
    LeaveGroup {
        group: String,
        local: u64,
    },
    GroupMembers {
        group: String,
        kind: String,
    },
    /// To the head: register a cluster-wide name.
    ClaimName {
        name: String,
        id: ActorId,
    },
    /// To an actor's node: the actor holds this name from now on.
    HoldName {
        name: String,
        local: u64,
    },
    /// Which local actor holds this name.
    NameHolder {
        name: String,
    },
}

impl WireMessage for RpcRequest {
    const TYPE: u16 = T_RPC_REQ;
}

/// The answer on an rpc stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum RpcResponse {
    Spawned(Result<u64, SpawnError>),
    /// `None`: the kind is not registered there.
    Budget(Option<Budget>),
    Found(Option<u64>),
    Stopped(StopReason),
    Ack,
    /// Whether the actor was alive to join the group.
    Joined(bool),
    /// A group's members of the asked kind on the answering node.
    Members(Vec<u64>),
    Claimed(Result<(), super::names::NameError>),
    /// Whether the actor was alive to hold the name.
    Held(bool),
    /// The local actor holding the name, with its kind.
    NameHeld(Option<(u64, String)>),
    /// A stop request from a node other than the one that spawned the actor: not done.
    StopRefused,
}

impl WireMessage for RpcResponse {
    const TYPE: u16 = T_RPC_RESP;
}

/// Body of a `REPLY_ERR` frame.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum ReplyFault {
    /// The handler's own error ([`ActorError::Failed`]), as text.
    Failed(String),
    ActorDead,
    /// Any other [`ActorError`] (panic, unknown message type, undecodable message), typed.
    /// Added after `Failed` and `ActorDead` so their encodings are unchanged.
    Actor(ActorError),
}

/// Why a mail link ended.
#[derive(Debug, Clone, PartialEq)]
enum LinkDown {
    Gone(StopReason),
    NodeDown(String),
    Fault(String),
}

impl LinkDown {
    fn tell_error(&self) -> TellError {
        match self {
            LinkDown::Gone(_) => TellError::ActorDead,
            LinkDown::NodeDown(s) => TellError::NodeDown(s.clone()),
            LinkDown::Fault(s) => TellError::Codec(s.clone()),
        }
    }
    fn ask_error(&self) -> AskError {
        self.tell_error().into()
    }
}

type ReplyResult = Result<(Bytes, Bytes), AskError>;

struct Outgoing {
    frame: Frame,
    reply: Option<oneshot::Sender<ReplyResult>>,
    written: oneshot::Sender<Result<(), LinkDown>>,
}

/// The sending side of one mail stream.
struct Link {
    tx: mpsc::Sender<Outgoing>,
    down: watch::Sender<Option<LinkDown>>,
}

impl Link {
    fn is_down(&self) -> bool {
        self.down.borrow().is_some()
    }

    async fn send(
        &self,
        frame: Frame,
        reply: Option<oneshot::Sender<ReplyResult>>,
    ) -> Result<(), LinkDown> {
        let (written, done) = oneshot::channel();
        if self
            .tx
            .send(Outgoing {
                frame,
                reply,
                written,
            })
            .await
            .is_err()
        {
            return Err(self.reason());
        }
        done.await.unwrap_or_else(|_| Err(self.reason()))
    }

    /// Queues a frame without a reply only if the writer can take it at once; `Ok(false)` when
    /// it is still busy with an earlier frame.
    fn try_send(&self, frame: Frame) -> Result<bool, LinkDown> {
        let (written, _) = oneshot::channel();
        match self.tx.try_send(Outgoing {
            frame,
            reply: None,
            written,
        }) {
            Ok(()) => Ok(true),
            Err(mpsc::error::TrySendError::Full(_)) => Ok(false),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(self.reason()),
        }
    }

    fn reason(&self) -> LinkDown {
        self.down
            .borrow()
            .clone()
            .unwrap_or_else(|| LinkDown::NodeDown("mail stream closed".into()))
    }

    fn mark(&self, why: LinkDown) {
        self.down.send_if_modified(|d| {
            if d.is_none() {
                *d = Some(why);
                true
            } else {
                false
            }
        });
    }
}

/// The remote half of a [`Cluster`]: mail links to remote actors, shared remote watches, and the
/// servers for incoming streams.
pub(crate) struct Remote {
    transport: Transport,
    links: DashMap<ActorId, Arc<Link>>,
    link_create: tokio::sync::Mutex<()>,
    watches: DashMap<ActorId, Lifecycle>,
    /// Remote actors known to have stopped (their node said so); messages to them fail at once.
    tombstones: Mutex<Tombstones>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// A bounded set of actor ids known to be gone, oldest forgotten first.
#[derive(Default)]
struct Tombstones {
    order: VecDeque<ActorId>,
    set: std::collections::HashSet<ActorId>,
}

impl Tombstones {
    const CAPACITY: usize = 4096;

    fn insert(&mut self, id: ActorId) {
        if self.set.insert(id) {
            self.order.push_back(id);
            if self.order.len() > Self::CAPACITY
                && let Some(old) = self.order.pop_front()
            {
                self.set.remove(&old);
            }
        }
    }

    fn contains(&self, id: &ActorId) -> bool {
        self.set.contains(id)
    }

    /// Forgets a node's actors (it restarted or went down: its ids may be reused).
    fn forget_node(&mut self, node: NodeId) {
        self.order.retain(|id| id.node != node);
        self.set.retain(|id| id.node != node);
    }
}

impl Remote {
    /// Registers the stream handlers on `transport` (before it starts accepting).
    pub(crate) fn new(transport: Transport) -> Self {
        Remote {
            transport,
            links: DashMap::new(),
            link_create: tokio::sync::Mutex::new(()),
            watches: DashMap::new(),
            tombstones: Mutex::new(Tombstones::default()),
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// Starts the stream servers; they hold the cluster weakly.
    pub(crate) fn serve(&self, cluster: Weak<crate::actor::cluster::Inner>) {
        let mut mail =
            self.transport
                .register_streams(KIND_MAIL, TypeSet::new([T_TELL..=T_ASK]), 256);
        let mut rpc = self
            .transport
            .register_streams(KIND_RPC, TypeSet::single(T_RPC_REQ), 256);
        let c1 = cluster.clone();
        let t1 = tokio::spawn(async move {
            while let Some(s) = mail.recv().await {
                let Some(cluster) = Cluster::from_weak(&c1) else {
                    break;
                };
                let cell = cluster.inner.locals.get(s.target);
                drop(cluster);
                tokio::spawn(serve_mail(s, cell));
            }
        });
        let t2 = tokio::spawn(async move {
            while let Some(s) = rpc.recv().await {
                let c = cluster.clone();
                tokio::spawn(serve_rpc(s, c));
            }
        });
        self.tasks.lock().extend([t1, t2]);
    }

    /// Fails links and watches of nodes that membership declares Down.
    pub(crate) fn follow_membership(
        self: &Arc<Self>,
        mut events: broadcast::Receiver<MembershipEvent>,
    ) {
        let me = Arc::downgrade(self);
        let t = tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(MembershipEvent::MemberDown { member, .. }) => match me.upgrade() {
                        Some(r) => r.node_down(member.node_id, "member down"),
                        None => break,
                    },
                    Ok(MembershipEvent::MemberJoining(member)) => match me.upgrade() {
                        Some(r) => r.node_rejoined(member.node_id),
                        None => break,
                    },
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        self.tasks.lock().push(t);
    }

    /// Fails links and watches of peers whose connection ends (no membership layer).
    pub(crate) fn follow_transport(self: &Arc<Self>, mut events: broadcast::Receiver<PeerEvent>) {
        let me = Arc::downgrade(self);
        let t = tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(PeerEvent::Disconnected { node_id, .. }) => match me.upgrade() {
                        Some(r) => r.node_down(node_id, "disconnected"),
                        None => break,
                    },
                    Ok(PeerEvent::Connected(peer)) => match me.upgrade() {
                        Some(r) => r.node_rejoined(peer.node_id),
                        None => break,
                    },
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        self.tasks.lock().push(t);
    }

    /// A node (re)joined, possibly as a new process whose actors reuse the local ids of the
    /// previous one: forget what was buried there. A tombstone recorded after the node went
    /// down (a late send of a stage to its old coordinator's sink) would otherwise make the
    /// new process's actor with the same id look dead. Tombstones are only a shortcut: a tell
    /// to an actor that is really gone is answered as such by its node and buried again.
    fn node_rejoined(&self, node: NodeId) {
        self.tombstones.lock().forget_node(node);
    }

    fn node_down(&self, node: NodeId, why: &str) {
        for l in self.links.iter().filter(|e| e.key().node == node) {
            l.mark(LinkDown::NodeDown(format!("{}: {why}", node.short())));
        }
        self.links.retain(|k, _| k.node != node);
        self.tombstones.lock().forget_node(node);
        let ids: Vec<ActorId> = self
            .watches
            .iter()
            .filter(|e| e.key().node == node)
            .map(|e| *e.key())
            .collect();
        for id in ids {
            if let Some((_, life)) = self.watches.remove(&id) {
                life.mark_stopped(StopReason::NodeDown);
            }
        }
    }

    pub(crate) fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Stops the servers and fails every link.
    pub(crate) fn shutdown(&self) {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
        for l in self.links.iter() {
            l.mark(LinkDown::NodeDown("local node shut down".into()));
        }
        self.links.clear();
    }

    async fn link(&self, id: ActorId) -> Result<Arc<Link>, LinkDown> {
        if let Some(l) = self.links.get(&id)
            && !l.is_down()
        {
            return Ok(l.clone());
        }
        let _guard = self.link_create.lock().await;
        if let Some(l) = self.links.get(&id)
            && !l.is_down()
        {
            return Ok(l.clone());
        }
        let (writer, mut reader) = self
            .transport
            .open_bi(
                id.node,
                KIND_MAIL,
                id.local,
                TypeSet::new([T_REPLY_OK..=T_OPEN_OK]),
            )
            .await
            .map_err(|e| LinkDown::NodeDown(format!("{}: {e}", id.node.short())))?;
        // The receiver answers OPEN_OK (actor alive) or GONE first, so a message to an actor
        // that no longer exists fails instead of vanishing.
        let first = tokio::time::timeout(RPC_TIMEOUT, reader.read_frame())
            .await
            .map_err(|_| {
                LinkDown::NodeDown(format!("{}: no answer to stream open", id.node.short()))
            })?
            .map_err(|e| LinkDown::NodeDown(format!("{}: {e}", id.node.short())))?;
        match first {
            Some(f) if f.msg_type == T_OPEN_OK => {}
            Some(f) if f.msg_type == T_GONE => {
                let reason =
                    crate::codec::decode::<StopReason>(&f.body).unwrap_or(StopReason::NotFound);
                return Err(LinkDown::Gone(reason));
            }
            Some(f) => {
                return Err(LinkDown::Fault(format!(
                    "unexpected frame type 0x{:04x}",
                    f.msg_type
                )));
            }
            None => return Err(LinkDown::NodeDown("mail stream closed at open".into())),
        }
        let (tx, rx) = mpsc::channel(1);
        let link = Arc::new(Link {
            tx,
            down: watch::Sender::new(None),
        });
        let pending = Arc::new(Mutex::new(VecDeque::new()));
        tokio::spawn(link_writer(link.clone(), writer, rx, pending.clone()));
        tokio::spawn(link_reader(link.clone(), reader, pending));
        self.links.insert(id, link.clone());
        Ok(link)
    }

    /// The mail link to a live actor (a known-dead one is refused at once).
    async fn tell_link(&self, id: ActorId) -> Result<Arc<Link>, TellError> {
        if self.tombstones.lock().contains(&id) {
            return Err(TellError::ActorDead);
        }
        self.link(id).await.map_err(|d| d.tell_error())
    }

    /// Sends a tell frame; returns once QUIC accepted it.
    pub(crate) async fn tell(
        &self,
        id: ActorId,
        body: Vec<u8>,
        tail: Bytes,
    ) -> Result<(), TellError> {
        let link = self.tell_link(id).await?;
        let r = link.send(tell_frame(body, tail), None).await;
        self.forget_if_down(id, &link);
        r.map_err(|d| d.tell_error())
    }

    /// Queues a tell frame if the stream can take it at once (see `ActorRef::try_tell`).
    pub(crate) async fn try_tell(
        &self,
        id: ActorId,
        body: Vec<u8>,
        tail: Bytes,
    ) -> Result<(), TellError> {
        let link = self.tell_link(id).await?;
        let r = link.try_send(tell_frame(body, tail));
        self.forget_if_down(id, &link);
        match r {
            Ok(true) => Ok(()),
            Ok(false) => Err(TellError::MailboxFull),
            Err(d) => Err(d.tell_error()),
        }
    }

    /// Sends an ask frame and waits for the encoded reply (no timeout here).
    pub(crate) async fn ask(&self, id: ActorId, body: Vec<u8>, tail: Bytes) -> ReplyResult {
        let frame = Frame {
            msg_type: T_ASK,
            flags: 0,
            body: Bytes::from(body),
            tail,
        };
        if self.tombstones.lock().contains(&id) {
            return Err(AskError::ActorDead);
        }
        let link = self.link(id).await.map_err(|d| d.ask_error())?;
        let (tx, rx) = oneshot::channel();
        let sent = link.send(frame, Some(tx)).await;
        if let Err(d) = sent {
            self.forget_if_down(id, &link);
            return Err(d.ask_error());
        }
        let r = rx.await.unwrap_or_else(|_| Err(link.reason().ask_error()));
        self.forget_if_down(id, &link);
        r
    }

    fn forget_if_down(&self, id: ActorId, link: &Arc<Link>) {
        if link.is_down() {
            if matches!(link.reason(), LinkDown::Gone(_)) {
                self.tombstones.lock().insert(id);
            }
            self.links.remove_if(&id, |_, l| Arc::ptr_eq(l, link));
        }
    }

    /// Records that a remote actor is gone for good (not merely unreachable).
    fn bury(&self, id: ActorId, reason: &StopReason) {
        if !matches!(reason, StopReason::NodeDown) {
            self.tombstones.lock().insert(id);
            if let Some((_, l)) = self.links.remove(&id) {
                l.mark(LinkDown::Gone(reason.clone()));
            }
        }
    }

    /// One request/response exchange.
    pub(crate) async fn rpc(&self, node: NodeId, req: &RpcRequest) -> Result<RpcResponse, String> {
        let fut = async {
            let (mut w, mut r) = self
                .transport
                .open_bi(node, KIND_RPC, 0, TypeSet::single(T_RPC_RESP))
                .await
                .map_err(|e| e.to_string())?;
            w.send(req, Bytes::new()).await.map_err(|e| e.to_string())?;
            let resp = r
                .read_message::<RpcResponse>()
                .await
                .map_err(|e| e.to_string())?;
            drop(w);
            resp.map(|(m, _)| m)
                .ok_or_else(|| "stream closed before the answer".to_string())
        };
        if matches!(req, RpcRequest::Watch { .. }) {
            fut.await
        } else {
            tokio::time::timeout(RPC_TIMEOUT, fut)
                .await
                .unwrap_or_else(|_| Err("request timed out".into()))
        }
    }

    /// Resolves when the remote actor stops or its node becomes unreachable. Watchers of the same
    /// actor share one watch stream.
    pub(crate) fn watch(
        self: &Arc<Self>,
        id: ActorId,
    ) -> impl std::future::Future<Output = StopReason> + Send + use<> {
        let (life, start) = match self.watches.entry(id) {
            dashmap::mapref::entry::Entry::Occupied(e) => (e.get().clone(), false),
            dashmap::mapref::entry::Entry::Vacant(v) => (v.insert(Lifecycle::new()).clone(), true),
        };
        let wait = life.wait();
        if start {
            let me = self.clone();
            let l = life.clone();
            tokio::spawn(async move {
                let reason = match me
                    .rpc(id.node, &RpcRequest::Watch { local: id.local })
                    .await
                {
                    Ok(RpcResponse::Stopped(r)) => r,
                    Ok(_) => StopReason::NotFound,
                    Err(_) => StopReason::NodeDown,
                };
                me.watches.remove(&id);
                me.bury(id, &reason);
                l.mark_stopped(reason);
            });
        }
        wait
    }
}

async fn link_writer(
    link: Arc<Link>,
    mut w: FrameWriter,
    mut rx: mpsc::Receiver<Outgoing>,
    pending: Arc<Mutex<VecDeque<oneshot::Sender<ReplyResult>>>>,
) {
    let mut down = link.down.subscribe();
    loop {
        let out = tokio::select! {
            o = rx.recv() => match o { Some(o) => o, None => break },
            _ = down.wait_for(|d| d.is_some()) => break,
        };
        if let Some(tx) = out.reply {
            pending.lock().push_back(tx);
        }
        // The write itself is never cancelled half-way (that would corrupt the stream).
        match w.write_frame(&out.frame).await {
            Ok(()) => {
                let _ = out.written.send(Ok(()));
            }
            Err(e) => {
                let why = if stopped_because_gone(&e) {
                    // The receiver sends GONE (with the actor's stop reason) before it stops the
                    // stream; give the reader a moment to deliver that reason.
                    let _ = tokio::time::timeout(GONE_GRACE, down.wait_for(|d| d.is_some())).await;
                    LinkDown::Gone(StopReason::Stopped)
                } else {
                    LinkDown::NodeDown(e.to_string())
                };
                link.mark(why);
                let _ = out.written.send(Err(link.reason()));
                break;
            }
        }
    }
    rx.close();
    while let Ok(out) = rx.try_recv() {
        let _ = out.written.send(Err(link.reason()));
    }
    let _ = w.finish();
}

/// How long a writer whose stream the receiver stopped waits for the GONE frame's reason.
const GONE_GRACE: Duration = Duration::from_millis(500);

/// Whether a write failed because the receiving node stopped the stream as the actor is gone.
fn stopped_because_gone(e: &crate::wire::WireError) -> bool {
    matches!(e, crate::wire::WireError::Write(quinn::WriteError::Stopped(code))
        if *code == quinn::VarInt::from_u32(CODE_GONE))
}

async fn link_reader(
    link: Arc<Link>,
    mut r: FrameReader,
    pending: Arc<Mutex<VecDeque<oneshot::Sender<ReplyResult>>>>,
) {
    let why = loop {
        let f = match r.read_frame().await {
            Ok(Some(f)) => f,
            Ok(None) => break LinkDown::NodeDown("mail stream finished".into()),
            Err(e) => break LinkDown::NodeDown(e.to_string()),
        };
        match f.msg_type {
            T_REPLY_OK | T_REPLY_ERR => {
                let Some(tx) = pending.lock().pop_front() else {
                    break LinkDown::Fault("reply without a pending ask".into());
                };
                let res = if f.msg_type == T_REPLY_OK {
                    Ok((f.body, f.tail))
                } else {
                    match crate::codec::decode::<ReplyFault>(&f.body) {
                        Ok(ReplyFault::Failed(s)) => Err(AskError::Remote(s)),
                        Ok(ReplyFault::ActorDead) => Err(AskError::ActorDead),
                        Ok(ReplyFault::Actor(e)) => Err(e.into()),
                        Err(e) => Err(AskError::Codec(e.to_string())),
                    }
                };
                let _ = tx.send(res);
            }
            T_GONE => {
                let reason =
                    crate::codec::decode::<StopReason>(&f.body).unwrap_or(StopReason::Stopped);
                break LinkDown::Gone(reason);
            }
            _ => {
                let text =
                    crate::codec::decode::<String>(&f.body).unwrap_or_else(|e| e.to_string());
                break LinkDown::Fault(text);
            }
        }
    };
    link.mark(why);
    let err = link.reason().ask_error();
    for tx in pending.lock().drain(..) {
        let _ = tx.send(Err(err.clone()));
    }
}

/// A tell frame: the encoded message and its raw tail.
fn tell_frame(body: Vec<u8>, tail: Bytes) -> Frame {
    Frame {
        msg_type: T_TELL,
        flags: 0,
        body: Bytes::from(body),
        tail,
    }
}

/// What the reply writer of an incoming mail stream sends next.
enum ReplyItem {
    Reply(oneshot::Receiver<Result<(Bytes, Bytes), ActorError>>),
    Fault(String),
}

async fn serve_mail(s: IncomingStream, cell: Option<Arc<dyn LocalCell>>) {
    let IncomingStream {
        mut reader,
        writer,
        peer,
        ..
    } = s;
    let Some(mut writer) = writer else { return };
    let Some(cell) = cell else {
        let _ = write_gone(&mut writer, &StopReason::NotFound).await;
        reader.stop(CODE_GONE);
        let _ = writer.finish();
        return;
    };
    if writer
        .write_frame(&Frame {
            msg_type: T_OPEN_OK,
            flags: 0,
            body: Bytes::new(),
            tail: Bytes::new(),
        })
        .await
        .is_err()
    {
        return;
    }
    let cap = cell.mailbox().capacity().max(1);
    let (rq_tx, rq_rx) = mpsc::channel::<ReplyItem>(cap);
    let replies = tokio::spawn(reply_writer(writer, rq_rx, cell.clone()));
    let life = cell.life().clone();
    loop {
        // Reserve room first: while the mailbox is full this stream is not read, so QUIC flow
        // control pushes back on the sender.
        let slot = tokio::select! {
            s = cell.mailbox().reserve() => s.ok(),
            _ = life.wait() => None,
        };
        let Some(slot) = slot else { break };
        let frame = match reader.read_frame().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "mail stream ended");
                break;
            }
        };
        if frame.msg_type == T_TELL {
            if let Err(e) = cell.deliver_encoded(slot, &frame.body, frame.tail, peer, None) {
                let _ = rq_tx.send(ReplyItem::Fault(e.to_string())).await;
                break;
            }
        } else {
            let (tx, rx) = oneshot::channel();
            if let Err(e) = cell.deliver_encoded(slot, &frame.body, frame.tail, peer, Some(tx)) {
                let (tx2, rx2) = oneshot::channel();
                let _ = tx2.send(Err(ActorError::new(e.to_string())));
                let _ = rq_tx.send(ReplyItem::Reply(rx2)).await;
                continue;
            }
            if rq_tx.send(ReplyItem::Reply(rx)).await.is_err() {
                break;
            }
        }
    }
    drop(rq_tx);
    let _ = replies.await;
    reader.stop(CODE_GONE);
}

async fn reply_writer(
    mut w: FrameWriter,
    mut rx: mpsc::Receiver<ReplyItem>,
    cell: Arc<dyn LocalCell>,
) {
    while let Some(item) = rx.recv().await {
        let frame = match item {
            ReplyItem::Reply(r) => match r.await {
                Ok(Ok((body, tail))) => Frame {
                    msg_type: T_REPLY_OK,
                    flags: 0,
                    body,
                    tail,
                },
                Ok(Err(ActorError::Failed(e))) => fault_frame(T_REPLY_ERR, &ReplyFault::Failed(e)),
                Ok(Err(e)) => fault_frame(T_REPLY_ERR, &ReplyFault::Actor(e)),
                Err(_) => fault_frame(T_REPLY_ERR, &ReplyFault::ActorDead),
            },
            ReplyItem::Fault(text) => fault_frame(T_FAULT, &text),
        };
        if w.write_frame(&frame).await.is_err() {
            return;
        }
    }
    if let Some(reason) = cell.life().stopped() {
        let _ = write_gone(&mut w, &reason).await;
    }
    let _ = w.finish();
}

fn fault_frame<T: Serialize>(msg_type: u16, v: &T) -> Frame {
    let body = crate::codec::encode(v).unwrap_or_default();
    Frame {
        msg_type,
        flags: 0,
        body: Bytes::from(body),
        tail: Bytes::new(),
    }
}

async fn write_gone(
    w: &mut FrameWriter,
    reason: &StopReason,
) -> Result<(), crate::wire::WireError> {
    w.write_frame(&fault_frame(T_GONE, reason)).await
}

async fn serve_rpc(s: IncomingStream, cluster: Weak<crate::actor::cluster::Inner>) {
    let IncomingStream {
        mut reader,
        writer,
        peer,
        ..
    } = s;
    let Some(mut writer) = writer else { return };
    let req = match reader.read_message::<RpcRequest>().await {
        Ok(Some((m, _))) => m,
        _ => return,
    };
    let resp = {
        let Some(c) = Cluster::from_weak(&cluster) else {
            return;
        };
        match req {
            RpcRequest::Spawn {
                kind,
                args,
                name,
                resources,
                mailbox,
            } => {
                let opts = SpawnOptions {
                    name,
                    node: None,
                    resources,
                    mailbox: mailbox as usize,
                };
                tracing::debug!(%kind, from = %peer.short(), "remote spawn");
                RpcResponse::Spawned(c.spawn_encoded(&kind, &args, &opts, Some(peer)).await)
            }
            RpcRequest::Budget { kind } => RpcResponse::Budget(
                (c.registry().contains(&kind) && !c.is_draining()).then(|| c.local_budget()),
            ),
            RpcRequest::Lookup { name, kind } => RpcResponse::Found(
                c.inner
                    .locals
                    .by_name(&name)
                    .filter(|cell| cell.kind() == kind)
                    .map(|cell| cell.local_id()),
            ),
            RpcRequest::Stop { local } => match c.inner.locals.get(local) {
                Some(cell) if cell.spawned_by() != Some(peer) => {
                    tracing::warn!(from = %peer.short(), actor = local, kind = cell.kind(),
                        "refused a stop request from a node that did not spawn the actor");
                    c.inner
                        .refused_stops
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    RpcResponse::StopRefused
                }
                Some(cell) => {
                    cell.stop();
                    RpcResponse::Ack
                }
                None => RpcResponse::Ack,
            },
            RpcRequest::JoinGroup { group, local } => {
                RpcResponse::Joined(super::group::join_local(&c, &group, local))
            }
            RpcRequest::LeaveGroup { group, local } => {
                c.inner.groups.remove(&group, local);
                RpcResponse::Ack
            }
            RpcRequest::GroupMembers { group, kind } => {
                RpcResponse::Members(c.inner.groups.members(&group, &kind))
            }
            RpcRequest::ClaimName { name, id } => {
                RpcResponse::Claimed(super::names::claim(&c, &name, id).await)
            }
            // Only the head hands out names: another member cannot make this node hold one.
            RpcRequest::HoldName { name, local } if peer == c.name_head() => {
                RpcResponse::Held(super::names::hold_local(&c, &name, local))
            }
            RpcRequest::HoldName { name, .. } => {
                tracing::warn!(from = %peer.short(), %name,
                    "refused to hold a cluster-wide name for a node that is not the head");
                RpcResponse::Held(false)
            }
            RpcRequest::NameHolder { name } => RpcResponse::NameHeld(c.inner.names.holder(&name)),
            RpcRequest::Watch { local } => {
                let wait = c.inner.locals.get(local).map(|cell| cell.life().wait());
                let buried = c.inner.locals.stop_reason(local);
                drop(c);
                match wait {
                    None => RpcResponse::Stopped(buried.unwrap_or(StopReason::NotFound)),
                    Some(w) => {
                        // Also end when the watcher goes away (its stream closes).
                        tokio::select! {
                            r = w => RpcResponse::Stopped(r),
                            _ = reader.read_frame() => return,
                        }
                    }
                }
            }
        }
    };
    let _ = writer.send(&resp, Bytes::new()).await;
    let _ = writer.finish();
}
