//! edgeray's actor system: local actors run on actix (hidden behind this API), addressed through
//! [`ActorRef`]s that work the same for local and remote actors.
//!
//! - [`RemoteActor`]: a named actor kind with serde `Args`/`Msg`/`Reply`.
//! - [`Registry`]: the kinds a node can create (so another node can spawn them by name).
//! - [`Envelope`]: a message plus a raw byte tail that bypasses serde (tensors).
//! - Bounded mailboxes ([`Mailbox`]): `tell` waits for room; remotely, the receiving node reads
//!   the next frame of a stream only after reserving room, so QUIC flow control pushes back.
//! - [`placement`]: resource needs, per-node reservations and the pluggable placement choice.
//!
//! The entry point is [`Cluster`] ([`cluster`]): it spawns, looks up, messages and watches
//! actors, and holds the node-local state actors share ([`Cluster::extension`]).

mod actor_ref;
pub mod cluster;
mod envelope;
mod error;
mod host;
mod kind;
mod lifecycle;
pub(crate) mod local;
mod mailbox;
pub mod placement;
mod registry;
pub(crate) mod remote;
mod threads;

pub use actor_ref::{ActorId, ActorRef};
pub use cluster::{ActorSystemConfig, Cluster, SpawnOptions, WeakCluster};
pub use envelope::Envelope;
pub use error::{ActorError, AskError, SpawnError, TellError};
pub use kind::{ActorCtx, RemoteActor};
pub use lifecycle::StopReason;
pub use mailbox::{DEFAULT_MAILBOX, Mailbox, MailboxClosed};
pub use placement::{Budget, Candidate, FirstFit, Resources, SpawnPlacement};
pub use registry::Registry;
pub use remote::{KIND_MAIL, KIND_RPC};
pub use threads::ThreadsError;
#[cfg(test)]
mod tests;
