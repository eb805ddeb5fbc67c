//! Spawning by placement across nodes: a node that refuses the spawn is skipped for the next
//! candidate.

mod actor_support;

use actor_support::*;
use edgeray_runtime::actor::{Candidate, Resources, SpawnError, SpawnPlacement, TestCluster};
use edgeray_runtime::cluster::SpawnOptions;
use edgeray_runtime::identity::NodeId;

/// A careless placement: always the first candidate, whether it fits or not.
struct FirstCandidate;

impl SpawnPlacement for FirstCandidate {
    fn place(&self, _need: &Resources, candidates: &[Candidate]) -> Option<NodeId> {
        candidates.first().map(|c| c.node)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_spawn_tries_the_next_candidate() {
    const GIB: u64 = 1 << 30;
    let tc = TestCluster::start(3)
        .register::<Calc>()
        .placement(FirstCandidate)
        .capacity(0, Resources::none())
        .capacity(1, Resources::none())
        .capacity(2, Resources::none().memory(GIB))
        .await
        .unwrap();
    // Node 0 refuses (no room), then whichever of 1 and 2 comes first; 2 takes it.
    let opts = SpawnOptions::new().resources(Resources::none().memory(GIB));
    let calc = tc.node(0).spawn::<Calc>(13, opts.clone()).await.unwrap();
    assert_eq!(calc.node(), tc.node_id(2));
    assert_eq!(calc.call(Add(1), T).await.unwrap(), 1);
    // Once no node has room, the last refusal comes back.
    let e = tc.node(0).spawn::<Calc>(13, opts).await.unwrap_err();
    assert!(matches!(e, SpawnError::NoNodeFits(_)), "{e:?}");
    tc.shutdown().await;
}
