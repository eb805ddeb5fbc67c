//! Mutual TLS admission: same secret connects, wrong secret / wrong node / lying hello /
//! version mismatch are refused with a logged reason; one connection per node pair.

mod transport_support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use edgeray_runtime::identity::{Incarnation, NodeIdentity};
use edgeray_runtime::protocol::{APP_TYPES, Hello, HelloReply};
use edgeray_runtime::security::{ClusterSecurity, server_name_for};
use edgeray_runtime::transport::{DisconnectReason, PeerEvent, TransportConfig, TransportError};
use edgeray_runtime::wire::{
    FrameLimits, FrameReader, FrameWriter, TypeSet, WireError, WireMessage,
};
use transport_support::*;

const T: Duration = Duration::from_secs(5);

#[tokio::test]
async fn same_secret_connects_and_exchanges_messages_and_streams() {
    let s = secret(1);
    let mut a = node(&s, "alpha").await;
    let mut b = node(&s, "beta").await;
    let mut streams_b = b.t.register_streams(KIND, TypeSet::new([APP_TYPES]), 8);

    let info = a.t.connect(b.t.local_addr(), None).await.unwrap();
    assert_eq!(info.node_id, b.t.node_id());
    assert_eq!(info.name, "beta");
    assert_eq!(info.incarnation, b.t.local_hello().incarnation);
    assert_eq!(info.listen_addr, Some(b.t.local_addr()));
    assert!(info.outbound);
    assert_eq!(info.version, 1);

    let ev = wait_event(&mut b.events, T, |e| matches!(e, PeerEvent::Connected(_))).await;
    let PeerEvent::Connected(pa) = ev else {
        unreachable!()
    };
    assert_eq!(pa.node_id, a.t.node_id());
    assert_eq!(pa.name, "alpha");
    assert!(!pa.outbound);
    wait_event(
        &mut a.events,
        T,
        |e| matches!(e, PeerEvent::Connected(p) if p.node_id == b.t.node_id()),
    )
    .await;

    // Control messages both ways, in order, with a raw tail.
    for n in 0..10 {
        a.t.send_control(
            b.t.node_id(),
            &Ping {
                n,
                text: "hi".into(),
            },
            Bytes::from(vec![n as u8; 3]),
        )
        .await
        .unwrap();
    }
    for n in 0..10 {
        let m = tokio::time::timeout(T, b.control.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.from, a.t.node_id());
        assert_eq!(
            m.frame.decode::<Ping>().unwrap(),
            Ping {
                n,
                text: "hi".into()
            }
        );
        assert_eq!(&m.tail()[..], &[n as u8; 3]);
    }
    b.t.send_control(
        a.t.node_id(),
        &Ping {
            n: 99,
            text: "back".into(),
        },
        Bytes::new(),
    )
    .await
    .unwrap();
    let m = tokio::time::timeout(T, a.control.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.frame.decode::<Ping>().unwrap().n, 99);

    // A bidirectional stream with a 3 MiB tail, addressed to target 7.
    let (mut w, mut r) =
        a.t.open_bi(b.t.node_id(), KIND, 7, TypeSet::new([APP_TYPES]))
            .await
            .unwrap();
    let tail: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
    w.send(
        &Ping {
            n: 1,
            text: "tensor".into(),
        },
        Bytes::from(tail.clone()),
    )
    .await
    .unwrap();
    let mut inc = tokio::time::timeout(T, streams_b.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((inc.peer, inc.kind, inc.target), (a.t.node_id(), KIND, 7));
    let (msg, got) = inc.reader.read_message::<Ping>().await.unwrap().unwrap();
    assert_eq!(msg.text, "tensor");
    assert_eq!(got.len(), tail.len());
    assert!(got == tail);
    let mut bw = inc.writer.take().unwrap();
    bw.send(
        &Ping {
            n: 2,
            text: "reply".into(),
        },
        Bytes::new(),
    )
    .await
    .unwrap();
    bw.finish().unwrap();
    let (reply, _) = r.read_message::<Ping>().await.unwrap().unwrap();
    assert_eq!(reply.text, "reply");
    assert!(
        r.read_frame().await.unwrap().is_none(),
        "finished stream reads None"
    );

    // Unidirectional stream.
    let mut uw = a.t.open_uni(b.t.node_id(), KIND, 8).await.unwrap();
    uw.send(
        &Ping {
            n: 3,
            text: "uni".into(),
        },
        Bytes::new(),
    )
    .await
    .unwrap();
    uw.finish().unwrap();
    let mut inc = tokio::time::timeout(T, streams_b.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(inc.writer.is_none());
    assert_eq!(inc.target, 8);
    assert_eq!(
        inc.reader
            .read_message::<Ping>()
            .await
            .unwrap()
            .unwrap()
            .0
            .text,
        "uni"
    );

    assert!(a.t.rtt(b.t.node_id()).unwrap() < Duration::from_secs(1));
    assert_eq!(a.t.peers().len(), 1);
    // Connecting again with the known id reuses the connection.
    let before = a.t.connection(b.t.node_id()).unwrap().stable_id();
    let again =
        a.t.connect(b.t.local_addr(), Some(b.t.node_id()))
            .await
            .unwrap();
    assert_eq!(again.node_id, b.t.node_id());
    // Re-dialling by address only (a seed) keeps the live connection, on both sides.
    let b_before = b.t.connection(a.t.node_id()).unwrap().stable_id();
    let again = a.t.connect(b.t.local_addr(), None).await.unwrap();
    assert_eq!(again.node_id, b.t.node_id());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(a.t.connection(b.t.node_id()).unwrap().stable_id(), before);
    assert_eq!(b.t.connection(a.t.node_id()).unwrap().stable_id(), b_before);
    assert!(
        a.t.connection(b.t.node_id())
            .unwrap()
            .close_reason()
            .is_none()
    );

    // Graceful disconnect is reported on both sides.
    a.t.disconnect(b.t.node_id(), "bye");
    let ev = wait_event(&mut b.events, T, |e| {
        matches!(e, PeerEvent::Disconnected { .. })
    })
    .await;
    let PeerEvent::Disconnected {
        node_id, reason, ..
    } = ev
    else {
        unreachable!()
    };
    assert_eq!(node_id, a.t.node_id());
    assert_eq!(
        reason,
        DisconnectReason::ClosedByPeer {
            code: 0,
            reason: "bye".into()
        }
    );
    let ev = wait_event(&mut a.events, T, |e| {
        matches!(e, PeerEvent::Disconnected { .. })
    })
    .await;
    assert!(matches!(
        ev,
        PeerEvent::Disconnected {
            reason: DisconnectReason::ClosedLocally,
            ..
        }
    ));
    assert!(a.t.peers().is_empty());
    a.t.shutdown().await;
    b.t.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn wrong_secret_is_rejected_on_both_sides_with_logged_reason() {
    let logs = LogCapture::default();
    let _g = logs.install();
    let mut a = node(&secret(1), "alpha").await;
    let mut b = node(&secret(2), "beta").await;
    assert_ne!(a.t.cluster_id(), b.t.cluster_id());
    let err = a.t.connect(b.t.local_addr(), None).await.unwrap_err();
    assert!(matches!(err, TransportError::Handshake { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("TLS handshake failed") && msg.contains("invalid peer certificate"),
        "{msg}"
    );
    let ev = wait_event(&mut a.events, T, |e| {
        matches!(e, PeerEvent::Rejected { .. })
    })
    .await;
    assert!(matches!(ev, PeerEvent::Rejected { addr, .. } if addr == b.t.local_addr()));
    let ev = wait_event(&mut b.events, T, |e| {
        matches!(e, PeerEvent::Rejected { .. })
    })
    .await;
    let PeerEvent::Rejected { reason, .. } = ev else {
        unreachable!()
    };
    assert!(reason.contains("TLS handshake failed"), "{reason}");
    assert!(a.t.peers().is_empty() && b.t.peers().is_empty());
    let text = logs.text();
    assert_eq!(
        text.matches("peer connection rejected").count(),
        2,
        "both sides log the rejection:\n{text}"
    );
    assert!(text.contains("WARN"), "{text}");
    assert!(
        text.contains("invalid peer certificate"),
        "the reason is logged:\n{text}"
    );
}

#[tokio::test]
async fn an_expired_node_certificate_is_refused_both_ways() {
    use edgeray_runtime::security::CertValidity;
    use std::time::SystemTime;
    let s = secret(1);
    let good = node(&s, "good").await;
    // Issued 31 days ago for 30 days (same secret, so only the date is wrong).
    let identity = NodeIdentity::generate().unwrap();
    let validity = CertValidity::starting(
        SystemTime::now() - Duration::from_secs(31 * 86_400),
        Duration::from_secs(30 * 86_400),
    );
    let security = ClusterSecurity::with_validity(&s, &identity, validity).unwrap();
    let stale =
        node_with_security(security, "stale", identity, Incarnation::random(), |_| {}).await;
    for (from, to) in [(&stale, &good), (&good, &stale)] {
        let err = from.t.connect(to.t.local_addr(), None).await.unwrap_err();
        assert!(err.to_string().contains("certificate expired"), "{err}");
    }
    assert!(good.t.peers().is_empty() && stale.t.peers().is_empty());
    // Renewed in place (what a running node does at a third of the lifetime): it connects.
    let renewed = stale
        .t
        .security()
        .renewed(Duration::from_secs(86_400))
        .unwrap();
    assert!(renewed.validity().not_after > SystemTime::now());
    stale.t.set_security(renewed).unwrap();
    let info = stale.t.connect(good.t.local_addr(), None).await.unwrap();
    assert_eq!(info.node_id, good.t.node_id());
    // New settings must keep the node.
    let other = ClusterSecurity::new(&s, &NodeIdentity::generate().unwrap()).unwrap();
    assert!(stale.t.set_security(other).is_err());
}

#[tokio::test]
async fn dialling_with_the_wrong_expected_node_fails_the_handshake() {
    let s = secret(3);
    let a = node(&s, "a").await;
    let b = node(&s, "b").await;
    let other = NodeIdentity::generate().unwrap().node_id();
    let err =
        a.t.connect(b.t.local_addr(), Some(other))
            .await
            .unwrap_err();
    assert!(err.to_string().contains("was expected"), "{err}");
    // With the right id it works.
    let p =
        a.t.connect(b.t.local_addr(), Some(b.t.node_id()))
            .await
            .unwrap();
    assert_eq!(p.node_id, b.t.node_id());
}

/// A client with a valid certificate for node X that announces node Y in its hello is refused.
#[tokio::test]
async fn hello_node_id_must_match_certificate() {
    let s = secret(4);
    let mut server = node(&s, "server").await;
    let liar = NodeIdentity::generate().unwrap();
    let victim = NodeIdentity::generate().unwrap().node_id();
    let sec = ClusterSecurity::new(&s, &liar).unwrap();
    let cfg = TransportConfig::new("127.0.0.1:0".parse().unwrap(), "liar");
    let ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = ep
        .connect_with(
            cfg.quinn_client(&sec).unwrap(),
            server.t.local_addr(),
            &server_name_for(None),
        )
        .unwrap()
        .await
        .unwrap();
    let (send, recv) = conn.open_bi().await.unwrap();
    let mut w = FrameWriter::new(send, FrameLimits::default());
    let mut r = FrameReader::new(
        recv,
        FrameLimits::default(),
        TypeSet::single(HelloReply::TYPE),
        None,
    );
    let hello = Hello {
        versions: vec![1],
        cluster_id: sec.cluster_id(),
        node_id: victim,
        incarnation: Incarnation(1),
        name: "liar".into(),
        listen_addr: None,
    };
    w.send(&hello, Bytes::new()).await.unwrap();
    match r.read_message::<HelloReply>().await {
        Ok(Some((HelloReply::Refuse { reason }, _))) => {
            assert!(reason.contains("node id mismatch"), "{reason}")
        }
        Err(WireError::Read(quinn::ReadError::ConnectionLost(
            quinn::ConnectionError::ApplicationClosed(c),
        ))) => {
            assert!(String::from_utf8_lossy(&c.reason).contains("node id mismatch"))
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let ev = wait_event(&mut server.events, T, |e| {
        matches!(e, PeerEvent::Rejected { .. })
    })
    .await;
    let PeerEvent::Rejected { reason, .. } = ev else {
        unreachable!()
    };
    assert!(reason.contains("node id mismatch"), "{reason}");
    assert!(server.t.peers().is_empty());
}

#[tokio::test]
async fn no_common_protocol_version_is_refused_with_reason() {
    let s = secret(5);
    let a = node(&s, "a").await;
    let b = node_with(&s, "b", |c| c.versions = vec![99]).await;
    let err = a.t.connect(b.t.local_addr(), None).await.unwrap_err();
    assert!(matches!(err, TransportError::Refused { .. }), "{err}");
    assert!(
        err.to_string().contains("no common protocol version"),
        "{err}"
    );
}

#[tokio::test]
async fn connecting_to_itself_is_refused() {
    let a = node(&secret(6), "a").await;
    let err = a.t.connect(a.t.local_addr(), None).await.unwrap_err();
    assert!(err.to_string().contains("itself"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_dials_keep_one_connection() {
    let s = secret(7);
    for _ in 0..3 {
        let mut a = node(&s, "a").await;
        let mut b = node(&s, "b").await;
        let (ra, rb) = tokio::join!(
            a.t.connect(b.t.local_addr(), None),
            b.t.connect(a.t.local_addr(), None)
        );
        assert_eq!(ra.unwrap().node_id, b.t.node_id());
        assert_eq!(rb.unwrap().node_id, a.t.node_id());
        // Let the loser's grace period pass.
        tokio::time::sleep(Duration::from_millis(1600)).await;
        let pa = a.t.peers();
        let pb = b.t.peers();
        assert_eq!((pa.len(), pb.len()), (1, 1));
        // Both sides kept the same connection (dialled by one of them). When both dials
        // complete their hello, it is the one dialled by the lower id (events::admit); a dial
        // that finds the peer already connected right after TLS is dropped before its hello.
        assert_eq!(
            pa[0].outbound, !pb[0].outbound,
            "both sides keep the same connection"
        );
        // Same connection on both sides, and it works.
        let ca = a.t.connection(b.t.node_id()).unwrap();
        let cb = b.t.connection(a.t.node_id()).unwrap();
        assert!(ca.close_reason().is_none() && cb.close_reason().is_none());
        a.t.send_control(
            b.t.node_id(),
            &Ping {
                n: 5,
                text: String::new(),
            },
            Bytes::new(),
        )
        .await
        .unwrap();
        assert_eq!(
            tokio::time::timeout(T, b.control.recv())
                .await
                .unwrap()
                .unwrap()
                .frame
                .decode::<Ping>()
                .unwrap()
                .n,
            5
        );
        // Exactly one Connected and no Disconnected on each side.
        for ev in [&mut a.events, &mut b.events] {
            let mut connected = 0;
            while let Ok(e) = ev.try_recv() {
                match e {
                    PeerEvent::Connected(_) => connected += 1,
                    PeerEvent::Disconnected { .. } => panic!("unexpected {e:?}"),
                    PeerEvent::Rejected { .. } => {}
                }
            }
            assert_eq!(connected, 1);
        }
        a.t.shutdown().await;
        b.t.shutdown().await;
    }
}

#[tokio::test]
async fn restarted_peer_replaces_old_incarnation() {
    let s = secret(8);
    let mut a = node(&s, "a").await;
    let id_b = NodeIdentity::generate().unwrap();
    let b1 = node_with_identity(&s, "b", id_b.clone(), Incarnation(1), |_| {}).await;
    a.t.connect(b1.t.local_addr(), None).await.unwrap();
    wait_event(
        &mut a.events,
        T,
        |e| matches!(e, PeerEvent::Connected(p) if p.incarnation == Incarnation(1)),
    )
    .await;
    // The "restarted" b dials a while a still holds the old connection (b1 is kept alive).
    let b2 = node_with_identity(&s, "b", id_b, Incarnation(2), |_| {}).await;
    b2.t.connect(a.t.local_addr(), None).await.unwrap();
    let ev = wait_event(&mut a.events, T, |e| {
        matches!(e, PeerEvent::Disconnected { .. })
    })
    .await;
    assert!(matches!(
        ev,
        PeerEvent::Disconnected {
            incarnation: Incarnation(1),
            reason: DisconnectReason::Restarted,
            ..
        }
    ));
    wait_event(
        &mut a.events,
        T,
        |e| matches!(e, PeerEvent::Connected(p) if p.incarnation == Incarnation(2)),
    )
    .await;
    assert_eq!(
        a.t.peer(b2.t.node_id()).unwrap().incarnation,
        Incarnation(2)
    );
    let _keep = Arc::new(b1);
}
