//! Which queued batches a stage runs together, and how one run's compute time is shared out:
//! pure rules, used by the stage actor's worker (see [`super::actor`]).
//!
//! A stage takes the batches already waiting when it becomes free (it never waits on purpose
//! for more). They run as one multi-sequence forward as long as each sequence appears once (a
//! sequence's next chunk depends on the previous one) and the stacked rows stay within
//! [`MAX_BATCH_ROWS`].

use crate::pipeline::protocol::SeqId;

/// Most positions (rows) one stage run stacks from several sequences; a single batch larger
/// than this (a long prompt chunk) still runs, alone.
pub const MAX_BATCH_ROWS: usize = 512;

/// The sequences (and their rows) gathered for one stage run so far.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchPlan {
    seqs: Vec<SeqId>,
    rows: usize,
}

impl BatchPlan {
    /// An empty plan.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the batch (`seq`, `n` rows) if it may join: the plan is empty, or the sequence is
    /// not in it yet, fewer than `max_seqs` sequences are, and the rows stay within
    /// [`MAX_BATCH_ROWS`]. Returns whether it was added.
    pub fn try_add(&mut self, seq: SeqId, n: usize, max_seqs: usize) -> bool {
        let fits = self.seqs.is_empty()
            || (!self.seqs.contains(&seq)
                && self.seqs.len() < max_seqs.max(1)
                && self.rows + n <= MAX_BATCH_ROWS);
        if fits {
            self.seqs.push(seq);
            self.rows += n;
        }
        fits
    }

    /// Sequences in the plan.
    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    /// Whether the plan is empty.
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Rows in the plan.
    pub fn rows(&self) -> usize {
        self.rows
    }
}

/// How a run's `total_us` is charged to its sequences, which held `rows[i]` positions each:
/// in proportion to the rows, the rounding remainder to the first, so the shares add up to
/// `total_us` exactly.
pub fn compute_shares(total_us: u64, rows: &[usize]) -> Vec<u64> {
    let all: u64 = rows.iter().map(|&n| n as u64).sum();
    if all == 0 {
        return vec![0; rows.len()];
    }
    let mut shares: Vec<u64> = rows.iter().map(|&n| total_us * n as u64 / all).collect();
    let given: u64 = shares.iter().sum();
    if let Some(first) = shares.first_mut() {
        *first += total_us - given;
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_sequences_join_until_a_limit() {
        let mut p = BatchPlan::new();
        assert!(p.try_add(1, 1, 4));
        assert!(p.try_add(2, 1, 4));
        assert!(
            !p.try_add(1, 1, 4),
            "a sequence's next chunk waits for the next run"
        );
        assert!(p.try_add(3, 5, 4));
        assert!(p.try_add(4, 1, 4));
        assert!(!p.try_add(5, 1, 4), "at most max_seqs sequences");
        assert_eq!((p.len(), p.rows()), (4, 8));
    }

    #[test]
    fn rows_are_capped_but_one_large_chunk_runs_alone() {
        let mut p = BatchPlan::new();
        assert!(
            p.try_add(1, MAX_BATCH_ROWS + 10, 4),
            "an empty plan takes anything"
        );
        assert!(!p.try_add(2, 1, 4));
        let mut p = BatchPlan::new();
        assert!(p.try_add(1, 1, 4));
        assert!(!p.try_add(2, MAX_BATCH_ROWS, 4));
        assert!(p.try_add(3, MAX_BATCH_ROWS - 1, 4));
    }

    #[test]
    fn shares_add_up_to_the_run() {
        for (total, ns) in [
            (1000u64, vec![1usize, 1, 1]),
            (7, vec![3, 1]),
            (12345, vec![5, 40, 2]),
            (0, vec![1]),
        ] {
            let s = compute_shares(total, &ns);
            assert_eq!(s.iter().sum::<u64>(), total, "{total} over {ns:?}");
        }
        assert_eq!(compute_shares(900, &[1, 1, 1]), vec![300, 300, 300]);
        assert_eq!(compute_shares(1000, &[1, 1, 1]), vec![334, 333, 333]);
        assert_eq!(compute_shares(900, &[3]), vec![900]);
        assert_eq!(compute_shares(50, &[]), Vec::<u64>::new());
    }
}
