//! In-process tests of the local actor system (no networking).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::*;
use crate::actor::cluster::{ActorSystemConfig, Cluster, SpawnOptions};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
enum TestMsg {
    Echo(String),
    Sleep(u64),
    Fail,
    Panic,
    StopSelf,
}

/// Counts handled messages in a process-wide counter chosen by the args.
static HANDLED: [AtomicUsize; 8] = [const { AtomicUsize::new(0) }; 8];

struct TestActor {
    slot: usize,
    ctx: ActorCtx,
}

impl RemoteActor for TestActor {
    type Args = usize;
    type Msg = TestMsg;
    type Reply = String;
    fn kind() -> &'static str {
        "test.actor"
    }
    fn create(slot: usize, ctx: ActorCtx) -> Result<Self, ActorError> {
        if slot >= HANDLED.len() {
            return Err(ActorError::new("slot out of range"));
        }
        Ok(TestActor { slot, ctx })
    }
    async fn handle(&mut self, m: Envelope<TestMsg>) -> Result<Envelope<String>, ActorError> {
        let out = match m.msg {
            TestMsg::Echo(s) => Ok(Envelope::with_tail(s, m.tail)),
            TestMsg::Sleep(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(Envelope::new("slept".to_string()))
            }
            TestMsg::Fail => Err(ActorError::new("asked to fail")),
            TestMsg::Panic => panic!("asked to panic"),
            TestMsg::StopSelf => {
                self.ctx.stop();
                Ok(Envelope::new("bye".into()))
            }
        };
        HANDLED[self.slot].fetch_add(1, Ordering::SeqCst);
        out
    }
}

fn cluster(capacity: Resources) -> Cluster {
    let cfg = ActorSystemConfig {
        workers: 2,
        capacity,
        ..Default::default()
    };
    Cluster::local(Registry::new().with::<TestActor>(), cfg).expect("actor system starts")
}

const T: Duration = Duration::from_secs(5);

#[tokio::test]
async fn ask_and_tell_round_trip_with_tail() {
    let c = cluster(Resources::none());
    let a = c.spawn::<TestActor>(0, SpawnOptions::new()).await.unwrap();
    assert!(a.is_local());
    assert_eq!(a.node(), c.node_id());
    let r = a
        .ask(
            Envelope::with_tail(TestMsg::Echo("hi".into()), vec![1u8, 2, 3]),
            T,
        )
        .await
        .unwrap();
    assert_eq!(r.msg, "hi");
    assert_eq!(r.tail, Bytes::from_static(&[1, 2, 3]));
    a.tell(TestMsg::Echo("x".into())).await.unwrap();
    // The handler error reaches the caller; the actor keeps running.
    assert_eq!(
        a.ask(TestMsg::Fail, T).await,
        Err(AskError::Remote("asked to fail".into()))
    );
    assert_eq!(
        a.ask(TestMsg::Echo("still".into()), T).await.unwrap().msg,
        "still"
    );
    c.shutdown().await;
}

#[tokio::test]
async fn full_mailbox_makes_tell_wait_and_bounds_in_flight() {
    let c = cluster(Resources::none());
    let slot = 1;
    let a = c
        .spawn::<TestActor>(slot, SpawnOptions::new().mailbox(4))
        .await
        .unwrap();
    let (n, ms) = (20usize, 20u64);
    let start = Instant::now();
    let mut max_pending = 0;
    for i in 0..n {
        a.tell(TestMsg::Sleep(ms)).await.unwrap();
        let sent = i + 1;
        let pending = sent - HANDLED[slot].load(Ordering::SeqCst);
        max_pending = max_pending.max(pending);
        assert!(a.mailbox_in_flight().unwrap() <= 4);
    }
    let elapsed = start.elapsed();
    // The sender could only run ahead by the mailbox capacity...
    assert!(
        max_pending <= 4,
        "pending {max_pending} exceeds the mailbox of 4"
    );
    assert_eq!(a.mailbox_high_water(), Some(4));
    // ...so it had to wait for (n - capacity) messages to be processed.
    let floor = Duration::from_millis(ms * (n as u64 - 4));
    assert!(
        elapsed >= floor,
        "tells took {elapsed:?}, expected at least {floor:?}"
    );
    c.shutdown().await;
}

#[tokio::test]
async fn ask_times_out_on_a_slow_actor() {
    let c = cluster(Resources::none());
    let a = c.spawn::<TestActor>(2, SpawnOptions::new()).await.unwrap();
    let t0 = Instant::now();
    let r = a.ask(TestMsg::Sleep(500), Duration::from_millis(50)).await;
    assert_eq!(r, Err(AskError::Timeout));
    assert!(t0.elapsed() < Duration::from_millis(400));
    c.shutdown().await;
}

#[tokio::test]
async fn death_watch_sees_stop_panic_and_explicit_stop() {
    let c = cluster(Resources::none());
    let a = c.spawn::<TestActor>(3, SpawnOptions::new()).await.unwrap();
    let w = tokio::spawn(a.watch());
    assert_eq!(a.ask(TestMsg::StopSelf, T).await.unwrap().msg, "bye");
    assert_eq!(
        tokio::time::timeout(T, w).await.unwrap().unwrap(),
        StopReason::Stopped
    );
    assert_eq!(
        a.tell(TestMsg::Echo("late".into())).await,
        Err(TellError::ActorDead)
    );
    assert_eq!(
        a.ask(TestMsg::Echo("late".into()), T).await,
        Err(AskError::ActorDead)
    );

    let b = c.spawn::<TestActor>(3, SpawnOptions::new()).await.unwrap();
    let r = b.ask(TestMsg::Panic, T).await;
    assert!(
        matches!(r, Err(AskError::Remote(ref s)) if s.contains("asked to panic")),
        "{r:?}"
    );
    match tokio::time::timeout(T, b.watch()).await.unwrap() {
        StopReason::Panicked(s) => assert!(s.contains("asked to panic")),
        other => panic!("unexpected {other:?}"),
    }

    let d = c.spawn::<TestActor>(3, SpawnOptions::new()).await.unwrap();
    let wd = c.watch(d.id());
    d.stop().await;
    assert_eq!(
        tokio::time::timeout(T, wd).await.unwrap(),
        StopReason::Stopped
    );
    // Watching an actor that is already gone answers at once: with its reason while the node
    // remembers it, NotFound for an id that never lived.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        tokio::time::timeout(T, c.watch(d.id())).await.unwrap(),
        StopReason::Stopped
    );
    let never = ActorId {
        node: d.id().node,
        local: d.id().local + 1000,
    };
    assert_eq!(
        tokio::time::timeout(T, c.watch(never)).await.unwrap(),
        StopReason::NotFound
    );
    // The table forgets stopped actors.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(c.local_actor_count(), 0);
    c.shutdown().await;
}

#[tokio::test]
async fn shutdown_notifies_watchers() {
    let c = cluster(Resources::none());
    let a = c.spawn::<TestActor>(4, SpawnOptions::new()).await.unwrap();
    let w = tokio::spawn(a.watch());
    c.shutdown().await;
    assert_eq!(
        tokio::time::timeout(T, w).await.unwrap().unwrap(),
        StopReason::Shutdown
    );
    assert_eq!(
        a.tell(TestMsg::Echo("x".into())).await,
        Err(TellError::ActorDead)
    );
}

#[tokio::test]
async fn names_are_unique_and_freed_on_stop() {
    let c = cluster(Resources::none());
    let a = c
        .spawn::<TestActor>(5, SpawnOptions::new().name("svc"))
        .await
        .unwrap();
    let e = c
        .spawn::<TestActor>(5, SpawnOptions::new().name("svc"))
        .await
        .unwrap_err();
    assert_eq!(e, SpawnError::NameTaken("svc".into()));
    let found = c.lookup::<TestActor>("svc").await.expect("found by name");
    assert_eq!(found.id(), a.id());
    assert_eq!(
        found
            .ask(TestMsg::Echo("via name".into()), T)
            .await
            .unwrap()
            .msg,
        "via name"
    );
    assert!(c.lookup::<TestActor>("nope").await.is_none());
    a.stop().await;
    a.watch().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(c.lookup::<TestActor>("svc").await.is_none());
    c.spawn::<TestActor>(5, SpawnOptions::new().name("svc"))
        .await
        .expect("name is free again");
    c.shutdown().await;
}

#[tokio::test]
async fn reservations_limit_spawns_and_are_released() {
    let c = cluster(Resources::none().memory(100).power(10.0).custom("gpu", 1.0));
    let need = Resources::none().memory(60).custom("gpu", 1.0);
    let a = c
        .spawn::<TestActor>(6, SpawnOptions::new().resources(need.clone()))
        .await
        .unwrap();
    assert_eq!(c.local_budget().free().memory_bytes, 40);
    let e = c
        .spawn::<TestActor>(6, SpawnOptions::new().resources(need.clone()))
        .await
        .unwrap_err();
    assert!(matches!(e, SpawnError::NoNodeFits(_)), "{e:?}");
    // An explicit node that lacks room is refused too.
    let e = c
        .spawn::<TestActor>(
            6,
            SpawnOptions::new()
                .on(c.node_id())
                .resources(Resources::none().power(11.0)),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, SpawnError::NoNodeFits(_)), "{e:?}");
    a.stop().await;
    a.watch().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(c.local_budget().free().memory_bytes, 100);
    c.spawn::<TestActor>(6, SpawnOptions::new().resources(need))
        .await
        .expect("fits after release");
    // A failing constructor releases its reservation at once.
    let e = c
        .spawn::<TestActor>(
            99,
            SpawnOptions::new().resources(Resources::none().memory(10)),
        )
        .await
        .unwrap_err();
    assert_eq!(e, SpawnError::Create("slot out of range".into()));
    assert_eq!(c.local_budget().free().memory_bytes, 40);
    c.shutdown().await;
}

#[tokio::test]
async fn spawn_by_kind_name_from_encoded_args() {
    let c = cluster(Resources::none());
    let args = crate::codec::encode(&7usize).unwrap();
    let id = c
        .spawn_encoded("test.actor", &args, &SpawnOptions::new(), None)
        .await
        .unwrap();
    let a = c.actor_ref::<TestActor>(ActorId {
        node: c.node_id(),
        local: id,
    });
    assert!(a.is_local());
    assert_eq!(
        a.ask(TestMsg::Echo("enc".into()), T).await.unwrap().msg,
        "enc"
    );
    let e = c
        .spawn_encoded("no.such.kind", &args, &SpawnOptions::new(), None)
        .await
        .unwrap_err();
    assert_eq!(e, SpawnError::UnknownKind("no.such.kind".into()));
    let e = c
        .spawn_encoded(
            "test.actor",
            &[0xff, 0xff, 0xff],
            &SpawnOptions::new(),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, SpawnError::Codec(_)), "{e:?}");
    c.shutdown().await;
}

#[tokio::test]
async fn many_concurrent_senders_share_the_bound() {
    let c = cluster(Resources::none());
    let a = c
        .spawn::<TestActor>(7, SpawnOptions::new().mailbox(3))
        .await
        .unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (a, sent) = (a.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                a.tell(TestMsg::Sleep(2)).await.unwrap();
                sent.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(sent.load(Ordering::SeqCst), 40);
    assert!(a.mailbox_high_water().unwrap() <= 3);
    c.shutdown().await;
}

#[test]
fn tombstones_keep_the_newest_reasons_only() {
    let t = super::local::Tombstones::new(3);
    for id in 1..=5u64 {
        t.bury(id, StopReason::Panicked(format!("#{id}")));
    }
    assert_eq!(t.reason(1), None);
    assert_eq!(t.reason(2), None);
    assert_eq!(t.reason(3), Some(StopReason::Panicked("#3".into())));
    assert_eq!(t.reason(5), Some(StopReason::Panicked("#5".into())));
    assert_eq!(t.reason(6), None);
}
