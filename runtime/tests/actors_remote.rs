//! Two actor systems in one process, each with its own QUIC endpoint on 127.0.0.1, talking
//! real mTLS QUIC: remote spawn, tell, ask, lookup, placement by resources, death watch,
//! and back-pressure across the network.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use edgeray_runtime::actor::TestCluster;
use edgeray_runtime::actor::{
    ActorCtx, ActorError, AskError, Envelope, Registry, RemoteActor, Resources, SpawnError,
    StopReason, TellError,
};
use edgeray_runtime::cluster::{Cluster, SpawnOptions};
use edgeray_runtime::transport::Transport;
use serde::{Deserialize, Serialize};

const T: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Msg {
    Ping(u32),
    Fail,
    Sleep(u64),
}

/// Handled messages, per counter slot (both actor systems live in this process).
static HANDLED: [AtomicUsize; 4] = [const { AtomicUsize::new(0) }; 4];

struct Pong {
    slot: usize,
}

impl RemoteActor for Pong {
    type Args = usize;
    type Msg = Msg;
    type Reply = u32;
    fn kind() -> &'static str {
        "test.pong"
    }
    fn create(slot: usize, _ctx: ActorCtx) -> Result<Self, ActorError> {
        Ok(Pong { slot: slot % 4 })
    }
    async fn handle(&mut self, m: Envelope<Msg>) -> Result<Envelope<u32>, ActorError> {
        let r = match m.msg {
            Msg::Ping(n) => Ok(Envelope::with_tail(n + 1, m.tail)),
            Msg::Fail => Err(ActorError::new("pong refuses")),
            Msg::Sleep(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(Envelope::new(0))
            }
        };
        HANDLED[self.slot].fetch_add(1, Ordering::SeqCst);
        r
    }
}

/// A kind only node B knows.
struct Only;

impl RemoteActor for Only {
    type Args = ();
    type Msg = ();
    type Reply = ();
    fn kind() -> &'static str {
        "test.only"
    }
    fn create(_: (), _ctx: ActorCtx) -> Result<Self, ActorError> {
        Ok(Only)
    }
    async fn handle(&mut self, _m: Envelope<()>) -> Result<Envelope<()>, ActorError> {
        Ok(Envelope::new(()))
    }
}

struct Pair {
    a: Cluster,
    b: Cluster,
    ta: Transport,
    tb: Transport,
}

/// Node a knows `Pong`; node b knows `Pong` and `Only`.
async fn pair(cap_a: Resources, cap_b: Resources, window_b: Option<u32>) -> Pair {
    let mut nodes = TestCluster::start(2)
        .register::<Pong>()
        .node_registry(1, Registry::new().with::<Pong>().with::<Only>())
        .capacity(0, cap_a)
        .capacity(1, cap_b);
    if let Some(w) = window_b {
        nodes = nodes.stream_window(1, w);
    }
    let tc = nodes.await.expect("two connected nodes");
    Pair {
        a: tc.node(0).clone(),
        b: tc.node(1).clone(),
        ta: tc.transport(0).clone(),
        tb: tc.transport(1).clone(),
    }
}

impl Pair {
    async fn close(self) {
        self.a.shutdown().await;
        self.b.shutdown().await;
        self.ta.shutdown().await;
        self.tb.shutdown().await;
    }
}

fn unlimited() -> Resources {
    Resources {
        memory_bytes: u64::MAX,
        power_watts: f64::INFINITY,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_spawn_tell_ask_and_lookup() {
    let p = pair(unlimited(), unlimited(), None).await;
    let b_id = p.b.node_id();
    let pong =
        p.a.spawn::<Pong>(0, SpawnOptions::new().on(b_id).name("pong"))
            .await
            .expect("remote spawn");
    assert_eq!(pong.node(), b_id);
    assert!(!pong.is_local());

    let tail = Bytes::from(vec![7u8; 100_000]);
    let r = pong
        .ask(Envelope::with_tail(Msg::Ping(41), tail.clone()), T)
        .await
        .expect("remote ask");
    assert_eq!(r.msg, 42);
    assert_eq!(
        r.tail, tail,
        "the raw tail crosses the network both ways unchanged"
    );
    for i in 0..50 {
        pong.tell(Msg::Ping(i)).await.expect("remote tell");
    }
    assert_eq!(
        pong.ask(Msg::Fail, T).await,
        Err(AskError::Remote("pong refuses".into()))
    );
    assert_eq!(
        pong.ask(Msg::Ping(1), T).await.unwrap().msg,
        2,
        "actor survives a handler error"
    );

    // Lookup by name from the other node, and from the owning node.
    let found = p.a.lookup::<Pong>("pong").await.expect("found from a");
    assert_eq!(found.id(), pong.id());
    assert_eq!(found.ask(Msg::Ping(9), T).await.unwrap().msg, 10);
    let local = p.b.lookup::<Pong>("pong").await.expect("found on b");
    assert!(local.is_local());
    assert!(p.a.lookup::<Pong>("nobody").await.is_none());
    assert!(
        p.a.lookup::<Only>("pong").await.is_none(),
        "lookup checks the kind"
    );

    // Spawning a kind the target does not know, and a name taken there.
    let e =
        p.b.spawn::<Only>((), SpawnOptions::new().on(p.a.node_id()))
            .await
            .unwrap_err();
    assert_eq!(e, SpawnError::UnknownKind("test.only".into()));
    let e =
        p.a.spawn::<Pong>(0, SpawnOptions::new().on(b_id).name("pong"))
            .await
            .unwrap_err();
    assert_eq!(e, SpawnError::NameTaken("pong".into()));

    // Ask timeout across nodes.
    assert_eq!(
        pong.ask(Msg::Sleep(400), Duration::from_millis(50)).await,
        Err(AskError::Timeout)
    );
    p.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_uses_remote_budgets_and_releases_them() {
    let gib = 1u64 << 30;
    let p = pair(
        Resources::none().memory(gib),
        Resources::none().memory(4 * gib).custom("npu", 1.0),
        None,
    )
    .await;
    let b_id = p.b.node_id();
    // Too big for a, fits b: the placement function picks b.
    let big =
        p.a.spawn::<Pong>(
            1,
            SpawnOptions::new().resources(Resources::none().memory(2 * gib)),
        )
        .await
        .unwrap();
    assert_eq!(big.node(), b_id);
    assert_eq!(p.b.local_budget().free().memory_bytes, 2 * gib);
    // Small: stays local (a first).
    let small =
        p.a.spawn::<Pong>(
            1,
            SpawnOptions::new().resources(Resources::none().memory(1024)),
        )
        .await
        .unwrap();
    assert!(small.is_local());
    // Custom resource only b has.
    let npu =
        p.a.spawn::<Pong>(
            1,
            SpawnOptions::new().resources(Resources::none().custom("npu", 1.0)),
        )
        .await
        .unwrap();
    assert_eq!(npu.node(), b_id);
    let e =
        p.a.spawn::<Pong>(
            1,
            SpawnOptions::new().resources(Resources::none().custom("npu", 1.0)),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, SpawnError::NoNodeFits(_)), "{e:?}");
    // An explicit node wins over placement, but the node still refuses what does not fit.
    let e =
        p.a.spawn::<Pong>(
            1,
            SpawnOptions::new()
                .on(b_id)
                .resources(Resources::none().memory(3 * gib)),
        )
        .await;
    assert!(matches!(e, Err(SpawnError::NoNodeFits(_))), "{e:?}");
    // Stopping remote actors releases their reservations on b.
    let (wb, wn) = (tokio::spawn(big.watch()), tokio::spawn(npu.watch()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    big.stop().await;
    npu.stop().await;
    assert_eq!(
        tokio::time::timeout(T, wb).await.unwrap().unwrap(),
        StopReason::Stopped
    );
    assert_eq!(
        tokio::time::timeout(T, wn).await.unwrap().unwrap(),
        StopReason::Stopped
    );
    // Watching an actor that is already gone answers at once, with the reason its node
    // remembers.
    let again = tokio::time::timeout(T, big.watch()).await.unwrap();
    assert_eq!(again, StopReason::Stopped);
    // A watch taken just before a stop hears `Stopped` even when the stop overtakes the watch
    // request (they travel on separate streams).
    for _ in 0..20 {
        let r =
            p.a.spawn::<Pong>(1, SpawnOptions::new().on(b_id))
                .await
                .unwrap();
        let w = r.watch();
        r.stop().await;
        assert_eq!(
            tokio::time::timeout(T, w).await.unwrap(),
            StopReason::Stopped
        );
    }
    let deadline = Instant::now() + T;
    // Both reservations (memory of one actor, the npu of the other) are released as each
    // actor's stop completes: wait for all of them.
    while p.b.local_budget().free() != p.b.local_budget().capacity && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(p.b.local_budget().free(), p.b.local_budget().capacity);
    p.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn death_watch_across_nodes() {
    let p = pair(unlimited(), unlimited(), None).await;
    let b_id = p.b.node_id();
    let one =
        p.a.spawn::<Pong>(2, SpawnOptions::new().on(b_id))
            .await
            .unwrap();
    let w1 = tokio::spawn(one.watch());
    let w1b = tokio::spawn(p.a.watch(one.id()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    one.stop().await;
    assert_eq!(
        tokio::time::timeout(T, w1).await.unwrap().unwrap(),
        StopReason::Stopped
    );
    assert_eq!(
        tokio::time::timeout(T, w1b).await.unwrap().unwrap(),
        StopReason::Stopped
    );
    assert_eq!(one.tell(Msg::Ping(0)).await, Err(TellError::ActorDead));
    assert_eq!(one.ask(Msg::Ping(0), T).await, Err(AskError::ActorDead));

    // The whole node goes away: watchers hear NodeDown, messages fail.
    let two =
        p.a.spawn::<Pong>(2, SpawnOptions::new().on(b_id))
            .await
            .unwrap();
    assert_eq!(two.ask(Msg::Ping(1), T).await.unwrap().msg, 2);
    let w2 = tokio::spawn(two.watch());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    p.b.shutdown().await;
    p.tb.shutdown().await;
    let reason = tokio::time::timeout(T, w2)
        .await
        .expect("watch resolves")
        .unwrap();
    assert!(
        matches!(reason, StopReason::NodeDown | StopReason::Shutdown),
        "{reason:?}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "death noticed in {:?}",
        t0.elapsed()
    );
    let e = two.ask(Msg::Ping(1), T).await.unwrap_err();
    assert!(
        matches!(e, AskError::NodeDown(_) | AskError::ActorDead),
        "{e:?}"
    );
    let e = two.tell(Msg::Ping(1)).await.unwrap_err();
    assert!(
        matches!(e, TellError::NodeDown(_) | TellError::ActorDead),
        "{e:?}"
    );
    p.a.shutdown().await;
    p.ta.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_remote_receiver_bounds_the_sender() {
    let window: u32 = 64 * 1024;
    let p = pair(unlimited(), unlimited(), Some(window)).await;
    let mailbox = 4usize;
    let slot = 3;
    let actor =
        p.a.spawn::<Pong>(slot, SpawnOptions::new().on(p.b.node_id()).mailbox(mailbox))
            .await
            .unwrap();
    let msg_bytes = 16 * 1024usize;
    let (n, ms) = (60usize, 10u64);
    let payload = Bytes::from(vec![1u8; msg_bytes]);
    let bound = mailbox + (window as usize).div_ceil(msg_bytes) + 2;
    let base = HANDLED[slot].load(Ordering::SeqCst);
    let start = Instant::now();
    let mut max_pending = 0;
    for i in 0..n {
        actor
            .tell(Envelope::with_tail(Msg::Sleep(ms), payload.clone()))
            .await
            .unwrap();
        let pending = i + 1 - (HANDLED[slot].load(Ordering::SeqCst) - base);
        max_pending = max_pending.max(pending);
    }
    let elapsed = start.elapsed();
    eprintln!("max pending {max_pending} (bound {bound}), {n} tells took {elapsed:?}");
    assert!(
        max_pending <= bound,
        "sender ran {max_pending} messages ahead (bound {bound})"
    );
    let floor = Duration::from_millis(ms * (n - bound) as u64);
    assert!(
        elapsed >= floor,
        "tells took {elapsed:?}, the receiver needs at least {floor:?}"
    );
    // Everything sent is eventually handled: nothing was dropped.
    let deadline = Instant::now() + T;
    while HANDLED[slot].load(Ordering::SeqCst) - base < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(HANDLED[slot].load(Ordering::SeqCst) - base, n);
    p.close().await;
}
