//! [`KernelPool`]: the dedicated threads the matrix kernels run on, so that kernel threads
//! never compete with (or block) the async runtime's threads.
//!
//! A generated token runs hundreds of small matrix products (about 100 µs each on a 270M model)
//! with serial work between them (norms, attention, activation quantization). A pool whose
//! threads go to sleep between products pays a futex wake-up (an inter-processor interrupt,
//! costly under virtualization) on nearly every one. rayon's pool did: on the 2-core
//! development VM, 2-thread generation of gemma3-270m ran at 61-65 tokens/s with it and 83-92
//! with this pool (same run; qwen2.5-0.5b 42-46 against 56-61). So the workers here spin for a
//! short while ([`SPIN`]) after each job, waiting for the next one, and only then park on a
//! condition variable; the caller hands out a job by bumping one atomic word.

use super::error::QuantError;
use std::any::Any;
use std::cell::UnsafeCell;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins waiting for the next job before it parks.
const SPIN: Duration = Duration::from_micros(300);

/// The id of the pool that most recently published a job in this process. A worker whose pool
/// is not that one parks at once instead of spinning: when a process runs several pools (one
/// per pipeline stage), the stage that computes now gets the cores, not the spinning workers
/// of the stage that just finished.
static LATEST_POOL: AtomicUsize = AtomicUsize::new(0);

/// Source of pool ids (0 is "none").
static NEXT_POOL_ID: AtomicUsize = AtomicUsize::new(1);

/// Low bits of the job word that hold the job's range count (the rest is the job's sequence
/// number).
const COUNT_BITS: u32 = 16;

/// Most threads a pool may have (the range count must fit [`COUNT_BITS`]).
const MAX_THREADS: usize = 1 << 12;

/// A fixed-size pool of named kernel threads. Work is split into one contiguous row range per
/// thread; each output element is computed by exactly one thread with the same arithmetic, so
/// results do not depend on the thread count.
pub struct KernelPool {
    shared: Option<Arc<Shared>>,
    workers: Vec<JoinHandle<()>>,
    threads: usize,
}

impl std::fmt::Debug for KernelPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KernelPool({} threads)", self.threads)
    }
}

/// The current job, as the caller of [`KernelPool::for_each_range`] publishes it: the closure
/// and the ranges live on the caller's stack, which stays put until every worker given a range
/// has reported back.
#[derive(Clone, Copy)]
struct Job {
    f: *const (dyn Fn(Range<usize>) + Sync),
    ranges: *const Range<usize>,
}

/// State shared by the caller and the workers.
struct Shared {
    /// This pool's id (see [`LATEST_POOL`]).
    id: usize,
    /// `sequence << COUNT_BITS | range count` of the latest job. Worker `i` (1-based) runs range
    /// `i` of a job whose count exceeds `i`; it never touches a job that has fewer ranges.
    word: AtomicU64,
    /// The job the word announces (written before the word, read after it).
    job: UnsafeCell<Option<Job>>,
    /// Workers still running the current job's ranges.
    remaining: AtomicUsize,
    /// The first panic of a worker in the current job, re-raised on the caller.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// Held by the caller while a job runs: one job at a time.
    submit: Mutex<()>,
    /// Parked workers wait here.
    park: Mutex<()>,
    wake: Condvar,
    /// Workers parked or about to park.
    sleepers: AtomicUsize,
    shutdown: AtomicBool,
}

// SAFETY: `job` is written only by the caller holding `submit` while no worker may read it (all
// of the previous job's workers have reported back), and read by workers only between the word
// announcing it and their report; the pointers it holds are `Sync` data on the caller's stack.
unsafe impl Sync for Shared {}
// SAFETY: as above.
unsafe impl Send for Shared {}

impl KernelPool {
    /// A pool for `threads` threads: the calling thread plus `threads - 1` worker threads
    /// (named `edgeray-kernel-N`). With 1 thread no worker is started and kernels run on the
    /// calling thread.
    pub fn new(threads: usize) -> Result<Self, QuantError> {
        if threads == 0 {
            return Err(QuantError::Pool("thread count must be at least 1".into()));
        }
        if threads > MAX_THREADS {
            return Err(QuantError::Pool(format!(
                "thread count {threads} exceeds the limit of {MAX_THREADS}"
            )));
        }
        if threads == 1 {
            return Ok(Self::single());
        }
        let shared = Arc::new(Shared {
            id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
            word: AtomicU64::new(0),
            job: UnsafeCell::new(None),
            remaining: AtomicUsize::new(0),
            panic: Mutex::new(None),
            submit: Mutex::new(()),
            park: Mutex::new(()),
            wake: Condvar::new(),
            sleepers: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
        });
        let mut pool = Self {
            shared: Some(shared.clone()),
            workers: Vec::with_capacity(threads - 1),
            threads,
        };
        for index in 1..threads {
            let shared = shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("edgeray-kernel-{}", index - 1))
                .spawn(move || worker(&shared, index))
                .map_err(|e| QuantError::Pool(e.to_string()))?;
            // On an error above, dropping `pool` stops the workers started so far.
            pool.workers.push(handle);
        }
        Ok(pool)
    }

    /// A single-threaded pool (runs on the caller's thread).
    pub fn single() -> Self {
        Self {
            shared: None,
            workers: Vec::new(),
            threads: 1,
        }
    }

    /// Number of threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Splits `0..n` into at most `threads` contiguous ranges (sizes rounded to a multiple of
    /// `granule`) and runs `f` on each range in parallel: the caller takes the first range, the
    /// workers the others. While another thread runs a job on the same pool, the caller runs
    /// all of its ranges itself rather than wait. A panic in `f` is re-raised here once every
    /// range has finished.
    pub fn for_each_range<F>(&self, n: usize, granule: usize, f: F)
    where
        F: Fn(Range<usize>) + Sync,
    {
        let ranges = split_ranges(n, self.threads, granule);
        let shared = match &self.shared {
            Some(s) if ranges.len() > 1 => s,
            _ => return ranges.into_iter().for_each(f),
        };
        let _busy = match shared.submit.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return ranges.into_iter().for_each(f),
        };
        let f: &(dyn Fn(Range<usize>) + Sync) = &f;
        // SAFETY: erases the closure's lifetime; this function does not return before every
        // worker given a range has finished with it (the wait below).
        let f: &'static (dyn Fn(Range<usize>) + Sync) = unsafe { std::mem::transmute(f) };
        // SAFETY: holding `submit`, and the previous job's workers have all reported back, so
        // no worker reads `job` now.
        unsafe {
            *shared.job.get() = Some(Job {
                f,
                ranges: ranges.as_ptr(),
            })
        };
        shared.remaining.store(ranges.len() - 1, Ordering::Relaxed);
        LATEST_POOL.store(shared.id, Ordering::Relaxed);
        let sequence = (shared.word.load(Ordering::Relaxed) >> COUNT_BITS) + 1;
        shared.word.store(
            sequence << COUNT_BITS | ranges.len() as u64,
            Ordering::SeqCst,
        );
        if shared.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = shared.park.lock().unwrap_or_else(|p| p.into_inner());
            shared.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| f(ranges[0].clone())));
        // Wait for the workers: they started with the word above, so this is short.
        let start = Instant::now();
        while shared.remaining.load(Ordering::Acquire) > 0 {
            if start.elapsed() < SPIN {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        let theirs = shared
            .panic
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Err(p) = mine {
            resume_unwind(p);
        }
        if let Some(p) = theirs {
            resume_unwind(p);
        }
    }
}

impl Drop for KernelPool {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared.shutdown.store(true, Ordering::SeqCst);
            let _g = shared.park.lock().unwrap_or_else(|p| p.into_inner());
            shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Worker `index`'s loop: wait for a job whose range count exceeds `index`, run that range,
/// report back; spin between jobs for [`SPIN`] (while no other pool publishes a job), then park.
fn worker(shared: &Shared, index: usize) {
    // Sequence 0 is the word's initial value: every job is fresh to a new worker, even one
    // published before this thread first ran.
    let mut seen = 0;
    loop {
        let word = match wait_for_job(shared, seen) {
            Some(w) => w,
            None => return,
        };
        seen = word >> COUNT_BITS;
        let count = (word & ((1 << COUNT_BITS) - 1)) as usize;
        if index >= count {
            continue;
        }
        // SAFETY: the word announcing this job was loaded with Acquire after the caller wrote
        // `job`, and the caller keeps the job alive until this worker decrements `remaining`.
        let job = unsafe { (*shared.job.get()).expect("a job is published before its word") };
        // SAFETY: `index < count`, the number of ranges behind `job.ranges`.
        let range = unsafe { (*job.ranges.add(index)).clone() };
        // SAFETY: the closure outlives the job (see above).
        let f = unsafe { &*job.f };
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(range))) {
            let mut slot = shared.panic.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert(p);
        }
        shared.remaining.fetch_sub(1, Ordering::Release);
    }
}

/// The next job word after sequence `seen` (spinning, then parked), or `None` on shutdown.
fn wait_for_job(shared: &Shared, seen: u64) -> Option<u64> {
    let fresh = |w: u64| (w >> COUNT_BITS) != seen;
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        let w = shared.word.load(Ordering::Acquire);
        if fresh(w) {
            return Some(w);
        }
        if shared.shutdown.load(Ordering::Relaxed) {
            return None;
        }
        spins += 1;
        // Checking the clock costs more than one spin: look every 64. Another pool's job means
        // this one's threads are not the ones needed now.
        if spins.is_multiple_of(64)
            && (start.elapsed() >= SPIN || LATEST_POOL.load(Ordering::Relaxed) != shared.id)
        {
            break;
        }
        std::hint::spin_loop();
    }
    shared.sleepers.fetch_add(1, Ordering::SeqCst);
    let mut guard = shared.park.lock().unwrap_or_else(|p| p.into_inner());
    let w = loop {
        let w = shared.word.load(Ordering::SeqCst);
        if fresh(w) || shared.shutdown.load(Ordering::SeqCst) {
            break w;
        }
        guard = shared.wake.wait(guard).unwrap_or_else(|p| p.into_inner());
    };
    drop(guard);
    shared.sleepers.fetch_sub(1, Ordering::SeqCst);
    (!shared.shutdown.load(Ordering::SeqCst) || fresh(w)).then_some(w)
}

/// Splits `0..n` into at most `parts` contiguous non-empty ranges whose sizes are multiples of
/// `granule` (except the last).
pub fn split_ranges(n: usize, parts: usize, granule: usize) -> Vec<Range<usize>> {
    let granule = granule.max(1);
    let parts = parts.max(1);
    let per = n.div_ceil(parts).div_ceil(granule) * granule;
    let mut out = Vec::with_capacity(parts);
    let mut start = 0;
    while start < n {
        let end = (start + per.max(1)).min(n);
        out.push(start..end);
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn split_covers_everything() {
        assert_eq!(split_ranges(10, 2, 1), vec![0..5, 5..10]);
        assert_eq!(split_ranges(10, 3, 4), vec![0..4, 4..8, 8..10]);
        assert_eq!(split_ranges(3, 8, 1), vec![0..1, 1..2, 2..3]);
        assert!(split_ranges(0, 2, 1).is_empty());
        for n in 0..50 {
            for p in 1..6 {
                let r = split_ranges(n, p, 3);
                assert!(r.len() <= p);
                let total: usize = r.iter().map(|r| r.len()).sum();
                assert_eq!(total, n);
            }
        }
    }

    #[test]
    fn pool_runs_every_range_on_named_threads() {
        assert!(KernelPool::new(0).is_err());
        let pool = KernelPool::new(3).unwrap();
        let count = AtomicUsize::new(0);
        let named = AtomicUsize::new(0);
        pool.for_each_range(100, 1, |r| {
            count.fetch_add(r.len(), Ordering::Relaxed);
            if std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("edgeray-kernel-"))
            {
                named.fetch_add(1, Ordering::Relaxed);
            }
        });
        assert_eq!(count.load(Ordering::Relaxed), 100);
        // the first range runs on the caller; the others on pool threads
        assert!(named.load(Ordering::Relaxed) >= 1);
    }

    #[test]
    fn many_jobs_in_a_row_each_run_every_range_once() {
        let pool = KernelPool::new(3).unwrap();
        for job in 0..20_000usize {
            let n = job % 37;
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            pool.for_each_range(n, 1 + job % 4, |r| {
                for i in r {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                }
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "job {job}"
            );
            if job % 5000 == 0 {
                // let the workers park, so waking them is exercised too
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
    }

    #[test]
    fn concurrent_callers_share_one_pool() {
        let pool = std::sync::Arc::new(KernelPool::new(2).unwrap());
        let total = std::sync::Arc::new(AtomicUsize::new(0));
        let callers: Vec<_> = (0..4)
            .map(|_| {
                let (pool, total) = (pool.clone(), total.clone());
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        pool.for_each_range(64, 1, |r| {
                            total.fetch_add(r.len(), Ordering::Relaxed);
                        });
                    }
                })
            })
            .collect();
        for c in callers {
            c.join().unwrap();
        }
        assert_eq!(total.load(Ordering::Relaxed), 4 * 2000 * 64);
    }

    #[test]
    fn a_panic_in_any_range_reaches_the_caller_and_the_pool_goes_on() {
        let pool = KernelPool::new(2).unwrap();
        for bad in [0usize, 60] {
            let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                pool.for_each_range(100, 1, |r| assert!(!r.contains(&bad), "range {r:?}"))
            }));
            assert!(r.is_err(), "panic in the range holding {bad} was lost");
        }
        let count = AtomicUsize::new(0);
        pool.for_each_range(100, 1, |r| {
            count.fetch_add(r.len(), Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 100);
        drop(pool); // joins the workers
    }
}
