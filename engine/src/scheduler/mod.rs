//! The scheduler decides, each step, which sequences run and how many of
//! their tokens: running sequences first (decodes and unfinished prompt
//! chunks), then waiting ones in arrival order, all under a token budget
//! (chunked prefill) and a sequence cap. When the KV cache runs out it
//! preempts the newest running sequence by recompute: its blocks are freed
//! and it waits again at the front of the queue, never dropped.
//! The result is a plain [`SchedulerOutput`] the model runner executes.

mod blocks;
mod handoff;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet, VecDeque};

use blocks::Admitted;

use crate::batch::{ForwardBatch, SeqChunk};
use crate::kv_cache::{KvCacheManager, KvEvent, SeqBlocks};
use crate::kv_handoff::KvLoad;
use crate::sampler::SampleInput;
use crate::sequence::{FinishReason, SeqId, SeqStatus, Sequence};

#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    pub max_num_seqs: usize,
    pub max_num_batched_tokens: usize,
    pub block_size: usize,
    pub enable_prefix_caching: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_num_seqs: 256,
            max_num_batched_tokens: 2048,
            block_size: 16,
            enable_prefix_caching: true,
        }
    }
}

/// One sequence's share of a step: tokens `start..start + len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScheduledChunk {
    pub id: SeqId,
    pub start: usize,
    pub len: usize,
    /// The chunk reaches the end of the known tokens, so a token is sampled.
    pub sample: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SchedulerOutput {
    pub chunks: Vec<ScheduledChunk>,
    /// Sequences sent back to waiting this step (their KV is recomputed later).
    pub preempted: Vec<SeqId>,
}

impl SchedulerOutput {
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    pub fn num_tokens(&self) -> usize {
        self.chunks.iter().map(|c| c.len).sum()
    }
}

pub struct Scheduler {
    config: SchedulerConfig,
    kv: KvCacheManager,
    seqs: HashMap<SeqId, Sequence>,
    waiting: VecDeque<SeqId>,
    running: Vec<SeqId>,
    /// Decode-side sequences whose prompt KV is being pulled.
    loading: Vec<SeqId>,
    /// Pulls to start, taken by the engine after each `schedule`.
    kv_loads: Vec<KvLoad>,
    /// Blocks of sequences aborted mid-pull: freed when the pull ends, as
    /// the transfer may still be writing into them.
    orphaned_loads: HashMap<SeqId, SeqBlocks>,
    num_preemptions: u64,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig, num_blocks: usize) -> Self {
        let kv = KvCacheManager::new(num_blocks, config.block_size, config.enable_prefix_caching);
        Scheduler {
            config,
            kv,
            seqs: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            loading: Vec::new(),
            kv_loads: Vec::new(),
            orphaned_loads: HashMap::new(),
            num_preemptions: 0,
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Most tokens one sequence may ever hold (prompt + output).
    pub fn token_capacity(&self) -> usize {
        self.kv.num_blocks() * self.config.block_size
    }

    pub fn add(&mut self, seq: Sequence) {
        self.waiting.push_back(seq.id());
        self.seqs.insert(seq.id(), seq);
    }

    pub fn get(&self, id: SeqId) -> Option<&Sequence> {
        self.seqs.get(&id)
    }

    pub fn get_mut(&mut self, id: SeqId) -> Option<&mut Sequence> {
        self.seqs.get_mut(&id)
    }

    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn has_unfinished(&self) -> bool {
        !self.seqs.is_empty()
    }

    pub fn num_preemptions(&self) -> u64 {
        self.num_preemptions
    }

    /// The KV blocks' state: usage, prefix-cache hits, cached hashes, leases.
    pub fn kv_cache(&self) -> &KvCacheManager {
        &self.kv
    }

    pub fn take_kv_events(&mut self) -> Vec<KvEvent> {
        self.kv.take_events()
    }

    /// Plans the next step.
    pub fn schedule(&mut self) -> SchedulerOutput {
        let mut out = SchedulerOutput::default();
        let mut budget = self.config.max_num_batched_tokens;
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let id = self.running[i];
            let n = self.seqs[&id].num_uncomputed().min(budget);
            if n == 0 {
                i += 1;
                continue;
            }
            if !self.grow_or_preempt(id, n, &mut out.preempted) {
                // `id` itself was preempted: the list shrank under it.
                continue;
            }
            out.chunks.push(self.chunk(id, n));
            budget -= n;
            i += 1;
        }
        // Newcomers only when nobody had to make room this step.
        while out.preempted.is_empty()
            && budget > 0
            && self.running.len() + self.loading.len() < self.config.max_num_seqs
        {
            let Some(&id) = self.waiting.front() else {
                break;
            };
            let Some(admitted) = self.admit(id, budget) else {
                break;
            };
            self.waiting.pop_front();
            if let Admitted::Run(n) = admitted {
                self.running.push(id);
                out.chunks.push(self.chunk(id, n));
                budget -= n;
            }
        }
        out
    }

    fn chunk(&self, id: SeqId, len: usize) -> ScheduledChunk {
        let s = &self.seqs[&id];
        ScheduledChunk {
            id,
            start: s.num_computed(),
            len,
            sample: s.num_computed() + len == s.num_tokens(),
        }
    }

    /// The step's model inputs for `out`.
    pub fn forward_batch(&self, out: &SchedulerOutput) -> ForwardBatch {
        let chunks: Vec<SeqChunk> = out
            .chunks
            .iter()
            .map(|c| {
                let s = &self.seqs[&c.id];
                SeqChunk {
                    tokens: &s.tokens()[c.start..c.start + c.len],
                    start: c.start,
                    block_table: s.block_table(),
                    wants_logits: c.sample,
                    all_logits: false,
                }
            })
            .collect();
        ForwardBatch::build(&chunks, self.config.block_size)
    }

    /// Records that the step ran: chunks' tokens are now cached (full blocks
    /// join the prefix cache).
    pub fn mark_computed(&mut self, out: &SchedulerOutput) {
        for c in &out.chunks {
            if let Some(seq) = self.seqs.get_mut(&c.id) {
                seq.set_num_computed(c.start + c.len);
                self.kv.cache_blocks(seq.blocks_mut(), c.start + c.len);
            }
        }
    }

    /// Sampler inputs for `ids` (distinct), in that order.
    pub fn sample_inputs(&mut self, ids: &[SeqId]) -> Vec<SampleInput<'_>> {
        let wanted: HashSet<SeqId> = ids.iter().copied().collect();
        let mut by_id: HashMap<SeqId, SampleInput<'_>> = self
            .seqs
            .iter_mut()
            .filter(|(id, _)| wanted.contains(id))
            .map(|(id, s)| (*id, s.sample_input()))
            .collect();
        ids.iter()
            .map(|id| by_id.remove(id).expect("ids are scheduled and distinct"))
            .collect()
    }

    /// True when one of `ids` follows a structured-output constraint.
    pub fn any_guided(&self, ids: &[SeqId]) -> bool {
        ids.iter()
            .any(|id| self.seqs.get(id).is_some_and(|s| s.has_guide()))
    }

    /// Computes the grammar masks of the sequences in `ids` that have a
    /// constraint, in parallel (the engine runs this beside the forward
    /// pass, so the masks are ready when the logits are).
    pub fn prepare_guides(&mut self, ids: &[SeqId]) {
        use rayon::prelude::*;
        let wanted: HashSet<SeqId> = ids.iter().copied().collect();
        let mut guided: Vec<&mut Sequence> = self
            .seqs
            .iter_mut()
            .filter(|(id, s)| wanted.contains(id) && s.has_guide())
            .map(|(_, s)| s)
            .collect();
        guided.par_iter_mut().for_each(|s| s.prepare_guide());
    }

    /// Removes a sequence (finished, stopped or aborted) and frees its blocks.
    pub fn finish(&mut self, id: SeqId, _reason: FinishReason) -> Option<Sequence> {
        let mut seq = self.seqs.remove(&id)?;
        self.running.retain(|&r| r != id);
        self.waiting.retain(|&w| w != id);
        if seq.status() == SeqStatus::LoadingKv {
            // The pull may still be writing into its blocks.
            self.loading.retain(|&l| l != id);
            self.orphaned_loads.insert(id, seq.take_blocks());
            return Some(seq);
        }
        self.kv.free(seq.blocks_mut());
        Some(seq)
    }
}
