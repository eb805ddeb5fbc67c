//! A custom actor with resource needs, placed by the cluster's scheduler.
//!
//! ```text
//! cargo run -p edgeray-examples --example resource_actor
//! ```
//!
//! Starts two nodes in this process (separate actor systems talking real QUIC on 127.0.0.1):
//! a small board "tiny" offering 256 MiB and 5 W, and a bigger board "big" offering 2 GiB,
//! 15 W and one "npu". A `Matmul` actor kind (heavy compute on `spawn_blocking`, so the actor
//! thread stays free) is spawned from "tiny" without naming a node: the placement function
//! (first node whose free budget fits) puts each actor where its memory/power/custom needs fit,
//! refuses one that fits nowhere, and reuses the budget once an actor stops.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use edgeray_runtime::actor::{
    ActorCtx, ActorError, Envelope, Registry, RemoteActor, Resources, SpawnError,
};
use edgeray_runtime::cluster::{ActorSystemConfig, Cluster, SpawnOptions};
use edgeray_runtime::config::ClusterConfig;
use serde::{Deserialize, Serialize};

const MIB: u64 = 1 << 20;

/// Arguments: the matrix size this actor works with.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MatmulArgs {
    n: usize,
}

/// Multiplies two `n x n` f32 matrices sent as the message's raw tail (a then b, little endian),
/// replies with the result in the reply's tail and the checksum in the typed part.
struct Matmul {
    n: usize,
    node: String,
}

impl RemoteActor for Matmul {
    type Args = MatmulArgs;
    type Msg = ();
    type Reply = f32;

    fn kind() -> &'static str {
        "example.matmul"
    }

    fn create(args: MatmulArgs, ctx: ActorCtx) -> Result<Self, ActorError> {
        if args.n == 0 || args.n > 1024 {
            return Err(ActorError::new(format!(
                "matrix size {} out of range 1..=1024",
                args.n
            )));
        }
        Ok(Matmul {
            n: args.n,
            node: ctx.node().map(|n| n.short()).unwrap_or_default(),
        })
    }

    async fn handle(&mut self, m: Envelope<()>) -> Result<Envelope<f32>, ActorError> {
        let n = self.n;
        let want = 2 * n * n * 4;
        if m.tail.len() != want {
            return Err(ActorError::new(format!(
                "expected {want} tail bytes, got {}",
                m.tail.len()
            )));
        }
        // Heavy compute off the actor thread.
        let out = tokio::task::spawn_blocking(move || {
            let f: Vec<f32> = m
                .tail
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let (a, b) = f.split_at(n * n);
            let mut c = vec![0f32; n * n];
            for i in 0..n {
                for k in 0..n {
                    let aik = a[i * n + k];
                    for j in 0..n {
                        c[i * n + j] += aik * b[k * n + j];
                    }
                }
            }
            c
        })
        .await
        .map_err(|e| ActorError::new(format!("compute task failed: {e}")))?;
        let sum: f32 = out.iter().sum();
        let bytes: Vec<u8> = out.iter().flat_map(|x| x.to_le_bytes()).collect();
        Ok(Envelope::with_tail(sum, bytes))
    }

    fn stopped(&mut self) {
        println!(
            "  [matmul n={} on {}] stopped, resources released",
            self.n, self.node
        );
    }
}

fn state_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("edgeray-example-res-{}-{name}", std::process::id()))
}

async fn start_node(
    name: &str,
    seed: Option<SocketAddr>,
    capacity: Resources,
) -> anyhow::Result<Cluster> {
    let secret = "a1".repeat(32);
    let mut cfg = ClusterConfig::from_toml_str(&format!("secret = \"{secret}\""))?;
    cfg.name = Some(name.into());
    cfg.listen = "127.0.0.1:0".parse()?;
    cfg.mdns = false;
    cfg.seeds = seed.map(|s| vec![s.to_string()]).unwrap_or_default();
    cfg.state_dir = state_dir(name);
    let actors = ActorSystemConfig {
        capacity,
        ..ActorSystemConfig::from_cluster_config(&cfg)
    };
    Ok(Cluster::start(cfg, Registry::new().with::<Matmul>(), actors).await?)
}

/// The two nodes, the placements and the refusals (what `main` runs).
pub async fn run() -> anyhow::Result<()> {
    let big = start_node(
        "big",
        None,
        Resources::none()
            .memory(2048 * MIB)
            .power(15.0)
            .custom("npu", 1.0),
    )
    .await?;
    let big_addr = big.node().context("node")?.local_addr();
    let tiny = start_node(
        "tiny",
        Some(big_addr),
        Resources::none().memory(256 * MIB).power(5.0),
    )
    .await?;
    if !tiny
        .node()
        .context("node")?
        .wait_for_up(2, Duration::from_secs(20))
        .await
    {
        bail!("the two nodes did not see each other");
    }
    let name = |id| if id == big.node_id() { "big" } else { "tiny" };
    println!(
        "nodes: tiny {} (256 MiB, 5 W), big {} (2 GiB, 15 W, 1 npu)",
        tiny.node_id().short(),
        big.node_id().short()
    );

    let needs = [
        ("small", Resources::none().memory(128 * MIB).power(2.0)),
        ("large", Resources::none().memory(1024 * MIB).power(8.0)),
        ("npu", Resources::none().memory(64 * MIB).custom("npu", 1.0)),
        ("second npu", Resources::none().custom("npu", 1.0)),
        ("huge", Resources::none().memory(4096 * MIB)),
    ];
    let mut actors = Vec::new();
    for (label, need) in needs {
        match tiny
            .spawn::<Matmul>(
                MatmulArgs { n: 64 },
                SpawnOptions::new().resources(need.clone()),
            )
            .await
        {
            Ok(r) => {
                println!(
                    "spawn {label:<10} needs {:>5} MiB {:>4} W {:?} -> placed on {}",
                    need.memory_bytes / MIB,
                    need.power_watts,
                    need.custom,
                    name(r.node())
                );
                actors.push(r);
            }
            Err(SpawnError::NoNodeFits(why)) => {
                println!("spawn {label:<10} -> refused: no node fits ({why})")
            }
            Err(e) => return Err(e.into()),
        }
    }
    println!(
        "free on big now: {} MiB, {} W",
        big.local_budget().free().memory_bytes / MIB,
        big.local_budget().free().power_watts
    );

    // Use them: 64x64 matrices as raw tails (no serde on the bulk data).
    let n = 64usize;
    let a: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32).collect();
    let b: Vec<f32> = (0..n * n).map(|i| (i % 5) as f32 * 0.5).collect();
    let tail: Vec<u8> = a
        .iter()
        .chain(b.iter())
        .flat_map(|x| x.to_le_bytes())
        .collect();
    for r in &actors {
        let t0 = Instant::now();
        let out = r
            .ask(
                Envelope::with_tail((), tail.clone()),
                Duration::from_secs(10),
            )
            .await?;
        println!(
            "  matmul on {:<4}: checksum {} ({} result bytes) in {:?}",
            name(r.node()),
            out.msg,
            out.tail.len(),
            t0.elapsed()
        );
    }

    // Stopping the npu actor frees the npu: a new one fits again.
    let npu_actor = actors
        .iter()
        .find(|r| r.node() == big.node_id())
        .context("an actor on big")?
        .clone();
    let w = npu_actor.watch();
    for r in actors.iter().filter(|r| r.node() == big.node_id()) {
        r.stop().await;
    }
    println!(
        "stopped the actors on big: {:?}",
        tokio::time::timeout(Duration::from_secs(5), w).await?
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let again = tiny
        .spawn::<Matmul>(
            MatmulArgs { n: 64 },
            SpawnOptions::new().resources(Resources::none().custom("npu", 1.0)),
        )
        .await?;
    println!("spawn npu again -> placed on {}", name(again.node()));

    tiny.shutdown().await;
    big.shutdown().await;
    for n in ["big", "tiny"] {
        let _ = std::fs::remove_dir_all(state_dir(n));
    }
    Ok(())
}

#[allow(dead_code)] // also compiled into the examples test, which calls `run` directly
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    run().await
}
