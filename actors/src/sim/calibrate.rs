//! Calibration: fit each node's cost curve to measured stage runs (`edgeray bench --trace`).
//!
//! The curve is the simulator's ([`super::cost::forward_s`]) for a one-board stage: a run over
//! `k` positions of `b` sequences on a stage streaming `L` layer bytes and `H` head bytes, reading
//! `R` cached KV bytes, takes
//!
//! `t = (L + H) / C + β/C × (L (k − 1) + H (b − 1)) + R / C_kv`
//!
//! which is linear in `1/C`, `β/C` and `1/C_kv`: ordinary least squares over every record of a
//! node gives its compute score `C`, batch cost `β` and KV read speed `C_kv`. A term whose
//! column is all zero (e.g. no batching in the trace) is left out and reported as unknown.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One measurement: the mean stage run of one node over one experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceRecord {
    /// Node name.
    pub node: String,
    /// Stage index in its pipeline.
    pub stage: usize,
    /// Layers the stage holds.
    pub layers: usize,
    /// Layer weight bytes the stage streams per run.
    pub layer_bytes: u64,
    /// Output-head bytes (last stage; 0 elsewhere).
    pub head_bytes: u64,
    /// Mean positions per run.
    pub positions: f64,
    /// Mean sequences per run.
    pub sequences: f64,
    /// Mean KV-cache bytes read per run.
    pub kv_read_bytes: f64,
    /// Mean compute seconds per run.
    pub compute_s: f64,
    /// Runs the means are over.
    pub runs: u64,
    /// Experiment label (e.g. `4 streams`).
    #[serde(default)]
    pub experiment: String,
}

/// A node's fitted cost curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeCurve {
    /// Node name.
    pub node: String,
    /// Weight bytes per second (`C`).
    pub compute_bytes_per_s: f64,
    /// Batch cost `β` (`None`: the trace never batched).
    pub batch_cost: Option<f64>,
    /// KV-cache bytes read per second (`None`: the trace read no cache).
    pub kv_bytes_per_s: Option<f64>,
    /// Records fitted.
    pub samples: usize,
    /// Root-mean-square error of the fit, seconds.
    pub rms_error_s: f64,
}

/// Why a trace cannot be fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CalibrateError {
    /// The trace holds no records.
    #[error("the trace holds no records")]
    Empty,
    /// A node's records do not determine its compute score.
    #[error("node `{node}`: {reason}")]
    Unfittable {
        /// The node.
        node: String,
        /// Why.
        reason: String,
    },
}

/// Solve the normal equations of `rows` (features) against `ys` for the columns in `cols`.
fn least_squares(rows: &[[f64; 3]], ys: &[f64], cols: &[usize]) -> Option<Vec<f64>> {
    let n = cols.len();
    let mut a = vec![vec![0.0; n + 1]; n];
    for (r, y) in rows.iter().zip(ys) {
        for i in 0..n {
            for j in 0..n {
                a[i][j] += r[cols[i]] * r[cols[j]];
            }
            a[i][n] += r[cols[i]] * y;
        }
    }
    // Gauss-Jordan with partial pivoting
    for c in 0..n {
        let p = (c..n).max_by(|&x, &y| a[x][c].abs().total_cmp(&a[y][c].abs()))?;
        let scale = a.iter().map(|row| row[c].abs()).fold(0.0, f64::max);
        if a[p][c].abs() <= 1e-12 * scale.max(f64::MIN_POSITIVE) {
            return None;
        }
        a.swap(c, p);
        let pivot = a[c][c];
        for v in a[c].iter_mut() {
            *v /= pivot;
        }
        let pivot_row = a[c].clone();
        for (r, row) in a.iter_mut().enumerate() {
            let f = row[c];
            if r != c && f != 0.0 {
                for (v, p) in row.iter_mut().zip(&pivot_row) {
                    *v -= f * p;
                }
            }
        }
    }
    Some(a.iter().map(|row| row[n]).collect())
}

/// Fit every node of `records` (see the module docs), in node-name order.
pub fn fit(records: &[TraceRecord]) -> Result<Vec<NodeCurve>, CalibrateError> {
    if records.is_empty() {
        return Err(CalibrateError::Empty);
    }
    let mut by_node: BTreeMap<&str, Vec<&TraceRecord>> = BTreeMap::new();
    for r in records {
        by_node.entry(&r.node).or_default().push(r);
    }
    let mut out = Vec::new();
    for (node, recs) in by_node {
        let rows: Vec<[f64; 3]> = recs
            .iter()
            .map(|r| {
                let (l, h) = (r.layer_bytes as f64, r.head_bytes as f64);
                [
                    l + h,
                    l * (r.positions - 1.0).max(0.0) + h * (r.sequences - 1.0).max(0.0),
                    r.kv_read_bytes,
                ]
            })
            .collect();
        let ys: Vec<f64> = recs.iter().map(|r| r.compute_s).collect();
        let cols: Vec<usize> = (0..3)
            .filter(|&c| rows.iter().any(|r| r[c] > 0.0))
            .collect();
        let unfit = |reason: &str| CalibrateError::Unfittable {
            node: node.to_string(),
            reason: reason.to_string(),
        };
        if !cols.contains(&0) {
            return Err(unfit("its records stream no weight bytes"));
        }
        let x = least_squares(&rows, &ys, &cols).ok_or_else(|| {
            unfit("its records do not separate the terms (vary the streams or the context)")
        })?;
        let coef = |c: usize| cols.iter().position(|&k| k == c).map(|i| x[i]);
        let u = coef(0).unwrap_or(0.0);
        if u <= 0.0 {
            return Err(unfit(
                "the fitted compute time per weight byte is not positive",
            ));
        }
        let rms = (rows
            .iter()
            .zip(&ys)
            .map(|(r, y)| {
                let pred: f64 = cols.iter().zip(&x).map(|(&c, v)| r[c] * v).sum();
                (pred - y).powi(2)
            })
            .sum::<f64>()
            / rows.len() as f64)
            .sqrt();
        out.push(NodeCurve {
            node: node.to_string(),
            compute_bytes_per_s: 1.0 / u,
            batch_cost: coef(1).map(|v| v / u),
            kv_bytes_per_s: coef(2).filter(|w| *w > 0.0).map(|w| 1.0 / w),
            samples: rows.len(),
            rms_error_s: rms,
        });
    }
    Ok(out)
}

/// Parse a JSON-lines trace (blank lines skipped); errors name the line.
pub fn parse_trace(text: &str) -> Result<Vec<TraceRecord>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(node: &str, k: f64, b: f64, kv: f64, c: f64, beta: f64, ckv: f64) -> TraceRecord {
        let (l, h) = (4.0e8, 1.0e8);
        let t = (l + h) / c + beta / c * (l * (k - 1.0) + h * (b - 1.0)) + kv / ckv;
        TraceRecord {
            node: node.into(),
            stage: 0,
            layers: 8,
            layer_bytes: l as u64,
            head_bytes: h as u64,
            positions: k,
            sequences: b,
            kv_read_bytes: kv,
            compute_s: t,
            runs: 10,
            experiment: String::new(),
        }
    }

    #[test]
    fn recovers_known_curves() {
        // two nodes with different curves, records over batch × context
        let mut recs = Vec::new();
        for (node, c, beta, ckv) in [("a", 2.0e9, 0.08, 5.0e9), ("b", 7.5e8, 0.2, 1.0e9)] {
            for k in [1.0, 2.0, 4.0, 8.0] {
                for kv in [0.0, 1.0e6, 3.0e7] {
                    recs.push(record(node, k, k, kv * k, c, beta, ckv));
                }
            }
        }
        let curves = fit(&recs).unwrap();
        assert_eq!(curves.len(), 2);
        let check =
            |got: f64, want: f64| assert!((got / want - 1.0).abs() < 1e-6, "{got} vs {want}");
        check(curves[0].compute_bytes_per_s, 2.0e9);
        check(curves[0].batch_cost.unwrap(), 0.08);
        check(curves[0].kv_bytes_per_s.unwrap(), 5.0e9);
        check(curves[1].compute_bytes_per_s, 7.5e8);
        check(curves[1].batch_cost.unwrap(), 0.2);
        check(curves[1].kv_bytes_per_s.unwrap(), 1.0e9);
        assert!(curves[0].rms_error_s < 1e-12);
    }

    #[test]
    fn noisy_records_fit_close_and_missing_terms_are_unknown() {
        // ±1 % deterministic noise
        let mut recs = Vec::new();
        for (i, k) in [1.0, 2.0, 3.0, 4.0, 6.0, 8.0].iter().enumerate() {
            let mut r = record("a", *k, *k, 0.0, 1.0e9, 0.1, 1.0);
            r.compute_s *= 1.0 + if i % 2 == 0 { 0.01 } else { -0.01 };
            recs.push(r);
        }
        let c = &fit(&recs).unwrap()[0];
        assert!((c.compute_bytes_per_s / 1.0e9 - 1.0).abs() < 0.03);
        assert!((c.batch_cost.unwrap() - 0.1).abs() < 0.02);
        assert_eq!(c.kv_bytes_per_s, None);
        // one batch size only: no batch term
        let one: Vec<_> = (0..3)
            .map(|_| record("a", 1.0, 1.0, 0.0, 1.0e9, 0.1, 1.0))
            .collect();
        let c = &fit(&one).unwrap()[0];
        assert_eq!(c.batch_cost, None);
        assert!((c.compute_bytes_per_s / 1.0e9 - 1.0).abs() < 1e-9);
        assert_eq!(fit(&[]), Err(CalibrateError::Empty));
    }

    #[test]
    fn traces_parse_line_by_line() {
        let r = record("a", 1.0, 1.0, 0.0, 1.0e9, 0.1, 1.0);
        let text = format!(
            "{}\n\n{}\n",
            serde_json::to_string(&r).unwrap(),
            serde_json::to_string(&r).unwrap()
        );
        assert_eq!(parse_trace(&text).unwrap().len(), 2);
        assert!(
            parse_trace("{\"node\":1}")
                .unwrap_err()
                .starts_with("line 1:")
        );
    }
}
