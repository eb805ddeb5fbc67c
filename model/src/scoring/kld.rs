//! Distribution-level comparison of our logits with a base model's log-probabilities (a
//! llama-perplexity `--kl-divergence-base` file), with llama-perplexity's definitions:
//!
//! - KL divergence per position: `sum_i p_base(i) * (ln p_base(i) - ln p(i))` over the tokens
//!   whose base log-probability is above -16 (the file does not resolve smaller ones);
//! - top-1 agreement: our highest logit and the base's highest log-probability are the same
//!   token (ties to the lower id on both sides);
//! - PPL ratio: `exp(mean(-ln p(next)) - mean(-ln p_base(next)))`.
//!
//! Our side is computed in f64 ([`super::logprobs`]); the base side from its 16-bit levels.

use serde::Serialize;

use super::logits_file::BaseLogProbs;
use super::logprobs::{LogProbError, LogSoftmax};

/// Base log-probabilities at or below this are left out of the KL sum (as llama.cpp does).
pub const KLD_FLOOR: f32 = -16.0;

/// Running statistics of a comparison.
#[derive(Debug, Clone, Default)]
pub struct KldStats {
    sum_nll: f64,
    sum_nll_base: f64,
    same_top: usize,
    klds: Vec<f64>,
}

/// What one position contributed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KldPosition {
    /// KL divergence of our distribution from the base's.
    pub kld: f64,
    /// Whether both put the same token first.
    pub same_top: bool,
}

/// The summary of a comparison (the `kld` object of `edgeray perplexity --json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KldSummary {
    /// Positions compared.
    pub positions: usize,
    /// Our perplexity over those positions.
    pub ppl: f64,
    /// The base's perplexity over the same positions (from its 16-bit log-probabilities).
    pub ppl_base: f64,
    /// `ppl / ppl_base`.
    pub ppl_ratio: f64,
    /// Mean KL divergence per position.
    pub kld_mean: f64,
    /// Largest KL divergence of one position.
    pub kld_max: f64,
    /// Median KL divergence.
    pub kld_median: f64,
    /// 99th percentile of the KL divergence (linear interpolation, as llama.cpp).
    pub kld_p99: f64,
    /// Fraction of positions where both put the same token first.
    pub top1_agreement: f64,
}

impl KldStats {
    /// Adds one position: our `logits` row and the base's record, `next` the actual next token.
    pub fn add(
        &mut self,
        logits: &[f32],
        base: &BaseLogProbs,
        next: u32,
    ) -> Result<KldPosition, LogProbError> {
        if base.q.len() != logits.len() {
            return Err(LogProbError::RowLength {
                want: base.q.len(),
                got: logits.len(),
            });
        }
        let norm = LogSoftmax::new(logits)?;
        let nll = -norm.log_prob(logits, next)?;
        let nll_base = -f64::from(base.log_prob(next as usize));
        let mut kld = 0.0f64;
        let mut base_top = 0usize;
        let mut base_max = f32::NEG_INFINITY;
        for (i, &l) in logits.iter().enumerate() {
            let lb = base.log_prob(i);
            if i == 0 || lb > base_max {
                base_max = lb;
                base_top = i;
            }
            if lb > KLD_FLOOR {
                let lb = f64::from(lb);
                kld += lb.exp() * (lb - (f64::from(l) - norm.log_sum_exp));
            }
        }
        let same_top = base_top == norm.argmax as usize;
        self.sum_nll += nll;
        self.sum_nll_base += nll_base;
        self.same_top += usize::from(same_top);
        self.klds.push(kld);
        Ok(KldPosition { kld, same_top })
    }

    /// Adds one position compared with a compact reference that holds only the base's `top`
    /// tokens (best first) and the log-probability `base_next` of the actual next token `next`.
    /// The KL divergence is then that of the coarsened distributions — the reference's tokens
    /// plus one bucket for all others — which by the data-processing inequality never exceeds
    /// the full one: a lower bound, exact where the base's mass sits in its top tokens.
    pub fn add_coarse(
        &mut self,
        logits: &[f32],
        top: &[(u32, f32)],
        next: u32,
        base_next: f32,
    ) -> Result<KldPosition, LogProbError> {
        let norm = LogSoftmax::new(logits)?;
        let nll = -norm.log_prob(logits, next)?;
        let (mut kld, mut base_mass, mut our_mass) = (0.0f64, 0.0f64, 0.0f64);
        for &(id, lb) in top {
            let lq = norm.log_prob(logits, id)?;
            let lb = f64::from(lb);
            kld += lb.exp() * (lb - lq);
            base_mass += lb.exp();
            our_mass += lq.exp();
        }
        let (rest_base, rest_ours) = ((1.0 - base_mass).max(0.0), (1.0 - our_mass).max(1e-300));
        if rest_base > 0.0 {
            kld += rest_base * (rest_base.ln() - rest_ours.ln());
        }
        let same_top = top.first().is_some_and(|&(id, _)| id == norm.argmax);
        self.sum_nll += nll;
        self.sum_nll_base -= f64::from(base_next);
        self.same_top += usize::from(same_top);
        self.klds.push(kld);
        Ok(KldPosition { kld, same_top })
    }

    /// The summary so far (`None` before the first position).
    pub fn summary(&self) -> Option<KldSummary> {
        let n = self.klds.len();
        if n == 0 {
            return None;
        }
        let mut sorted = self.klds.clone();
        sorted.sort_by(f64::total_cmp);
        let nf = n as f64;
        Some(KldSummary {
            positions: n,
            ppl: (self.sum_nll / nf).exp(),
            ppl_base: (self.sum_nll_base / nf).exp(),
            ppl_ratio: ((self.sum_nll - self.sum_nll_base) / nf).exp(),
            kld_mean: sorted.iter().sum::<f64>() / nf,
            kld_max: sorted[n - 1],
            kld_median: percentile(&sorted, 0.5),
            kld_p99: percentile(&sorted, 0.99),
            top1_agreement: self.same_top as f64 / nf,
        })
    }
}

/// Linear-interpolation percentile of sorted values (`fraction` in 0..=1).
fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    let p = fraction.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let i = p.floor() as usize;
    let f = p - i as f64;
    let j = (i + 1).min(sorted.len() - 1);
    (1.0 - f) * sorted[i] + f * sorted[j]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logits whose softmax is exactly `probs`.
    fn logits_of(probs: &[f64]) -> Vec<f32> {
        probs.iter().map(|p| p.ln() as f32).collect()
    }

    #[test]
    fn hand_computed_kl_divergence() {
        // p_base = (1/2, 1/4, 1/4), ours q = (1/4, 1/4, 1/2):
        // KL = 1/2 ln 2 + 0 + 1/4 ln(1/2) = ln(2)/4.
        let base = BaseLogProbs::quantize(&logits_of(&[0.5, 0.25, 0.25]));
        let ours = logits_of(&[0.25, 0.25, 0.5]);
        let mut s = KldStats::default();
        let p = s.add(&ours, &base, 0).unwrap();
        assert!((p.kld - 2f64.ln() / 4.0).abs() < 1e-4, "{}", p.kld);
        assert!(!p.same_top, "base prefers 0, ours 2");
        // Identical distributions: KL 0 (up to the 16-bit levels), same top.
        let same = s.add(&logits_of(&[0.5, 0.25, 0.25]), &base, 1).unwrap();
        assert!(same.kld.abs() < 1e-4, "{}", same.kld);
        assert!(same.same_top);

        let sum = s.summary().unwrap();
        assert_eq!(sum.positions, 2);
        assert_eq!(sum.top1_agreement, 0.5);
        assert!((sum.kld_mean - 2f64.ln() / 8.0).abs() < 1e-4);
        assert!((sum.kld_max - 2f64.ln() / 4.0).abs() < 1e-4);
        // Our nll: -ln(1/4) then -ln(1/4); base: -ln(1/2) then -ln(1/4).
        let ppl = 4.0;
        let ppl_base = (0.5 * (2f64.ln() + 4f64.ln())).exp();
        assert!((sum.ppl - ppl).abs() < 1e-5);
        assert!((sum.ppl_base - ppl_base).abs() < 1e-3);
        assert!((sum.ppl_ratio - ppl / ppl_base).abs() < 1e-3);
    }

    #[test]
    fn tokens_below_the_floor_are_left_out() {
        // The base gives token 1 a log-probability of about -20: it does not count, however
        // sure we are of it.
        let base = BaseLogProbs::quantize(&[0.0, -20.0]);
        let mut s = KldStats::default();
        let p = s.add(&[0.0, 0.0], &base, 0).unwrap();
        // Only token 0 counts: p_base(0) ~ 1, ln(1 / (1/2)) = ln 2.
        assert!((p.kld - 2f64.ln()).abs() < 1e-4, "{}", p.kld);
    }

    #[test]
    fn coarse_kl_divergence_lumps_the_rest_and_never_exceeds_the_full_one() {
        // p_base = (1/2, 1/4, 1/8, 1/8), ours q = (1/4, 1/4, 1/4, 1/4); the reference keeps
        // the top two: KL over {0, 1, rest} = 1/2 ln 2 + 0 + 1/4 ln((1/4)/(1/2)).
        let base = [0.5f64, 0.25, 0.125, 0.125];
        let ours = logits_of(&[0.25, 0.25, 0.25, 0.25]);
        let top = [(0u32, 0.5f64.ln() as f32), (1, 0.25f64.ln() as f32)];
        let mut s = KldStats::default();
        let p = s.add_coarse(&ours, &top, 2, 0.125f64.ln() as f32).unwrap();
        let want = 0.5 * 2f64.ln() + 0.25 * 0.5f64.ln();
        assert!((p.kld - want).abs() < 1e-6, "{} vs {want}", p.kld);
        let full = BaseLogProbs::quantize(&logits_of(&base));
        let f = KldStats::default().add(&ours, &full, 2).unwrap();
        assert!(p.kld <= f.kld + 1e-4, "coarse {} > full {}", p.kld, f.kld);
        assert!(
            p.same_top,
            "our four-way tie goes to the lower id, 0: the base's top"
        );
        let sum = s.summary().unwrap();
        assert!((sum.ppl - 4.0).abs() < 1e-5);
        assert!((sum.ppl_base - 8.0).abs() < 1e-4);
    }

    #[test]
    fn percentiles_interpolate() {
        let v = [0.0, 1.0, 2.0, 3.0];
        assert_eq!(percentile(&v, 0.5), 1.5);
        assert_eq!(percentile(&v, 1.0), 3.0);
        assert!((percentile(&v, 0.99) - 2.97).abs() < 1e-12);
        assert!(KldStats::default().summary().is_none());
    }

    #[test]
    fn a_record_of_another_vocabulary_is_an_error() {
        let base = BaseLogProbs::quantize(&[0.0, 1.0]);
        assert!(KldStats::default().add(&[0.0, 1.0, 2.0], &base, 0).is_err());
    }
}
