//! Graceful drain of a node's actors ([`Cluster::drain`]): no new actors or messages, the queued
//! messages handled, then every actor stopped the way a node shutdown stops it.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::cluster::Cluster;
use super::lifecycle::StopReason;

/// How often a drain looks at the mailboxes.
const POLL: Duration = Duration::from_millis(10);

/// What a [`Cluster::drain`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Actors stopped.
    pub actors: usize,
    /// Messages still queued or being handled when the grace period ran out; 0 when every
    /// queued message was handled in time. The actor handles them before its stop takes
    /// effect, but its watchers already saw it stop.
    pub unfinished: usize,
}

impl Cluster {
    /// Drains this node's actors, for a graceful shutdown:
    ///
    /// 1. the node takes no new actors (spawns here fail with `SpawnError::Draining`, and other
    ///    nodes no longer see it as a placement candidate);
    /// 2. every local actor's mailbox closes: new messages are refused (`ActorDead` locally; a
    ///    remote sender sees its stream end), messages already queued stay;
    /// 3. the queued messages are handled, waiting at most `grace` for them;
    /// 4. every local actor stops with [`StopReason::Shutdown`], so watchers and supervisors see
    ///    a node going away (an `OnFailure` supervisor re-places the actor on another node).
    ///
    /// The node stays in the cluster (it can still send and supervise); call
    /// [`Cluster::shutdown`] afterwards to leave.
    pub async fn drain(&self, grace: Duration) -> DrainReport {
        self.inner.draining.store(true, Ordering::Release);
        let cells = self.inner.locals.cells();
        for c in &cells {
            c.mailbox().close();
        }
        let deadline = Instant::now() + grace;
        let in_flight = || -> usize {
            cells
                .iter()
                .filter(|c| c.life().stopped().is_none())
                .map(|c| c.mailbox().in_flight())
                .sum()
        };
        while in_flight() > 0 && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
        let unfinished = in_flight();
        for c in &cells {
            // Asked to stop first (a stopped lifecycle would make `stop` a no-op), then marked,
            // so watchers see `Shutdown` rather than `Stopped`.
            c.stop();
            c.life().mark_stopped(StopReason::Shutdown);
        }
        DrainReport {
            actors: cells.len(),
            unfinished,
        }
    }

    /// Whether [`Cluster::drain`] has been called on this node.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }
}
