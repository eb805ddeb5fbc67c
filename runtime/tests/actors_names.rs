//! Cluster-wide names across three nodes: one holder per name, registration from any node,
//! the name gone with its actor or its node, and names surviving the loss of the head.

mod actor_support;

use std::time::{Duration, Instant};

use actor_support::*;
use edgeray_runtime::actor::{ActorRef, NameError, TestCluster};
use edgeray_runtime::cluster::{Cluster, SpawnOptions};

/// Polls until `name` resolves (or not) as wanted; returns what it resolved to last.
async fn lookup_until(c: &Cluster, name: &str, present: bool) -> Option<ActorRef<Calc>> {
    let deadline = Instant::now() + T;
    loop {
        let found = c.lookup_global::<Calc>(name).await;
        if found.is_some() == present || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_has_one_holder_and_goes_with_its_actor_or_node() {
    let tc = TestCluster::start(3).register::<Calc>().await.unwrap();
    let head = tc.index_of(tc.node(0).name_head()).unwrap();
    // Every node agrees on the head.
    for i in 0..3 {
        assert_eq!(tc.node(i).name_head(), tc.node_id(head));
    }
    let (x, y) = ((head + 1) % 3, (head + 2) % 3);
    let on = |i: usize| SpawnOptions::new().on(tc.node_id(i));
    let a = tc.node(x).spawn::<Calc>(14, on(x)).await.unwrap();
    let b = tc.node(y).spawn::<Calc>(14, on(y)).await.unwrap();

    // Registered from a node that is neither the head nor the actor's node.
    tc.node(y).register_global("leader", &a).await.unwrap();
    tc.node(x).register_global("leader", &a).await.unwrap(); // again: same holder, fine
    assert_eq!(
        tc.node(head).register_global("leader", &b).await,
        Err(NameError::Taken(a.id()))
    );
    for i in 0..3 {
        let found = tc.node(i).lookup_global::<Calc>("leader").await.unwrap();
        assert_eq!(found.id(), a.id(), "seen from node {i}");
    }
    assert!(tc.node(0).lookup_global::<Calc>("nobody").await.is_none());

    // The holder stops: the name is free for another actor.
    a.call(Quit, T).await.unwrap();
    assert!(lookup_until(tc.node(y), "leader", false).await.is_none());
    tc.node(x).register_global("leader", &b).await.unwrap();
    let found = tc.node(x).lookup_global::<Calc>("leader").await.unwrap();
    assert_eq!(found.call(Add(2), T).await.unwrap(), 2);
    // A stopped actor cannot take a name.
    assert_eq!(
        tc.node(x).register_global("second", &a).await,
        Err(NameError::ActorGone)
    );

    // The head is lost: names held on the other nodes stay, and registrations go on through
    // the next head.
    let c = tc.node(x).spawn::<Calc>(14, on(x)).await.unwrap();
    tc.kill(head).await;
    let deadline = Instant::now() + T;
    while tc.node(x).name_head() == tc.node_id(head) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        tc.node(x)
            .lookup_global::<Calc>("leader")
            .await
            .map(|r| r.id()),
        Some(b.id())
    );
    assert_eq!(
        tc.node(x).register_global("leader", &c).await,
        Err(NameError::Taken(b.id()))
    );
    tc.node(x).register_global("deputy", &c).await.unwrap();

    // The holder's node is lost: its name goes with it.
    tc.kill(y).await;
    assert!(lookup_until(tc.node(x), "leader", false).await.is_none());
    tc.node(x).register_global("leader", &c).await.unwrap();
    assert_eq!(
        tc.node(x)
            .lookup_global::<Calc>("deputy")
            .await
            .map(|r| r.id()),
        Some(c.id())
    );
    tc.shutdown().await;
}
