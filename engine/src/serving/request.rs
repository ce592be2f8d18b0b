//! What a serving client submits and what it receives, step by step.

use std::time::Duration;

use crate::kv_handoff::KvHandle;
use crate::sampler::SampledToken;
use crate::sequence::{FinishReason, Request};

/// A request plus what the text side needs: stop strings and detokenization.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ServingRequest {
    pub request: Request,
    pub stop_strings: Vec<String>,
    pub include_stop_str_in_output: bool,
    pub skip_special_tokens: bool,
}

impl ServingRequest {
    pub fn new(request: Request) -> Self {
        ServingRequest {
            request,
            stop_strings: Vec::new(),
            include_stop_str_in_output: false,
            skip_special_tokens: true,
        }
    }
}

/// What ended a request with `finish_reason: "stop"` besides EOS. Serialises
/// as vLLM does: the string itself, or the token id as a number.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum StopReason {
    TokenId(u32),
    Text(String),
}

/// Token accounting for `usage` and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
}

/// Where a finished request's time went.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timings {
    /// Arrival until the scheduler first ran it.
    pub queue: Duration,
    /// First scheduled until its first token (prompt computation).
    pub prefill: Duration,
    /// Arrival to first token.
    pub time_to_first_token: Duration,
    /// Arrival to last token.
    pub e2e: Duration,
    /// Decode role: the pull of the prompt's KV from the prefill worker.
    pub kv_transfer: Option<Duration>,
    /// Decode role: the pulled KV landing until this worker's first token.
    pub first_decode_step: Option<Duration>,
}

/// One update for one request: the tokens sampled since the last update and
/// the text they completed. The last update carries `finish_reason`.
#[derive(Clone, Debug, Default)]
pub struct RequestOutput {
    pub token_ids: Vec<u32>,
    pub samples: Vec<SampledToken>,
    pub text: String,
    pub finish_reason: Option<FinishReason>,
    /// The stop string or stop token that ended it (vLLM's `stop_reason`).
    pub stop_reason: Option<StopReason>,
    pub usage: Usage,
    pub timings: Option<Timings>,
    /// Prefill role: the request ended here after its first token and its
    /// prompt KV is held for a decode worker (`finish_reason` is `None`).
    pub kv_handoff: Option<KvHandle>,
}

/// The engine could not run a request to its end.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ServingError {
    #[error("{0}")]
    Rejected(String),
    #[error("the engine failed while running the request: {0}")]
    Engine(String),
    #[error("the engine has shut down")]
    Shutdown,
    /// Nothing can run the request now (a router without healthy workers);
    /// retrying later may work.
    #[error("{0}")]
    Unavailable(String),
}
