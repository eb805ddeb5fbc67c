//! Supervision with a node killed: three nodes in this process (a [`TestCluster`] over real
//! mutual-TLS QUIC on 127.0.0.1). Node 0 supervises a worker that needs 1 GiB of memory; only
//! nodes 1 and 2 have that much. The worker panics once (restarted in place), then its node is
//! killed and the supervisor re-places it on the one remaining node with room.
//!
//! ```text
//! cargo run -p edgeray-examples --example supervision
//! ```

use std::time::Duration;

use edgeray_runtime::actor::{
    ActorCtx, ActorError, Backoff, Envelope, Handler, Message, Messages, Resources, RestartPolicy,
    TestCluster, TypedActor,
};
use edgeray_runtime::cluster::SpawnOptions;
use edgeray_runtime::identity::NodeId;
use serde::{Deserialize, Serialize};

const GIB: u64 = 1 << 30;

/// A worker that says where it runs and can be made to panic.
pub struct Worker {
    ctx: ActorCtx,
}

/// Which node are you on?
#[derive(Serialize, Deserialize)]
pub struct WhereAreYou;
impl Message for WhereAreYou {
    type Reply = Option<NodeId>;
    const NAME: &'static str = "example.worker.where";
}

/// Panic (a bug in the handler).
#[derive(Serialize, Deserialize)]
pub struct Crash;
impl Message for Crash {
    type Reply = ();
    const NAME: &'static str = "example.worker.crash";
}

impl TypedActor for Worker {
    type Args = ();
    fn kind() -> &'static str {
        "example.worker"
    }
    fn create(_: (), ctx: ActorCtx) -> Result<Self, ActorError> {
        Ok(Worker { ctx })
    }
    fn messages(m: &mut Messages<'_, Self>) {
        m.on::<WhereAreYou>().on::<Crash>();
    }
}

impl Handler<WhereAreYou> for Worker {
    async fn handle(
        &mut self,
        _: Envelope<WhereAreYou>,
    ) -> Result<Envelope<Option<NodeId>>, ActorError> {
        Ok(self.ctx.node().into())
    }
}

impl Handler<Crash> for Worker {
    async fn handle(&mut self, _: Envelope<Crash>) -> Result<Envelope<()>, ActorError> {
        panic!("worker bug")
    }
}

/// The whole example; `main` runs it (and the examples test runs it too).
pub async fn run() -> anyhow::Result<()> {
    let t = Duration::from_secs(10);
    let cluster = TestCluster::start(3)
        .register::<Worker>()
        .capacity(0, Resources::none())
        .capacity(1, Resources::none().memory(GIB))
        .capacity(2, Resources::none().memory(GIB))
        .await?;
    let name = |node: NodeId| format!("node {}", cluster.index_of(node).unwrap_or(usize::MAX));

    let policy = RestartPolicy::on_failure()
        .max_restarts(3, Duration::from_secs(60))
        .backoff(Backoff {
            initial: Duration::from_millis(50),
            factor: 2.0,
            max: Duration::from_secs(1),
        });
    let needs = SpawnOptions::new().resources(Resources::none().memory(GIB));
    let sup = cluster
        .node(0)
        .supervise::<Worker>((), needs, policy)
        .await?;
    let first = sup.current().expect("just spawned");
    println!("worker started on {}", name(first.node()));

    // A panic: restarted on the same node (it is still up and has room again).
    println!("making the worker panic (the panic message that follows is expected)");
    let _ = first.call(Crash, t).await;
    let second = tokio::time::timeout(t, sup.running_after(1)).await??;
    println!(
        "after a panic: restarted on {} (restarts: {})",
        name(second.node()),
        sup.restarts()
    );
    anyhow::ensure!(second.node() == first.node(), "a panic restarts in place");

    // The worker's node dies: re-placed on the only other node with 1 GiB free.
    let dead = cluster.index_of(second.node()).expect("a cluster node");
    cluster.kill(dead).await;
    println!("killed node {dead}");
    let third = tokio::time::timeout(t, sup.running_after(2)).await??;
    let home = third.call(WhereAreYou, t).await?.expect("runs on a node");
    println!(
        "after the node died: re-placed on {} (restarts: {})",
        name(home),
        sup.restarts()
    );
    anyhow::ensure!(
        home != second.node() && home != cluster.node_id(0),
        "re-placed elsewhere"
    );

    println!("supervision ended: {:?}", sup.stop().await);
    cluster.shutdown().await;
    println!("supervision done");
    Ok(())
}

#[tokio::main]
#[allow(dead_code)] // also compiled into the examples test, which calls `run` directly
async fn main() -> anyhow::Result<()> {
    run().await
}
