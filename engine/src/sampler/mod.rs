//! The sampler: turns each row of a `[num_seqs, vocab]` logits buffer into one
//! token, in vLLM v1's order: the grammar mask (structured outputs),
//! penalties, temperature, top-k, top-p, min-p, then a draw from the softmax
//! with the request's own RNG. Logprobs describe the raw logits, before any
//! of that.
//!
//! Every row is independent of the others (own RNG, own state), so rows run in
//! parallel and a seeded request gets the same tokens whatever it is batched
//! with. Scratch buffers live per thread and are reused across steps.

mod logprobs;
mod math;
mod params;
mod penalties;
mod select;
mod state;
mod truncation;

use std::cell::RefCell;

use rayon::prelude::*;

use truncation::TruncateScratch;

use crate::guided::Guide;

pub use params::{SamplingError, SamplingParams, GREEDY_TEMPERATURE, MAX_LOGPROBS};
pub use state::SamplingState;

/// One sampled token with its raw-logit log-probability and, when the request
/// asked for them, the top logprobs (largest first, lower id first among equals).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SampledToken {
    pub token: u32,
    pub logprob: f32,
    pub top_logprobs: Vec<(u32, f32)>,
}

/// Everything the sampler needs to know about one row's request.
pub struct SampleInput<'a> {
    pub params: &'a SamplingParams,
    pub state: &'a mut SamplingState,
    /// For the repetition penalty.
    pub prompt_tokens: &'a [u32],
    /// For the repetition penalty; must match what was passed to
    /// [`SamplingState::record_output`], which feeds the other penalties.
    pub output_tokens: &'a [u32],
    /// Structured output: tokens the grammar forbids are masked out first.
    pub guide: Option<&'a mut Guide>,
}

/// Samples one token for each row of `logits` (`[rows.len(), vocab]`,
/// row-major), in parallel with rayon. Results are in row order.
///
/// # Panics
/// If `logits.len() != rows.len() * vocab`, or `vocab` is 0 in a non-empty
/// batch: the runner and the scheduler disagree, and no token would be right.
pub fn sample_batch(
    logits: &[f32],
    vocab: usize,
    rows: &mut [SampleInput<'_>],
) -> Vec<SampledToken> {
    if rows.is_empty() && logits.is_empty() {
        return Vec::new();
    }
    assert!(vocab > 0, "sample_batch: vocab must be positive");
    assert_eq!(
        logits.len(),
        rows.len() * vocab,
        "sample_batch: logits hold {} values, expected {} rows of {vocab}",
        logits.len(),
        rows.len()
    );
    logits
        .par_chunks_exact(vocab)
        .zip(rows.par_iter_mut())
        .map(|(row, input)| sample_one(row, input))
        .collect()
}

/// Samples one token from one row of logits. Greedy requests (temperature
/// below [`GREEDY_TEMPERATURE`]) take the argmax, lowest id on ties, and draw
/// nothing from their RNG.
///
/// # Panics
/// If `logits_row` is empty.
pub fn sample_one(logits_row: &[f32], input: &mut SampleInput<'_>) -> SampledToken {
    assert!(!logits_row.is_empty(), "sample_one: empty logits row");
    debug_assert_eq!(
        input.state.num_recorded(),
        input.output_tokens.len(),
        "record_output must be called once per output token"
    );
    let token = SCRATCH.with_borrow_mut(|scratch| choose(logits_row, input, scratch));
    let lse = logprobs::log_normalizer(logits_row);
    let top_logprobs = match input.params.logprobs {
        Some(n) => logprobs::top_n(logits_row, n)
            .into_iter()
            .map(|(id, l)| (id, l - lse))
            .collect(),
        None => Vec::new(),
    };
    SampledToken {
        token,
        logprob: logits_row[token as usize] - lse,
        top_logprobs,
    }
}

/// Buffers reused by every row a thread samples, so the hot path allocates
/// only the returned top-logprobs list.
#[derive(Default)]
struct Scratch {
    /// The row after the grammar mask.
    masked: Vec<f32>,
    /// The row after penalties.
    penalised: Vec<f32>,
    /// Bitset of tokens the repetition penalty has already hit.
    seen: Vec<u64>,
    truncate: TruncateScratch,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

fn choose(raw: &[f32], input: &mut SampleInput<'_>, scratch: &mut Scratch) -> u32 {
    let params = input.params;
    let Scratch {
        masked,
        penalised,
        seen,
        truncate,
    } = scratch;
    let raw = match input.guide.as_deref_mut() {
        Some(guide) => {
            masked.clear();
            masked.extend_from_slice(raw);
            guide.apply(masked);
            masked.as_slice()
        }
        None => raw,
    };
    let logits = if params.has_penalties() {
        penalised.clear();
        penalised.extend_from_slice(raw);
        penalties::apply_penalties(
            penalised,
            params,
            input.prompt_tokens,
            input.output_tokens,
            &input.state.output_counts,
            seen,
        );
        penalised.as_slice()
    } else {
        raw
    };
    if params.is_greedy() {
        return math::argmax(logits);
    }
    let u = input.state.draw_uniform();
    // Only a row without one finite logit has nothing to draw from; the
    // argmax (token 0 at worst) keeps the request going instead of crashing.
    truncation::truncate(logits, params, truncate)
        .pick(u)
        .unwrap_or_else(|| math::argmax(raw))
}
