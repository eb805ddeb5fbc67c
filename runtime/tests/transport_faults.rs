//! Faults: garbage on the UDP socket and on authenticated streams, unknown stream kinds and
//! control types, connection floods, and idle-timeout detection of a vanished peer.

mod transport_support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use edgeray_runtime::protocol::APP_TYPES;
use edgeray_runtime::transport::{CLOSE_PROTOCOL_ERROR, DisconnectReason, PeerEvent};
use edgeray_runtime::wire::{FrameHeader, TypeSet, WireError, WireMessage};
use transport_support::*;

const T: Duration = Duration::from_secs(5);

async fn ping_roundtrip(from: &TestNode, to: &mut TestNode, n: u64) {
    from.t
        .send_control(
            to.t.node_id(),
            &Ping {
                n,
                text: "ok".into(),
            },
            Bytes::new(),
        )
        .await
        .unwrap();
    let m = tokio::time::timeout(T, to.control.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.frame.decode::<Ping>().unwrap().n, n);
}

#[tokio::test]
async fn udp_garbage_does_not_disturb_the_node() {
    let s = secret(11);
    let mut a = node(&s, "a").await;
    let b = node(&s, "b").await;
    b.t.connect(a.t.local_addr(), None).await.unwrap();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut x: u64 = 0x9E3779B97F4A7C15;
    for i in 0..2000usize {
        let len = 1 + (i * 37) % 1400;
        let pkt: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        sock.send_to(&pkt, a.t.local_addr()).await.unwrap();
    }
    // Quinn-looking long-header initial packets with junk content.
    for i in 0..200u8 {
        let mut pkt = vec![0xC0 | (i & 3), 0, 0, 0, 1, 8];
        pkt.extend_from_slice(&[i; 1200]);
        sock.send_to(&pkt, a.t.local_addr()).await.unwrap();
    }
    ping_roundtrip(&b, &mut a, 1).await;
    let c = node(&s, "c").await;
    c.t.connect(a.t.local_addr(), None).await.unwrap();
    ping_roundtrip(&c, &mut a, 2).await;
}

/// Sends `bytes` on a fresh raw bi stream of `from`'s connection to `to`, then expects `to` to
/// drop that connection (protocol error) while `other` keeps working with `to`.
async fn garbage_drops_only_that_peer(bytes: Vec<u8>, on_control: bool) {
    let s = secret(12);
    let mut victim = node(&s, "victim").await;
    let mut bad = node(&s, "bad").await;
    let good = node(&s, "good").await;
    bad.t.connect(victim.t.local_addr(), None).await.unwrap();
    good.t.connect(victim.t.local_addr(), None).await.unwrap();
    let conn = bad.t.connection(victim.t.node_id()).unwrap();
    if on_control {
        // Garbage after a valid control frame on the control stream itself.
        bad.t
            .send_control_frame(
                victim.t.node_id(),
                &edgeray_runtime::wire::Frame {
                    msg_type: 0x2EEE,
                    flags: 0,
                    body: Bytes::new(),
                    tail: Bytes::new(),
                },
            )
            .await
            .unwrap();
    } else {
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        send.write_all(&bytes).await.unwrap();
        let _ = send.finish();
    }
    let ev = wait_event(&mut bad.events, T, |e| {
        matches!(e, PeerEvent::Disconnected { .. })
    })
    .await;
    let PeerEvent::Disconnected { reason, .. } = ev else {
        unreachable!()
    };
    match reason {
        DisconnectReason::ClosedByPeer { code, reason } => {
            assert_eq!(code, CLOSE_PROTOCOL_ERROR as u64, "{reason}");
        }
        other => panic!("unexpected reason {other:?}"),
    }
    let ev = wait_event(&mut victim.events, T, |e| {
        matches!(e, PeerEvent::Disconnected { .. })
    })
    .await;
    assert!(matches!(ev, PeerEvent::Disconnected { node_id, .. } if node_id == bad.t.node_id()));
    ping_roundtrip(&good, &mut victim, 3).await;
    assert_eq!(victim.t.peers().len(), 1);
}

#[tokio::test]
async fn garbage_stream_header_drops_that_peer_only() {
    garbage_drops_only_that_peer(b"GET / HTTP/1.1\r\n\r\nthis is not a frame".to_vec(), false)
        .await;
}

#[tokio::test]
async fn lying_length_prefix_drops_that_peer_without_allocating() {
    // A valid StreamOpen type but a 4 GiB body claim.
    let h = FrameHeader {
        msg_type: 3,
        flags: 0,
        body_len: u32::MAX,
        tail_len: u32::MAX,
    }
    .encode();
    garbage_drops_only_that_peer(h.to_vec(), false).await;
}

#[tokio::test]
async fn truncated_frame_drops_that_peer() {
    let h = FrameHeader {
        msg_type: 3,
        flags: 0,
        body_len: 100,
        tail_len: 0,
    }
    .encode();
    let mut v = h.to_vec();
    v.extend_from_slice(&[1, 2, 3]);
    garbage_drops_only_that_peer(v, false).await;
}

#[tokio::test]
async fn unknown_control_type_drops_that_peer() {
    garbage_drops_only_that_peer(Vec::new(), true).await;
}

#[tokio::test]
async fn garbage_inside_a_handled_stream_drops_that_peer() {
    let s = secret(13);
    let victim = node(&s, "victim").await;
    let mut streams = victim
        .t
        .register_streams(KIND, TypeSet::new([APP_TYPES]), 4);
    let mut bad = node(&s, "bad").await;
    bad.t.connect(victim.t.local_addr(), None).await.unwrap();
    let (w, _r) = bad
        .t
        .open_bi(victim.t.node_id(), KIND, 1, TypeSet::new([APP_TYPES]))
        .await
        .unwrap();
    let mut raw = w.into_inner();
    // Oversized tail announcement (> 64 MiB) on an accepted type.
    raw.write_all(
        &FrameHeader {
            msg_type: Ping::TYPE,
            flags: 0,
            body_len: 0,
            tail_len: 100 << 20,
        }
        .encode(),
    )
    .await
    .unwrap();
    let mut inc = tokio::time::timeout(T, streams.recv())
        .await
        .unwrap()
        .unwrap();
    let err = inc.reader.read_frame().await.unwrap_err();
    assert!(matches!(err, WireError::Frame(_)), "{err}");
    wait_event(&mut bad.events, T, |e| {
        matches!(e, PeerEvent::Disconnected { .. })
    })
    .await;
}

#[tokio::test]
async fn unknown_stream_kind_is_refused_but_connection_survives() {
    let s = secret(14);
    let mut a = node(&s, "a").await;
    let b = node(&s, "b").await;
    b.t.connect(a.t.local_addr(), None).await.unwrap();
    let (mut w, mut r) =
        b.t.open_bi(a.t.node_id(), 0x0EEE, 0, TypeSet::new([APP_TYPES]))
            .await
            .unwrap();
    let _ = w
        .send(
            &Ping {
                n: 0,
                text: String::new(),
            },
            Bytes::new(),
        )
        .await;
    assert!(
        tokio::time::timeout(T, r.read_frame())
            .await
            .unwrap()
            .is_err(),
        "stream is refused"
    );
    ping_roundtrip(&b, &mut a, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flood_is_bounded_and_node_keeps_serving() {
    let s = secret(15);
    let mut a = node_with(&s, "a", |c| c.max_pending_handshakes = 8).await;
    // 100 raw QUIC clients with a wrong secret dial at once.
    let bad = secret(16);
    let bad_id = edgeray_runtime::identity::NodeIdentity::generate().unwrap();
    let sec = edgeray_runtime::security::ClusterSecurity::new(&bad, &bad_id).unwrap();
    let cfg = edgeray_runtime::transport::TransportConfig::new("127.0.0.1:0".parse().unwrap(), "x");
    let client = cfg.quinn_client(&sec).unwrap();
    let ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let c = ep
            .connect_with(client.clone(), a.t.local_addr(), "peer.edgeray")
            .unwrap();
        tasks.push(tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(10), c).await
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert!(!matches!(r, Ok(Ok(_))), "no flood connection may succeed");
    }
    let good = node(&s, "good").await;
    good.t.connect(a.t.local_addr(), None).await.unwrap();
    ping_roundtrip(&good, &mut a, 5).await;
}

#[tokio::test]
async fn vanished_peer_is_detected_by_idle_timeout() {
    let s = secret(17);
    let mut a = node(&s, "a").await;
    let b = node(&s, "b").await;
    let relay = Relay::start(b.t.local_addr()).await;
    let info = a.t.connect(relay.addr, None).await.unwrap();
    assert_eq!(info.node_id, b.t.node_id());
    // Keep-alives keep it up well beyond the idle timeout.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(a.t.peers().len(), 1);
    relay.cut();
    let cut_at = Instant::now();
    let ev = wait_event(&mut a.events, Duration::from_secs(10), |e| {
        matches!(e, PeerEvent::Disconnected { .. })
    })
    .await;
    let took = cut_at.elapsed();
    assert!(
        matches!(ev, PeerEvent::Disconnected { reason: DisconnectReason::IdleTimeout, node_id, .. } if node_id == b.t.node_id()),
        "{ev:?}"
    );
    assert!(
        took >= Duration::from_millis(4500) && took <= Duration::from_millis(7500),
        "detected after {took:?}"
    );
    eprintln!("vanished peer detected after {took:?}");
    assert!(a.t.peers().is_empty());
}

/// Under handshake load the listener answers unvalidated sources with a QUIC Retry (here:
/// always, `retry_above_pending = 0`); a real peer proves its address and connects as usual.
#[tokio::test]
async fn address_validation_by_retry_admits_real_peers() {
    let s = secret(12);
    let mut a = node_with(&s, "a", |c| c.retry_above_pending = 0).await;
    let b = node(&s, "b").await;
    let p = b.t.connect(a.t.local_addr(), None).await.unwrap();
    assert_eq!(p.node_id, a.t.node_id());
    ping_roundtrip(&b, &mut a, 1).await;
}
