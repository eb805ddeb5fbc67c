//! What a simulation measured: tokens/s, time between tokens, energy, stage utilisation,
//! failures; with JSON (serde) and CSV renderings.

use super::setup::Workload;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One stage of one deployment (a failure's redeploy starts deployment 1, and so on).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    /// Deployment index (0: the first).
    pub deployment: usize,
    /// Stage index in the pipeline.
    pub stage: usize,
    /// Its boards (a tensor-parallel group has several).
    pub nodes: Vec<String>,
    /// Layers it holds.
    pub layers: usize,
    /// Seconds it spent in completed forwards.
    pub busy_s: f64,
    /// `busy_s` over the run's duration.
    pub utilisation: f64,
    /// Forwards it completed.
    pub forwards: u64,
    /// Mean sequences per forward.
    pub mean_batch: f64,
}

/// One `--fail` and what it cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureReport {
    /// The node.
    pub node: String,
    /// When it failed, seconds.
    pub at_s: f64,
    /// It ran a stage of the pipeline at that time (otherwise nothing happened).
    pub in_pipeline: bool,
    /// When the cluster declared it down.
    pub detected_at_s: Option<f64>,
    /// When the replacement pipeline was up (`None`: none could be placed).
    pub redeployed_at_s: Option<f64>,
    /// Positions recomputed to rebuild the streams' KV caches.
    pub replayed_tokens: usize,
}

/// Distribution of the time between consecutive tokens of a stream, over all streams.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TbtStats {
    /// Gaps measured.
    pub count: usize,
    /// Mean gap, seconds.
    pub mean_s: f64,
    /// Median, seconds.
    pub p50_s: f64,
    /// 99th percentile, seconds.
    pub p99_s: f64,
    /// Longest gap, seconds.
    pub max_s: f64,
}

/// Everything one simulation reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimReport {
    /// The workload simulated.
    pub workload: Workload,
    /// Tokens generated in all.
    pub tokens: usize,
    /// Seconds from the start to the last token.
    pub duration_s: f64,
    /// Aggregate generation speed: `tokens / duration_s` (prefill time included).
    pub tokens_per_s: f64,
    /// Aggregate decode speed: Σ over streams of (tokens − 1) / (last − first token time); for
    /// one stream this is what `edgeray bench` reports as generation speed.
    pub decode_tokens_per_s: f64,
    /// Each stream's tokens / its last token's time.
    pub per_stream_tokens_per_s: Vec<f64>,
    /// Mean time to the first token, seconds.
    pub ttft_mean_s: f64,
    /// Time between tokens.
    pub tbt: TbtStats,
    /// Energy of every board used (compute power while busy, the idle fraction otherwise).
    pub energy_j: f64,
    /// `energy_j / tokens`.
    pub joules_per_token: f64,
    /// Per stage of each deployment.
    pub stages: Vec<StageReport>,
    /// Per `--fail`.
    pub failures: Vec<FailureReport>,
    /// Some stream did not finish (a failure nothing could replace, or the event guard).
    pub stalled: bool,
    /// Events processed.
    pub events: u64,
}

/// Nearest-rank percentile `q` (0..=1) of sorted `v` (0 when empty).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[allow(clippy::too_many_arguments)]
pub(super) fn build_report(
    workload: Workload,
    tokens: &[Vec<f64>],
    mut stages: Vec<StageReport>,
    node_busy: &BTreeMap<String, (f64, f64)>,
    idle_fraction: f64,
    failures: Vec<FailureReport>,
    stalled: bool,
    events: u64,
) -> SimReport {
    let total: usize = tokens.iter().map(Vec::len).sum();
    let duration = tokens
        .iter()
        .filter_map(|t| t.last().copied())
        .fold(0.0, f64::max);
    let mut gaps: Vec<f64> = tokens
        .iter()
        .flat_map(|t| t.windows(2).map(|w| w[1] - w[0]))
        .collect();
    gaps.sort_by(f64::total_cmp);
    let decode: f64 = tokens
        .iter()
        .filter(|t| t.len() > 1)
        .map(|t| (t.len() - 1) as f64 / (t[t.len() - 1] - t[0]))
        .filter(|x| x.is_finite())
        .sum();
    let firsts: Vec<f64> = tokens.iter().filter_map(|t| t.first().copied()).collect();
    for s in &mut stages {
        s.utilisation = if duration > 0.0 {
            s.busy_s / duration
        } else {
            0.0
        };
    }
    let energy: f64 = node_busy
        .values()
        .map(|&(busy, w)| w * busy + idle_fraction * w * (duration - busy).max(0.0))
        .sum();
    SimReport {
        workload,
        tokens: total,
        duration_s: duration,
        tokens_per_s: if duration > 0.0 {
            total as f64 / duration
        } else {
            0.0
        },
        decode_tokens_per_s: decode,
        per_stream_tokens_per_s: tokens
            .iter()
            .map(|t| match t.last() {
                Some(&l) if l > 0.0 => t.len() as f64 / l,
                _ => 0.0,
            })
            .collect(),
        ttft_mean_s: if firsts.is_empty() {
            0.0
        } else {
            firsts.iter().sum::<f64>() / firsts.len() as f64
        },
        tbt: TbtStats {
            count: gaps.len(),
            mean_s: if gaps.is_empty() {
                0.0
            } else {
                gaps.iter().sum::<f64>() / gaps.len() as f64
            },
            p50_s: percentile(&gaps, 0.5),
            p99_s: percentile(&gaps, 0.99),
            max_s: gaps.last().copied().unwrap_or(0.0),
        },
        energy_j: energy,
        joules_per_token: if total > 0 {
            energy / total as f64
        } else {
            0.0
        },
        stages,
        failures,
        stalled,
        events,
    }
}

impl SimReport {
    /// Header of [`SimReport::csv_row`].
    pub const CSV_HEADER: &'static str = "streams,prompt_tokens,gen_tokens,tokens,duration_s,tokens_per_s,decode_tokens_per_s,ttft_mean_s,tbt_p50_s,tbt_p99_s,joules_per_token,max_stage_utilisation,stalled";

    /// The headline numbers as one CSV row (columns of [`SimReport::CSV_HEADER`]).
    pub fn csv_row(&self) -> String {
        let util = self
            .stages
            .iter()
            .map(|s| s.utilisation)
            .fold(0.0, f64::max);
        format!(
            "{},{},{},{},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.4},{}",
            self.workload.streams,
            self.workload.prompt_tokens,
            self.workload.gen_tokens,
            self.tokens,
            self.duration_s,
            self.tokens_per_s,
            self.decode_tokens_per_s,
            self.ttft_mean_s,
            self.tbt.p50_s,
            self.tbt.p99_s,
            self.joules_per_token,
            util,
            self.stalled
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[3.0], 0.5), 3.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
