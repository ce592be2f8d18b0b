//! The internal worker API's messages, shared by the worker (server side)
//! and the router (client side) so the two cannot drift. Streams are
//! newline-delimited JSON, one [`StreamLine`] per line.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tandem_engine::kv_cache::{BlockHash, KvEvent};
use tandem_engine::kv_handoff::KvHandle;
use tandem_engine::runner::ArenaInfo;
use tandem_engine::sampler::SampledToken;
use tandem_engine::sequence::FinishReason;
use tandem_engine::serving::{RequestOutput, ServingError, ServingRequest, Timings};

/// Header carrying `--internal-token`.
pub const TOKEN_HEADER: &str = "x-tandem-internal-token";

/// Tokens one step produced for one request, without text: the router
/// detokenizes the whole sequence itself, so text never depends on which
/// worker produced which token.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TokenOutput {
    pub samples: Vec<SampledToken>,
    pub finish_reason: Option<FinishReason>,
    /// Prompt tokens this worker found in its prefix cache.
    pub cached_tokens: usize,
    /// On a request's last line from this worker (its finish, or a prefill
    /// worker's handoff): where the time went here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings: Option<WireTimings>,
}

impl From<&RequestOutput> for TokenOutput {
    fn from(o: &RequestOutput) -> Self {
        TokenOutput {
            samples: o.samples.clone(),
            finish_reason: o.finish_reason,
            cached_tokens: o.usage.cached_tokens,
            timings: o.timings.as_ref().map(WireTimings::from),
        }
    }
}

/// [`Timings`] in seconds, as a worker reports them to the router.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct WireTimings {
    pub queue_s: f64,
    pub prefill_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_transfer_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_decode_step_s: Option<f64>,
}

impl WireTimings {
    /// Replaces `t`'s split (queue, prefill, KV transfer, first decode
    /// step) with these; `t`'s time to first token and end to end stay.
    pub fn apply_to(&self, t: &mut Timings) {
        let secs = |s: f64| Duration::from_secs_f64(s.max(0.0));
        t.queue = secs(self.queue_s);
        t.prefill = secs(self.prefill_s);
        t.kv_transfer = self.kv_transfer_s.map(secs);
        t.first_decode_step = self.first_decode_step_s.map(secs);
    }
}

impl From<&Timings> for WireTimings {
    fn from(t: &Timings) -> Self {
        WireTimings {
            queue_s: t.queue.as_secs_f64(),
            prefill_s: t.prefill.as_secs_f64(),
            kv_transfer_s: t.kv_transfer.map(|d| d.as_secs_f64()),
            first_decode_step_s: t.first_decode_step.map(|d| d.as_secs_f64()),
        }
    }
}

/// Why a worker could not run a request.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request itself is unacceptable (retrying elsewhere will not help).
    Rejected,
    /// The engine failed.
    Engine,
    /// The worker is shutting down.
    Shutdown,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WireError {
    pub kind: ErrorKind,
    pub message: String,
}

impl From<&ServingError> for WireError {
    fn from(e: &ServingError) -> Self {
        let kind = match e {
            ServingError::Rejected(_) => ErrorKind::Rejected,
            ServingError::Engine(_) => ErrorKind::Engine,
            ServingError::Shutdown | ServingError::Unavailable(_) => ErrorKind::Shutdown,
        };
        WireError {
            kind,
            message: e.to_string(),
        }
    }
}

impl From<WireError> for ServingError {
    fn from(e: WireError) -> Self {
        match e.kind {
            ErrorKind::Rejected => ServingError::Rejected(e.message),
            ErrorKind::Engine => ServingError::Engine(e.message),
            ErrorKind::Shutdown => ServingError::Shutdown,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum StreamLine {
    Output(TokenOutput),
    Error(WireError),
}

/// `POST /internal/prefill`'s answer: the first token, and where its KV
/// waits (absent when the request already finished): the engine's own
/// handle, with the prefill worker's agent metadata filled in.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PrefillResponse {
    pub output: TokenOutput,
    pub kv: Option<KvHandle>,
}

/// `POST /internal/decode`: go on from tokens sampled on a prefill worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DecodeRequest {
    pub request: ServingRequest,
    pub output_tokens: Vec<u32>,
    pub kv: KvHandle,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct ReleaseRequest {
    pub lease: u64,
}

/// `GET /internal/kv-events` lines: first a snapshot, then changes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum KvEventLine {
    Snapshot { hashes: Vec<BlockHash> },
    Event(KvEvent),
}

/// `GET /internal/status`: what the router scores and checks.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WorkerStatus {
    pub role: String,
    pub healthy: bool,
    pub block_size: usize,
    pub num_running: usize,
    pub num_waiting: usize,
    pub kv_usage: f64,
    pub num_kv_leases: usize,
    pub num_loading_kv: usize,
    /// Pulls refused for a checksum mismatch since the worker started.
    #[serde(default)]
    pub num_kv_pulls_discarded: u64,
    /// Where the KV cache lives (`cpu` or `cuda:N (<GPU>)`), its size, and
    /// whose memory it is (`memory`: `transfer-agent (UCX-allocated)` for a
    /// CPU prefill/decode worker, `process` for a `both` worker).
    #[serde(default)]
    pub kv_arena: Option<ArenaInfo>,
}
