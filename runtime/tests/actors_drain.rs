//! Graceful drain: queued messages are handled, new work is refused, the actors stop as in a
//! node shutdown, and a supervised actor moves to another node.

mod actor_support;

use std::time::{Duration, Instant};

use actor_support::*;
use edgeray_runtime::actor::{
    AskError, Backoff, DrainReport, Resources, RestartPolicy, SpawnError, StopReason, TestCluster,
};
use edgeray_runtime::cluster::{Cluster, SpawnOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_handles_queued_messages_then_stops_and_refuses_new_work() {
    let c = Cluster::builder()
        .register::<Calc>()
        .workers(1)
        .local()
        .unwrap();
    let calc = c
        .spawn::<Calc>(9, SpawnOptions::new().mailbox(8))
        .await
        .unwrap();
    for _ in 0..3 {
        calc.cast(Nap(100)).await.unwrap();
    }
    let queued = {
        let calc = calc.clone();
        tokio::spawn(async move { calc.call(Add(5), T).await })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    let watch = tokio::spawn(calc.watch());
    let t0 = Instant::now();
    let report = c.drain(T).await;
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(
        report,
        DrainReport {
            actors: 1,
            unfinished: 0
        }
    );
    assert_eq!(
        queued.await.unwrap(),
        Ok(5),
        "a message queued before the drain is handled"
    );
    assert_eq!(
        tokio::time::timeout(T, watch).await.unwrap().unwrap(),
        StopReason::Shutdown
    );
    assert_eq!(calc.call(Add(1), T).await, Err(AskError::ActorDead));
    assert!(c.is_draining());
    // Not a placement candidate any more, and refuses an explicit spawn.
    let e = c.spawn::<Calc>(9, SpawnOptions::new()).await.unwrap_err();
    assert!(matches!(e, SpawnError::NoNodeFits(_)), "{e:?}");
    let here = SpawnOptions::new().on(c.node_id());
    assert_eq!(
        c.spawn::<Calc>(9, here).await.unwrap_err(),
        SpawnError::Draining
    );
    c.shutdown().await;
}

#[tokio::test]
async fn a_drain_that_runs_out_of_time_reports_the_unfinished_messages() {
    let c = Cluster::builder()
        .register::<Calc>()
        .workers(1)
        .local()
        .unwrap();
    let calc = c
        .spawn::<Calc>(10, SpawnOptions::new().mailbox(4))
        .await
        .unwrap();
    calc.cast(Nap(2_000)).await.unwrap();
    calc.cast(Add(1)).await.unwrap();
    let t0 = Instant::now();
    let report = c.drain(Duration::from_millis(100)).await;
    assert!(
        t0.elapsed() < Duration::from_millis(1_000),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(
        report,
        DrainReport {
            actors: 1,
            unfinished: 2
        }
    );
    assert_eq!(
        tokio::time::timeout(T, calc.watch()).await.unwrap(),
        StopReason::Shutdown
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervised_actor_on_a_draining_node_moves_to_another() {
    const GIB: u64 = 1 << 30;
    let tc = TestCluster::start(3)
        .register::<Calc>()
        .capacity(0, Resources::none())
        .await
        .unwrap();
    let (n1, n2) = (tc.node_id(1), tc.node_id(2));
    let policy = RestartPolicy::on_failure().backoff(Backoff::NONE);
    let opts = SpawnOptions::new()
        .on(n1)
        .resources(Resources::none().memory(GIB));
    let sup = tc
        .node(0)
        .supervise::<Calc>(11, opts, policy)
        .await
        .unwrap();
    assert_eq!(sup.current().unwrap().node(), n1);
    let report = tc.node(1).drain(T).await;
    assert_eq!(report.actors, 1);
    let moved = tokio::time::timeout(T, sup.running_after(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(moved.node(), n2, "node 1 drains and node 0 has no room");
    assert_eq!(moved.call(WhereAmI, T).await.unwrap(), Some(n2));
    // Other nodes cannot spawn on the draining node either.
    let e = tc
        .node(0)
        .spawn::<Calc>(11, SpawnOptions::new().on(n1))
        .await
        .unwrap_err();
    assert_eq!(e, SpawnError::Draining);
    tc.shutdown().await;
}
