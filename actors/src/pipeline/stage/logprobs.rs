//! The last stage's log-probabilities: of a sampled token and of the prompt's tokens, from the
//! logits the head computed (the raw logits, before any sampling filter or penalty — the same
//! numbers `edgeray perplexity` and `generate --logprobs` print).

use edgeray_model::scoring::{LogSoftmax, top_logprobs};

use crate::pipeline::protocol::TokenLogprobs;

/// `token`'s log-probability under one row of logits, with the `k` most likely tokens.
pub fn token_logprobs(row: &[f32], token: u32, k: usize) -> Result<TokenLogprobs, String> {
    let norm = LogSoftmax::new(row).map_err(|e| format!("log-probabilities: {e}"))?;
    let logprob = norm
        .log_prob(row, token)
        .map_err(|e| format!("log-probabilities: {e}"))? as f32;
    let top = top_logprobs(row, &norm, k)
        .into_iter()
        .map(|(id, lp)| (id, lp as f32))
        .collect();
    Ok(TokenLogprobs {
        token,
        logprob,
        top,
    })
}

/// The scores of the prompt tokens that a batch's logits predict. `logits` holds one row of
/// `vocab` values per position `pos, pos + 1, …` of the batch; the row of position `p`
/// predicts `prompt[p + 1]`, so rows past the prompt's end score nothing. Returns the position
/// of the first scored token and one entry per scored position.
pub fn prompt_scores(
    logits: &[f32],
    vocab: usize,
    pos: usize,
    prompt: &[u32],
    k: usize,
) -> Result<(u32, Vec<TokenLogprobs>), String> {
    if vocab == 0 || !logits.len().is_multiple_of(vocab) {
        return Err(format!(
            "{} logits do not make rows of {vocab}",
            logits.len()
        ));
    }
    let mut out = Vec::new();
    for (i, row) in logits.chunks_exact(vocab).enumerate() {
        let Some(&next) = prompt.get(pos + i + 1) else {
            break;
        };
        out.push(token_logprobs(row, next, k)?);
    }
    Ok(((pos + 1) as u32, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_logprobs_are_log_softmax_with_best_first() {
        let row = [1.0f32, 3.0, 2.0, 3.0];
        let t = token_logprobs(&row, 2, 3).unwrap();
        let lse = row.iter().map(|v| (*v as f64).exp()).sum::<f64>().ln();
        assert!((t.logprob as f64 - (2.0 - lse)).abs() < 1e-6);
        let ids: Vec<u32> = t.top.iter().map(|p| p.0).collect();
        assert_eq!(ids, vec![1, 3, 2], "best first, ties to the lower id");
        assert!(t.top.windows(2).all(|w| w[0].1 >= w[1].1));
        assert!(token_logprobs(&row, 9, 1).is_err(), "out of range");
        assert!(token_logprobs(&[f32::NAN, 1.0], 1, 1).is_err(), "NaN");
        assert!(token_logprobs(&row, 1, 0).unwrap().top.is_empty());
    }

    #[test]
    fn prompt_scores_pair_each_row_with_the_next_prompt_token() {
        // Three rows of a 2-token vocabulary at positions 4, 5, 6 of a 6-token prompt: row 4
        // scores prompt[5]; rows 5 and 6 predict tokens past the prompt and score nothing.
        let prompt = [0u32, 1, 0, 1, 0, 1];
        let logits = [0.0f32, 1.0, 2.0, 0.0, 5.0, 5.0];
        let (first, s) = prompt_scores(&logits, 2, 4, &prompt, 1).unwrap();
        assert_eq!(first, 5);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].token, 1);
        assert_eq!(s[0], token_logprobs(&logits[..2], 1, 1).unwrap());
        // From the start: rows 0..3 score prompt[1..4].
        let (first, s) = prompt_scores(&logits, 2, 0, &prompt, 0).unwrap();
        assert_eq!(first, 1);
        assert_eq!(s.iter().map(|t| t.token).collect::<Vec<_>>(), vec![1, 0, 1]);
        assert!(prompt_scores(&logits[..5], 2, 0, &prompt, 0).is_err());
    }
}
