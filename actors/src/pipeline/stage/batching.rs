//! Which queued batches a stage runs together, and how one run's compute time is shared out:
//! pure rules, used by the stage actor's worker (see [`super::actor`]).
//!
//! A stage takes the batches already waiting when it becomes free. They run as one
//! multi-sequence forward as long as each sequence appears once (a sequence's next chunk
//! depends on the previous one) and the stacked rows stay within [`MAX_BATCH_ROWS`].
//!
//! It waits on purpose only for sequences it expects back within a fraction of a run
//! ([`Arrivals::gather_until`]): a stage that is also the last one hands each token to the
//! coordinator, which sends the next step back within a millisecond, so without waiting the
//! sequences of a one-stage pipeline split into two halves that alternate forever (measured:
//! 2.0 sequences per run with 4 streams). With several stages a sequence comes back only after
//! the other stages ran it, later than the budget, so the stages keep working on different
//! micro-batches.

use std::collections::HashMap;
use std::time::{Duration, Instant};

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

    /// Whether `seq` is in the plan.
    pub fn contains(&self, seq: SeqId) -> bool {
        self.seqs.contains(&seq)
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

/// When each sequence this stage holds left it last and how long its previous round trip took
/// (from handing its output on to its next batch arriving): pure bookkeeping, fed by the stage
/// worker.
#[derive(Debug, Default)]
pub struct Arrivals {
    seqs: HashMap<SeqId, Trip>,
}

#[derive(Debug, Clone, Copy)]
struct Trip {
    /// When the sequence's last output was handed on (None: it is here now).
    left: Option<Instant>,
    /// Its previous round trip, once one was seen.
    round_trip: Option<Duration>,
}

impl Arrivals {
    /// No sequences.
    pub fn new() -> Self {
        Self::default()
    }

    /// A batch of `seq` arrived at `now` (when it reached the stage, not when the worker took
    /// it from the queue): its round trip is measured if it had left.
    pub fn arrived(&mut self, seq: SeqId, now: Instant) {
        let t = self.seqs.entry(seq).or_insert(Trip {
            left: None,
            round_trip: None,
        });
        if let Some(left) = t.left.take() {
            t.round_trip = Some(now.saturating_duration_since(left));
        }
    }

    /// `seq`'s output was handed on at `now`.
    pub fn left(&mut self, seq: SeqId, now: Instant) {
        if let Some(t) = self.seqs.get_mut(&seq) {
            t.left = Some(now);
        }
    }

    /// `seq` is over here.
    pub fn forget(&mut self, seq: SeqId) {
        self.seqs.remove(&seq);
    }

    /// How long a stage that is free at `now`, with `plan` gathered, should wait for more:
    /// until the latest expected return (departure + previous round trip, plus a quarter of
    /// that trip and 200 µs of slack) among the sequences away that are expected within
    /// `budget` and may still join `plan`; `None` when none is. Sequences that never made a
    /// round trip are not waited for.
    pub fn gather_until(
        &self,
        now: Instant,
        plan: &BatchPlan,
        max_seqs: usize,
        budget: Duration,
    ) -> Option<Instant> {
        if plan.is_empty() || plan.len() >= max_seqs.max(1) {
            return None;
        }
        let limit = now + budget;
        self.seqs
            .iter()
            .filter(|(seq, _)| !plan.contains(**seq))
            .filter_map(|(_, t)| {
                let (left, rt) = (t.left?, t.round_trip?);
                let expected = left + rt + rt / 4 + Duration::from_micros(200);
                (left + rt <= limit).then_some(expected.min(limit))
            })
            .max()
            .filter(|&until| until > now)
    }
}

/// The part of a run's compute time a free stage may spend waiting for sequences it expects
/// back ([`Arrivals::gather_until`]).
pub fn gather_budget(last_run: Duration) -> Duration {
    (last_run / 4).min(Duration::from_millis(20))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(seqs: &[SeqId]) -> BatchPlan {
        let mut p = BatchPlan::new();
        for &s in seqs {
            assert!(p.try_add(s, 1, 8));
        }
        p
    }

    #[test]
    fn a_sequence_back_within_the_budget_is_waited_for() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut a = Arrivals::new();
        // Sequence 1 made a round trip of 1 ms and left again at t0 + 40 ms.
        a.arrived(1, t0);
        a.left(1, t0 + ms(10));
        a.arrived(1, t0 + ms(11));
        a.left(1, t0 + ms(40));
        a.arrived(2, t0 + ms(5));
        let now = t0 + ms(40);
        let until = a
            .gather_until(now, &plan_of(&[2]), 4, ms(10))
            .expect("sequence 1 is due in 1 ms");
        assert!(
            until > now + ms(1) && until <= now + ms(2),
            "{:?}",
            until - now
        );
        // Once it is in the plan there is nothing to wait for.
        assert_eq!(a.gather_until(now, &plan_of(&[1, 2]), 4, ms(10)), None);
        // A full plan does not wait either.
        assert_eq!(a.gather_until(now, &plan_of(&[2]), 1, ms(10)), None);
    }

    #[test]
    fn sequences_due_after_the_budget_or_never_measured_are_not_waited_for() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut a = Arrivals::new();
        // Round trip 40 ms (another stage runs it): due long after a 10 ms budget.
        a.arrived(1, t0);
        a.left(1, t0 + ms(1));
        a.arrived(1, t0 + ms(41));
        a.left(1, t0 + ms(50));
        // Sequence 3 left but never came back before: no estimate.
        a.arrived(3, t0);
        a.left(3, t0 + ms(50));
        a.arrived(2, t0 + ms(50));
        assert_eq!(a.gather_until(t0 + ms(50), &plan_of(&[2]), 4, ms(10)), None);
        // An empty plan never waits (the worker blocks on its queue instead).
        assert_eq!(
            a.gather_until(t0 + ms(50), &BatchPlan::new(), 4, ms(10)),
            None
        );
        // Forgotten sequences are not expected.
        a.forget(1);
        assert_eq!(
            a.gather_until(t0 + ms(50), &plan_of(&[2]), 4, ms(100)),
            None
        );
    }

    #[test]
    fn the_wait_never_exceeds_the_budget() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut a = Arrivals::new();
        a.arrived(1, t0);
        a.left(1, t0 + ms(1));
        a.arrived(1, t0 + ms(9)); // round trip 8 ms
        a.left(1, t0 + ms(10));
        let now = t0 + ms(10);
        let until = a.gather_until(now, &plan_of(&[2]), 4, ms(9)).unwrap();
        assert_eq!(until, now + ms(9), "8 ms + slack is capped at the budget");
        assert_eq!(gather_budget(ms(40)), ms(10));
        assert_eq!(gather_budget(ms(400)), ms(20));
    }

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
