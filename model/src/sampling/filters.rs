//! Pure candidate filters, each doing one thing (llama.cpp semantics).
//!
//! A candidate is `(token id, logit)`. "Sorted" always means by logit descending, ties by
//! ascending id, so every result is deterministic.

use std::cmp::Ordering;

/// One token and its (possibly transformed) logit.
pub type Candidate = (u32, f32);

/// Total order: higher logit first, then lower id. Logits are never NaN here (checked before).
pub fn by_logit_desc(a: &Candidate, b: &Candidate) -> Ordering {
    b.1.partial_cmp(&a.1)
        .unwrap_or(Ordering::Equal)
        .then(a.0.cmp(&b.0))
}

/// Index of the highest logit, ties to the lowest index; `None` for an empty slice.
/// NaN entries are never chosen.
pub fn argmax(logits: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in logits.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        match best {
            Some((_, b)) if v <= b => {}
            _ => best = Some((i, v)),
        }
    }
    best.map(|(i, _)| i)
}

/// Difference between the highest and the second-highest logit (NaNs ignored).
/// `f32::INFINITY` when there are fewer than two logits.
pub fn top2_gap(logits: &[f32]) -> f32 {
    let mut first = f32::NEG_INFINITY;
    let mut second = f32::NEG_INFINITY;
    let mut n = 0usize;
    for &v in logits {
        if v.is_nan() {
            continue;
        }
        n += 1;
        if v > first {
            second = first;
            first = v;
        } else if v > second {
            second = v;
        }
    }
    if n < 2 {
        return f32::INFINITY;
    }
    first - second
}

/// llama.cpp repetition penalty: for each distinct id in `recent`, a positive logit is divided
/// by `penalty`, a non-positive one multiplied by it. Ids must be valid indices into `logits`.
pub fn apply_repetition_penalty(logits: &mut [f32], recent: &[u32], penalty: f32) {
    if penalty == 1.0 || recent.is_empty() {
        return;
    }
    let mut seen: Vec<u32> = recent.to_vec();
    seen.sort_unstable();
    seen.dedup();
    for id in seen {
        let l = &mut logits[id as usize];
        if *l <= 0.0 {
            *l *= penalty;
        } else {
            *l /= penalty;
        }
    }
}

/// OpenAI's presence and frequency penalties: `logit[j] -= count[j] * frequency +
/// presence` for every token `j` generated so far (`counts`, ids in range).
pub fn apply_presence_frequency(
    logits: &mut [f32],
    counts: &std::collections::BTreeMap<u32, u32>,
    presence: f32,
    frequency: f32,
) {
    for (&id, &n) in counts {
        if n > 0 {
            logits[id as usize] -= n as f32 * frequency + presence;
        }
    }
}

/// Keeps the `k` best candidates, sorted. `k == 0` or `k >= len` sorts and keeps everything.
pub fn top_k(mut cands: Vec<Candidate>, k: usize) -> Vec<Candidate> {
    if k > 0 && k < cands.len() {
        cands.select_nth_unstable_by(k - 1, by_logit_desc);
        cands.truncate(k);
    }
    cands.sort_unstable_by(by_logit_desc);
    cands
}

/// Softmax normaliser pieces of a candidate set: (max logit, sum of exp(logit - max)).
fn softmax_stats(cands: &[Candidate]) -> (f32, f64) {
    let max = cands.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
    let sum = cands.iter().map(|c| ((c.1 - max) as f64).exp()).sum();
    (max, sum)
}

/// Nucleus filter: sorts the candidates and keeps the shortest prefix whose softmax probability
/// (over the candidates given) reaches `p`, always at least one. `p >= 1` keeps all (unsorted
/// input stays in its order).
///
/// Only the head of a large candidate set is sorted when it already reaches `p`, which keeps
/// this cheap on 100k+ vocabularies.
pub fn top_p(mut cands: Vec<Candidate>, p: f32) -> Vec<Candidate> {
    if p >= 1.0 || cands.len() <= 1 {
        return cands;
    }
    let (max, sum) = softmax_stats(&cands);
    let target = p as f64;
    let n = cands.len();
    let mut head = 256usize.min(n);
    loop {
        if head < n {
            cands.select_nth_unstable_by(head - 1, by_logit_desc);
        }
        cands[..head].sort_unstable_by(by_logit_desc);
        let mut cum = 0.0f64;
        for i in 0..head {
            cum += ((cands[i].1 - max) as f64).exp() / sum;
            if cum >= target {
                cands.truncate(i + 1);
                return cands;
            }
        }
        if head == n {
            // Rounding kept the sum just below p: keep everything.
            return cands;
        }
        head = (head * 16).min(n);
    }
}

/// min-p filter: keeps candidates whose probability is at least `p` times the best one's,
/// i.e. `logit >= max_logit + ln(p)`. Order is preserved; `p == 0` keeps all.
pub fn min_p(mut cands: Vec<Candidate>, p: f32) -> Vec<Candidate> {
    if p <= 0.0 || cands.is_empty() {
        return cands;
    }
    let max = cands.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
    let threshold = max + p.ln();
    cands.retain(|c| c.1 >= threshold);
    cands
}

/// Divides every logit by `t` (`t > 0`).
pub fn temperature(cands: &mut [Candidate], t: f32) {
    for c in cands.iter_mut() {
        c.1 /= t;
    }
}

/// Draws a candidate given a uniform `u` in `[0, 1)`: walks the candidates in the given order
/// and returns the first whose cumulative softmax probability exceeds `u`. `None` when the set
/// is empty or every logit is -infinity.
pub fn draw(cands: &[Candidate], u: f64) -> Option<u32> {
    let (max, _) = softmax_stats(cands);
    if max == f32::NEG_INFINITY {
        return None;
    }
    let weights: Vec<f64> = cands.iter().map(|c| ((c.1 - max) as f64).exp()).collect();
    let total: f64 = weights.iter().sum();
    let target = u * total;
    let mut cum = 0.0;
    let mut last_positive = None;
    for (c, w) in cands.iter().zip(&weights) {
        if *w > 0.0 {
            last_positive = Some(c.0);
        }
        cum += w;
        if cum > target && *w > 0.0 {
            return Some(c.0);
        }
    }
    // u * total rounded up to total: the last token with weight.
    last_positive
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(logits: &[f32]) -> Vec<Candidate> {
        logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect()
    }

    fn ids(c: &[Candidate]) -> Vec<u32> {
        c.iter().map(|c| c.0).collect()
    }

    #[test]
    fn argmax_ties_go_to_lowest_id() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), Some(1));
        assert_eq!(argmax(&[f32::NAN, -1.0, -1.0]), Some(1));
        assert_eq!(argmax(&[]), None);
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), Some(0));
    }

    #[test]
    fn top2_gap_values() {
        assert_eq!(top2_gap(&[1.0, 5.0, 4.5, -2.0]), 0.5);
        assert_eq!(top2_gap(&[2.0, 2.0]), 0.0);
        assert_eq!(top2_gap(&[3.0]), f32::INFINITY);
        assert_eq!(top2_gap(&[3.0, f32::NAN, 1.0]), 2.0);
    }

    #[test]
    fn repetition_penalty_divides_positive_multiplies_negative_once_per_id() {
        let mut l = vec![2.0, -2.0, 1.0, 0.5];
        apply_repetition_penalty(&mut l, &[0, 1, 0, 0], 2.0);
        assert_eq!(l, vec![1.0, -4.0, 1.0, 0.5]);
        let mut l2 = vec![2.0, -2.0];
        apply_repetition_penalty(&mut l2, &[0, 1], 1.0);
        assert_eq!(l2, vec![2.0, -2.0]);
    }

    #[test]
    fn top_k_keeps_k_best_sorted_with_tie_break() {
        let c = top_k(cands(&[0.1, 0.9, 0.5, 0.9, -1.0]), 3);
        assert_eq!(ids(&c), vec![1, 3, 2]);
        let all = top_k(cands(&[0.1, 0.9, 0.5]), 0);
        assert_eq!(ids(&all), vec![1, 2, 0]);
        let over = top_k(cands(&[0.1, 0.9]), 10);
        assert_eq!(ids(&over), vec![1, 0]);
    }

    #[test]
    fn top_p_keeps_shortest_prefix_reaching_p() {
        // probabilities 0.5, 0.25, 0.125, 0.125 (logits ln of those)
        let l = [0.5f32.ln(), 0.25f32.ln(), 0.125f32.ln(), 0.125f32.ln()];
        assert_eq!(ids(&top_p(cands(&l), 0.5)), vec![0]);
        assert_eq!(ids(&top_p(cands(&l), 0.6)), vec![0, 1]);
        assert_eq!(ids(&top_p(cands(&l), 0.8)), vec![0, 1, 2]);
        assert_eq!(top_p(cands(&l), 1.0).len(), 4);
        // tiny p still keeps one
        assert_eq!(ids(&top_p(cands(&l), 1e-6)), vec![0]);
    }

    #[test]
    fn top_p_on_large_vocab_matches_full_sort() {
        // 5000 candidates with a long tail so the head-only path and the full path both run.
        let l: Vec<f32> = (0..5000)
            .map(|i| ((i * 7919) % 5000) as f32 / 500.0)
            .collect();
        for &p in &[0.1f32, 0.9, 0.999, 0.999_999] {
            let fast = top_p(cands(&l), p);
            let mut sorted = cands(&l);
            sorted.sort_by(by_logit_desc);
            let max = sorted[0].1;
            let sum: f64 = sorted.iter().map(|c| ((c.1 - max) as f64).exp()).sum();
            let mut cum = 0.0;
            let mut keep = sorted.len();
            for (i, c) in sorted.iter().enumerate() {
                cum += ((c.1 - max) as f64).exp() / sum;
                if cum >= p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            assert_eq!(ids(&fast), ids(&sorted[..keep]), "p={p}");
        }
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        // probs relative to max: 1, 0.5, 0.05
        let l = [0.0f32, 0.5f32.ln(), 0.05f32.ln()];
        assert_eq!(ids(&min_p(cands(&l), 0.1)), vec![0, 1]);
        assert_eq!(ids(&min_p(cands(&l), 0.6)), vec![0]);
        assert_eq!(ids(&min_p(cands(&l), 0.0)), vec![0, 1, 2]);
        assert_eq!(ids(&min_p(cands(&l), 1.0)), vec![0]);
    }

    #[test]
    fn temperature_scales_logits() {
        let mut c = cands(&[2.0, -4.0]);
        temperature(&mut c, 2.0);
        assert_eq!(c, vec![(0, 1.0), (1, -2.0)]);
    }

    #[test]
    fn draw_follows_cumulative_probabilities() {
        // probs 0.25, 0.75
        let c = vec![(7u32, 0.25f32.ln()), (9u32, 0.75f32.ln())];
        assert_eq!(draw(&c, 0.0), Some(7));
        assert_eq!(draw(&c, 0.2499), Some(7));
        assert_eq!(draw(&c, 0.2501), Some(9));
        assert_eq!(draw(&c, 0.999_999), Some(9));
        assert_eq!(draw(&[], 0.5), None);
        assert_eq!(draw(&[(1, f32::NEG_INFINITY)], 0.5), None);
        // a -inf candidate is never drawn
        let c2 = vec![(1u32, f32::NEG_INFINITY), (2u32, 0.0)];
        assert_eq!(draw(&c2, 0.0), Some(2));
    }
}
