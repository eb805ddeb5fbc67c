//! Stream semantics upper layers rely on: QUIC flow control pushes back on a sender whose
//! receiver does not read (back-pressure), and frames arrive intact and in order afterwards.

mod transport_support;

use std::time::Duration;

use bytes::Bytes;
use edgeray_runtime::protocol::APP_TYPES;
use edgeray_runtime::transport::TransportError;
use edgeray_runtime::wire::TypeSet;
use transport_support::*;

const T: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_stream_blocks_the_sender_until_the_receiver_reads() {
    let s = secret(21);
    let small = |c: &mut edgeray_runtime::transport::TransportConfig| {
        c.stream_receive_window = 64 << 10;
        c.receive_window = 256 << 10;
    };
    let b = node_with(&s, "b", small).await;
    let mut streams = b.t.register_streams(KIND, TypeSet::new([APP_TYPES]), 4);
    let a = node_with(&s, "a", small).await;
    a.t.connect(b.t.local_addr(), None).await.unwrap();
    let (mut w, _r) =
        a.t.open_bi(b.t.node_id(), KIND, 1, TypeSet::new([APP_TYPES]))
            .await
            .unwrap();

    // 64 frames of 32 KiB = 2 MiB, far beyond the 64 KiB stream window.
    let total = 64u64;
    let sender = tokio::spawn(async move {
        for n in 0..total {
            w.send(
                &Ping {
                    n,
                    text: String::new(),
                },
                Bytes::from(vec![n as u8; 32 << 10]),
            )
            .await
            .unwrap();
        }
        w.finish().unwrap();
        w
    });
    let mut inc = tokio::time::timeout(T, streams.recv())
        .await
        .unwrap()
        .unwrap();
    // The receiver holds the stream without reading: the sender must be stuck.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !sender.is_finished(),
        "sender finished although nobody read: no back-pressure"
    );
    // Now read everything, in order and intact.
    for n in 0..total {
        let (m, tail) = tokio::time::timeout(T, inc.reader.read_message::<Ping>())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(m.n, n);
        assert_eq!(tail.len(), 32 << 10);
        assert!(tail.iter().all(|&x| x == n as u8));
    }
    assert!(inc.reader.read_frame().await.unwrap().is_none());
    tokio::time::timeout(T, sender).await.unwrap().unwrap();
}

#[tokio::test]
async fn sending_to_an_unknown_peer_is_an_error() {
    let a = node(&secret(22), "a").await;
    let ghost = edgeray_runtime::identity::NodeIdentity::generate()
        .unwrap()
        .node_id();
    let err =
        a.t.send_control(
            ghost,
            &Ping {
                n: 0,
                text: String::new(),
            },
            Bytes::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::NotConnected(id) if id == ghost));
    assert!(a.t.open_bi(ghost, KIND, 0, TypeSet::all()).await.is_err());
    assert!(a.t.rtt(ghost).is_none());
}

#[tokio::test]
async fn oversized_tail_is_refused_by_the_sender() {
    let s = secret(23);
    let b = node(&s, "b").await;
    // The control stream has its own bounds (`control_limits`), apart from the streams'.
    let a = node_with(&s, "a", |c| c.control_limits.max_tail = 1024).await;
    a.t.connect(b.t.local_addr(), None).await.unwrap();
    let err =
        a.t.send_control(
            b.t.node_id(),
            &Ping {
                n: 0,
                text: String::new(),
            },
            Bytes::from(vec![0u8; 1025]),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("exceeds"), "{err}");
    // The connection is still fine.
    a.t.send_control(
        b.t.node_id(),
        &Ping {
            n: 1,
            text: String::new(),
        },
        Bytes::new(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn invalid_config_is_refused() {
    let id = edgeray_runtime::identity::NodeIdentity::generate().unwrap();
    let sec = edgeray_runtime::security::ClusterSecurity::new(&secret(24), &id).unwrap();
    let mut cfg = edgeray_runtime::transport::TransportConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        "x".repeat(65),
    );
    let err = edgeray_runtime::transport::Transport::bind(
        cfg.clone(),
        sec.clone(),
        edgeray_runtime::identity::Incarnation(1),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, TransportError::InvalidConfig(_)), "{err}");
    cfg.name = "ok".into();
    cfg.versions.clear();
    assert!(
        edgeray_runtime::transport::Transport::bind(
            cfg,
            sec,
            edgeray_runtime::identity::Incarnation(1)
        )
        .await
        .is_err()
    );
}
