//! `--dataset random`: prompts of random tokens with token-exact lengths
//! (vLLM's random dataset), for controlled input/output length studies.

use rand::Rng;

use super::tokens::PromptTokenizer;
use super::{sample_lengths, DatasetError, SampleRequest};

pub struct RandomSpec {
    pub num_prompts: usize,
    pub input_len: usize,
    pub output_len: usize,
    pub range_ratio: f64,
}

pub fn build(
    spec: &RandomSpec,
    tok: &PromptTokenizer,
    rng: &mut impl Rng,
) -> Result<Vec<SampleRequest>, DatasetError> {
    let inputs = sample_lengths(rng, spec.input_len, spec.range_ratio, spec.num_prompts);
    let outputs = sample_lengths(rng, spec.output_len, spec.range_ratio, spec.num_prompts);
    inputs
        .into_iter()
        .zip(outputs)
        .map(|(inp, out)| {
            let (prompt, len) = tok.random_text(rng, inp)?;
            Ok(SampleRequest::new(prompt, len, out))
        })
        .collect()
}
