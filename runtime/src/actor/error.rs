//! Errors of the actor system.

/// An error returned by an actor's own code (constructor or handler). Carried to remote callers
/// as text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ActorError(pub String);

impl ActorError {
    /// An error with a message.
    pub fn new(msg: impl Into<String>) -> Self {
        ActorError(msg.into())
    }
}

impl From<String> for ActorError {
    fn from(s: String) -> Self {
        ActorError(s)
    }
}

impl From<&str> for ActorError {
    fn from(s: &str) -> Self {
        ActorError(s.to_string())
    }
}

/// Why `tell` failed. A `tell` never fails because the mailbox is full: it waits instead.
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
}

impl From<TellError> for AskError {
    fn from(e: TellError) -> Self {
        match e {
            TellError::ActorDead => AskError::ActorDead,
            TellError::NodeDown(s) => AskError::NodeDown(s),
            TellError::Codec(s) => AskError::Codec(s),
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
}
