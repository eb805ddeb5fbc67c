//! Ping-pong across two edgeray nodes talking real mutually-authenticated QUIC.
//!
//! One command, both nodes in this process as separate actor systems on 127.0.0.1:
//!
//! ```text
//! cargo run -p edgeray-examples --example ping_pong
//! ```
//!
//! Or as two processes (same secret, any 64 hex characters):
//!
//! ```text
//! cargo run -p edgeray-examples --example ping_pong -- --listen 127.0.0.1:7171 --secret $S   # node "b", waits
//! cargo run -p edgeray-examples --example ping_pong -- --join 127.0.0.1:7171 --secret $S     # driver
//! ```
//!
//! The driver spawns a `Pong` actor on the other node (by kind name, with serialized
//! arguments), asks it (with a timeout), tells it a burst of messages (each `tell` waits when
//! the remote mailbox is full), finds it again by name, and watches it: first the actor is
//! stopped, then (in-process mode) the whole remote node shuts down and the watch reports it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use edgeray_runtime::actor::{ActorCtx, ActorError, Envelope, Registry, RemoteActor};
use edgeray_runtime::cluster::{ActorSystemConfig, Cluster, SpawnOptions};
use edgeray_runtime::config::ClusterConfig;
use edgeray_runtime::identity::NodeId;
use serde::{Deserialize, Serialize};

/// What a `Pong` understands.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum PingMsg {
    /// Answer `n + 1` (and send the raw tail back).
    Ping(u64),
    /// Count, no answer needed (used with `tell`).
    Count,
    /// How many `Count`s so far.
    Total,
}

/// An actor that answers pings. Registered on every node, spawned by name from anywhere.
struct Pong {
    greeting: String,
    counted: u64,
}

impl RemoteActor for Pong {
    type Args = String;
    type Msg = PingMsg;
    type Reply = u64;

    fn kind() -> &'static str {
        "example.pong"
    }

    fn create(greeting: String, ctx: ActorCtx) -> Result<Self, ActorError> {
        println!(
            "[pong {}] created on node {}: {greeting}",
            ctx.local_id(),
            short(ctx.node())
        );
        Ok(Pong {
            greeting,
            counted: 0,
        })
    }

    async fn handle(&mut self, m: Envelope<PingMsg>) -> Result<Envelope<u64>, ActorError> {
        match m.msg {
            PingMsg::Ping(n) => Ok(Envelope::with_tail(n + 1, m.tail)),
            PingMsg::Count => {
                self.counted += 1;
                // A little work per message, so a burst of tells meets a full mailbox.
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok(Envelope::new(self.counted))
            }
            PingMsg::Total => Ok(Envelope::new(self.counted)),
        }
    }

    fn stopped(&mut self) {
        println!(
            "[pong] \"{}\" stopped after {} counts",
            self.greeting, self.counted
        );
    }
}

fn short(n: Option<NodeId>) -> String {
    n.map(|n| n.short()).unwrap_or_else(|| "-".into())
}

#[derive(Parser, Debug)]
struct Args {
    /// Run only a node listening here and wait (the other process joins it).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Join the node at this address and drive the ping-pong against it.
    #[arg(long)]
    join: Option<SocketAddr>,
    /// Cluster secret (64 hex characters); both processes must use the same one.
    #[arg(
        long,
        default_value = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e"
    )]
    secret: String,
    /// Number of pings.
    #[arg(long, default_value_t = 200)]
    pings: u64,
}

fn registry() -> Registry {
    Registry::new().with::<Pong>()
}

/// A loopback node config: no mDNS, its own key folder, optional seed.
fn node_config(
    secret: &str,
    listen: SocketAddr,
    seed: Option<SocketAddr>,
    name: &str,
) -> anyhow::Result<ClusterConfig> {
    let mut cfg = ClusterConfig::from_toml_str(&format!("secret = \"{secret}\""))?;
    cfg.name = Some(name.to_string());
    cfg.listen = listen;
    cfg.mdns = false;
    cfg.seeds = seed.map(|s| vec![s.to_string()]).unwrap_or_default();
    cfg.state_dir = state_dir(name);
    Ok(cfg)
}

fn state_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("edgeray-example-{}-{name}", std::process::id()))
}

async fn start(cfg: ClusterConfig) -> anyhow::Result<Cluster> {
    let actors = ActorSystemConfig::from_cluster_config(&cfg);
    Ok(Cluster::start(cfg, registry(), actors).await?)
}

async fn wait_for_members(c: &Cluster, n: usize) -> anyhow::Result<()> {
    let node = c.node().context("cluster has a node")?;
    if !node.wait_for_up(n, Duration::from_secs(20)).await {
        bail!("only {} of {n} members came up", node.up_members().len());
    }
    Ok(())
}

/// The driver: everything a program does with remote actors.
async fn drive(me: &Cluster, other: NodeId, pings: u64) -> anyhow::Result<()> {
    let pong = me
        .spawn::<Pong>(
            "hello from the driver".into(),
            SpawnOptions::new().on(other).name("pong").mailbox(8),
        )
        .await?;
    println!(
        "spawned {pong:?} on node {} (local: {})",
        pong.node().short(),
        pong.is_local()
    );

    let t0 = Instant::now();
    for i in 0..pings {
        let r = pong.ask(PingMsg::Ping(i), Duration::from_secs(5)).await?;
        anyhow::ensure!(r.msg == i + 1, "wrong answer {} to ping {i}", r.msg);
    }
    let per = t0.elapsed() / pings.max(1) as u32;
    println!("{pings} asks round-trip over QUIC: {per:?} each");

    let tail = vec![42u8; 1 << 20];
    let r = pong
        .ask(
            Envelope::with_tail(PingMsg::Ping(0), tail.clone()),
            Duration::from_secs(5),
        )
        .await?;
    anyhow::ensure!(
        r.tail.as_ref() == tail.as_slice(),
        "tail changed in transit"
    );
    println!("1 MiB raw tail went there and back unchanged");

    let t0 = Instant::now();
    for _ in 0..500 {
        pong.tell(PingMsg::Count).await?;
    }
    let sent = t0.elapsed();
    let total = pong.ask(PingMsg::Total, Duration::from_secs(10)).await?.msg;
    println!(
        "500 tells accepted in {sent:?}, all {total} handled after {:?} (in flight at most: 8 in the \
         mailbox + what fits the QUIC stream window)",
        t0.elapsed()
    );

    let found = me.lookup::<Pong>("pong").await.context("lookup by name")?;
    println!("lookup(\"pong\") -> {found:?}");

    let watch = pong.watch();
    pong.stop().await;
    println!(
        "watch after stop: {:?}",
        tokio::time::timeout(Duration::from_secs(5), watch).await?
    );
    Ok(())
}

/// Both nodes in this process: the ping-pong, then the death of a whole node seen by a
/// watcher (what `main` runs without `--listen`/`--join`).
pub async fn run_in_process(secret: &str, pings: u64) -> anyhow::Result<()> {
    let any: SocketAddr = "127.0.0.1:0".parse()?;
    let b = start(node_config(secret, any, None, "b")?).await?;
    let b_addr = b.node().context("node")?.local_addr();
    let a = start(node_config(secret, any, Some(b_addr), "a")?).await?;
    wait_for_members(&a, 2).await?;
    println!(
        "node a {} and node b {} are Up",
        a.node_id().short(),
        b.node_id().short()
    );
    drive(&a, b.node_id(), pings).await?;

    // Death of a whole node: a watcher on the driver side hears about it.
    let victim = a
        .spawn::<Pong>("doomed".into(), SpawnOptions::new().on(b.node_id()))
        .await?;
    let watch = victim.watch();
    let mut events = a.subscribe().context("membership events")?;
    b.shutdown().await;
    let reason = tokio::time::timeout(Duration::from_secs(10), watch).await?;
    println!("node b shut down; watch on its actor says: {reason:?}");
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        if let Ok(Ok(ev)) = tokio::time::timeout(Duration::from_secs(10), events.recv()).await
            && let edgeray_runtime::membership::MembershipEvent::MemberDown { member, reason } = ev
        {
            println!("membership: {} is down ({reason:?})", member.name);
            break;
        }
    }
    a.shutdown().await;
    for n in ["a", "b"] {
        let _ = std::fs::remove_dir_all(state_dir(n));
    }
    Ok(())
}

#[allow(dead_code)] // also compiled into the examples test, which calls `run_in_process`
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match (args.listen, args.join) {
        (Some(listen), None) => {
            let b = start(node_config(&args.secret, listen, None, "b")?).await?;
            println!(
                "node b {} listening on {}; Ctrl-C to stop",
                b.node_id().short(),
                listen
            );
            tokio::signal::ctrl_c().await?;
            b.shutdown().await;
        }
        (None, Some(join)) => {
            let any = "127.0.0.1:0".parse()?;
            let a = start(node_config(&args.secret, any, Some(join), "driver")?).await?;
            wait_for_members(&a, 2).await?;
            let other = a.peers().into_iter().next().context("no other member")?;
            drive(&a, other, args.pings).await?;
            a.shutdown().await;
        }
        (None, None) => run_in_process(&args.secret, args.pings).await?,
        _ => bail!("use either --listen or --join, not both"),
    }
    if args.join.is_some() {
        let _ = std::fs::remove_dir_all(state_dir("driver"));
    }
    Ok(())
}
