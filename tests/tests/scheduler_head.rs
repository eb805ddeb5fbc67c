//! The scheduler actor lives on the head node: every member's placement ask is answered there,
//! and when the head leaves, the next ask goes to the new head's scheduler.
//!
//! Runs on an embedded cluster (separate actor systems in this process, QUIC over loopback) with
//! a synthetic model profile, so it needs no model file.

use std::time::Duration;

use edgeray::pipeline::embedded_cluster;
use edgeray::pipeline::head::{
    PlaceAsk, PolicySpec, SCHEDULER_NAME, SchedulerActor, ask_placement,
};
use edgeray::placement::ModelProfile;
use edgeray_runtime::cluster::Cluster;
use edgeray_runtime::identity::NodeId;

fn profile() -> ModelProfile {
    ModelProfile {
        name: "synthetic".into(),
        layer_bytes: vec![4 << 20; 8],
        embedding_bytes: 8 << 20,
        head_bytes: 8 << 20,
        tied_embeddings: true,
        kv_bytes_per_token_per_layer: 2048,
        context_length: 256,
        hidden_size: 256,
        activation_bytes_per_token: 512,
        stage_overhead_bytes: 4 << 20,
    }
}

fn head_of(c: &Cluster) -> Option<NodeId> {
    c.node().and_then(|n| n.head())
}

/// The head every node agrees on (other than `not`), once they do (membership converges within
/// a few heartbeats after a join or a leave).
async fn agreed_head(nodes: &[Cluster], not: Option<NodeId>) -> NodeId {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let h: Vec<_> = nodes.iter().map(head_of).collect();
        if let Some(Some(h0)) = h.first()
            && Some(*h0) != not
            && h.iter().all(|x| *x == Some(*h0))
        {
            return *h0;
        }
        if tokio::time::Instant::now() >= deadline {
            // Each member's table, to tell a partition from a slow failure detector.
            for n in nodes {
                let table: Vec<_> = n
                    .node()
                    .map(|h| h.members())
                    .unwrap_or_default()
                    .iter()
                    .map(|m| format!("{} {:?} {:?}", m.node_id.short(), m.state, m.down_reason))
                    .collect();
                eprintln!("{} sees {table:?}", n.node_id().short());
            }
            panic!("the members do not agree on a head: {h:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn placement_is_answered_by_the_head_and_moves_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = embedded_cluster(3, dir.path(), 1).await.expect("cluster");
    let head = agreed_head(&nodes, None).await;
    let ask = PlaceAsk {
        profile: profile(),
        policy: PolicySpec::named("memory"),
        stages: Some(2),
        known: Vec::new(),
    };
    // Every member asks; the head answers, with its view of all three nodes.
    for n in &nodes {
        let a = ask_placement(n, &ask).await.expect("answer");
        assert_eq!(a.head, head.to_string());
        assert_eq!(a.view.nodes.len(), 3, "{:?}", a.view.nodes);
        let p = a.placement.expect("placed");
        assert_eq!(p.stages.len(), 2);
        assert!(a.candidates.iter().any(|c| c.chosen));
    }
    // One scheduler, on the head only.
    for n in &nodes {
        let id = n.node_id();
        let found = nodes[0]
            .lookup_on::<SchedulerActor>(id, SCHEDULER_NAME)
            .await;
        assert_eq!(
            found.is_some(),
            id == head,
            "scheduler on {id} (head {head})"
        );
    }
    // A bad policy is refused with a clear reason, by the scheduler as by the caller.
    let mut bad = ask.clone();
    bad.policy = PolicySpec::named("fastest");
    assert!(ask_placement(&nodes[0], &bad).await.is_err());

    // The head leaves: the survivors elect a new head, whose scheduler answers.
    let i = nodes.iter().position(|n| n.node_id() == head).unwrap();
    let old = nodes.remove(i);
    old.shutdown().await;
    let new_head = agreed_head(&nodes, Some(head)).await;
    for n in &nodes {
        let a = ask_placement(n, &ask)
            .await
            .expect("answer from the new head");
        assert_eq!(a.head, new_head.to_string());
        assert_eq!(
            a.view.nodes.len(),
            2,
            "the old head is gone: {:?}",
            a.view.nodes
        );
        assert_eq!(a.placement.expect("placed").stages.len(), 2);
    }
    for n in nodes.into_iter().rev() {
        n.shutdown().await;
    }
}
