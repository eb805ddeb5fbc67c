//! Typed messages (one reply type per message type) and the non-waiting sends (`try_tell`,
//! `tell_timeout`), on one node and across two nodes over loopback QUIC.

mod actor_support;

use std::time::Duration;

use actor_support::*;
use bytes::Bytes;
use edgeray_runtime::actor::{
    ActorError, ActorRef, AskError, Envelope, Request, TellError, TestCluster,
};
use edgeray_runtime::cluster::{Cluster, SpawnOptions};

/// Every typed-reply behaviour, against `calc` wherever it runs.
async fn typed_replies(calc: &ActorRef<Calc>) {
    // Each message type has its own reply type.
    assert_eq!(calc.call(Add(2), T).await.unwrap(), 2);
    assert_eq!(calc.call(Add(40), T).await.unwrap(), 42);
    assert_eq!(calc.call(Echo("hi".into()), T).await.unwrap(), "hi");
    let tail = Bytes::from(vec![7u8; 100_000]);
    let r = calc
        .call_envelope(Envelope::with_tail(Echo("t".into()), tail.clone()), T)
        .await
        .unwrap();
    assert_eq!((r.msg.as_str(), &r.tail), ("t", &tail));
    // A handler's error reaches the caller; the actor keeps running.
    assert_eq!(
        calc.call(Fail, T).await,
        Err(AskError::Remote("calc refuses".into()))
    );
    // A message type the actor does not list is refused with a typed error, not a panic...
    assert_eq!(
        calc.call(Unlisted, T).await,
        Err(AskError::UnknownMessage {
            kind: "test.calc".into(),
            message: "test.calc.unlisted".into()
        })
    );
    // ...also when sent as a raw request (what an unknown peer build would send).
    let raw = calc.ask(Request::new(Unlisted), T).await.unwrap_err();
    assert!(matches!(raw, AskError::UnknownMessage { .. }), "{raw:?}");
    assert_eq!(calc.call(Add(0), T).await.unwrap(), 42, "state kept");
    // A cast is handled in order with the calls of the same sender.
    calc.cast(Add(8)).await.unwrap();
    assert_eq!(calc.call(Add(0), T).await.unwrap(), 50);
}

#[tokio::test]
async fn typed_replies_in_process() {
    let c = Cluster::builder()
        .register::<Calc>()
        .workers(1)
        .local()
        .unwrap();
    let calc = c.spawn::<Calc>(0, SpawnOptions::new()).await.unwrap();
    assert!(calc.is_local());
    typed_replies(&calc).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_replies_across_nodes() {
    let tc = TestCluster::start(2).register::<Calc>().await.unwrap();
    let calc = tc
        .node(0)
        .spawn::<Calc>(1, SpawnOptions::new().on(tc.node_id(1)))
        .await
        .unwrap();
    assert!(!calc.is_local());
    assert_eq!(calc.call(WhereAmI, T).await.unwrap(), Some(tc.node_id(1)));
    typed_replies(&calc).await;
    // A panic comes back typed and stops the actor.
    let e = calc.call(Crash, T).await.unwrap_err();
    assert!(
        matches!(e, AskError::Remote(ref s) if s.contains("calc crashes")),
        "{e:?}"
    );
    tc.shutdown().await;
}

#[test]
fn the_handlers_error_is_typed_for_local_and_remote_callers() {
    let e: AskError = ActorError::UnknownMessage {
        kind: "k".into(),
        message: "m".into(),
    }
    .into();
    assert_eq!(
        e.to_string(),
        "actor kind `k` has no handler for message `m`"
    );
    let e: AskError = ActorError::Panicked("boom".into()).into();
    assert_eq!(e, AskError::Remote("actor panicked: boom".into()));
}

#[tokio::test]
async fn try_tell_fails_at_once_on_a_full_mailbox() {
    let c = Cluster::builder()
        .register::<Calc>()
        .workers(1)
        .local()
        .unwrap();
    let calc = c
        .spawn::<Calc>(2, SpawnOptions::new().mailbox(1))
        .await
        .unwrap();
    calc.cast(Nap(300)).await.unwrap();
    let t0 = std::time::Instant::now();
    assert_eq!(calc.try_cast(Add(1)).await, Err(TellError::MailboxFull));
    assert!(
        t0.elapsed() < Duration::from_millis(100),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(
        calc.cast_timeout(Add(1), Duration::from_millis(50)).await,
        Err(TellError::Timeout)
    );
    // Room again once the nap is over; the refused messages were not queued.
    assert_eq!(calc.tell_timeout(Request::new(Add(1)), T).await, Ok(()));
    assert_eq!(calc.call(Add(0), T).await.unwrap(), 1);
    assert_eq!(calc.try_cast(Add(1)).await, Ok(()));
    assert_eq!(calc.call(Add(0), T).await.unwrap(), 2);
    calc.stop().await;
    calc.watch().await;
    assert_eq!(calc.try_cast(Add(1)).await, Err(TellError::ActorDead));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_tell_to_a_remote_actor_fails_once_its_stream_is_held_back() {
    let window = 64 * 1024;
    let tc = TestCluster::start(2)
        .register::<Calc>()
        .stream_window(1, window)
        .await
        .unwrap();
    let calc = tc
        .node(0)
        .spawn::<Calc>(3, SpawnOptions::new().on(tc.node_id(1)).mailbox(1))
        .await
        .unwrap();
    calc.cast(Nap(2000)).await.unwrap();
    // With the mailbox full, the receiver stops reading; after about a stream window of data
    // the sender's writes stall and try_tell refuses instead of waiting.
    let chunk = 16 * 1024;
    let bound = 1 + (window as usize).div_ceil(chunk) + 4;
    let mut accepted = 0;
    let t0 = std::time::Instant::now();
    let refused = loop {
        let env = Envelope::with_tail(Echo(String::new()), vec![0u8; chunk]);
        match calc.try_tell(env.map(Request::new)).await {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(
            accepted <= bound,
            "{accepted} messages accepted past a full mailbox"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(refused, TellError::MailboxFull);
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    // Everything accepted is still delivered, in order, once the actor is free.
    assert_eq!(calc.call(Add(5), T * 2).await.unwrap(), 5);
    tc.shutdown().await;
}
