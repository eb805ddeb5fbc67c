//! The actix system of one node: a dedicated system thread plus worker arbiters (one OS thread
//! each). Actors are started on the arbiters, so actix works no matter which tokio runtime (or
//! none) the caller uses.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use actix_rt::ArbiterHandle;
use parking_lot::Mutex;

/// Failure to start the actor threads.
#[derive(Debug, thiserror::Error)]
pub enum ThreadsError {
    /// The OS refused to create a thread or runtime.
    #[error("cannot start actor threads: {0}")]
    Start(String),
}

/// Handle to the actix system thread and its worker arbiters.
pub(crate) struct ActorThreads {
    arbiters: Vec<ArbiterHandle>,
    next: AtomicUsize,
    system: actix_rt::System,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl ActorThreads {
    /// Starts an actix system with `workers` arbiters (at least one).
    pub(crate) fn start(workers: usize) -> Result<Self, ThreadsError> {
        let workers = workers.max(1);
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("edgeray-actix".into())
            .spawn(move || {
                let sys = actix_rt::System::new();
                let made = sys.block_on(async {
                    let mut arbs = Vec::with_capacity(workers);
                    for _ in 0..workers {
                        arbs.push(actix_rt::Arbiter::try_new()?);
                    }
                    Ok::<_, std::io::Error>(arbs)
                });
                let arbs = match made {
                    Ok(a) => a,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let handles = arbs.iter().map(|a| a.handle()).collect::<Vec<_>>();
                let _ = tx.send(Ok((actix_rt::System::current(), handles)));
                let _ = sys.run();
                for a in arbs {
                    a.stop();
                    let _ = a.join();
                }
            })
            .map_err(|e| ThreadsError::Start(e.to_string()))?;
        let (system, arbiters) = rx
            .recv()
            .map_err(|_| ThreadsError::Start("actix thread exited".into()))?
            .map_err(ThreadsError::Start)?;
        Ok(ActorThreads {
            arbiters,
            next: AtomicUsize::new(0),
            system,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The next arbiter, round-robin.
    pub(crate) fn pick(&self) -> &ArbiterHandle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.arbiters.len();
        &self.arbiters[i]
    }

    /// Stops the actix system and joins its threads (idempotent).
    pub(crate) fn shutdown(&self) {
        let Some(t) = self.thread.lock().take() else {
            return;
        };
        self.system.stop();
        if t.thread().id() != std::thread::current().id() {
            let _ = t.join();
        }
    }
}

impl Drop for ActorThreads {
    fn drop(&mut self) {
        self.shutdown();
    }
}
