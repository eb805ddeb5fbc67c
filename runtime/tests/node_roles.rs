//! Roles travel with heartbeats: node A advertises what it hosts, node B's membership and its
//! `edgeray status` answer list them within a few heartbeats; oversized input is truncated;
//! clearing the roles propagates too. Two in-process nodes on 127.0.0.1 (mDNS off).

use edgeray_runtime::membership::status::ClusterStatus;
use edgeray_runtime::node::status_client::{StatusTarget, query_status};
use edgeray_runtime::node::{Node, NodeHandle};
use edgeray_runtime::resources::{MAX_ROLE_CHARS, MAX_ROLES};
use std::time::Duration;

mod node_support;
use node_support::{config, free_port};

/// The roles `observer`'s table holds for `of`.
fn roles_seen(observer: &NodeHandle, of: &NodeHandle) -> Option<Vec<String>> {
    observer
        .member(of.node_id())
        .and_then(|m| m.resources)
        .map(|r| r.roles)
}

/// Wait (up to 10 heartbeats) until `observer` sees `want` as `of`'s roles.
async fn wait_roles(observer: &NodeHandle, of: &NodeHandle, want: &[String]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let got = roles_seen(observer, of);
        if got.as_deref() == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} still sees roles {got:?} for {}, want {want:?}",
            observer.name(),
            of.name()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn status_roles<'a>(st: &'a ClusterStatus, of: &NodeHandle) -> &'a [String] {
    let hex = of.node_id().to_hex();
    &st.members
        .iter()
        .find(|m| m.node_id == hex)
        .expect("member in status")
        .roles
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_reach_other_members_and_status() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let secret = [43u8; 32];
    let (pa, pb) = (free_port(), free_port());
    let a = Node::start(config(secret, "a", pa, &[], dir.path()))
        .await
        .unwrap();
    let b = Node::start(config(secret, "b", pb, &[pa], dir.path()))
        .await
        .unwrap();
    for n in [&a, &b] {
        assert!(
            n.wait_for_up(2, Duration::from_secs(10)).await,
            "{:?}",
            n.members()
        );
    }
    assert!(a.roles().is_empty());
    wait_roles(&b, &a, &[]).await;

    // A advertises its stage: its own entry shows it at once, B within a few heartbeats.
    let roles = vec![
        "stage 1/3 layers 6..12 gemma-3-270m (coordinator local-0)".to_string(),
        "coordinator gemma-3-270m".to_string(),
    ];
    a.set_roles(roles.clone());
    assert_eq!(a.roles(), roles);
    assert_eq!(roles_seen(&a, &a).as_deref(), Some(roles.as_slice()));
    assert_eq!(status_roles(&a.status(), &a), roles.as_slice());
    wait_roles(&b, &a, &roles).await;
    assert_eq!(status_roles(&b.status(), &a), roles.as_slice());
    assert!(status_roles(&b.status(), &b).is_empty());

    // What `edgeray status` gets from B over the network (JSON field `roles` and the table).
    let client_cfg = config(secret, "client", pb, &[], dir.path());
    let st = query_status(
        &client_cfg,
        &StatusTarget {
            timeout: Duration::from_secs(3),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(st.answered_by, b.node_id().to_hex());
    assert_eq!(status_roles(&st, &a), roles.as_slice());
    let json = serde_json::to_value(&st).unwrap();
    let row = json["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "a")
        .unwrap();
    assert_eq!(row["roles"][0], roles[0].as_str());
    let table = st.render_table();
    assert!(
        table.contains(&format!("    role: {}", roles[0])),
        "{table}"
    );

    // Oversized input is truncated on the way in, and B receives the truncated form.
    a.set_roles(
        (0..50)
            .map(|i| format!("{i:02}{}", "r".repeat(1000)))
            .collect(),
    );
    let bounded = a.roles();
    assert_eq!(bounded.len(), MAX_ROLES);
    assert!(bounded.iter().all(|r| r.chars().count() == MAX_ROLE_CHARS));
    assert!(bounded[15].starts_with("15r"));
    wait_roles(&b, &a, &bounded).await;

    // Clearing propagates too.
    a.set_roles(Vec::new());
    wait_roles(&b, &a, &[]).await;
    assert!(status_roles(&b.status(), &a).is_empty());

    for n in [&a, &b] {
        n.shutdown().await;
    }
}
