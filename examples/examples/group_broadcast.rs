//! A process group across three nodes with a broadcast, and a cluster-wide name: one worker per
//! node joins the group `workers`, a message is sent to all of them at once, and one worker is
//! registered cluster-wide as `leader` and found by name from another node. All three nodes run
//! in this process (a [`TestCluster`] over real mutual-TLS QUIC on 127.0.0.1).
//!
//! ```text
//! cargo run -p edgeray-examples --example group_broadcast
//! ```

use std::time::Duration;

use edgeray_runtime::actor::{
    ActorCtx, ActorError, Envelope, Handler, Message, Messages, TestCluster, TypedActor,
};
use edgeray_runtime::cluster::SpawnOptions;
use serde::{Deserialize, Serialize};

/// Counts the announcements it heard.
pub struct Worker {
    heard: Vec<String>,
}

/// An announcement for every worker.
#[derive(Clone, Serialize, Deserialize)]
pub struct Announce(pub String);
impl Message for Announce {
    type Reply = ();
    const NAME: &'static str = "example.worker.announce";
}

/// What have you heard?
#[derive(Serialize, Deserialize)]
pub struct Heard;
impl Message for Heard {
    type Reply = Vec<String>;
    const NAME: &'static str = "example.worker.heard";
}

impl TypedActor for Worker {
    type Args = ();
    fn kind() -> &'static str {
        "example.group_worker"
    }
    fn create(_: (), _ctx: ActorCtx) -> Result<Self, ActorError> {
        Ok(Worker { heard: Vec::new() })
    }
    fn messages(m: &mut Messages<'_, Self>) {
        m.on::<Announce>().on::<Heard>();
    }
}

impl Handler<Announce> for Worker {
    async fn handle(&mut self, m: Envelope<Announce>) -> Result<Envelope<()>, ActorError> {
        self.heard.push(m.msg.0);
        Ok(().into())
    }
}

impl Handler<Heard> for Worker {
    async fn handle(&mut self, _: Envelope<Heard>) -> Result<Envelope<Vec<String>>, ActorError> {
        Ok(self.heard.clone().into())
    }
}

/// The whole example; `main` runs it (and the examples test runs it too).
pub async fn run() -> anyhow::Result<()> {
    let t = Duration::from_secs(5);
    let cluster = TestCluster::start(3).register::<Worker>().await?;
    let group = cluster.node(0).group::<Worker>("workers");
    let mut workers = Vec::new();
    for i in 0..3 {
        let w = cluster
            .node(0)
            .spawn::<Worker>((), SpawnOptions::new().on(cluster.node_id(i)))
            .await?;
        group.join(&w).await?;
        workers.push(w);
    }
    let members = cluster.node(2).group::<Worker>("workers").members().await;
    println!(
        "group `workers` seen from node 2: {} members",
        members.len()
    );

    let sent = group.cast_all(Announce("hello, workers".into())).await;
    println!(
        "broadcast queued for {} members ({} failed)",
        sent.sent,
        sent.failed.len()
    );
    anyhow::ensure!(
        sent.sent == 3 && sent.failed.is_empty(),
        "broadcast incomplete"
    );
    for (i, w) in workers.iter().enumerate() {
        // Same sender (node 0) as the broadcast, so the question comes after the announcement.
        let heard = w.call(Heard, t).await?;
        println!("worker on node {i} heard {heard:?}");
        anyhow::ensure!(
            heard == ["hello, workers"],
            "worker on node {i} heard {heard:?}"
        );
    }

    cluster
        .node(1)
        .register_global("leader", &workers[2])
        .await?;
    let leader = cluster.node(0).lookup_global::<Worker>("leader").await;
    let leader = leader.ok_or_else(|| anyhow::anyhow!("`leader` not found"))?;
    println!(
        "`leader` found from node 0: the worker on node {}",
        cluster.index_of(leader.node()).unwrap_or(usize::MAX)
    );
    anyhow::ensure!(leader.id() == workers[2].id(), "wrong leader");
    cluster.shutdown().await;
    println!("group broadcast done");
    Ok(())
}

#[tokio::main]
#[allow(dead_code)] // also compiled into the examples test, which calls `run` directly
async fn main() -> anyhow::Result<()> {
    run().await
}
