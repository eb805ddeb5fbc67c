//! Errors of the actor system, typed with `thiserror`.

use serde::{Deserialize, Serialize};

/// An error from an actor's own code (constructor or handler), or from dispatching a message to
/// it. Travels to remote callers as this enum (through the codec), so an `ask` or `call` sees the
/// same variant locally and remotely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ActorError {
    /// The actor's code failed, with its message ([`ActorError::new`]).
    #[error("{0}")]
    Failed(String),
    /// The actor's handler panicked (the actor stopped).
    #[error("actor panicked: {0}")]
    Panicked(String),
    /// The actor has no handler for this message type (see [`crate::actor::TypedActor`]).
    #[error("actor kind `{kind}` has no handler for message `{message}`")]
    UnknownMessage {
        /// The actor's kind.
        kind: String,
        /// The message type's wire name.
        message: String,
    },
    /// A message or reply could not be decoded as the type its wire name stands for.
    #[error("message `{message}` could not be decoded: {error}")]
    Decode {
        /// The message type's wire name.
        message: String,
        /// The codec's error.
        error: String,
    },
}

impl ActorError {
    /// An error with a message (the [`ActorError::Failed`] variant).
    pub fn new(msg: impl Into<String>) -> Self {
        ActorError::Failed(msg.into())
    }
}

impl From<String> for ActorError {
    fn from(s: String) -> Self {
        ActorError::Failed(s)
    }
}

impl From<&str> for ActorError {
    fn from(s: &str) -> Self {
        ActorError::Failed(s.to_string())
    }
}

impl From<ActorError> for AskError {
    /// How a failed handler reaches the caller of `ask`: a handler's own error or panic as
    /// [`AskError::Remote`] (its text), the typed dispatch errors as their own variants.
    fn from(e: ActorError) -> Self {
        match e {
            ActorError::Failed(s) => AskError::Remote(s),
            p @ ActorError::Panicked(_) => AskError::Remote(p.to_string()),
            ActorError::UnknownMessage { kind, message } => {
                AskError::UnknownMessage { kind, message }
            }
            d @ ActorError::Decode { .. } => AskError::Codec(d.to_string()),
        }
    }
}

/// Why `tell` (or `try_tell`, `tell_timeout`) failed. A plain `tell` never fails because the
/// mailbox is full: it waits instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TellError {
    /// The actor has stopped (or never existed on its node).
    #[error("actor is dead")]
    ActorDead,
    /// The actor's node is down or unreachable.
    #[error("node is down: {0}")]
    NodeDown(String),
    /// The message could not be encoded or decoded.
    #[error("codec error: {0}")]
    Codec(String),
    /// `try_tell`: the mailbox (for a remote actor, the stream to it) has no room right now.
    #[error("mailbox is full")]
    MailboxFull,
    /// `tell_timeout`: no room in the mailbox within the time limit.
    #[error("tell timed out waiting for mailbox room")]
    Timeout,
}

/// Why `ask` failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    /// No reply within the timeout (includes the time waiting for mailbox space).
    #[error("ask timed out")]
    Timeout,
    /// The actor has stopped (or never existed on its node) before replying.
    #[error("actor is dead")]
    ActorDead,
    /// The actor's node is down or unreachable.
    #[error("node is down: {0}")]
    NodeDown(String),
    /// The actor's handler returned an error (or panicked).
    #[error("actor failed: {0}")]
    Remote(String),
    /// The message or reply could not be encoded or decoded.
    #[error("codec error: {0}")]
    Codec(String),
    /// The actor has no handler for the message type (e.g. an older build on its node).
    #[error("actor kind `{kind}` has no handler for message `{message}`")]
    UnknownMessage {
        /// The actor's kind.
        kind: String,
        /// The message type's wire name.
        message: String,
    },
}

impl From<TellError> for AskError {
    fn from(e: TellError) -> Self {
        match e {
            TellError::ActorDead => AskError::ActorDead,
            TellError::NodeDown(s) => AskError::NodeDown(s),
            TellError::Codec(s) => AskError::Codec(s),
            TellError::MailboxFull | TellError::Timeout => AskError::Timeout,
        }
    }
}

/// Why `spawn` failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum SpawnError {
    /// The actor kind is not registered on the target node.
    #[error("actor kind `{0}` is not registered on the target node")]
    UnknownKind(String),
    /// No node has enough free resources (or the chosen node does not).
    #[error("no node fits the resource needs: {0}")]
    NoNodeFits(String),
    /// Another live actor already has this name on the node.
    #[error("name `{0}` is already taken")]
    NameTaken(String),
    /// The actor's constructor failed.
    #[error("actor constructor failed: {0}")]
    Create(String),
    /// The target node is down or unreachable.
    #[error("node is down: {0}")]
    NodeDown(String),
    /// Arguments could not be encoded or decoded.
    #[error("codec error: {0}")]
    Codec(String),
    /// The local actor system has shut down.
    #[error("actor system is shut down")]
    Shutdown,
    /// The target node is draining ([`crate::actor::Cluster::drain`]) and takes no new actors.
    #[error("the node is draining")]
    Draining,
    /// The name is reserved for another actor kind ([`crate::actor::Registry::reserve_name`]).
    #[error("name `{name}` is reserved for actors of kind `{kind}`")]
    NameReserved {
        /// The name.
        name: String,
        /// The only kind that may hold it.
        kind: String,
    },
}
