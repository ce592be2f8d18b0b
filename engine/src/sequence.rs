//! A request as the scheduler sees it: its tokens (prompt, then output),
//! how many of them are in the KV cache, its block table and its stop rules.

use std::time::Instant;

use crate::guided::Guide;
use crate::kv_cache::{BlockId, KvCacheManager, SeqBlocks};
use crate::kv_handoff::KvHandle;
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
        remote: KvHandle,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqStatus {
    Waiting,
    Running,
    /// Blocks allocated, prompt KV being pulled from a remote worker.
    LoadingKv,
}

/// A request inside the engine. The scheduler moves it between states
/// through the methods below; its KV blocks change only through the
/// [`KvCacheManager`].
pub struct Sequence {
    id: SeqId,
    /// Prompt followed by every sampled token.
    tokens: Vec<u32>,
    prompt_len: usize,
    /// Leading tokens whose K/V are in the cache.
    num_computed: usize,
    /// Its blocks, and the hashes of its full blocks (kept current here).
    blocks: SeqBlocks,
    block_size: usize,
    /// Prompt tokens served from the prefix cache at first scheduling.
    num_cached_prompt_tokens: usize,
    params: SamplingParams,
    sampling: SamplingState,
    /// Structured output: the grammar state, when the request has one.
    guide: Option<Guide>,
    stop: StopConditions,
    status: SeqStatus,
    num_preemptions: u32,
    /// When the scheduler first gave it a step (end of its queue time).
    first_scheduled: Option<Instant>,
    /// Hold (prefill role) or the remote KV still to load (decode role);
    /// back to `None` once the load is queued.
    handoff: KvHandoff,
    /// Decode role: when the pull of its prompt KV started and ended.
    kv_load: KvLoadTimes,
}

/// When a decode-side sequence's prompt KV pull started and ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvLoadTimes {
    pub started: Option<Instant>,
    pub finished: Option<Instant>,
}

impl Sequence {
    /// A waiting sequence whose blocks hold `block_size` tokens each;
    /// `guide` is its compiled constraint when `req.params.guided` is set.
    pub fn new(
        id: SeqId,
        req: Request,
        mut guide: Option<Guide>,
        fallback_seed: u64,
        block_size: usize,
    ) -> Self {
        let prompt_len = req.prompt_tokens.len();
        let mut tokens = req.prompt_tokens;
        // Tokens sampled on a prefill worker: the RNG and the grammar
        // resume after them.
        let sampling = match &req.handoff {
            KvHandoff::Load { output_tokens, .. } => {
                tokens.extend_from_slice(output_tokens);
                if let Some(g) = guide.as_mut() {
                    output_tokens.iter().for_each(|&t| g.consume(t));
                }
                SamplingState::resume(&req.params, fallback_seed, output_tokens)
            }
            _ => SamplingState::new(&req.params, fallback_seed),
        };
        let mut blocks = SeqBlocks::default();
        blocks.hash_full_blocks(&tokens, block_size);
        Sequence {
            id,
            prompt_len,
            tokens,
            num_computed: 0,
            blocks,
            block_size,
            num_cached_prompt_tokens: 0,
            params: req.params,
            sampling,
            guide,
            stop: req.stop,
            status: SeqStatus::Waiting,
            num_preemptions: 0,
            first_scheduled: None,
            handoff: req.handoff,
            kv_load: KvLoadTimes::default(),
        }
    }

    pub fn id(&self) -> SeqId {
        self.id
    }

    /// Prompt followed by every sampled token.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn num_tokens(&self) -> usize {
        self.tokens.len()
    }

    pub fn prompt_len(&self) -> usize {
        self.prompt_len
    }

    pub fn output_tokens(&self) -> &[u32] {
        &self.tokens[self.prompt_len..]
    }

    pub fn num_output_tokens(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }

    /// Leading tokens whose K/V are in the cache.
    pub fn num_computed(&self) -> usize {
        self.num_computed
    }

    /// Tokens still to run through the model before the next sample.
    pub fn num_uncomputed(&self) -> usize {
        self.tokens.len() - self.num_computed
    }

    /// Its blocks in token order: block `i` holds tokens `i * block_size..`.
    pub fn block_table(&self) -> &[BlockId] {
        self.blocks.table()
    }

    pub fn blocks(&self) -> &SeqBlocks {
        &self.blocks
    }

    /// For the [`KvCacheManager`], which alone changes them.
    pub(crate) fn blocks_mut(&mut self) -> &mut SeqBlocks {
        &mut self.blocks
    }

    /// Prompt tokens served from the prefix cache at first scheduling.
    pub fn num_cached_prompt_tokens(&self) -> usize {
        self.num_cached_prompt_tokens
    }

    pub fn status(&self) -> SeqStatus {
        self.status
    }

    pub fn num_preemptions(&self) -> u32 {
        self.num_preemptions
    }

    /// When the scheduler first gave it a step (end of its queue time).
    pub fn first_scheduled(&self) -> Option<Instant> {
        self.first_scheduled
    }

    pub fn kv_load_times(&self) -> KvLoadTimes {
        self.kv_load
    }

    pub(crate) fn set_kv_load_times(&mut self, times: KvLoadTimes) {
        self.kv_load = times;
    }

    pub fn handoff(&self) -> &KvHandoff {
        &self.handoff
    }

    pub(crate) fn set_status(&mut self, status: SeqStatus) {
        self.status = status;
    }

    /// Its first `n` tokens' K/V are now in the cache.
    pub(crate) fn set_num_computed(&mut self, n: usize) {
        debug_assert!(n <= self.tokens.len());
        self.num_computed = n;
    }

    /// The scheduler took it in with the K/V of its first `num_cached`
    /// tokens found in the prefix cache, so it computes from there. On its
    /// first admission only (a preempted sequence is no new query), returns
    /// the prompt tokens that hit.
    pub(crate) fn admit(&mut self, num_cached: usize) -> Option<usize> {
        self.num_computed = num_cached;
        self.first_scheduled.get_or_insert_with(Instant::now);
        if self.num_preemptions > 0 {
            return None;
        }
        self.num_cached_prompt_tokens = num_cached.min(self.prompt_len);
        Some(self.num_cached_prompt_tokens)
    }

    /// Preemption by recompute: gives its blocks back and sends it back to
    /// waiting; its tokens (prompt and output so far) are computed again
    /// when it is next admitted.
    pub(crate) fn reset_for_recompute(&mut self, kv: &mut KvCacheManager) {
        kv.free(&mut self.blocks);
        self.num_computed = 0;
        self.status = SeqStatus::Waiting;
        self.num_preemptions += 1;
    }

    /// Moves its blocks out (the caller now owns their references).
    pub(crate) fn take_blocks(&mut self) -> SeqBlocks {
        std::mem::take(&mut self.blocks)
    }

    /// The remote KV a decode-side sequence still has to load, leaving
    /// `KvHandoff::None`; `None` for any other role.
    pub(crate) fn take_remote_kv(&mut self) -> Option<KvHandle> {
        match std::mem::take(&mut self.handoff) {
            KvHandoff::Load { remote, .. } => Some(remote),
            other => {
                self.handoff = other;
                None
            }
        }
    }

    /// What the sampler needs to pick this sequence's next token.
    pub fn sample_input(&mut self) -> SampleInput<'_> {
        let (prompt, output) = self.tokens.split_at(self.prompt_len);
        SampleInput {
            params: &self.params,
            state: &mut self.sampling,
            prompt_tokens: prompt,
            output_tokens: output,
            guide: self.guide.as_mut(),
        }
    }

    pub fn has_guide(&self) -> bool {
        self.guide.is_some()
    }

    /// Computes the grammar's mask for the next token, if it has one (the
    /// engine calls this while the model runs).
    pub fn prepare_guide(&mut self) {
        if let Some(g) = self.guide.as_mut() {
            g.prepare();
        }
    }

    /// Appends a sampled token and says whether the sequence is now done.
    pub fn append(&mut self, token: &SampledToken, eos_token_ids: &[u32]) -> Option<FinishReason> {
        self.tokens.push(token.token);
        self.blocks.hash_full_blocks(&self.tokens, self.block_size);
        self.sampling.record_output(token.token);
        // A complete grammar allows only EOS, so this token is that EOS:
        // it ends the sequence even under `ignore_eos`.
        let mut grammar_failed = false;
        let grammar_done = self.guide.as_mut().is_some_and(|g| {
            let was_complete = g.is_finished();
            g.consume(token.token);
            grammar_failed = g.failure().is_some();
            was_complete
        });
        if grammar_failed {
            // The output no longer matches its constraint: ended as
            // aborted (logged with the reason), never as a success.
            return Some(FinishReason::Abort);
        }
        let produced = self.num_output_tokens();
        let may_stop = produced >= self.stop.min_tokens;
        let is_eos = !self.stop.ignore_eos && eos_token_ids.contains(&token.token);
        if grammar_done || (may_stop && (is_eos || self.stop.stop_token_ids.contains(&token.token)))
        {
            Some(FinishReason::Stop)
        } else if produced >= self.stop.max_tokens {
            Some(FinishReason::Length)
        } else {
            None
        }
    }
}
