//! Helpers shared by the transport integration tests (R1).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgeray_runtime::identity::{Incarnation, NodeIdentity};
use edgeray_runtime::protocol::APP_TYPES;
use edgeray_runtime::security::{ClusterSecret, ClusterSecurity};
use edgeray_runtime::transport::{ControlMessage, PeerEvent, Transport, TransportConfig};
use edgeray_runtime::wire::WireMessage;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

/// A test control / stream message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ping {
    pub n: u64,
    pub text: String,
}

impl WireMessage for Ping {
    const TYPE: u16 = 0x0300;
}

/// Test stream kind.
pub const KIND: u16 = 0x0300;

/// A started test node on 127.0.0.1 with its event and control receivers.
pub struct TestNode {
    pub t: Transport,
    pub identity: NodeIdentity,
    pub events: broadcast::Receiver<PeerEvent>,
    pub control: mpsc::Receiver<ControlMessage>,
}

pub fn secret(b: u8) -> ClusterSecret {
    ClusterSecret::from_bytes([b; 32])
}

pub async fn node_with(
    secret: &ClusterSecret,
    name: &str,
    f: impl FnOnce(&mut TransportConfig),
) -> TestNode {
    let identity = NodeIdentity::generate().unwrap();
    node_with_identity(secret, name, identity, Incarnation::random(), f).await
}

pub async fn node_with_identity(
    secret: &ClusterSecret,
    name: &str,
    identity: NodeIdentity,
    incarnation: Incarnation,
    f: impl FnOnce(&mut TransportConfig),
) -> TestNode {
    let security = ClusterSecurity::new(secret, &identity).unwrap();
    node_with_security(security, name, identity, incarnation, f).await
}

/// A test node with a security context built by the caller.
pub async fn node_with_security(
    security: ClusterSecurity,
    name: &str,
    identity: NodeIdentity,
    incarnation: Incarnation,
    f: impl FnOnce(&mut TransportConfig),
) -> TestNode {
    let mut cfg = TransportConfig::new("127.0.0.1:0".parse().unwrap(), name);
    f(&mut cfg);
    let t = Transport::bind(cfg, security, incarnation).await.unwrap();
    let events = t.subscribe();
    let control = t.control_messages(APP_TYPES, 64);
    t.start();
    TestNode {
        t,
        identity,
        events,
        control,
    }
}

pub async fn node(secret: &ClusterSecret, name: &str) -> TestNode {
    node_with(secret, name, |_| {}).await
}

/// Waits (up to `within`) for an event matching `pred`, skipping others.
pub async fn wait_event(
    rx: &mut broadcast::Receiver<PeerEvent>,
    within: Duration,
    pred: impl Fn(&PeerEvent) -> bool,
) -> PeerEvent {
    tokio::time::timeout(within, async {
        loop {
            match rx.recv().await {
                Ok(e) if pred(&e) => return e,
                Ok(_) => continue,
                Err(e) => panic!("event channel: {e}"),
            }
        }
    })
    .await
    .expect("expected event did not arrive in time")
}

/// Collects log output of the current thread (use with a current-thread runtime).
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Installs a thread-local subscriber writing WARN+ logs here; keep the guard alive.
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let me = self.clone();
        let sub = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || LogWriter(me.0.clone()))
            .finish();
        tracing::subscriber::set_default(sub)
    }
}

pub struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A UDP relay between a client and `target` that can be cut silently (packets dropped).
pub struct Relay {
    pub addr: SocketAddr,
    cut: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Relay {
        let sock = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = sock.local_addr().unwrap();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let c = cut.clone();
        let task = tokio::spawn(async move {
            let mut client: Option<SocketAddr> = None;
            let mut buf = vec![0u8; 65536];
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                    return;
                };
                if c.load(std::sync::atomic::Ordering::Relaxed) {
                    continue;
                }
                let to = if from == target {
                    match client {
                        Some(cl) => cl,
                        None => continue,
                    }
                } else {
                    client = Some(from);
                    target
                };
                let _ = sock.send_to(&buf[..n], to).await;
            }
        });
        Relay { addr, cut, task }
    }

    /// Drops every packet from now on, in both directions.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
