//! What a request carries from one sampling step to the next.

use std::collections::HashMap;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::SamplingParams;

/// 32-bit ChaCha words one sampling draw consumes.
const WORDS_PER_DRAW: u128 = 2;

/// Per-request sampler state: the request's own RNG, so its tokens depend only
/// on its seed and never on what else shares the batch, and the counts of its
/// output tokens, so presence/frequency penalties cost O(distinct outputs) a
/// step instead of a recount of the whole output.
#[derive(Clone, Debug)]
pub struct SamplingState {
    rng: ChaCha20Rng,
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

    /// The state a request has after producing `output_tokens`, rebuilt
    /// without replaying them: the counts, and the RNG moved past the one draw
    /// each non-greedy step made. A decode worker taking over a request from
    /// prefill (same params, same seed) continues exactly as a colocated
    /// engine would have.
    pub fn resume(params: &SamplingParams, fallback_seed: u64, output_tokens: &[u32]) -> Self {
        let mut state = Self::new(params, fallback_seed);
        for &token in output_tokens {
            state.record_output(token);
        }
        if !params.is_greedy() {
            let draws = output_tokens.len() as u128;
            state.rng.set_word_pos(draws * WORDS_PER_DRAW);
        }
        state
    }

    /// A uniform f64 in [0, 1) from the top 53 bits of one u64: exactly
    /// [`WORDS_PER_DRAW`] words of the ChaCha stream, which `resume` relies on.
    pub(crate) fn draw_uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_lands_after_the_draws_already_made() {
        let params = SamplingParams {
            seed: Some(9),
            ..Default::default()
        };
        let mut live = SamplingState::new(&params, 0);
        for t in [4, 4, 7] {
            live.draw_uniform();
            live.record_output(t);
        }
        let mut resumed = SamplingState::resume(&params, 0, &[4, 4, 7]);
        assert_eq!(resumed.output_counts, live.output_counts);
        assert_eq!(resumed.num_recorded(), 3);
        for _ in 0..5 {
            assert_eq!(resumed.draw_uniform(), live.draw_uniform());
        }
    }

    #[test]
    fn uniform_draws_stay_in_the_unit_interval() {
        let mut state = SamplingState::new(&SamplingParams::default(), 1);
        for _ in 0..1000 {
            let u = state.draw_uniform();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
