//! `--dataset rag`: questions sent as chat completions with the extra body
//! field `index_name`, so the server's RAG module retrieves context before
//! generating. Questions come from a ShareGPT file when given, else random
//! text; a server without RAG fails them, counted like any other failure.

use std::path::Path;

use rand::Rng;
use serde_json::Value;

use super::tokens::PromptTokenizer;
use super::{random, sharegpt, DatasetError, SampleRequest};

pub fn build(
    index_name: &str,
    questions: Option<&Path>,
    random_spec: &random::RandomSpec,
    tok: &PromptTokenizer,
    rng: &mut impl Rng,
) -> Result<Vec<SampleRequest>, DatasetError> {
    let mut requests = match questions {
        Some(path) => sharegpt::build(
            path,
            random_spec.num_prompts,
            Some(random_spec.output_len),
            tok,
            rng,
        )?,
        None => random::build(random_spec, tok, rng)?,
    };
    for r in &mut requests {
        r.extra_body
            .insert("index_name".into(), Value::String(index_name.to_string()));
    }
    Ok(requests)
}
