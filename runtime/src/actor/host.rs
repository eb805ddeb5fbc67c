//! The actix actor that hosts one [`RemoteActor`]; actix stays behind this module.

use std::panic::AssertUnwindSafe;

use actix::prelude::*;
use bytes::Bytes;
use futures::FutureExt;
use tokio::sync::oneshot;

use super::envelope::Envelope;
use super::error::ActorError;
use super::kind::{ActorCtx, RemoteActor};
use super::lifecycle::{Lifecycle, StopReason};
use super::mailbox::{Mailbox, Slot};

/// Where an ask's reply goes.
pub(crate) enum ReplyTo<R> {
    /// `tell`: no reply.
    None,
    /// In-process `ask`: the typed reply.
    Typed(oneshot::Sender<Result<Envelope<R>, ActorError>>),
    /// Remote `ask`: the reply encoded (body, tail) by the hosting node.
    Encoded(oneshot::Sender<Result<(Bytes, Bytes), ActorError>>),
}

/// One message delivered to a host, holding its mailbox slot until handled.
pub(crate) struct Deliver<A: RemoteActor> {
    pub(crate) env: Envelope<A::Msg>,
    pub(crate) reply: ReplyTo<A::Reply>,
    pub(crate) slot: Slot,
}

impl<A: RemoteActor> Message for Deliver<A> {
    type Result = ();
}

/// Asks the host to stop.
pub(crate) struct StopNow;

impl Message for StopNow {
    type Result = ();
}

/// The actix actor wrapping a user actor.
pub(crate) struct Host<A: RemoteActor> {
    actor: Option<Box<A>>,
    ctx: ActorCtx,
    life: Lifecycle,
    mailbox: Mailbox,
    reason: Option<StopReason>,
}

impl<A: RemoteActor> Host<A> {
    pub(crate) fn new(actor: A, ctx: ActorCtx, life: Lifecycle, mailbox: Mailbox) -> Self {
        Host {
            actor: Some(Box::new(actor)),
            ctx,
            life,
            mailbox,
            reason: None,
        }
    }
}

impl<A: RemoteActor> Actor for Host<A> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Our own semaphore bounds the mailbox; actix's queue just needs to be at least as large
        // so a reserved message is always accepted.
        ctx.set_mailbox_capacity(self.mailbox.capacity() + 1);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.mailbox.close();
        if let Some(actor) = self.actor.as_mut() {
            // A panic in the user's stop hook must not take the actor thread down.
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| actor.stopped()));
        }
        self.life
            .mark_stopped(self.reason.take().unwrap_or(StopReason::Stopped));
    }
}

impl<A: RemoteActor> Handler<StopNow> for Host<A> {
    type Result = ();
    fn handle(&mut self, _: StopNow, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

impl<A: RemoteActor> Handler<Deliver<A>> for Host<A> {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, m: Deliver<A>, _ctx: &mut Self::Context) -> Self::Result {
        let Deliver { env, reply, slot } = m;
        let Some(mut actor) = self.actor.take() else {
            send_reply(reply, Err(ActorError::new("actor is not running")));
            return AtomicResponse::new(Box::pin(actix::fut::ready(())));
        };
        let fut = async move {
            let res = AssertUnwindSafe(actor.handle(env)).catch_unwind().await;
            (actor, res)
        };
        AtomicResponse::new(Box::pin(actix::fut::wrap_future::<_, Self>(fut).map(
            move |(actor, res), host, ctx| {
                match res {
                    Ok(r) => {
                        host.actor = Some(actor);
                        send_reply(reply, r);
                    }
                    Err(p) => {
                        let text = panic_text(&*p);
                        tracing::warn!(kind = A::kind(), "actor panicked: {text}");
                        send_reply(reply, Err(ActorError::Panicked(text.clone())));
                        // The actor's state may be inconsistent: drop it without its stop hook.
                        drop(actor);
                        host.reason = Some(StopReason::Panicked(text));
                        ctx.stop();
                    }
                }
                drop(slot);
                if host.ctx.stop_requested() {
                    ctx.stop();
                }
            },
        )))
    }
}

fn send_reply<R: serde::Serialize>(to: ReplyTo<R>, r: Result<Envelope<R>, ActorError>) {
    match to {
        ReplyTo::None => {}
        ReplyTo::Typed(tx) => {
            let _ = tx.send(r);
        }
        ReplyTo::Encoded(tx) => {
            let enc = r.and_then(|env| {
                crate::codec::encode(&env.msg)
                    .map(|body| (Bytes::from(body), env.tail))
                    .map_err(|e| ActorError::new(format!("reply encoding failed: {e}")))
            });
            let _ = tx.send(enc);
        }
    }
}
