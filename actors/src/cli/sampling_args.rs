//! Sampling flags shared by `edgeray generate` and `edgeray run`.

use edgeray_model::sampling::{SamplingError, SamplingParams};

/// How the next token is chosen (flattened into a subcommand's arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Random seed of the sampler.
    #[arg(long, default_value_t = 0x5EED)]
    pub seed: u64,
    /// Keep only the K most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling threshold (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
}

impl SamplingArgs {
    /// The model's sampling settings (other filters off), validated.
    pub fn params(&self) -> Result<SamplingParams, SamplingError> {
        let p = SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
            ..SamplingParams::greedy()
        };
        p.validate()?;
        Ok(p)
    }
}
