//! What a request carries from one sampling step to the next.

use std::collections::HashMap;

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::SamplingParams;

/// Per-request sampler state: the request's own RNG, so its tokens depend only
/// on its seed and never on what else shares the batch, and the counts of its
/// output tokens, so presence/frequency penalties cost O(distinct outputs) a
/// step instead of a recount of the whole output.
#[derive(Clone, Debug)]
pub struct SamplingState {
    pub(crate) rng: ChaCha20Rng,
    pub(crate) output_counts: HashMap<u32, u32>,
    recorded: usize,
}

impl SamplingState {
    /// Seeds the RNG from `params.seed`, or from `fallback_seed` (chosen by the
    /// engine) when the request gave none.
    pub fn new(params: &SamplingParams, fallback_seed: u64) -> Self {
        Self {
            rng: ChaCha20Rng::seed_from_u64(params.seed.unwrap_or(fallback_seed)),
            output_counts: HashMap::new(),
            recorded: 0,
        }
    }

    /// Counts a token appended to the output. Call it once for every output
    /// token, in step with the `output_tokens` passed to the sampler.
    pub fn record_output(&mut self, token: u32) {
        *self.output_counts.entry(token).or_insert(0) += 1;
        self.recorded += 1;
    }

    /// How many output tokens have been recorded.
    pub fn num_recorded(&self) -> usize {
        self.recorded
    }
}
