//! Direct QUIC streams between the members of a tensor-parallel group, for their pieces.
//!
//! A piece sent with `tell` crosses five threads and queues (link writer task, QUIC, the
//! receiving mail stream's task, the actor's mailbox and thread, the member's inbox) and the
//! sender waits for the link writer's acknowledgement. Here every member opens one
//! unidirectional stream ([`KIND_TP`]) to every other remote member, and the compute thread
//! writes its frames itself and reads the peers' frames itself: QUIC's driver wakes the
//! compute thread directly. The stream carries the same header and raw f32 tail as the
//! [`TpPiece`] tell, so the values are exact.
//!
//! A receiving node routes an incoming stream by its target (the member actor's local id) to
//! that member's [`Links`]; the stream's first frame ([`T_HELLO`]) names the sending member,
//! which must be the member the group's roster places on the stream's (authenticated) peer
//! node: another member of the cluster cannot slip pieces into a group.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};

use edgeray_runtime::actor::ActorId;
use edgeray_runtime::cluster::Cluster;
use edgeray_runtime::transport::{IncomingStream, Transport};
use edgeray_runtime::wire::{Frame, FrameReader, FrameWriter, TypeSet};

use crate::pipeline::protocol::TpPiece;

/// Stream kind: one member's pieces to one other member.
pub const KIND_TP: u16 = 0x0300;
/// First frame of a stream: the sending member's index (codec `u16`).
const T_HELLO: u16 = 0x0301;
/// A piece: codec [`TpPiece`] body, raw little-endian f32 tail.
const T_PIECE: u16 = 0x0302;

/// This node's group members reachable by stream, by actor local id (a cluster extension).
struct TpStreams {
    members: Arc<Mutex<HashMap<u64, Weak<Links>>>>,
}

/// A piece waiting to be taken: (run, step, sending member).
type PieceKey = (u64, u32, u16);

/// A member's streams: writers to the other members, readers from them.
pub struct Links {
    transport: Transport,
    writers: Mutex<HashMap<ActorId, FrameWriter>>,
    readers: Mutex<HashMap<u16, FrameReader>>,
    arrived: Condvar,
    /// Pieces read ahead of the one waited for, by (run, step, member).
    early: Mutex<HashMap<PieceKey, (TpPiece, Bytes)>>,
    closed: tokio::sync::watch::Sender<bool>,
    /// Every member's node in member order (empty until the roster came).
    roster: Mutex<Vec<edgeray_runtime::identity::NodeId>>,
}

impl Links {
    /// Links for the member actor `local_id` of `cluster`, registered so that peers' streams
    /// reach it; `None` without a transport (a local actor system: pieces go by `tell`).
    pub fn register(cluster: &Cluster, local_id: u64) -> Option<Arc<Links>> {
        let transport = cluster.transport()?.clone();
        let streams = cluster.extension_or_insert_with(|| {
            let members: Arc<Mutex<HashMap<u64, Weak<Links>>>> = Arc::default();
            let rx = transport.register_streams(KIND_TP, TypeSet::new([T_HELLO..=T_PIECE]), 64);
            tokio::spawn(accept(rx, members.clone()));
            TpStreams { members }
        });
        let links = Arc::new(Links {
            transport,
            writers: Mutex::new(HashMap::new()),
            readers: Mutex::new(HashMap::new()),
            arrived: Condvar::new(),
            early: Mutex::new(HashMap::new()),
            closed: tokio::sync::watch::Sender::new(false),
            roster: Mutex::new(Vec::new()),
        });
        let mut m = streams.members.lock();
        m.retain(|_, w| w.strong_count() > 0);
        m.insert(local_id, Arc::downgrade(&links));
        Some(links)
    }

    /// The group's roster: member `i` runs on `nodes[i]`; a stream is taken only from the
    /// node of the member it names.
    pub fn set_roster(&self, nodes: Vec<edgeray_runtime::identity::NodeId>) {
        *self.roster.lock() = nodes;
    }

    /// The member stopped: a compute thread waiting for a piece gives up.
    pub fn close(&self) {
        self.closed.send_replace(true);
        let _r = self.readers.lock();
        self.arrived.notify_all();
    }

    fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Sends one piece to each of `to` (remote member actors), opening streams on first use;
    /// returns once QUIC accepted the frames (blocking thread; `rt` drives nothing itself).
    pub fn send(
        &self,
        me: u16,
        to: &[ActorId],
        h: &TpPiece,
        tail: &Bytes,
        rt: &tokio::runtime::Handle,
    ) -> Result<(), String> {
        let body = Bytes::from(edgeray_runtime::codec::encode(h).map_err(|e| e.to_string())?);
        let frame = Frame {
            msg_type: T_PIECE,
            flags: 0,
            body,
            tail: tail.clone(),
        };
        let mut taken: Vec<(ActorId, Option<FrameWriter>)> = {
            let mut w = self.writers.lock();
            to.iter().map(|id| (*id, w.remove(id))).collect()
        };
        let results = rt.block_on(futures::future::join_all(taken.iter_mut().map(
            |(id, w)| async {
                if w.is_none() {
                    let mut nw = self
                        .transport
                        .open_uni(id.node, KIND_TP, id.local)
                        .await
                        .map_err(|e| e.to_string())?;
                    let hello = Frame {
                        msg_type: T_HELLO,
                        flags: 0,
                        body: Bytes::from(
                            edgeray_runtime::codec::encode(&me).map_err(|e| e.to_string())?,
                        ),
                        tail: Bytes::new(),
                    };
                    nw.write_frame(&hello).await.map_err(|e| e.to_string())?;
                    *w = Some(nw);
                }
                let w = w.as_mut().expect("opened above");
                w.write_frame(&frame).await.map_err(|e| e.to_string())
            },
        )));
        let mut err = None;
        {
            let mut ws = self.writers.lock();
            for ((id, w), r) in taken.into_iter().zip(results) {
                match r {
                    // A writer that failed is dropped: the next run opens a fresh stream.
                    Ok(()) => {
                        if let Some(w) = w {
                            ws.insert(id, w);
                        }
                    }
                    Err(e) => err = Some(format!("group member unreachable: {e}")),
                }
            }
        }
        err.map_or(Ok(()), Err)
    }

    /// Waits (blocking thread) for member `from`'s piece of `(run, step)`, until `deadline`;
    /// drops pieces of earlier runs.
    pub fn receive(
        &self,
        from: u16,
        run: u64,
        step: u32,
        deadline: Instant,
        rt: &tokio::runtime::Handle,
    ) -> Result<(TpPiece, Bytes), String> {
        if let Some(p) = self.early.lock().remove(&(run, step, from)) {
            return Ok(p);
        }
        let mut reader = {
            let mut r = self.readers.lock();
            loop {
                if self.is_closed() {
                    return Err("the stage stopped".into());
                }
                if let Some(x) = r.remove(&from) {
                    break x;
                }
                if self.arrived.wait_until(&mut r, deadline).timed_out() {
                    return Err(format!(
                        "group member {from} opened no stream within the piece timeout"
                    ));
                }
            }
        };
        let mut closed = self.closed.subscribe();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let f = rt.block_on(async {
                tokio::select! {
                    f = reader.read_frame() => Ok(f),
                    _ = closed.wait_for(|c| *c) => Err("the stage stopped".to_string()),
                    _ = tokio::time::sleep(left) => Err(format!(
                        "group member {from} did not send its piece of run {run} step {step} in time"
                    )),
                }
            });
            // On an error the reader is dropped (a read cancelled half-way leaves the stream
            // unusable); the member's next stream replaces it.
            let f = match f? {
                Ok(Some(f)) => f,
                Ok(None) => return Err(format!("group member {from} closed its stream")),
                Err(e) => return Err(format!("group member {from}: {e}")),
            };
            if f.msg_type != T_PIECE {
                return Err(format!(
                    "group member {from}: unexpected frame {}",
                    f.msg_type
                ));
            }
            let h: TpPiece = edgeray_runtime::codec::decode(&f.body).map_err(|e| e.to_string())?;
            if h.member != from {
                return Err(format!(
                    "member {from}'s stream carries member {}'s piece",
                    h.member
                ));
            }
            if (h.run, h.step) == (run, step) {
                self.readers.lock().entry(from).or_insert(reader);
                return Ok((h, f.tail));
            }
            if h.run > run || (h.run == run && h.step > step) {
                self.early.lock().insert((h.run, h.step, from), (h, f.tail));
                let mut e = self.early.lock();
                e.retain(|(r, _, _), _| *r >= run);
            }
        }
    }
}

/// Routes incoming [`KIND_TP`] streams to their member: reads the hello and hands the reader
/// over.
async fn accept(
    mut rx: tokio::sync::mpsc::Receiver<IncomingStream>,
    members: Arc<Mutex<HashMap<u64, Weak<Links>>>>,
) {
    while let Some(s) = rx.recv().await {
        let members = members.clone();
        tokio::spawn(async move {
            let IncomingStream {
                mut reader,
                target,
                peer,
                ..
            } = s;
            let links = members.lock().get(&target).and_then(Weak::upgrade);
            let Some(links) = links else {
                reader.stop(0x200);
                return;
            };
            let hello = tokio::time::timeout(Duration::from_secs(10), reader.read_frame()).await;
            let member = match hello {
                Ok(Ok(Some(f))) if f.msg_type == T_HELLO => {
                    match edgeray_runtime::codec::decode::<u16>(&f.body) {
                        Ok(m) => m,
                        Err(_) => return,
                    }
                }
                _ => return,
            };
            if links.roster.lock().get(member as usize) != Some(&peer) {
                tracing::warn!(from = %peer.short(), member,
                    "refused a group stream from a node that is not that member's");
                reader.stop(0x200);
                return;
            }
            links.readers.lock().insert(member, reader);
            links.arrived.notify_all();
        });
    }
}
