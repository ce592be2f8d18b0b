//! Request datasets: each module turns its source (random tokens, a ShareGPT
//! file, shared prefixes, RAG questions) into the same list of
//! [`SampleRequest`]s, so the client and the metrics never care where a
//! prompt came from.

pub mod mixed;
pub mod prefix;
pub mod rag;
pub mod random;
pub mod sharegpt;
pub mod tokens;

use serde_json::{Map, Value};

/// One request to send: the prompt, how long it is in tokens (as the
/// benchmark's tokenizer counts it), and how many tokens to ask for.
#[derive(Debug, Clone)]
pub struct SampleRequest {
    pub prompt: String,
    pub prompt_len: usize,
    pub output_len: usize,
    /// Extra fields merged into the JSON body (e.g. RAG's `index_name`).
    pub extra_body: Map<String, Value>,
    /// A label the report can group by (e.g. "short" / "long" in `mixed`).
    pub class: &'static str,
}

impl SampleRequest {
    pub fn new(prompt: String, prompt_len: usize, output_len: usize) -> Self {
        Self {
            prompt,
            prompt_len,
            output_len,
            extra_body: Map::new(),
            class: "all",
        }
    }
}

/// Why a dataset could not be built; each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot read dataset file {path}: {source} (check --dataset-path)")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("dataset file {path} is not ShareGPT JSON (a list of {{\"conversations\": [{{\"from\", \"value\"}}]}}): {source}")]
    ShareGptFormat {
        path: String,
        source: serde_json::Error,
    },
    #[error("dataset {path} has no usable conversation (need a human turn followed by a reply)")]
    Empty { path: String },
    #[error(
        "cannot load tokenizer {path}: {message} (pass --tokenizer DIR holding tokenizer.json)"
    )]
    Tokenizer { path: String, message: String },
    #[error("tokenizer failed on a prompt: {0}")]
    Encode(String),
    #[error("dataset `{dataset}` needs {what}")]
    Missing {
        dataset: &'static str,
        what: &'static str,
    },
}

/// Sample `n` lengths uniformly in `[len·(1−ratio), len·(1+ratio)]` (at least
/// 1), as vLLM's `--random-range-ratio` does.
pub fn sample_lengths(rng: &mut impl rand::Rng, len: usize, ratio: f64, n: usize) -> Vec<usize> {
    // Rounded, so 100 × 1.1 is 110 and not 111 from float error.
    let lo = ((len as f64) * (1.0 - ratio)).round().max(1.0) as usize;
    let hi = ((len as f64) * (1.0 + ratio)).round().max(lo as f64) as usize;
    (0..n).map(|_| rng.random_range(lo..=hi)).collect()
}

#[cfg(test)]
mod tests;
