//! edgeray's actor system: local actors run on actix (hidden behind this API), addressed through
//! [`ActorRef`]s that work the same for local and remote actors.
//!
//! - [`RemoteActor`]: a named actor kind with serde `Args`/`Msg`/`Reply`.
//! - [`TypedActor`]: a named actor kind with one [`Handler`] per [`Message`] type, each message
//!   type declaring its own reply ([`ActorRef::call`] / [`ActorRef::cast`]).
//! - [`Registry`]: the kinds a node can create (so another node can spawn them by name).
//! - [`Envelope`]: a message plus a raw byte tail that bypasses serde (tensors).
//! - Bounded mailboxes ([`Mailbox`]): `tell` waits for room; remotely, the receiving node reads
//!   the next frame of a stream only after reserving room, so QUIC flow control pushes back.
//! - Supervision ([`Cluster::supervise`]): restart policies ([`RestartPolicy`]) for actors
//!   anywhere in the cluster, re-placing a child whose node is gone.
//! - Process groups ([`Cluster::group`]): named sets of actors across nodes, listed and sent to
//!   as one ([`Group`]).
//! - Cluster-wide names ([`Cluster::register_global`], [`Cluster::lookup_global`]): one actor
//!   per name among the reachable nodes, registered through the head.
//! - [`TestCluster`]: N nodes in one process over loopback QUIC, for tests and examples.
//! - [`placement`]: resource needs, per-node reservations and the pluggable placement choice.
//!
//! The entry point is [`Cluster`] ([`cluster`]): it spawns, looks up, messages and watches
//! actors, and holds the node-local state actors share ([`Cluster::extension`]).

mod actor_ref;
mod builder;
pub mod cluster;
mod drain;
mod envelope;
mod error;
mod group;
mod host;
mod kind;
mod lifecycle;
pub(crate) mod local;
mod mailbox;
mod names;
mod payload;
pub mod placement;
mod registry;
pub(crate) mod remote;
mod restart;
mod supervisor;
mod test_cluster;
mod threads;
mod typed;
mod typed_ref;

pub use actor_ref::{ActorId, ActorRef};
pub use builder::ClusterBuilder;
pub use cluster::{ActorSystemConfig, Cluster, ClusterError, SpawnOptions, WeakCluster};
pub use drain::DrainReport;
pub use envelope::Envelope;
pub use error::{ActorError, AskError, SpawnError, TellError};
pub use group::{Broadcast, Group, GroupError};
pub use kind::{ActorCtx, RemoteActor};
pub use lifecycle::StopReason;
pub use mailbox::{DEFAULT_MAILBOX, Mailbox, MailboxClosed};
pub use names::NameError;
pub use payload::{Request, Response};
pub use placement::{Budget, Candidate, FirstFit, Resources, SpawnPlacement};
pub use registry::Registry;
pub use remote::{KIND_MAIL, KIND_RPC};
pub use restart::{Backoff, Restart, RestartPolicy};
pub use supervisor::{ChildState, Outcome, Supervised};
pub use test_cluster::{TestCluster, TestClusterBuilder, TestClusterError};
pub use threads::ThreadsError;
pub use typed::{Handler, Message, Messages, TypedActor};
#[cfg(test)]
mod tests;
