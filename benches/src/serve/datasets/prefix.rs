//! `--dataset prefix`: `k` groups of prompts sharing one long random prefix
//! each, followed by a short random suffix. Requests cycle through the
//! groups, so a prefix-caching server computes each prefix once.

use rand::Rng;

use super::tokens::PromptTokenizer;
use super::{DatasetError, SampleRequest};

pub struct PrefixSpec {
    pub num_prompts: usize,
    pub num_groups: usize,
    pub prefix_len: usize,
    pub suffix_len: usize,
    pub output_len: usize,
}

pub fn build(
    spec: &PrefixSpec,
    tok: &PromptTokenizer,
    rng: &mut impl Rng,
) -> Result<Vec<SampleRequest>, DatasetError> {
    let groups = spec.num_groups.max(1);
    let prefixes = (0..groups)
        .map(|_| tok.random_text(rng, spec.prefix_len))
        .collect::<Result<Vec<_>, _>>()?;
    (0..spec.num_prompts)
        .map(|i| {
            let (prefix, _) = &prefixes[i % groups];
            let (suffix, _) = tok.random_text(rng, spec.suffix_len.max(1))?;
            let prompt = format!("{prefix} {suffix}");
            let len = tok.count(&prompt)?;
            Ok(SampleRequest::new(prompt, len, spec.output_len))
        })
        .collect()
}
