//! Token sampling: [`SamplingParams`] (serde, validated) and a reproducible [`Sampler`].
//!
//! ```
//! use edgeray_model::sampling::{Sampler, SamplingParams};
//! let params = SamplingParams { temperature: 0.8, top_k: 40, top_p: 0.95, ..Default::default() };
//! let mut sampler = Sampler::new(params)?;
//! sampler.accept_all(&[1, 2, 3]); // prompt tokens count for the repetition penalty
//! let next = sampler.sample(&[0.1, 2.0, 0.3, 1.5])?;
//! assert!(next < 4);
//! # Ok::<(), edgeray_model::sampling::SamplingError>(())
//! ```

pub mod constraint;
pub mod filters;
mod params;
pub mod rng;

use std::collections::VecDeque;

pub use filters::{argmax, top2_gap};
pub use params::{SamplingError, SamplingParams};
pub use rng::Xoshiro256StarStar;

/// Chooses tokens from logits according to [`SamplingParams`].
///
/// It owns a seeded [`Xoshiro256StarStar`] (same seed + same logits ⇒ same tokens, on every run
/// and machine) and the recent-token window used by the repetition penalty. [`Sampler::sample`]
/// adds the token it returns to that window; feed prompt tokens with [`Sampler::accept_all`].
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Xoshiro256StarStar,
    recent: VecDeque<u32>,
    /// How often each token was generated (presence and frequency penalties).
    generated: std::collections::BTreeMap<u32, u32>,
    scratch: Vec<f32>,
}

impl Sampler {
    /// A sampler for validated `params`.
    pub fn new(params: SamplingParams) -> Result<Self, SamplingError> {
        params.validate()?;
        let rng = Xoshiro256StarStar::seed_from_u64(params.seed);
        Ok(Self {
            params,
            rng,
            recent: VecDeque::new(),
            generated: std::collections::BTreeMap::new(),
            scratch: Vec::new(),
        })
    }

    /// The parameters in use.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Records a token as "seen" for the repetition penalty (prompt or generated).
    pub fn accept(&mut self, token: u32) {
        let n = self.params.repeat_last_n;
        if n == 0 {
            return;
        }
        if self.recent.len() == n {
            self.recent.pop_front();
        }
        self.recent.push_back(token);
    }

    /// [`Sampler::accept`] for each token in order.
    pub fn accept_all(&mut self, tokens: &[u32]) {
        for &t in tokens {
            self.accept(t);
        }
    }

    /// Records tokens as generated earlier (presence and frequency penalties count them):
    /// how a sequence resumed elsewhere, e.g. after a failover, keeps its penalties. The
    /// tokens should also be in the history ([`Sampler::accept_all`]).
    pub fn note_generated(&mut self, tokens: &[u32]) {
        for &t in tokens {
            *self.generated.entry(t).or_insert(0) += 1;
        }
    }

    /// Forgets the recent tokens and restarts the random stream from the seed.
    pub fn reset(&mut self) {
        self.recent.clear();
        self.generated.clear();
        self.rng = Xoshiro256StarStar::seed_from_u64(self.params.seed);
    }

    /// Picks the next token from `logits` (one per vocabulary entry) and records it.
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32, SamplingError> {
        let token = self.choose(logits)?;
        self.accept(token);
        self.note_generated(&[token]);
        Ok(token)
    }

    fn choose(&mut self, logits: &[f32]) -> Result<u32, SamplingError> {
        if logits.is_empty() {
            return Err(SamplingError::EmptyLogits);
        }
        if let Some(i) = logits.iter().position(|v| v.is_nan()) {
            return Err(SamplingError::NanLogit(i));
        }
        let p = &self.params;
        let repetition =
            p.repetition_penalty != 1.0 && p.repeat_last_n > 0 && !self.recent.is_empty();
        let openai =
            (p.presence_penalty != 0.0 || p.frequency_penalty != 0.0) && !self.generated.is_empty();
        let effective: &[f32] = if repetition || openai {
            let out_of_range = self
                .recent
                .iter()
                .chain(self.generated.keys())
                .find(|&&id| id as usize >= logits.len());
            if let Some(&id) = out_of_range {
                return Err(SamplingError::TokenOutOfRange {
                    id,
                    len: logits.len(),
                });
            }
            self.scratch.clear();
            self.scratch.extend_from_slice(logits);
            if repetition {
                let recent: Vec<u32> = self.recent.iter().copied().collect();
                filters::apply_repetition_penalty(&mut self.scratch, &recent, p.repetition_penalty);
            }
            if openai {
                filters::apply_presence_frequency(
                    &mut self.scratch,
                    &self.generated,
                    p.presence_penalty,
                    p.frequency_penalty,
                );
            }
            &self.scratch
        } else {
            logits
        };

        if p.is_greedy() {
            let i = argmax(effective).ok_or(SamplingError::NoCandidates)?;
            if effective[i] == f32::NEG_INFINITY {
                return Err(SamplingError::NoCandidates);
            }
            return Ok(i as u32);
        }

        let mut cands: Vec<filters::Candidate> = effective
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        if p.top_k > 0 {
            cands = filters::top_k(cands, p.top_k);
        }
        cands = filters::top_p(cands, p.top_p);
        cands = filters::min_p(cands, p.min_p);
        filters::temperature(&mut cands, p.temperature);
        let u = self.rng.next_f64();
        filters::draw(&cands, u).ok_or(SamplingError::NoCandidates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(params: SamplingParams) -> Sampler {
        Sampler::new(params).unwrap()
    }

    #[test]
    fn default_is_greedy_and_picks_lowest_id_on_ties() {
        let mut s = sampler(SamplingParams::default());
        assert!(s.params().is_greedy());
        assert_eq!(s.sample(&[0.0, 5.0, 1.0, 5.0]).unwrap(), 1);
        assert_eq!(s.sample(&[-3.0, -1.0, -2.0]).unwrap(), 1);
    }

    #[test]
    fn validation_rejects_bad_params() {
        let bad = |f: fn(&mut SamplingParams)| {
            let mut p = SamplingParams::default();
            f(&mut p);
            Sampler::new(p).unwrap_err()
        };
        assert_eq!(
            bad(|p| p.temperature = -0.1),
            SamplingError::InvalidTemperature(-0.1)
        );
        assert!(matches!(
            bad(|p| p.temperature = f32::NAN),
            SamplingError::InvalidTemperature(_)
        ));
        assert_eq!(bad(|p| p.top_p = 0.0), SamplingError::InvalidTopP(0.0));
        assert_eq!(bad(|p| p.top_p = 1.5), SamplingError::InvalidTopP(1.5));
        assert_eq!(bad(|p| p.min_p = -0.5), SamplingError::InvalidMinP(-0.5));
        assert_eq!(bad(|p| p.min_p = 2.0), SamplingError::InvalidMinP(2.0));
        assert_eq!(
            bad(|p| p.repetition_penalty = 0.0),
            SamplingError::InvalidRepetitionPenalty(0.0)
        );
        assert!(
            bad(|p| p.temperature = -1.0)
                .to_string()
                .contains("temperature")
        );
    }

    #[test]
    fn bad_logits_are_errors_not_panics() {
        let mut s = sampler(SamplingParams::default());
        assert_eq!(s.sample(&[]).unwrap_err(), SamplingError::EmptyLogits);
        assert_eq!(
            s.sample(&[1.0, f32::NAN]).unwrap_err(),
            SamplingError::NanLogit(1)
        );
        assert_eq!(
            s.sample(&[f32::NEG_INFINITY; 3]).unwrap_err(),
            SamplingError::NoCandidates
        );
        let mut t = sampler(SamplingParams {
            temperature: 1.0,
            ..Default::default()
        });
        assert_eq!(
            t.sample(&[f32::NEG_INFINITY; 3]).unwrap_err(),
            SamplingError::NoCandidates
        );
        let mut r = sampler(SamplingParams {
            repetition_penalty: 1.3,
            ..Default::default()
        });
        r.accept(10);
        assert_eq!(
            r.sample(&[1.0, 2.0]).unwrap_err(),
            SamplingError::TokenOutOfRange { id: 10, len: 2 }
        );
    }

    fn logits(n: usize, seed: u64) -> Vec<f32> {
        let mut r = Xoshiro256StarStar::seed_from_u64(seed);
        (0..n).map(|_| (r.next_f64() * 8.0 - 4.0) as f32).collect()
    }

    #[test]
    fn same_seed_same_tokens_different_seed_differs() {
        let params = SamplingParams {
            temperature: 1.0,
            seed: 1234,
            ..Default::default()
        };
        let l = logits(1000, 9);
        let run = |p: SamplingParams| {
            let mut s = sampler(p);
            (0..64).map(|_| s.sample(&l).unwrap()).collect::<Vec<_>>()
        };
        let a = run(params.clone());
        let b = run(params.clone());
        let c = run(SamplingParams {
            seed: 1235,
            ..params
        });
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn golden_sequence_is_stable_across_versions() {
        // Pins the algorithm (xoshiro256** + filters + draw order): if this changes, seeded
        // outputs recorded elsewhere change too.
        let params = SamplingParams {
            temperature: 0.9,
            top_k: 50,
            top_p: 0.9,
            min_p: 0.02,
            seed: 42,
            ..Default::default()
        };
        let l = logits(500, 3);
        let mut s = sampler(params);
        let got: Vec<u32> = (0..12).map(|_| s.sample(&l).unwrap()).collect();
        let mut again = sampler(s.params().clone());
        let twice: Vec<u32> = (0..12).map(|_| again.sample(&l).unwrap()).collect();
        assert_eq!(got, twice);
        assert_eq!(got, GOLDEN.to_vec(), "golden sequence changed: {got:?}");
    }
    const GOLDEN: [u32; 12] = [398, 441, 325, 453, 179, 391, 277, 381, 391, 283, 325, 303];

    #[test]
    fn reset_restarts_the_stream() {
        let mut s = sampler(SamplingParams {
            temperature: 1.0,
            ..Default::default()
        });
        let l = logits(100, 1);
        let a: Vec<u32> = (0..10).map(|_| s.sample(&l).unwrap()).collect();
        s.reset();
        let b: Vec<u32> = (0..10).map(|_| s.sample(&l).unwrap()).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn top_k_one_is_greedy_even_when_hot() {
        let l = logits(300, 5);
        let best = argmax(&l).unwrap() as u32;
        let mut s = sampler(SamplingParams {
            temperature: 5.0,
            top_k: 1,
            ..Default::default()
        });
        for _ in 0..50 {
            assert_eq!(s.sample(&l).unwrap(), best);
        }
    }

    #[test]
    fn top_k_restricts_to_the_k_best() {
        let l = logits(300, 6);
        let mut order: Vec<u32> = (0..300).collect();
        order.sort_by(|&a, &b| l[b as usize].partial_cmp(&l[a as usize]).unwrap());
        let allowed = &order[..5];
        let mut s = sampler(SamplingParams {
            temperature: 3.0,
            top_k: 5,
            ..Default::default()
        });
        let mut seen = std::collections::HashSet::new();
        for _ in 0..400 {
            let t = s.sample(&l).unwrap();
            assert!(allowed.contains(&t));
            seen.insert(t);
        }
        assert_eq!(
            seen.len(),
            5,
            "high temperature should reach all 5 allowed tokens"
        );
    }

    #[test]
    fn top_p_and_min_p_restrict_support() {
        // probs ~ 0.6, 0.3, 0.1 (and negligible rest)
        let mut l = vec![-30.0f32; 10];
        l[3] = 0.6f32.ln();
        l[7] = 0.3f32.ln();
        l[1] = 0.1f32.ln();
        let mut s = sampler(SamplingParams {
            temperature: 1.0,
            top_p: 0.85,
            ..Default::default()
        });
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..300 {
            seen.insert(s.sample(&l).unwrap());
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![3, 7]);
        let mut m = sampler(SamplingParams {
            temperature: 1.0,
            min_p: 0.4,
            ..Default::default()
        });
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..300 {
            seen.insert(m.sample(&l).unwrap());
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![3, 7]);
    }

    #[test]
    fn sampling_frequencies_follow_softmax() {
        let l = [0.0f32, 1.0f32.ln() + 1.0, 2.0];
        let z: f64 = l.iter().map(|&x| (x as f64).exp()).sum();
        let expected: Vec<f64> = l.iter().map(|&x| (x as f64).exp() / z).collect();
        let mut s = sampler(SamplingParams {
            temperature: 1.0,
            seed: 99,
            ..Default::default()
        });
        let n = 20_000;
        let mut counts = [0usize; 3];
        for _ in 0..n {
            counts[s.sample(&l).unwrap() as usize] += 1;
        }
        for i in 0..3 {
            let f = counts[i] as f64 / n as f64;
            assert!(
                (f - expected[i]).abs() < 0.015,
                "token {i}: {f} vs {}",
                expected[i]
            );
        }
    }

    #[test]
    fn low_temperature_sharpens() {
        let l = [1.0f32, 1.5];
        let mut cold = sampler(SamplingParams {
            temperature: 0.05,
            ..Default::default()
        });
        let picks: usize = (0..200).map(|_| cold.sample(&l).unwrap() as usize).sum();
        assert!(
            picks >= 198,
            "cold sampling should almost always pick token 1: {picks}"
        );
    }

    #[test]
    fn repetition_penalty_changes_greedy_choice_within_window() {
        let p = SamplingParams {
            repetition_penalty: 2.0,
            repeat_last_n: 2,
            ..Default::default()
        };
        let mut s = sampler(p);
        let l = [3.0f32, 2.0, 0.5];
        // 0 not yet seen: chosen, then penalised to 1.5 < 2.0
        assert_eq!(s.sample(&l).unwrap(), 0);
        assert_eq!(s.sample(&l).unwrap(), 1);
        // window now [0, 1]: 0 -> 1.5, 1 -> 1.0, so 0 again
        assert_eq!(s.sample(&l).unwrap(), 0);
        // window [1, 0]
        assert_eq!(s.sample(&l).unwrap(), 0, "0: 1.5, 1: 1.0");
        // window [0, 0]: only 0 penalised (once), 1 free at 2.0
        assert_eq!(s.sample(&l).unwrap(), 1);
    }

    #[test]
    fn presence_and_frequency_penalties_count_generated_tokens_only() {
        // Token 0 leads by 1.0; once generated, a presence penalty of 1.5 hands the lead to 1.
        let l = [3.0f32, 2.0, 0.0];
        let mut s = sampler(SamplingParams {
            presence_penalty: 1.5,
            ..Default::default()
        });
        s.accept_all(&[1, 1, 1]); // the prompt: not counted
        assert_eq!(s.sample(&l).unwrap(), 0);
        assert_eq!(s.sample(&l).unwrap(), 1, "0: 1.5, 1: 2.0");
        assert_eq!(s.sample(&l).unwrap(), 0, "both present once: 0 leads again");
        // Frequency: 0.4 per occurrence; 0 falls behind 1 after three of them (3.0 - 1.2 < 2.0).
        let mut f = sampler(SamplingParams {
            frequency_penalty: 0.4,
            ..Default::default()
        });
        let picks: Vec<u32> = (0..4).map(|_| f.sample(&l).unwrap()).collect();
        assert_eq!(picks, vec![0, 0, 0, 1]);
        // A negative penalty encourages repeats; a resumed sampler keeps the counts.
        let mut g = sampler(SamplingParams {
            presence_penalty: 1.5,
            ..Default::default()
        });
        g.note_generated(&[0]);
        assert_eq!(g.sample(&l).unwrap(), 1, "the resumed count of 0 applies");
        let bad = SamplingParams {
            frequency_penalty: f32::NAN,
            ..Default::default()
        };
        assert!(Sampler::new(bad).is_err());
        assert!(!SamplingParams::default().penalises());
    }

    #[test]
    fn params_round_trip_through_serde_with_defaults() {
        let p = SamplingParams {
            temperature: 0.7,
            top_k: 20,
            seed: 5,
            ..Default::default()
        };
        let json = serde_json::to_string(&p).unwrap();
        let back: SamplingParams = serde_json::from_str(&json).unwrap();
        assert_eq!(p, back);
        let partial: SamplingParams = serde_json::from_str(r#"{"temperature":0.5}"#).unwrap();
        assert_eq!(
            partial,
            SamplingParams {
                temperature: 0.5,
                ..Default::default()
            }
        );
    }
}
