//! Supervision: every restart policy, the restart limit and backoff on one node, and a child
//! re-placed on another node (that fits its resource needs) after its node is killed.

mod actor_support;

use std::time::{Duration, Instant};

use actor_support::*;
use edgeray_runtime::actor::{
    AskError, Backoff, ChildState, Outcome, Resources, RestartPolicy, StopReason, TestCluster,
};
use edgeray_runtime::cluster::{Cluster, SpawnOptions};

fn local() -> Cluster {
    Cluster::builder()
        .register::<Calc>()
        .workers(1)
        .local()
        .unwrap()
}

/// A fast policy: no backoff, 5 restarts per minute.
fn quick(p: RestartPolicy) -> RestartPolicy {
    p.backoff(Backoff::NONE)
        .max_restarts(5, Duration::from_secs(60))
}

#[tokio::test]
async fn never_restarts_nothing() {
    let c = local();
    let sup = c
        .supervise::<Calc>(4, SpawnOptions::new(), quick(RestartPolicy::never()))
        .await
        .unwrap();
    let calc = sup.current().unwrap();
    assert!(calc.call(Crash, T).await.is_err());
    let out = tokio::time::timeout(T, sup.finished()).await.unwrap();
    assert!(
        matches!(out, Outcome::Stopped(StopReason::Panicked(_))),
        "{out:?}"
    );
    assert_eq!((sup.restarts(), starts(4)), (0, 1));
    c.shutdown().await;
}

#[tokio::test]
async fn on_failure_restarts_a_panic_but_not_a_normal_stop() {
    let c = local();
    let sup = c
        .supervise::<Calc>(5, SpawnOptions::new(), quick(RestartPolicy::on_failure()))
        .await
        .unwrap();
    let first = sup.current().unwrap();
    first.call(Add(3), T).await.unwrap();
    assert!(first.call(Crash, T).await.is_err());
    let second = tokio::time::timeout(T, sup.running_after(1))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(second.id(), first.id());
    // A fresh incarnation from the same args: the state starts over.
    assert_eq!(second.call(Add(1), T).await.unwrap(), 1);
    assert_eq!(first.call(Add(1), T).await, Err(AskError::ActorDead));
    second.call(Quit, T).await.unwrap();
    let out = tokio::time::timeout(T, sup.finished()).await.unwrap();
    assert_eq!(out, Outcome::Stopped(StopReason::Stopped));
    assert_eq!((sup.restarts(), starts(5)), (1, 2));
    c.shutdown().await;
}

#[tokio::test]
async fn always_restarts_a_normal_stop_too_and_stop_ends_it() {
    let c = local();
    let sup = c
        .supervise::<Calc>(6, SpawnOptions::new(), quick(RestartPolicy::always()))
        .await
        .unwrap();
    sup.current().unwrap().call(Quit, T).await.unwrap();
    let second = tokio::time::timeout(T, sup.running_after(1))
        .await
        .unwrap()
        .unwrap();
    second.stop().await;
    let third = tokio::time::timeout(T, sup.running_after(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(third.call(Add(2), T).await.unwrap(), 2);
    // Ending supervision stops the child and does not restart it.
    assert_eq!(sup.stop().await, Outcome::Cancelled);
    assert_eq!(
        tokio::time::timeout(T, third.watch()).await.unwrap(),
        StopReason::Stopped
    );
    assert_eq!(starts(6), 3);
    c.shutdown().await;
}

#[tokio::test]
async fn the_restart_limit_gives_up_and_backoff_delays_each_restart() {
    let c = local();
    let backoff = Backoff {
        initial: Duration::from_millis(150),
        factor: 2.0,
        max: Duration::from_secs(1),
    };
    let policy = RestartPolicy::always()
        .max_restarts(2, Duration::from_secs(60))
        .backoff(backoff);
    let sup = c
        .supervise::<Calc>(7, SpawnOptions::new(), policy)
        .await
        .unwrap();
    let mut gaps = Vec::new();
    for n in 1..=2 {
        let t0 = Instant::now();
        sup.current().unwrap().call(Crash, T).await.unwrap_err();
        assert!(matches!(
            sup.state(),
            ChildState::Running(_) | ChildState::Restarting { .. }
        ));
        tokio::time::timeout(T, sup.running_after(n))
            .await
            .unwrap()
            .unwrap();
        gaps.push(t0.elapsed());
    }
    assert!(gaps[0] >= Duration::from_millis(150), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(300), "{gaps:?}");
    // A third stop within the window is one restart too many.
    sup.current().unwrap().call(Crash, T).await.unwrap_err();
    let out = tokio::time::timeout(T, sup.finished()).await.unwrap();
    assert!(
        matches!(out, Outcome::GaveUp { restarts: 2, .. }),
        "{out:?}"
    );
    assert_eq!(starts(7), 3);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_whose_node_is_killed_is_replaced_on_a_node_that_fits() {
    const GIB: u64 = 1 << 30;
    // Node 0 (the supervisor's) has no memory to offer; nodes 1 and 2 have 1 GiB each.
    let tc = TestCluster::start(3)
        .register::<Calc>()
        .capacity(0, Resources::none())
        .capacity(1, Resources::none().memory(GIB))
        .capacity(2, Resources::none().memory(GIB))
        .await
        .unwrap();
    let need = Resources::none().memory(GIB / 2);
    let policy = quick(RestartPolicy::on_failure()).backoff(Backoff {
        initial: Duration::from_millis(50),
        factor: 2.0,
        max: Duration::from_millis(400),
    });
    let sup = tc
        .node(0)
        .supervise::<Calc>(8, SpawnOptions::new().resources(need.clone()), policy)
        .await
        .unwrap();
    let first = sup.current().unwrap();
    let home = tc.index_of(first.node()).unwrap();
    assert_ne!(home, 0, "node 0 has no room");
    let other = 3 - home;
    assert_eq!(
        first.call(WhereAmI, T).await.unwrap(),
        Some(tc.node_id(home))
    );

    tc.kill(home).await;
    let second = tokio::time::timeout(T, sup.running_after(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.node(), tc.node_id(other));
    assert_eq!(
        second.call(WhereAmI, T).await.unwrap(),
        Some(tc.node_id(other))
    );
    assert_eq!(tc.node(other).local_budget().reserved.memory_bytes, GIB / 2);

    // With that node gone too, no node fits: the supervisor retries, then gives up.
    tc.kill(other).await;
    let out = tokio::time::timeout(T * 2, sup.finished()).await.unwrap();
    assert!(
        matches!(out, Outcome::GaveUp { ref last, .. } if last.contains("no node fits")),
        "{out:?}"
    );
    assert_eq!(tc.node(0).local_actor_count(), 0);
    tc.shutdown().await;
}
