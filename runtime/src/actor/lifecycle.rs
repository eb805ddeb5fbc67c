//! Actor liveness: a watch channel that flips once from alive to stopped, with the reason.

use tokio::sync::watch;

/// Why an actor is no longer reachable.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StopReason {
    /// The actor stopped normally (asked to, or it stopped itself).
    Stopped,
    /// The actor's handler panicked.
    Panicked(String),
    /// Its actor system (node) shut down.
    Shutdown,
    /// Its node went down or became unreachable.
    NodeDown,
    /// No actor with that id exists on its node (already gone).
    NotFound,
}

/// Shared liveness of one actor.
#[derive(Debug, Clone)]
pub(crate) struct Lifecycle {
    tx: watch::Sender<Option<StopReason>>,
}

impl Lifecycle {
    pub(crate) fn new() -> Self {
        Lifecycle {
            tx: watch::Sender::new(None),
        }
    }

    /// Marks the actor stopped; the first reason wins.
    pub(crate) fn mark_stopped(&self, reason: StopReason) {
        self.tx.send_if_modified(|s| {
            if s.is_none() {
                *s = Some(reason);
                true
            } else {
                false
            }
        });
    }

    pub(crate) fn stopped(&self) -> Option<StopReason> {
        self.tx.borrow().clone()
    }

    /// Resolves when the actor has stopped.
    pub(crate) fn wait(&self) -> impl std::future::Future<Output = StopReason> + Send + use<> {
        let mut rx = self.tx.subscribe();
        async move {
            match rx.wait_for(|s| s.is_some()).await {
                Ok(s) => s.clone().unwrap_or(StopReason::Stopped),
                Err(_) => StopReason::Shutdown,
            }
        }
    }
}
