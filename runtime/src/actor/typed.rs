//! Actors with one handler per message type, each message type declaring its own reply type.
//!
//! A [`TypedActor`] lists the [`Message`] types it handles in [`TypedActor::messages`] and
//! implements [`Handler<M>`] for each. Every `TypedActor` is a [`RemoteActor`] (with
//! [`Request`] / [`Response`] as its message and reply), so it is registered, spawned, looked up,
//! watched and supervised like any other actor; [`ActorRef::call`](super::ActorRef::call) and
//! [`ActorRef::cast`](super::ActorRef::cast) send it typed messages.
//!
//! ```
//! use edgeray_runtime::actor::{
//!     ActorCtx, ActorError, Envelope, Handler, Message, Messages, Registry, TypedActor,
//! };
//! use edgeray_runtime::cluster::{ActorSystemConfig, Cluster, SpawnOptions};
//! use serde::{Deserialize, Serialize};
//! use std::time::Duration;
//!
//! struct Counter(u64);
//!
//! #[derive(Serialize, Deserialize)]
//! struct Add(u64);
//! impl Message for Add {
//!     type Reply = u64;
//!     const NAME: &'static str = "counter.add";
//! }
//!
//! #[derive(Serialize, Deserialize)]
//! struct Describe;
//! impl Message for Describe {
//!     type Reply = String;
//!     const NAME: &'static str = "counter.describe";
//! }
//!
//! impl TypedActor for Counter {
//!     type Args = u64;
//!     fn kind() -> &'static str { "doc.counter" }
//!     fn create(start: u64, _ctx: ActorCtx) -> Result<Self, ActorError> { Ok(Counter(start)) }
//!     fn messages(m: &mut Messages<'_, Self>) { m.on::<Add>().on::<Describe>(); }
//! }
//!
//! impl Handler<Add> for Counter {
//!     async fn handle(&mut self, m: Envelope<Add>) -> Result<Envelope<u64>, ActorError> {
//!         self.0 += m.msg.0;
//!         Ok(self.0.into())
//!     }
//! }
//!
//! impl Handler<Describe> for Counter {
//!     async fn handle(&mut self, _: Envelope<Describe>) -> Result<Envelope<String>, ActorError> {
//!         Ok(format!("at {}", self.0).into())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let cluster = Cluster::local(Registry::new().with::<Counter>(), ActorSystemConfig::default())
//!     .unwrap();
//! let counter = cluster.spawn::<Counter>(40, SpawnOptions::new()).await.unwrap();
//! let t = Duration::from_secs(5);
//! assert_eq!(counter.call(Add(2), t).await.unwrap(), 42);
//! assert_eq!(counter.call(Describe, t).await.unwrap(), "at 42");
//! cluster.shutdown().await;
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::envelope::Envelope;
use super::error::ActorError;
use super::kind::{ActorCtx, RemoteActor};
use super::payload::{Request, Response};

/// A message type: its reply type and the stable name that identifies it on the wire.
///
/// The name must be the same on every node, must not change while nodes running the old
/// and the new build talk to each other, and must differ between the message types one actor
/// lists (the first listed type with a name wins); a good choice is
/// `"<crate>.<actor>.<message>"`.
pub trait Message: Serialize + DeserializeOwned + Send + 'static {
    /// What a handler of this message answers.
    type Reply: Serialize + DeserializeOwned + Send + 'static;
    /// The message type's stable wire name.
    const NAME: &'static str;
}

/// An actor that handles message type `M` (see [`TypedActor`]).
pub trait Handler<M: Message>: TypedActor {
    /// Handles one message of type `M`. An `Err` goes back to a `call` as
    /// [`AskError`](super::AskError) (the actor keeps running); a panic stops the actor.
    fn handle(
        &mut self,
        msg: Envelope<M>,
    ) -> impl Future<Output = Result<Envelope<M::Reply>, ActorError>>;
}

/// An actor kind with one [`Handler`] per [`Message`] type. Every `TypedActor` is a
/// [`RemoteActor`], so everything that takes a `RemoteActor` (registry, spawn, `ActorRef`,
/// supervision) takes it too. Messages are handled one at a time, as for every actor.
pub trait TypedActor: Sized + 'static {
    /// Constructor arguments (sent to the node that creates the actor).
    type Args: Serialize + DeserializeOwned + Send + 'static;

    /// The kind's cluster-wide name (the same on every node).
    fn kind() -> &'static str;

    /// Builds the actor from its arguments, on the actor thread that will run it.
    fn create(args: Self::Args, ctx: ActorCtx) -> Result<Self, ActorError>;

    /// Lists the message types this actor handles: `m.on::<A>().on::<B>();`. A message of a type
    /// not listed here is refused with [`ActorError::UnknownMessage`].
    fn messages(m: &mut Messages<'_, Self>);

    /// Called once when the actor stops (for any reason).
    fn stopped(&mut self) {}
}

/// The future a matched handler returns (the actor is borrowed while it runs).
type Handling<'a> = Pin<Box<dyn Future<Output = Result<Envelope<Response>, ActorError>> + 'a>>;

/// Routes one incoming [`Request`] to the handler of its message type; filled by
/// [`TypedActor::messages`].
pub struct Messages<'a, A> {
    /// The request while no listed type has matched its name.
    pending: Option<(Envelope<Request>, &'a mut A)>,
    matched: Option<Handling<'a>>,
}

impl<'a, A: TypedActor> Messages<'a, A> {
    /// Declares that the actor handles message type `M`.
    pub fn on<M: Message>(&mut self) -> &mut Self
    where
        A: Handler<M>,
    {
        let is_it = matches!(&self.pending, Some((env, _)) if env.msg.name() == M::NAME);
        if is_it && let Some((env, actor)) = self.pending.take() {
            self.matched = Some(Box::pin(async move {
                let env = env.try_map(|msg| msg.take::<M>())?;
                let reply = Handler::<M>::handle(actor, env).await?;
                Ok(reply.map(Response::new::<M>))
            }));
        }
        self
    }
}

/// Handles `env` with the actor's handler for its message type.
async fn dispatch<A: TypedActor>(
    actor: &mut A,
    env: Envelope<Request>,
) -> Result<Envelope<Response>, ActorError> {
    let name = env.msg.name().to_string();
    let mut m = Messages {
        pending: Some((env, actor)),
        matched: None,
    };
    A::messages(&mut m);
    match m.matched {
        Some(handling) => handling.await,
        None => {
            // Logged as well: a `cast` of an unknown type has no caller to report to.
            tracing::warn!(kind = A::kind(), message = %name, "no handler for message type");
            Err(ActorError::UnknownMessage {
                kind: A::kind().to_string(),
                message: name,
            })
        }
    }
}

impl<A: TypedActor> RemoteActor for A {
    type Args = A::Args;
    type Msg = Request;
    type Reply = Response;

    fn kind() -> &'static str {
        <A as TypedActor>::kind()
    }

    fn create(args: Self::Args, ctx: ActorCtx) -> Result<Self, ActorError> {
        <A as TypedActor>::create(args, ctx)
    }

    fn handle(
        &mut self,
        msg: Envelope<Request>,
    ) -> impl Future<Output = Result<Envelope<Response>, ActorError>> {
        dispatch(self, msg)
    }

    fn stopped(&mut self) {
        <A as TypedActor>::stopped(self)
    }
}
