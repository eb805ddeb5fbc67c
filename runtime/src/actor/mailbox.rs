//! Bounded mailboxes: a semaphore with one permit per message that is queued or being handled.
//!
//! A sender (local `tell`/`ask`, or the remote stream reader) reserves a permit *before* it hands
//! over (or, remotely, before it even reads) the message; the permit is released when the actor
//! has finished handling it. The number of in-flight messages per actor therefore never exceeds
//! the capacity.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Default mailbox capacity (messages queued or being handled).
pub const DEFAULT_MAILBOX: usize = 16;

/// A bounded mailbox's admission control.
#[derive(Debug, Clone)]
pub struct Mailbox {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    sem: Arc<Semaphore>,
    capacity: usize,
    high_water: AtomicUsize,
}

/// The mailbox was closed: the actor has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("mailbox closed: the actor has stopped")]
pub struct MailboxClosed;

/// Permission to put one message into a mailbox; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Mailbox {
    /// A mailbox holding at most `capacity` messages (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Mailbox {
            inner: Arc::new(Inner {
                sem: Arc::new(Semaphore::new(capacity)),
                capacity,
                high_water: AtomicUsize::new(0),
            }),
        }
    }

    /// Waits until a slot is free (back-pressure) and reserves it.
    pub async fn reserve(&self) -> Result<Slot, MailboxClosed> {
        let permit = self
            .inner
            .sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| MailboxClosed)?;
        self.note_in_flight();
        Ok(Slot { _permit: permit })
    }

    /// Reserves a slot if one is free right now.
    pub fn try_reserve(&self) -> Option<Result<Slot, MailboxClosed>> {
        match self.inner.sem.clone().try_acquire_owned() {
            Ok(permit) => {
                self.note_in_flight();
                Some(Ok(Slot { _permit: permit }))
            }
            Err(tokio::sync::TryAcquireError::Closed) => Some(Err(MailboxClosed)),
            Err(tokio::sync::TryAcquireError::NoPermits) => None,
        }
    }

    fn note_in_flight(&self) {
        let n = self.in_flight();
        self.inner.high_water.fetch_max(n, Ordering::Relaxed);
    }

    /// Closes the mailbox: pending and future reservations fail.
    pub fn close(&self) {
        self.inner.sem.close();
    }

    /// Whether the mailbox is closed.
    pub fn is_closed(&self) -> bool {
        self.inner.sem.is_closed()
    }

    /// The capacity.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// Messages currently queued or being handled.
    pub fn in_flight(&self) -> usize {
        self.inner
            .capacity
            .saturating_sub(self.inner.sem.available_permits())
    }

    /// The largest number of in-flight messages seen so far.
    pub fn high_water(&self) -> usize {
        self.inner.high_water.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn reserve_blocks_when_full_and_resumes_on_release() {
        let mb = Mailbox::new(2);
        let a = mb.reserve().await.unwrap();
        let _b = mb.reserve().await.unwrap();
        assert_eq!(mb.in_flight(), 2);
        assert!(mb.try_reserve().is_none());
        let waiter = tokio::time::timeout(Duration::from_millis(50), mb.reserve()).await;
        assert!(waiter.is_err(), "third reservation must wait");
        drop(a);
        let c = tokio::time::timeout(Duration::from_millis(50), mb.reserve()).await;
        assert!(c.is_ok());
        assert_eq!(mb.high_water(), 2);
    }

    #[tokio::test]
    async fn close_fails_waiters() {
        let mb = Mailbox::new(1);
        let _a = mb.reserve().await.unwrap();
        let mb2 = mb.clone();
        let w = tokio::spawn(async move { mb2.reserve().await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(10)).await;
        mb.close();
        assert_eq!(w.await.unwrap(), Err(MailboxClosed));
        assert!(mb.is_closed());
    }
}
