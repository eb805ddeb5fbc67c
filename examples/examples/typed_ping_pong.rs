//! Typed ping-pong: one actor, several message types, each with its own reply type, called
//! in-process and from another node over real mutual-TLS QUIC (a two-node [`TestCluster`] on
//! 127.0.0.1, in this process).
//!
//! ```text
//! cargo run -p edgeray-examples --example typed_ping_pong
//! ```

use std::time::Duration;

use edgeray_runtime::actor::{
    ActorCtx, ActorError, AskError, Envelope, Handler, Message, Messages, Request, TestCluster,
    TypedActor,
};
use edgeray_runtime::cluster::SpawnOptions;
use serde::{Deserialize, Serialize};

/// Answers pings and keeps a score.
pub struct Pong {
    pings: u64,
    score: u64,
}

/// Ping `n`: the reply is `n + 1`.
#[derive(Serialize, Deserialize)]
pub struct Ping(pub u64);
impl Message for Ping {
    type Reply = u64;
    const NAME: &'static str = "example.pong.ping";
}

/// Adds to the score; no reply needed (sent with `cast`).
#[derive(Serialize, Deserialize)]
pub struct Score(pub u64);
impl Message for Score {
    type Reply = ();
    const NAME: &'static str = "example.pong.score";
}

/// The score so far, as a report with its own reply type.
#[derive(Serialize, Deserialize)]
pub struct Report;
impl Message for Report {
    type Reply = ScoreCard;
    const NAME: &'static str = "example.pong.report";
}

/// The reply to [`Report`].
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreCard {
    /// Pings answered.
    pub pings: u64,
    /// Points scored.
    pub score: u64,
}

/// A message type `Pong` does not handle: sent raw, it is refused with a typed error.
#[derive(Serialize, Deserialize)]
pub struct Serve;
impl Message for Serve {
    type Reply = ();
    const NAME: &'static str = "example.pong.serve";
}

impl TypedActor for Pong {
    type Args = ();
    fn kind() -> &'static str {
        "example.typed_pong"
    }
    fn create(_: (), _ctx: ActorCtx) -> Result<Self, ActorError> {
        Ok(Pong { pings: 0, score: 0 })
    }
    fn messages(m: &mut Messages<'_, Self>) {
        m.on::<Ping>().on::<Score>().on::<Report>();
    }
}

impl Handler<Ping> for Pong {
    async fn handle(&mut self, m: Envelope<Ping>) -> Result<Envelope<u64>, ActorError> {
        self.pings += 1;
        Ok((m.msg.0 + 1).into())
    }
}

impl Handler<Score> for Pong {
    async fn handle(&mut self, m: Envelope<Score>) -> Result<Envelope<()>, ActorError> {
        self.score += m.msg.0;
        Ok(().into())
    }
}

impl Handler<Report> for Pong {
    async fn handle(&mut self, _: Envelope<Report>) -> Result<Envelope<ScoreCard>, ActorError> {
        Ok(ScoreCard {
            pings: self.pings,
            score: self.score,
        }
        .into())
    }
}

/// The whole example; `main` runs it (and the examples test runs it too).
pub async fn run() -> anyhow::Result<()> {
    let t = Duration::from_secs(5);
    let cluster = TestCluster::start(2).register::<Pong>().await?;
    let (a, b) = (cluster.node(0), cluster.node_id(1));
    for (place, opts) in [
        ("this node", SpawnOptions::new()),
        ("the other node", SpawnOptions::new().on(b)),
    ] {
        let pong = a.spawn::<Pong>((), opts).await?;
        let n = pong.call(Ping(41), t).await?;
        for points in [1, 2, 3] {
            pong.cast(Score(points)).await?;
        }
        let card = pong.call(Report, t).await?;
        println!("on {place}: ping 41 -> {n}, score {}", card.score);
        let want = ScoreCard { pings: 1, score: 6 };
        anyhow::ensure!(n == 42 && card == want, "unexpected replies: {n}, {card:?}");
        match pong.ask(Request::new(Serve), t).await {
            Err(AskError::UnknownMessage { message, .. }) => {
                println!("on {place}: `{message}` refused: Pong has no handler for it");
            }
            other => anyhow::bail!("an unhandled message type must be refused, got {other:?}"),
        }
    }
    cluster.shutdown().await;
    println!("typed ping-pong done");
    Ok(())
}

#[tokio::main]
#[allow(dead_code)] // also compiled into the examples test, which calls `run` directly
async fn main() -> anyhow::Result<()> {
    run().await
}
