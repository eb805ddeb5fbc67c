//! [`KernelPool`]: the dedicated thread pool the matrix kernels run on, so that kernel threads
//! never compete with (or block) the async runtime's threads.

use super::error::QuantError;
use std::ops::Range;

/// A fixed-size pool of named kernel threads. Work is split into one contiguous row range per
/// thread; each output element is computed by exactly one thread with the same arithmetic, so
/// results do not depend on the thread count.
pub struct KernelPool {
    pool: Option<rayon::ThreadPool>,
    threads: usize,
}

impl std::fmt::Debug for KernelPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KernelPool({} threads)", self.threads)
    }
}

impl KernelPool {
    /// A pool for `threads` threads: the calling thread plus `threads - 1` pool threads (named
    /// `edgeray-kernel-N`). With 1 thread no pool is built and kernels run on the calling thread.
    pub fn new(threads: usize) -> Result<Self, QuantError> {
        if threads == 0 {
            return Err(QuantError::Pool("thread count must be at least 1".into()));
        }
        let pool = if threads == 1 {
            None
        } else {
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads - 1)
                    .thread_name(|i| format!("edgeray-kernel-{i}"))
                    .build()
                    .map_err(|e| QuantError::Pool(e.to_string()))?,
            )
        };
        Ok(Self { pool, threads })
    }

    /// A single-threaded pool (runs on the caller's thread).
    pub fn single() -> Self {
        Self {
            pool: None,
            threads: 1,
        }
    }

    /// Number of threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Splits `0..n` into at most `threads` contiguous ranges (sizes rounded to a multiple of
    /// `granule`) and runs `f` on each range, in parallel on the pool.
    pub fn for_each_range<F>(&self, n: usize, granule: usize, f: F)
    where
        F: Fn(Range<usize>) + Sync,
    {
        let ranges = split_ranges(n, self.threads, granule);
        match &self.pool {
            // The caller works on the first range itself (`in_place_scope`) while the pool's
            // `threads - 1` threads take the rest: one hand-off fewer per call than running the
            // whole scope inside the pool, which matters for the hundreds of small matvecs of
            // each generated token.
            Some(pool) if ranges.len() > 1 => pool.in_place_scope(|s| {
                let f = &f;
                let (first, rest) = ranges.split_first().expect("non-empty");
                for r in rest {
                    let r = r.clone();
                    s.spawn(move |_| f(r));
                }
                f(first.clone());
            }),
            _ => {
                for r in ranges {
                    f(r);
                }
            }
        }
    }
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
}
