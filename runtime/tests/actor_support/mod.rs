//! The typed test actor shared by the actor integration tests: `Calc`, with one message type
//! per behaviour a test needs (a reply per type, a tail, a slow handler, an error, a panic, a
//! normal stop) and a creation counter per slot.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use edgeray_runtime::actor::{
    ActorCtx, ActorError, Envelope, Handler, Message, Messages, TypedActor,
};
use edgeray_runtime::identity::NodeId;
use serde::{Deserialize, Serialize};

/// Test time limit.
pub const T: Duration = Duration::from_secs(10);

/// How many `Calc`s were created per slot (each test uses its own slot).
pub static STARTS: [AtomicUsize; 16] = [const { AtomicUsize::new(0) }; 16];

/// Creations counted in `slot`.
pub fn starts(slot: usize) -> usize {
    STARTS[slot].load(Ordering::SeqCst)
}

/// A typed test actor holding a running total.
pub struct Calc {
    total: i64,
    ctx: ActorCtx,
}

/// Adds to the total; replies with the new total.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Add(pub i64);
impl Message for Add {
    type Reply = i64;
    const NAME: &'static str = "test.calc.add";
}

/// Replies with the text; the tail comes back too.
#[derive(Debug, Serialize, Deserialize)]
pub struct Echo(pub String);
impl Message for Echo {
    type Reply = String;
    const NAME: &'static str = "test.calc.echo";
}

/// Sleeps this many milliseconds.
#[derive(Debug, Serialize, Deserialize)]
pub struct Nap(pub u64);
impl Message for Nap {
    type Reply = ();
    const NAME: &'static str = "test.calc.nap";
}

/// Fails with an `ActorError`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Fail;
impl Message for Fail {
    type Reply = ();
    const NAME: &'static str = "test.calc.fail";
}

/// Panics.
#[derive(Debug, Serialize, Deserialize)]
pub struct Crash;
impl Message for Crash {
    type Reply = ();
    const NAME: &'static str = "test.calc.crash";
}

/// Stops the actor normally.
#[derive(Debug, Serialize, Deserialize)]
pub struct Quit;
impl Message for Quit {
    type Reply = ();
    const NAME: &'static str = "test.calc.quit";
}

/// Replies with the node the actor runs on.
#[derive(Debug, Serialize, Deserialize)]
pub struct WhereAmI;
impl Message for WhereAmI {
    type Reply = Option<NodeId>;
    const NAME: &'static str = "test.calc.where";
}

/// Replies with the node the message came from (`Envelope::sender`) and the node that spawned
/// the actor (`ActorCtx::spawned_by`).
#[derive(Debug, Serialize, Deserialize)]
pub struct WhoSent;
impl Message for WhoSent {
    type Reply = (Option<NodeId>, Option<NodeId>);
    const NAME: &'static str = "test.calc.who_sent";
}

/// A message type `Calc` does not handle (not listed in its `messages`).
#[derive(Debug, Serialize, Deserialize)]
pub struct Unlisted;
impl Message for Unlisted {
    type Reply = ();
    const NAME: &'static str = "test.calc.unlisted";
}

impl TypedActor for Calc {
    type Args = usize;
    fn kind() -> &'static str {
        "test.calc"
    }
    fn create(slot: usize, ctx: ActorCtx) -> Result<Self, ActorError> {
        STARTS[slot].fetch_add(1, Ordering::SeqCst);
        Ok(Calc { total: 0, ctx })
    }
    fn messages(m: &mut Messages<'_, Self>) {
        m.on::<Add>()
            .on::<Echo>()
            .on::<Nap>()
            .on::<Fail>()
            .on::<Crash>()
            .on::<Quit>()
            .on::<WhereAmI>()
            .on::<WhoSent>();
    }
}

impl Handler<Add> for Calc {
    async fn handle(&mut self, m: Envelope<Add>) -> Result<Envelope<i64>, ActorError> {
        self.total += m.msg.0;
        Ok(self.total.into())
    }
}

impl Handler<Echo> for Calc {
    async fn handle(&mut self, m: Envelope<Echo>) -> Result<Envelope<String>, ActorError> {
        Ok(Envelope::with_tail(m.msg.0, m.tail))
    }
}

impl Handler<Nap> for Calc {
    async fn handle(&mut self, m: Envelope<Nap>) -> Result<Envelope<()>, ActorError> {
        tokio::time::sleep(Duration::from_millis(m.msg.0)).await;
        Ok(().into())
    }
}

impl Handler<Fail> for Calc {
    async fn handle(&mut self, _: Envelope<Fail>) -> Result<Envelope<()>, ActorError> {
        Err(ActorError::new("calc refuses"))
    }
}

impl Handler<Crash> for Calc {
    async fn handle(&mut self, _: Envelope<Crash>) -> Result<Envelope<()>, ActorError> {
        panic!("calc crashes")
    }
}

impl Handler<Quit> for Calc {
    async fn handle(&mut self, _: Envelope<Quit>) -> Result<Envelope<()>, ActorError> {
        self.ctx.stop();
        Ok(().into())
    }
}

impl Handler<WhoSent> for Calc {
    async fn handle(
        &mut self,
        m: Envelope<WhoSent>,
    ) -> Result<Envelope<(Option<NodeId>, Option<NodeId>)>, ActorError> {
        Ok((m.sender(), self.ctx.spawned_by()).into())
    }
}

impl Handler<WhereAmI> for Calc {
    async fn handle(
        &mut self,
        _: Envelope<WhereAmI>,
    ) -> Result<Envelope<Option<NodeId>>, ActorError> {
        Ok(self.ctx.node().into())
    }
}

/// `Calc` also "handles" `Unlisted` at compile time, so a test can `call` it and see the runtime
/// refuse it: the type is not listed in `messages`, as with a peer running an older build.
impl Handler<Unlisted> for Calc {
    async fn handle(&mut self, _: Envelope<Unlisted>) -> Result<Envelope<()>, ActorError> {
        unreachable!("Unlisted is not listed in Calc::messages")
    }
}
