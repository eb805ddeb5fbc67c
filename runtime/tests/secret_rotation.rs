//! Rotating the cluster secret on a running cluster (README, "Rotating the cluster secret"):
//! every node first trusts the new secret too, then nodes switch to it one by one, then the old
//! one is dropped — while requests keep flowing between the nodes, none lost, and new
//! connections admitted at every step only where the trust allows.

mod actor_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use actor_support::*;
use edgeray_runtime::actor::TestCluster;
use edgeray_runtime::cluster::SpawnOptions;
use edgeray_runtime::identity::{Incarnation, NodeIdentity};
use edgeray_runtime::security::{ClusterSecret, ClusterSecurity};
use edgeray_runtime::transport::{Transport, TransportConfig};

/// Whether a fresh node with `own` (trusting `trusted` too) completes a handshake with `to`.
async fn probe(own: &ClusterSecret, trusted: &[ClusterSecret], to: &Transport) -> bool {
    let id = NodeIdentity::generate().unwrap();
    let sec = ClusterSecurity::with_trust(own, trusted, &id).unwrap();
    let cfg = TransportConfig::new("127.0.0.1:0".parse().unwrap(), "probe");
    let t = Transport::bind(cfg, sec, Incarnation::random())
        .await
        .unwrap();
    let ok = t.connect(to.local_addr(), None).await.is_ok();
    t.shutdown().await;
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_rotates_node_by_node_without_losing_a_request() {
    let old = ClusterSecret::random();
    let new = ClusterSecret::random();
    let tc = Arc::new(
        TestCluster::start(3)
            .secret(old.clone())
            .register::<Calc>()
            .await
            .unwrap(),
    );
    let on = |i: usize| SpawnOptions::new().on(tc.node_id(i));
    let b = tc.node(0).spawn::<Calc>(4, on(1)).await.unwrap();
    let c = tc.node(0).spawn::<Calc>(4, on(2)).await.unwrap();
    let c_from_b = tc.node(1).actor_ref::<Calc>(c.id());

    // Requests between every pair of nodes, all the time.
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let traffic = {
        let (stop, done, failed) = (stop.clone(), done.clone(), failed.clone());
        let (b, c) = (b.clone(), c.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for r in [&b, &c, &c_from_b] {
                    match r.call(Add(1), T).await {
                        Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            eprintln!("request failed: {e}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let settle = || tokio::time::sleep(Duration::from_millis(150));

    // Step 1: every node also trusts the new secret.
    for i in 0..3 {
        let t = tc.transport(i);
        t.set_security(
            t.security()
                .rekeyed(&old, std::slice::from_ref(&new))
                .unwrap(),
        )
        .unwrap();
        settle().await;
    }
    // A node already on the new secret (trusting the old one) is now admitted everywhere.
    for i in 0..3 {
        assert!(
            probe(&new, std::slice::from_ref(&old), tc.transport(i)).await,
            "new-secret node to {i}"
        );
    }

    // Step 2: one by one, nodes take their certificate from the new secret (trusting the old).
    for k in 0..3 {
        let t = tc.transport(k);
        t.set_security(
            t.security()
                .rekeyed(&new, std::slice::from_ref(&old))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            t.cluster_id(),
            ClusterSecurity::new(&new, &NodeIdentity::generate().unwrap())
                .unwrap()
                .cluster_id()
        );
        settle().await;
        for i in 0..3 {
            // Nodes on either secret still get in (during the switch)...
            assert!(
                probe(&old, std::slice::from_ref(&new), tc.transport(i)).await,
                "step 2.{k}: old to {i}"
            );
            assert!(
                probe(&new, std::slice::from_ref(&old), tc.transport(i)).await,
                "step 2.{k}: new to {i}"
            );
        }
        // ...but a node that never heard of the new secret cannot reach a switched node.
        assert!(
            !probe(&old, &[], t).await,
            "step 2.{k}: old-only node reached {k}"
        );
    }

    // Step 3: the old secret is dropped everywhere: nodes holding only it are out.
    for i in 0..3 {
        let t = tc.transport(i);
        t.set_security(t.security().rekeyed(&new, &[]).unwrap())
            .unwrap();
        settle().await;
    }
    for i in 0..3 {
        assert!(
            !probe(&old, std::slice::from_ref(&new), tc.transport(i)).await,
            "old cert to {i}"
        );
        assert!(probe(&new, &[], tc.transport(i)).await, "new cert to {i}");
    }

    stop.store(true, Ordering::Relaxed);
    traffic.await.unwrap();
    let (done, failed) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{failed} of {} requests failed", done + failed);
    assert!(done > 30, "only {done} requests ran during the rotation");
    // The cluster still answers (the three actors counted every request).
    let total: i64 = [
        b.call(Add(0), T).await.unwrap(),
        c.call(Add(0), T).await.unwrap(),
    ]
    .iter()
    .sum();
    assert_eq!(total as usize, done);
    match Arc::try_unwrap(tc) {
        Ok(tc) => tc.shutdown().await,
        Err(_) => panic!("cluster still shared"),
    }
}
