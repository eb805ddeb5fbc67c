//! Log-probabilities of one logits row: log-softmax accumulated in f64, and the top-k tokens.
//!
//! The maximum logit is subtracted before exponentiating, every `exp` and the sum run in f64, so
//! a log-probability is exact to about 1e-12 relative whatever the vocabulary size (an f32 sum of
//! 262,144 terms would lose ~1e-5). Ties between equal logits go to the lower token id, as in
//! greedy sampling ([`crate::sampling::argmax`]), so the top-1 token is the greedy token.

/// Errors of scoring a logits row.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LogProbError {
    /// The row is empty.
    #[error("empty logits row")]
    Empty,
    /// A logit is NaN (the forward pass went wrong).
    #[error("logit {0} is NaN")]
    NaN(usize),
    /// Every logit is -inf: no distribution.
    #[error("every logit is -inf")]
    NoMass,
    /// Two rows that should cover the same vocabulary do not.
    #[error("a row of {got} values where {want} were expected")]
    RowLength {
        /// Expected length.
        want: usize,
        /// Actual length.
        got: usize,
    },
    /// A token id outside the row.
    #[error("token {id} is outside the vocabulary of {vocab}")]
    TokenOutOfRange {
        /// The token.
        id: u32,
        /// Row length.
        vocab: usize,
    },
}

/// The log-normaliser of one logits row: `log_prob(i) = logits[i] - log_sum_exp`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogSoftmax {
    /// `ln(sum_i exp(logits[i]))`, computed in f64 around the maximum.
    pub log_sum_exp: f64,
    /// Index of the highest logit (ties to the lowest index): the greedy token.
    pub argmax: u32,
}

impl LogSoftmax {
    /// Computes the normaliser of `logits`.
    pub fn new(logits: &[f32]) -> Result<Self, LogProbError> {
        if logits.is_empty() {
            return Err(LogProbError::Empty);
        }
        let mut max = f32::NEG_INFINITY;
        let mut argmax = 0usize;
        for (i, &v) in logits.iter().enumerate() {
            if v.is_nan() {
                return Err(LogProbError::NaN(i));
            }
            if v > max {
                max = v;
                argmax = i;
            }
        }
        if max == f32::NEG_INFINITY {
            return Err(LogProbError::NoMass);
        }
        let m = f64::from(max);
        let sum: f64 = logits.iter().map(|&v| (f64::from(v) - m).exp()).sum();
        Ok(Self {
            log_sum_exp: m + sum.ln(),
            argmax: argmax as u32,
        })
    }

    /// Log-probability of `id` in `logits` (the row this normaliser was computed from).
    pub fn log_prob(&self, logits: &[f32], id: u32) -> Result<f64, LogProbError> {
        let v = logits
            .get(id as usize)
            .ok_or(LogProbError::TokenOutOfRange {
                id,
                vocab: logits.len(),
            })?;
        Ok(f64::from(*v) - self.log_sum_exp)
    }
}

/// The `k` most likely tokens of `logits` with their log-probabilities, best first (ties to the
/// lower id); fewer when the row is shorter than `k`.
pub fn top_logprobs(logits: &[f32], norm: &LogSoftmax, k: usize) -> Vec<(u32, f64)> {
    top_k_ids(logits, k)
        .into_iter()
        .map(|id| (id, f64::from(logits[id as usize]) - norm.log_sum_exp))
        .collect()
}

/// Ids of the `k` highest logits, best first, ties to the lower id (NaNs never chosen).
pub fn top_k_ids(logits: &[f32], k: usize) -> Vec<u32> {
    let k = k.min(logits.len());
    if k == 0 {
        return Vec::new();
    }
    // Kept sorted best first; a candidate enters only if it beats the current k-th.
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    for (i, &v) in logits.iter().enumerate() {
        if v.is_nan() || (best.len() == k && v <= best[k - 1].1) {
            continue;
        }
        // Insert after every entry with a logit >= v: equal logits keep ascending ids.
        let at = best.partition_point(|&(_, b)| b >= v);
        best.insert(at, (i as u32, v));
        best.truncate(k);
    }
    best.into_iter().map(|(id, _)| id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn hand_computed_distributions() {
        // Two equal logits: each has probability 1/2.
        let n = LogSoftmax::new(&[0.0, 0.0]).unwrap();
        assert!(close(n.log_prob(&[0.0, 0.0], 1).unwrap(), -(2f64.ln())));
        // Logits ln 1 and ln 3: probabilities 1/4 and 3/4.
        let l = [0.0f32, 3f32.ln()];
        let n = LogSoftmax::new(&l).unwrap();
        assert!((n.log_prob(&l, 0).unwrap() - 0.25f64.ln()).abs() < 1e-7);
        assert!((n.log_prob(&l, 1).unwrap() - 0.75f64.ln()).abs() < 1e-7);
        assert_eq!(n.argmax, 1);
        // A -inf logit has probability 0 and does not disturb the rest.
        let l = [1.0f32, f32::NEG_INFINITY, 1.0];
        let n = LogSoftmax::new(&l).unwrap();
        assert_eq!(n.log_prob(&l, 1).unwrap(), f64::NEG_INFINITY);
        assert!(close(n.log_prob(&l, 2).unwrap(), -(2f64.ln())));
        assert_eq!(n.argmax, 0, "ties go to the lower id");
    }

    #[test]
    fn large_logits_do_not_overflow() {
        let l = [1.0e4f32, 1.0e4, 1.0e4 - 1.0];
        let n = LogSoftmax::new(&l).unwrap();
        let z = 2.0 + (-1f64).exp();
        assert!(close(n.log_prob(&l, 0).unwrap(), -(z.ln())));
        assert!(close(n.log_prob(&l, 2).unwrap(), -1.0 - z.ln()));
    }

    #[test]
    fn bad_rows_are_errors() {
        assert_eq!(LogSoftmax::new(&[]), Err(LogProbError::Empty));
        assert_eq!(LogSoftmax::new(&[0.0, f32::NAN]), Err(LogProbError::NaN(1)));
        assert_eq!(
            LogSoftmax::new(&[f32::NEG_INFINITY; 3]),
            Err(LogProbError::NoMass)
        );
        let n = LogSoftmax::new(&[0.0]).unwrap();
        assert_eq!(
            n.log_prob(&[0.0], 1),
            Err(LogProbError::TokenOutOfRange { id: 1, vocab: 1 })
        );
    }

    #[test]
    fn top_k_is_best_first_with_ties_to_the_lower_id() {
        let l = [0.5f32, 2.0, -1.0, 2.0, 1.0, f32::NAN];
        assert_eq!(top_k_ids(&l, 3), vec![1, 3, 4]);
        assert_eq!(top_k_ids(&l, 0), Vec::<u32>::new());
        assert_eq!(top_k_ids(&l, 99), vec![1, 3, 4, 0, 2]);
        let l = [0.5f32, 2.0, -1.0, 2.0, 1.0];
        let n = LogSoftmax::new(&l).unwrap();
        let top = top_logprobs(&l, &n, 2);
        assert_eq!(top[0].0, n.argmax);
        assert_eq!(top[0].1, top[1].1);
        assert_eq!(top[0].1, n.log_prob(&l, 1).unwrap());
    }

    proptest! {
        #[test]
        fn probabilities_sum_to_one_and_top_k_matches_a_sort(
            l in proptest::collection::vec(-50f32..50.0, 1..200),
            k in 0usize..10,
        ) {
            let n = LogSoftmax::new(&l).unwrap();
            let total: f64 = (0..l.len()).map(|i| n.log_prob(&l, i as u32).unwrap().exp()).sum();
            prop_assert!((total - 1.0).abs() < 1e-9);
            let mut sorted: Vec<u32> = (0..l.len() as u32).collect();
            sorted.sort_by(|&a, &b| l[b as usize].partial_cmp(&l[a as usize]).unwrap().then(a.cmp(&b)));
            sorted.truncate(k);
            prop_assert_eq!(top_k_ids(&l, k), sorted);
            prop_assert_eq!(top_k_ids(&l, 1)[0], n.argmax);
        }
    }
}
