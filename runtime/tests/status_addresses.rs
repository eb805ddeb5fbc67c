//! The status client dials every address it has, IPv6 from its own IPv6 endpoint: a node on
//! `[::1]` answers (before, the IPv4-only client refused it with "invalid remote address"), and
//! a seed list whose first entries are dead still reaches the live one.

use edgeray_runtime::node::Node;
use edgeray_runtime::node::status_client::{StatusTarget, query_status};
use std::time::Duration;

mod node_support;
use node_support::free_port;

fn target() -> StatusTarget {
    StatusTarget {
        timeout: Duration::from_secs(2),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reaches_an_ipv6_node_after_dead_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let secret = [9u8; 32];
    let port = free_port();
    let mut c = node_support::config(secret, "v6", port, &[], dir.path());
    c.listen = format!("[::1]:{port}").parse().unwrap();
    let node = Node::start(c).await.unwrap();

    // Asked directly by its IPv6 address.
    let mut client = node_support::config(secret, "client", free_port(), &[], dir.path());
    let st = query_status(
        &client,
        &StatusTarget {
            node: Some(format!("[::1]:{port}")),
            ..target()
        },
    )
    .await
    .unwrap();
    assert_eq!(st.answered_by, node.node_id().to_hex());

    // Through seeds: a dead IPv4 one first, then the live IPv6 one.
    let dead = free_port();
    client.seeds = vec![format!("127.0.0.1:{dead}"), format!("[::1]:{port}")];
    let st = query_status(&client, &target()).await.unwrap();
    assert_eq!(st.answered_by, node.node_id().to_hex());
    assert_eq!(st.members.len(), 1);

    // Nothing live: the error lists every address tried.
    client.seeds = vec![format!("127.0.0.1:{dead}"), format!("[::1]:{dead}")];
    let err = query_status(&client, &target())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("127.0.0.1:{dead}")) && err.contains(&format!("[::1]:{dead}")),
        "{err}"
    );
    node.shutdown().await;
}
