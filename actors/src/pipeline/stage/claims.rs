//! What a stage's spawn arguments claim from the board, checked before anything is loaded:
//! whoever spawns a stage (normally the coordinator that deployed it, but any member can ask)
//! gets no more context than the model has and no more KV cache than the board offers.
//! Kernel threads are capped separately ([`super::capped_threads`]).

/// A claim the board refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// No positions, or more than the model's context.
    #[error("a stage context of {asked} positions (the model holds 1 to {model})")]
    Context {
        /// Positions asked for.
        asked: usize,
        /// The model's context length.
        model: usize,
    },
    /// No sequence slots.
    #[error("a stage with no sequence slots")]
    NoSequences,
    /// Full-context KV caches for every slot beyond the board's memory budget.
    #[error(
        "{sequences} sequences × {ctx} positions of KV cache need {} MiB; this board offers {} MiB",
        need >> 20,
        budget >> 20
    )]
    Memory {
        /// Sequence slots asked for.
        sequences: usize,
        /// Positions per sequence.
        ctx: usize,
        /// Bytes those KV caches take at full context.
        need: u64,
        /// The board's memory budget.
        budget: u64,
    },
}

/// What a stage asks of its board.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageClaim {
    /// Positions per sequence.
    pub ctx: usize,
    /// Sequence slots.
    pub sequences: usize,
    /// KV bytes one position takes in this stage's layers (this member's share, in a group).
    pub kv_bytes_per_position: u64,
}

/// Checks `claim` against the model's context length and the board's memory budget (`None`:
/// not known yet, e.g. before the board's first resource report).
pub fn check_claim(
    claim: StageClaim,
    model_ctx: usize,
    budget: Option<u64>,
) -> Result<(), ClaimError> {
    if claim.ctx == 0 || claim.ctx > model_ctx {
        return Err(ClaimError::Context {
            asked: claim.ctx,
            model: model_ctx,
        });
    }
    if claim.sequences == 0 {
        return Err(ClaimError::NoSequences);
    }
    let need = (claim.sequences as u64)
        .saturating_mul(claim.ctx as u64)
        .saturating_mul(claim.kv_bytes_per_position);
    match budget {
        Some(budget) if need > budget => Err(ClaimError::Memory {
            sequences: claim.sequences,
            ctx: claim.ctx,
            need,
            budget,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KV: u64 = 2 * 4 * 64 * 4 * 6; // 6 layers of 4 KV heads of 64

    fn claim(ctx: usize, sequences: usize) -> StageClaim {
        StageClaim {
            ctx,
            sequences,
            kv_bytes_per_position: KV,
        }
    }

    #[test]
    fn a_deployment_sized_claim_passes() {
        assert_eq!(check_claim(claim(4096, 4), 32_768, Some(1 << 30)), Ok(()));
        assert_eq!(check_claim(claim(4096, 4), 4096, None), Ok(()));
    }

    #[test]
    fn context_beyond_the_model_or_zero_is_refused() {
        assert_eq!(
            check_claim(claim(1 << 30, 1), 32_768, None),
            Err(ClaimError::Context {
                asked: 1 << 30,
                model: 32_768
            })
        );
        assert!(check_claim(claim(0, 1), 32_768, None).is_err());
        assert_eq!(
            check_claim(claim(16, 0), 32_768, None),
            Err(ClaimError::NoSequences)
        );
    }

    #[test]
    fn kv_beyond_the_budget_is_refused_without_overflow() {
        let e = check_claim(claim(32_768, 1_000_000), 32_768, Some(8 << 30)).unwrap_err();
        assert!(matches!(e, ClaimError::Memory { budget, .. } if budget == 8 << 30));
        assert!(e.to_string().contains("this board offers 8192 MiB"), "{e}");
        let huge = StageClaim {
            kv_bytes_per_position: u64::MAX,
            ..claim(2, usize::MAX)
        };
        assert!(check_claim(huge, 32_768, Some(u64::MAX - 1)).is_err());
    }
}
