//! `--dataset mixed`: short chat-sized requests interleaved with long-prompt
//! requests (the interference study's load). Long prompts are what a
//! colocated worker must prefill between decode steps of the short ones.

use rand::Rng;

use super::tokens::PromptTokenizer;
use super::{random, DatasetError, SampleRequest};

pub struct MixedSpec {
    pub num_prompts: usize,
    /// Fraction of requests that carry the long prompt (0..=1).
    pub long_fraction: f64,
    pub short_input_len: usize,
    pub long_input_len: usize,
    pub output_len: usize,
}

pub fn build(
    spec: &MixedSpec,
    tok: &PromptTokenizer,
    rng: &mut impl Rng,
) -> Result<Vec<SampleRequest>, DatasetError> {
    (0..spec.num_prompts)
        .map(|_| {
            let long = rng.random_bool(spec.long_fraction.clamp(0.0, 1.0));
            let len = if long {
                spec.long_input_len
            } else {
                spec.short_input_len
            };
            let one = random::RandomSpec {
                num_prompts: 1,
                input_len: len,
                output_len: spec.output_len,
                range_ratio: 0.0,
            };
            let mut req = random::build(&one, tok, rng)?.remove(0);
            req.class = if long { "long" } else { "short" };
            Ok(req)
        })
        .collect()
}
