//! Remote actors across two OS processes on 127.0.0.1: this test binary re-runs itself as a
//! child process hosting a full edgeray node (R2's node: mTLS QUIC, membership) with an actor
//! registry; the parent process joins it as a second node and spawns, tells, asks, looks up and
//! watches actors in the child, checks that a slow actor in the child holds the parent's tells
//! back (QUIC flow control plus the bounded mailbox), then kills the child and sees its actors
//! die.
//!
//! Run: `cargo test -p edgeray-tests --test actors_loopback`

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgeray_runtime::actor::{
    ActorCtx, ActorError, AskError, Envelope, Registry, RemoteActor, StopReason,
};
use edgeray_runtime::cluster::{ActorSystemConfig, Cluster, SpawnOptions};
use edgeray_runtime::config::ClusterConfig;
use serde::{Deserialize, Serialize};

const CHILD_ENV: &str = "EDGERAY_ACTORS_CHILD";
const SECRET: &str = "7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a";
const T: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize, Deserialize)]
enum CounterMsg {
    Add(u64),
    Get,
    Pid,
    Fail,
    /// Sleep this many milliseconds, then count one.
    Slow(u64),
}

/// A counter that lives in whichever process spawned it.
struct Counter {
    total: u64,
}

impl RemoteActor for Counter {
    type Args = u64;
    type Msg = CounterMsg;
    type Reply = u64;
    fn kind() -> &'static str {
        "test.counter"
    }
    fn create(start: u64, _ctx: ActorCtx) -> Result<Self, ActorError> {
        Ok(Counter { total: start })
    }
    async fn handle(&mut self, m: Envelope<CounterMsg>) -> Result<Envelope<u64>, ActorError> {
        match m.msg {
            CounterMsg::Add(n) => {
                self.total += n + m.tail.len() as u64;
                Ok(Envelope::new(self.total))
            }
            CounterMsg::Get => Ok(Envelope::new(self.total)),
            CounterMsg::Pid => Ok(Envelope::new(u64::from(std::process::id()))),
            CounterMsg::Fail => Err(ActorError::new("counter says no")),
            CounterMsg::Slow(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                self.total += 1;
                Ok(Envelope::new(self.total))
            }
        }
    }
}

fn config(name: &str, dir: &std::path::Path, seed: Option<SocketAddr>) -> ClusterConfig {
    let mut cfg = ClusterConfig::from_toml_str(&format!("secret = \"{SECRET}\"")).expect("config");
    cfg.name = Some(name.into());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.mdns = false;
    cfg.seeds = seed.map(|s| vec![s.to_string()]).unwrap_or_default();
    cfg.state_dir = dir.to_path_buf();
    cfg
}

async fn start(cfg: ClusterConfig) -> Cluster {
    let actors = ActorSystemConfig::from_cluster_config(&cfg);
    Cluster::start(cfg, Registry::new().with::<Counter>(), actors)
        .await
        .expect("cluster starts")
}

/// The child process: a node that hosts actors until its stdin closes.
#[test]
#[ignore = "helper: run by multi_process_remote_actors as the child process"]
fn child_node() {
    if std::env::var(CHILD_ENV).is_err() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let c = start(config("child", dir.path(), None)).await;
        let addr = c.node().unwrap().local_addr();
        println!("LISTEN {addr} {}", c.node_id());
        std::io::stdout().flush().unwrap();
        // Wait for the parent to close our stdin (or kill us).
        let _ = tokio::task::spawn_blocking(|| {
            let mut s = String::new();
            while std::io::stdin()
                .read_line(&mut s)
                .map(|n| n > 0)
                .unwrap_or(false)
            {}
        })
        .await;
        c.shutdown().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_process_remote_actors() {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "child_node",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("child starts");
    let stdout = child.stdout.take().unwrap();
    // libtest prints "test child_node ... " without a newline before the test body runs, so
    // the child's line is "test child_node ... LISTEN <addr> <id>": look for the marker anywhere.
    let reader = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        lines.find_map(|l| {
            let l = l.ok()?;
            l.find("LISTEN ").map(|i| l[i..].to_string())
        })
    });
    let line = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the child prints its address within 60 s")
        .unwrap()
        .expect("child printed its address");
    let mut parts = line.split_whitespace().skip(1);
    let child_addr: SocketAddr = parts.next().unwrap().parse().unwrap();
    let child_id: edgeray_runtime::identity::NodeId = parts.next().unwrap().parse().unwrap();

    eprintln!("step: child at {child_addr}");
    let dir = tempfile::tempdir().unwrap();
    let me = start(config("parent", dir.path(), Some(child_addr))).await;
    assert!(
        me.node()
            .unwrap()
            .wait_for_up(2, Duration::from_secs(20))
            .await,
        "child joined"
    );
    eprintln!("step: up");
    assert!(me.peers().contains(&child_id));
    assert_eq!(me.members().len(), 2);

    // Spawn in the other process, talk to it.
    let counter = me
        .spawn::<Counter>(10, SpawnOptions::new().on(child_id).name("counter"))
        .await
        .expect("remote spawn");
    eprintln!("step: spawned");
    let pid = counter.ask(CounterMsg::Pid, T).await.unwrap().msg;
    assert_eq!(
        pid,
        u64::from(child.id()),
        "the actor runs in the child process"
    );
    assert_ne!(pid, u64::from(std::process::id()));
    for _ in 0..100 {
        counter.tell(CounterMsg::Add(1)).await.unwrap();
    }
    counter
        .tell(Envelope::with_tail(CounterMsg::Add(0), vec![0u8; 500_000]))
        .await
        .unwrap();
    assert_eq!(
        counter.ask(CounterMsg::Get, T).await.unwrap().msg,
        10 + 100 + 500_000
    );
    assert_eq!(
        counter.ask(CounterMsg::Fail, T).await,
        Err(AskError::Remote("counter says no".into()))
    );

    // Back-pressure across processes: a slow actor with a small mailbox in the child holds the
    // parent's tells back. Without it the parent would queue 60 × 256 KiB in a few ms; with it,
    // at most the mailbox (4) plus the QUIC stream window (4 MiB = 16 messages) plus the frames
    // in flight run ahead, so the tells must last about as long as the child needs for the rest.
    let slow = me
        .spawn::<Counter>(0, SpawnOptions::new().on(child_id).mailbox(4))
        .await
        .expect("remote spawn of the slow counter");
    let (n, ms, msg_bytes) = (60u64, 20u64, 256 * 1024usize);
    let ahead = 4 + (4usize << 20).div_ceil(msg_bytes) as u64 + 2;
    let payload = vec![7u8; msg_bytes];
    let t0 = Instant::now();
    for _ in 0..n {
        slow.tell(Envelope::with_tail(CounterMsg::Slow(ms), payload.clone()))
            .await
            .unwrap();
    }
    let took = t0.elapsed();
    let floor = Duration::from_millis(ms * (n - ahead));
    eprintln!("step: {n} tells to a slow remote actor took {took:?} (floor {floor:?})");
    assert!(
        took >= floor,
        "the sender was not held back: {n} tells took {took:?}, the child needs {floor:?}"
    );
    // Nothing was dropped: every message is handled, in order, before the ask.
    assert_eq!(
        slow.ask(CounterMsg::Get, Duration::from_secs(30))
            .await
            .unwrap()
            .msg,
        n
    );
    eprintln!("step: back-pressure");

    // Lookup by name finds it in the other process; placement without a node id can use it too.
    eprintln!("step: told");
    let found = me.lookup::<Counter>("counter").await.expect("lookup");
    assert_eq!(found.id(), counter.id());

    // Stop one actor: its watcher hears it.
    let w = counter.watch();
    counter.stop().await;
    assert_eq!(
        tokio::time::timeout(T, w).await.unwrap(),
        StopReason::Stopped
    );

    eprintln!("step: stopped");
    // Kill the child process: watchers of its actors hear NodeDown.
    let other = me
        .spawn::<Counter>(0, SpawnOptions::new().on(child_id))
        .await
        .unwrap();
    assert_eq!(other.ask(CounterMsg::Get, T).await.unwrap().msg, 0);
    let w = other.watch();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    child.kill().unwrap();
    let _ = child.wait();
    let reason = tokio::time::timeout(Duration::from_secs(20), w)
        .await
        .expect("death noticed");
    assert_eq!(reason, StopReason::NodeDown);
    eprintln!("child kill noticed after {:?}", t0.elapsed());
    let e = other.ask(CounterMsg::Get, T).await.unwrap_err();
    assert!(
        matches!(e, AskError::NodeDown(_) | AskError::ActorDead),
        "{e:?}"
    );
    eprintln!("step: killed");
    me.shutdown().await;
}
