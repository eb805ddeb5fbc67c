//! Three in-process nodes on 127.0.0.1 joined by seeds (mDNS off): membership, head, status
//! client, graceful leave, restart as a new incarnation, wrong secret refused.

use edgeray_runtime::config::{ByteSize, ClusterConfig, Power};
use edgeray_runtime::membership::{DownReason, MemberState, MembershipEvent};
use edgeray_runtime::node::status_client::{StatusTarget, query_status};
use edgeray_runtime::node::{Node, NodeHandle};
use std::time::Duration;

mod node_support;
use node_support::free_port;

/// The shared fast-timing configuration with a 1 GiB memory and 6 W power budget.
fn config(
    secret: [u8; 32],
    name: &str,
    port: u16,
    seeds: &[u16],
    dir: &std::path::Path,
) -> ClusterConfig {
    let mut c = node_support::config(secret, name, port, seeds, dir);
    c.memory_budget = Some(ByteSize(1 << 30));
    c.power_budget = Some(Power(6000));
    c
}

async fn start3(secret: [u8; 32], dir: &std::path::Path) -> (Vec<NodeHandle>, Vec<u16>) {
    start3_with(secret, dir, |_| {}).await
}

/// [`start3`] with `tweak` applied to each node's configuration.
async fn start3_with(
    secret: [u8; 32],
    dir: &std::path::Path,
    tweak: impl Fn(&mut ClusterConfig),
) -> (Vec<NodeHandle>, Vec<u16>) {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut nodes = Vec::new();
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        // Each node only knows the first one: the third learns the second through gossip or
        // the second's own seed dial.
        let seeds: Vec<u16> = if i == 0 { vec![] } else { vec![ports[0]] };
        let mut c = config(secret, name, ports[i], &seeds, dir);
        tweak(&mut c);
        nodes.push(Node::start(c).await.unwrap());
    }
    (nodes, ports)
}

/// Waits (10 s at most) until each node sees `n` members Up.
async fn wait_all_up(nodes: &[NodeHandle], n: usize) {
    for node in nodes {
        assert!(
            node.wait_for_up(n, Duration::from_secs(10)).await,
            "{} sees {:?}",
            node.name(),
            node.members()
        );
    }
}

/// A newcomer is gossiped to every member as soon as it joins, not at the next gossip round:
/// with rounds an hour apart, two nodes that only know the seed still find each other, and stay
/// together when the seed leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newcomers_are_gossiped_at_once_and_survive_the_seed_leaving() {
    let dir = tempfile::tempdir().unwrap();
    let secret = [43u8; 32];
    let (mut nodes, _) = start3_with(secret, dir.path(), |c| {
        c.timing.gossip = Duration::from_secs(3600)
    })
    .await;
    wait_all_up(&nodes, 3).await;
    let seed = nodes.remove(0);
    seed.shutdown().await;
    // The survivors see exactly each other (the seed's goodbye arrives within moments).
    let mut survivors: Vec<_> = nodes.iter().map(|n| n.node_id()).collect();
    survivors.sort();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for n in &nodes {
        loop {
            let mut up: Vec<_> = n.up_members().iter().map(|m| m.node_id).collect();
            up.sort();
            if up == survivors {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} sees {up:?}, not {survivors:?}",
                n.name()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(n.head(), Some(survivors[0]), "head on {}", n.name());
    }
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_join_agree_on_head_and_leave() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let secret = [42u8; 32];
    let (mut nodes, ports) = start3(secret, dir.path()).await;
    wait_all_up(&nodes, 3).await;
    let lowest = nodes.iter().map(|n| n.node_id()).min().unwrap();
    for n in &nodes {
        assert_eq!(n.head(), Some(lowest), "head on {}", n.name());
        let m = n.members();
        assert!(m.iter().all(|m| {
            m.resources
                .as_ref()
                .is_some_and(|r| r.memory_budget == 1 << 30)
        }));
    }

    // The status client authenticates with the secret and reads the table from a node.
    let client_cfg = config(secret, "client", ports[2], &[], dir.path());
    let st = query_status(
        &client_cfg,
        &StatusTarget {
            timeout: Duration::from_secs(3),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(st.members.len(), 3, "{st:?}");
    assert_eq!(st.count("Up"), 3);
    assert_eq!(st.answered_by, nodes[2].node_id().to_hex());
    assert!(
        st.members
            .iter()
            .any(|m| m.is_head && m.node_id == lowest.to_hex())
    );
    // The status client did not become a member.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(nodes[2].members().len(), 3);

    // A wrong secret is refused.
    let wrong = config([7u8; 32], "intruder", ports[2], &[], dir.path());
    let err = query_status(
        &wrong,
        &StatusTarget {
            timeout: Duration::from_secs(2),
            ..Default::default()
        },
    )
    .await;
    assert!(err.is_err(), "wrong secret must not get the member table");

    // Graceful leave: the others see Down (left) at once, and the head moves if needed.
    let mut ev = nodes[0].subscribe();
    let leaving = nodes.remove(1);
    let (left_id, left_inc) = (leaving.node_id(), leaving.incarnation());
    leaving.shutdown().await;
    drop(leaving);
    let down = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            if let Ok(MembershipEvent::MemberDown { member, reason }) = ev.recv().await
                && member.node_id == left_id
            {
                return reason;
            }
        }
    })
    .await
    .expect("MemberDown within 3 s");
    assert!(
        matches!(down, DownReason::Left | DownReason::Disconnected),
        "{down:?}"
    );
    let remaining_lowest = nodes.iter().map(|n| n.node_id()).min().unwrap();
    assert_eq!(nodes[0].head(), Some(remaining_lowest));
    assert_eq!(nodes[0].member(left_id).unwrap().state, MemberState::Down);

    // Restart with the same identity (on a new port: the old endpoint may linger in this
    // process while its tasks wind down): a new incarnation comes Up.
    let again = Node::start(config(secret, "b", free_port(), &[ports[0]], dir.path()))
        .await
        .unwrap();
    assert_eq!(again.node_id(), left_id, "identity persisted in state_dir");
    assert_ne!(again.incarnation(), left_inc);
    assert!(
        again.wait_for_up(3, Duration::from_secs(10)).await,
        "{:?}",
        again.members()
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while nodes[0]
        .member(again.node_id())
        .map(|m| (m.state, m.incarnation))
        != Some((MemberState::Up, again.incarnation()))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            nodes[0].members()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for n in [&nodes[0], &nodes[1], &again] {
        n.shutdown().await;
    }
}

/// Every node probes its peers' bandwidth shortly after they join: the estimate appears in the
/// member table and in the status report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_measure_bandwidth_to_their_peers() {
    let dir = tempfile::tempdir().unwrap();
    let secret = [43u8; 32];
    let (nodes, _) = start3(secret, dir.path()).await;
    for n in &nodes {
        assert!(n.wait_for_up(3, Duration::from_secs(10)).await);
    }
    // Three nodes, two peers each, one probe at a time per node after a 2 s delay.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let measured: Vec<(String, String, Option<f64>)> = nodes
            .iter()
            .flat_map(|n| {
                n.members()
                    .into_iter()
                    .filter(|m| !m.is_self)
                    .map(move |m| (n.name().to_string(), m.name.clone(), m.bandwidth_bps))
            })
            .collect();
        if measured.iter().all(|(_, _, b)| b.is_some_and(|b| b > 1e6)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "bandwidth not measured on every link: {measured:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let st = nodes[0].status();
    assert!(
        st.members
            .iter()
            .filter(|m| !m.is_self)
            .all(|m| m.bandwidth_mbit.is_some_and(|b| b > 1.0)),
        "{:?}",
        st.members
    );
    assert!(st.render_table().contains("Mbit/s"));
    for n in nodes {
        n.shutdown().await;
    }
}

/// `revoked` in cluster.toml: the members re-read the file when it changes, close the revoked
/// node's connections within 10 s, refuse its reconnections, and flag it in `status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_node_is_dropped_within_10s_and_never_readmitted() {
    let dir = tempfile::tempdir().unwrap();
    let secret = [44u8; 32];
    let (nodes, _) = start3(secret, dir.path()).await;
    wait_all_up(&nodes, 3).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    // a and b watch the cluster file (as `edgeray node --config FILE` does).
    let file = dir.path().join("cluster.toml");
    let base = format!("secret = \"{}\"\n", hex(&secret));
    std::fs::write(&file, &base).unwrap();
    let _watch_a = a.watch_config_file(file.clone());
    let _watch_b = b.watch_config_file(file.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;

    // A file that does not parse changes nothing.
    std::fs::write(&file, format!("{base}revoked = [\"not-an-id\"]\n")).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(a.revoked().is_empty() && b.revoked().is_empty());
    assert!(a.transport().peer(c.node_id()).is_some());

    let revoked_at = tokio::time::Instant::now();
    std::fs::write(
        &file,
        format!("{base}revoked = [\"{}\"]\n", c.node_id().to_hex()),
    )
    .unwrap();
    for n in [a, b] {
        loop {
            let gone = n.transport().peer(c.node_id()).is_none()
                && n.member(c.node_id())
                    .is_none_or(|m| m.state == MemberState::Down);
            if gone {
                break;
            }
            assert!(
                revoked_at.elapsed() < Duration::from_secs(10),
                "{} still connected to the revoked node: {:?}",
                n.name(),
                n.member(c.node_id())
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    eprintln!("revoked node dropped after {:?}", revoked_at.elapsed());
    // c keeps dialing its seed (a) and is refused every time; a and b stay together.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for n in [a, b] {
        assert!(
            n.transport().peer(c.node_id()).is_none(),
            "{} readmitted c",
            n.name()
        );
        assert_ne!(
            n.member(c.node_id()).map(|m| m.state),
            Some(MemberState::Up),
            "{} readmitted c",
            n.name()
        );
        assert_eq!(n.up_members().len(), 2, "{:?}", n.members());
        let row = n
            .status()
            .members
            .into_iter()
            .find(|m| m.node_id == c.node_id().to_hex())
            .expect("the revoked node stays listed");
        assert!(row.revoked, "{row:?}");
        assert!(n.status().render_table().contains("Revoked"));
    }
    assert!(
        c.transport().peers().is_empty(),
        "{:?}",
        c.transport().peers()
    );
    for n in &nodes {
        n.shutdown().await;
    }
}

/// One node per state directory, in one process too; the folder is free again after shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_dir_serves_one_node_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let secret = [45u8; 32];
    let a = Node::start(config(secret, "a", free_port(), &[], dir.path()))
        .await
        .unwrap();
    let twin = Node::start(config(secret, "a", free_port(), &[], dir.path())).await;
    let err = twin
        .expect_err("second node on the same state dir")
        .to_string();
    assert!(
        err.contains(&dir.path().join("a").display().to_string()),
        "{err}"
    );
    assert!(err.contains("already in use"), "{err}");
    a.shutdown().await;
    let again = Node::start(config(secret, "a", free_port(), &[], dir.path()))
        .await
        .unwrap();
    assert_eq!(again.node_id(), a.node_id());
    again.shutdown().await;
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A copied state directory (a cloned SD card): the original notices that another process
/// presents its identity when a peer admits the clone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloned_identity_is_noticed() {
    let dir = tempfile::tempdir().unwrap();
    let secret = [46u8; 32];
    let pa = free_port();
    let a = Node::start(config(secret, "a", pa, &[], dir.path()))
        .await
        .unwrap();
    let b = Node::start(config(secret, "b", free_port(), &[pa], dir.path()))
        .await
        .unwrap();
    wait_all_up(&[a.clone(), b.clone()], 2).await;
    assert!(a.identity_conflict().is_none());
    std::fs::create_dir_all(dir.path().join("clone")).unwrap();
    std::fs::copy(
        dir.path().join("a").join("node.key"),
        dir.path().join("clone").join("node.key"),
    )
    .unwrap();
    let pb = b.local_addr().port();
    let clone = Node::start(config(secret, "clone", free_port(), &[pb], dir.path()))
        .await
        .unwrap();
    assert_eq!(clone.node_id(), a.node_id());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while a.identity_conflict().is_none() && clone.identity_conflict().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "neither process noticed the shared identity"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = a.identity_conflict().or(clone.identity_conflict()).unwrap();
    assert!(seen.contains(&b.node_id().short()), "{seen}");
    for n in [clone, b, a] {
        n.shutdown().await;
    }
}
