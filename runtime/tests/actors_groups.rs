//! Process groups across three nodes: joining from anywhere, listing, broadcasting, and members
//! leaving when they stop, leave, or their node is killed.

mod actor_support;

use std::time::{Duration, Instant};

use actor_support::*;
use edgeray_runtime::actor::{ActorRef, GroupError, TestCluster};
use edgeray_runtime::cluster::SpawnOptions;

/// Polls `f` until it returns `want` or the test time runs out.
async fn eventually<F, Fut>(want: usize, f: F) -> usize
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let deadline = Instant::now() + T;
    loop {
        let n = f().await;
        if n == want || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_spans_nodes_and_broadcasts_to_every_member() {
    let tc = TestCluster::start(3).register::<Calc>().await.unwrap();
    let mut calcs: Vec<ActorRef<Calc>> = Vec::new();
    for i in 0..3 {
        let opts = SpawnOptions::new().on(tc.node_id(i));
        calcs.push(tc.node(0).spawn::<Calc>(12, opts).await.unwrap());
    }
    // Joined from node 0, whatever node each member runs on.
    let group = tc.node(0).group::<Calc>("calcs");
    for c in &calcs {
        group.join(c).await.unwrap();
    }
    group.join(&calcs[1]).await.unwrap(); // joining twice is harmless
    // Listed from another node: every member once.
    let seen_from_2 = tc.node(2).group::<Calc>("calcs").members().await;
    let mut want: Vec<_> = calcs.iter().map(|c| c.id()).collect();
    want.sort();
    assert_eq!(seen_from_2.iter().map(|c| c.id()).collect::<Vec<_>>(), want);
    assert!(tc.node(1).group::<Calc>("other").members().await.is_empty());

    // A broadcast reaches each member once.
    let sent = tc.node(1).group::<Calc>("calcs").cast_all(Add(7)).await;
    assert_eq!((sent.sent, sent.failed.len()), (3, 0));
    // (Sent from node 1, checked from node 0: no order between the two senders, so wait.)
    for c in &calcs {
        let total = eventually(7, || async { c.call(Add(0), T).await.unwrap() as usize }).await;
        assert_eq!(total, 7);
    }

    // Members go when they leave, when they stop, and when their node dies.
    group.leave(&calcs[0]).await.unwrap();
    assert_eq!(group.members().await.len(), 2);
    calcs[1].call(Quit, T).await.unwrap();
    assert_eq!(
        eventually(1, || async { group.members().await.len() }).await,
        1
    );
    tc.kill(2).await;
    assert_eq!(
        eventually(0, || async { group.members().await.len() }).await,
        0
    );
    // A dead actor cannot join.
    assert_eq!(group.join(&calcs[1]).await, Err(GroupError::ActorGone));
    tc.shutdown().await;
}
