//! Typed messaging of a [`TypedActor`] through its [`ActorRef`]: `call` (one reply type per
//! message type) and `cast` (no reply), each checked at compile time against the actor's
//! [`Handler`]s.

use std::time::Duration;

use super::actor_ref::ActorRef;
use super::envelope::Envelope;
use super::error::{AskError, TellError};
use super::payload::Request;
use super::typed::{Handler, Message, TypedActor};

impl<A: TypedActor> ActorRef<A> {
    /// Sends `msg` and waits for its reply, at most `timeout` in all (mailbox wait included).
    /// Works the same for local actors (nothing is encoded) and remote ones (the message travels
    /// through the codec under [`Message::NAME`]).
    pub async fn call<M: Message>(&self, msg: M, timeout: Duration) -> Result<M::Reply, AskError>
    where
        A: Handler<M>,
    {
        Ok(self.call_envelope(Envelope::new(msg), timeout).await?.msg)
    }

    /// [`call`](Self::call) with a raw byte tail on the message and on the reply.
    pub async fn call_envelope<M: Message>(
        &self,
        msg: Envelope<M>,
        timeout: Duration,
    ) -> Result<Envelope<M::Reply>, AskError>
    where
        A: Handler<M>,
    {
        let (msg, tail) = self.ask(msg.map(Request::new), timeout).await?.into_parts();
        Ok(Envelope::with_tail(msg.take::<M>()?, tail))
    }

    /// Sends `msg` without waiting for a reply (its handler's reply is dropped); waits for
    /// mailbox room like [`tell`](Self::tell).
    pub async fn cast<M: Message>(&self, msg: M) -> Result<(), TellError>
    where
        A: Handler<M>,
    {
        self.cast_envelope(Envelope::new(msg)).await
    }

    /// [`cast`](Self::cast) with a raw byte tail.
    pub async fn cast_envelope<M: Message>(&self, msg: Envelope<M>) -> Result<(), TellError>
    where
        A: Handler<M>,
    {
        self.tell(msg.map(Request::new)).await
    }

    /// [`cast`](Self::cast) that fails at once when there is no room (see
    /// [`try_tell`](Self::try_tell); with a tail: `try_tell(envelope.map(Request::new))`).
    pub async fn try_cast<M: Message>(&self, msg: M) -> Result<(), TellError>
    where
        A: Handler<M>,
    {
        self.try_tell(Request::new(msg)).await
    }

    /// [`cast`](Self::cast) that gives up after `timeout` (see
    /// [`tell_timeout`](Self::tell_timeout)).
    pub async fn cast_timeout<M: Message>(&self, msg: M, timeout: Duration) -> Result<(), TellError>
    where
        A: Handler<M>,
    {
        self.tell_timeout(Request::new(msg), timeout).await
    }
}
