//! A request as the scheduler sees it: its tokens (prompt, then output),
//! how many of them are in the KV cache, its block table and its stop rules.

use crate::kv_cache::BlockHash;
use crate::sampler::{SampleInput, SampledToken, SamplingParams, SamplingState};

pub type SeqId = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// An end-of-sequence token, a stop token id or a stop string.
    Stop,
    /// `max_tokens` was reached.
    Length,
    /// The client went away or asked to stop.
    Abort,
}

/// When a sequence ends, besides stop strings (matched on text, outside the core).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StopConditions {
    pub max_tokens: usize,
    /// EOS and stop ids are ignored until this many tokens were generated.
    pub min_tokens: usize,
    pub ignore_eos: bool,
    pub stop_token_ids: Vec<u32>,
}

/// What a caller submits to the engine.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Request {
    pub prompt_tokens: Vec<u32>,
    pub params: SamplingParams,
    pub stop: StopConditions,
    /// Prefill/decode disaggregation: what this engine does with the
    /// prompt's KV besides computing it (never sent over the wire: the
    /// worker API carries it in its own fields).
    #[serde(skip)]
    pub handoff: KvHandoff,
}

/// The disaggregated roles a request can play in one engine.
#[derive(Clone, Debug, Default)]
pub enum KvHandoff {
    /// Colocated: compute the prompt and decode here.
    #[default]
    None,
    /// Prefill worker: compute the prompt, sample the first token, then end
    /// the sequence but keep its blocks pinned under a lease until the
    /// decode worker has pulled them (or the lease is released).
    Hold,
    /// Decode worker: the prompt's KV lives on another worker and the first
    /// `output_tokens` were already sampled there; pull the blocks this
    /// engine does not have cached, then go on decoding.
    Load {
        output_tokens: Vec<u32>,
        remote: RemoteKv,
    },
}

/// Where a prompt's KV blocks live on another worker. The engine only uses
/// `block_ids`; `source` is for the transfer layer (the peer's agent
/// metadata).
#[derive(Clone, Debug)]
pub struct RemoteKv {
    pub source: std::sync::Arc<Vec<u8>>,
    pub lease: u64,
    /// The remote block table covering the prompt, block `i` = tokens
    /// `i * block_size..`.
    pub block_ids: Vec<u32>,
    /// Hashes of the prompt's full blocks as the remote worker computed
    /// them; checked against this worker's before anything is pulled.
    pub block_hashes: Vec<crate::kv_cache::BlockHash>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqStatus {
    Waiting,
    Running,
    /// Blocks allocated, prompt KV being pulled from a remote worker.
    LoadingKv,
}

pub struct Sequence {
    pub id: SeqId,
    /// Prompt followed by every sampled token.
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
    /// Leading tokens whose K/V are in the cache.
    pub num_computed: usize,
    pub block_table: Vec<u32>,
    /// Hashes of the full blocks of `tokens` computed so far.
    pub block_hashes: Vec<BlockHash>,
    /// How many leading blocks are registered in the prefix cache.
    pub num_cached_blocks: usize,
    /// Prompt tokens served from the prefix cache at first scheduling.
    pub num_cached_prompt_tokens: usize,
    pub params: SamplingParams,
    pub sampling: SamplingState,
    pub stop: StopConditions,
    pub status: SeqStatus,
    pub num_preemptions: u32,
    /// When the scheduler first gave it a step (end of its queue time).
    pub first_scheduled: Option<std::time::Instant>,
    /// Hold (prefill role) or the remote KV still to load (decode role);
    /// back to `None` once loaded.
    pub handoff: KvHandoff,
}

impl Sequence {
    pub fn new(id: SeqId, req: Request, fallback_seed: u64) -> Self {
        let prompt_len = req.prompt_tokens.len();
        let mut tokens = req.prompt_tokens;
        // Tokens sampled on a prefill worker: the RNG resumes after them.
        let sampling = match &req.handoff {
            KvHandoff::Load { output_tokens, .. } => {
                tokens.extend_from_slice(output_tokens);
                SamplingState::resume(&req.params, fallback_seed, output_tokens)
            }
            _ => SamplingState::new(&req.params, fallback_seed),
        };
        Sequence {
            id,
            prompt_len,
            tokens,
            num_computed: 0,
            block_table: Vec::new(),
            block_hashes: Vec::new(),
            num_cached_blocks: 0,
            num_cached_prompt_tokens: 0,
            params: req.params,
            sampling,
            stop: req.stop,
            status: SeqStatus::Waiting,
            num_preemptions: 0,
            first_scheduled: None,
            handoff: req.handoff,
        }
    }

    pub fn output_tokens(&self) -> &[u32] {
        &self.tokens[self.prompt_len..]
    }

    pub fn num_output_tokens(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }

    /// Tokens still to run through the model before the next sample.
    pub fn num_uncomputed(&self) -> usize {
        self.tokens.len() - self.num_computed
    }

    /// What the sampler needs to pick this sequence's next token.
    pub fn sample_input(&mut self) -> SampleInput<'_> {
        let (prompt, output) = self.tokens.split_at(self.prompt_len);
        SampleInput {
            params: &self.params,
            state: &mut self.sampling,
            prompt_tokens: prompt,
            output_tokens: output,
        }
    }

    /// Appends a sampled token and says whether the sequence is now done.
    pub fn append(&mut self, token: &SampledToken, eos_token_ids: &[u32]) -> Option<FinishReason> {
        self.tokens.push(token.token);
        self.sampling.record_output(token.token);
        let produced = self.num_output_tokens();
        let may_stop = produced >= self.stop.min_tokens;
        let is_eos = !self.stop.ignore_eos && eos_token_ids.contains(&token.token);
        if may_stop && (is_eos || self.stop.stop_token_ids.contains(&token.token)) {
            Some(FinishReason::Stop)
        } else if produced >= self.stop.max_tokens {
            Some(FinishReason::Length)
        } else {
            None
        }
    }
}
