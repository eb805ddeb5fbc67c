//! What the runtime tells an actor about who talks to it, and what it refuses on its behalf:
//! the authenticated sending node of each message, the node that spawned it, stop requests
//! only from that node, unguessable actor ids, and names reserved for one kind on the head.

mod actor_support;

use actor_support::*;
use edgeray_runtime::actor::{NameError, Registry, SpawnError, TestCluster, TypedActor};
use edgeray_runtime::cluster::SpawnOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_see_the_authenticated_sender_and_the_spawning_node() {
    let tc = TestCluster::start(3).register::<Calc>().await.unwrap();
    let (a, b, c) = (tc.node_id(0), tc.node_id(1), tc.node_id(2));
    // Node 0 spawns an actor on node 1.
    let on_b = tc
        .node(0)
        .spawn::<Calc>(0, SpawnOptions::new().on(b))
        .await
        .unwrap();
    assert_eq!(on_b.call(WhoSent, T).await.unwrap(), (Some(a), Some(a)));
    // The same actor asked from node 2 sees node 2; from its own node, no peer.
    let from_c = tc.node(2).actor_ref::<Calc>(on_b.id());
    assert_eq!(from_c.call(WhoSent, T).await.unwrap(), (Some(c), Some(a)));
    let from_b = tc.node(1).actor_ref::<Calc>(on_b.id());
    assert_eq!(from_b.call(WhoSent, T).await.unwrap(), (None, Some(a)));
    // Spawned by its own node: no spawning peer.
    let local = tc
        .node(1)
        .spawn::<Calc>(0, SpawnOptions::new().on(b))
        .await
        .unwrap();
    assert_eq!(local.call(WhoSent, T).await.unwrap(), (None, None));
    tc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_spawning_node_may_stop_an_actor_from_afar() {
    let tc = TestCluster::start(3).register::<Calc>().await.unwrap();
    let b = tc.node_id(1);
    let victim = tc
        .node(0)
        .spawn::<Calc>(1, SpawnOptions::new().on(b))
        .await
        .unwrap();
    victim.call(Add(5), T).await.unwrap();
    // A foreign member (node 2) asks node 1 to stop it: refused, counted, the actor lives on
    // with its state.
    let foreign = tc.node(2).actor_ref::<Calc>(victim.id());
    foreign.stop().await;
    assert_eq!(tc.node(1).refused_stops(), 1);
    assert_eq!(foreign.call(Add(1), T).await.unwrap(), 6);
    // The node that spawned it can.
    victim.stop().await;
    let reason = tokio::time::timeout(T, victim.watch()).await.unwrap();
    assert_eq!(reason, edgeray_runtime::actor::StopReason::Stopped);
    assert_eq!(tc.node(1).refused_stops(), 1);
    // An actor its own node spawned cannot be stopped from any other node.
    let own = tc
        .node(1)
        .spawn::<Calc>(1, SpawnOptions::new().on(b))
        .await
        .unwrap();
    tc.node(0).actor_ref::<Calc>(own.id()).stop().await;
    assert_eq!(tc.node(1).refused_stops(), 2);
    assert_eq!(own.call(Add(2), T).await.unwrap(), 2);
    tc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actor_ids_are_not_sequential() {
    let tc = TestCluster::start(1).register::<Calc>().await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..8 {
        let r = tc
            .node(0)
            .spawn::<Calc>(2, SpawnOptions::new())
            .await
            .unwrap();
        ids.push(r.id().local);
    }
    // Random 64-bit ids: all distinct, none small, no two consecutive (each of these fails
    // by chance with a probability below 2^-40).
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), ids.len(), "{ids:?}");
    assert!(ids.iter().all(|&id| id > 1 << 24), "{ids:?}");
    assert!(sorted.windows(2).all(|w| w[1] - w[0] > 1 << 16), "{ids:?}");
    tc.shutdown().await;
}

/// A second kind, to squat a name reserved for `Calc`.
struct Squatter;
impl TypedActor for Squatter {
    type Args = ();
    fn kind() -> &'static str {
        "test.squatter"
    }
    fn create(
        _: (),
        _: edgeray_runtime::actor::ActorCtx,
    ) -> Result<Self, edgeray_runtime::actor::ActorError> {
        Ok(Squatter)
    }
    fn messages(_: &mut edgeray_runtime::actor::Messages<'_, Self>) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserved_name_belongs_to_its_kind_on_the_head() {
    const NAME: &str = "test.head.role";
    let registry = Registry::new()
        .with::<Calc>()
        .with::<Squatter>()
        .with_reserved_name::<Calc>(NAME);
    let mut b = TestCluster::start(3);
    for i in 0..3 {
        b = b.node_registry(i, registry.clone());
    }
    let tc = b.await.unwrap();
    let head = tc.index_of(tc.node(0).name_head()).unwrap();
    let other = (head + 1) % 3;
    let on = |i: usize| SpawnOptions::new().on(tc.node_id(i));

    // Another kind cannot take the node-local name, on the head (spawned from afar) or at home.
    for (from, at) in [(other, head), (other, other)] {
        match tc.node(from).spawn::<Squatter>((), on(at).name(NAME)).await {
            Err(SpawnError::NameReserved { name, kind }) => {
                assert_eq!((name.as_str(), kind.as_str()), (NAME, "test.calc"));
            }
            other => panic!("squatting spawn was not refused: {other:?}"),
        }
    }
    // A non-head member's actor (even of the right kind) cannot take the cluster-wide name.
    let squat = tc.node(other).spawn::<Calc>(3, on(other)).await.unwrap();
    assert_eq!(
        tc.node(other).register_global(NAME, &squat).await,
        Err(NameError::Reserved("test.calc".into()))
    );
    let squat2 = tc
        .node(other)
        .spawn::<Squatter>((), on(head))
        .await
        .unwrap();
    assert_eq!(
        tc.node(other).register_global(NAME, &squat2).await,
        Err(NameError::Reserved("test.calc".into()))
    );
    // The head's own actor of the kind gets it, and every node finds that one.
    let real = tc.node(head).spawn::<Calc>(3, on(head)).await.unwrap();
    tc.node(other).register_global(NAME, &real).await.unwrap();
    for i in 0..3 {
        let found = tc.node(i).lookup_global::<Calc>(NAME).await.unwrap();
        assert_eq!(found.id(), real.id(), "seen from node {i}");
    }
    tc.shutdown().await;
}
