//! Scheduling for disaggregated requests: admitting a decode-side sequence
//! whose prompt KV is remote (allocate, reuse local prefix hits, ask for
//! the rest), finishing its load, and detaching a prefill-side sequence's
//! blocks into a lease.

use super::{blocks, Scheduler};
use crate::kv_cache::{extend_block_hashes, BlockHash};
use crate::kv_handoff::KvLoad;
use crate::sequence::{KvHandoff, SeqId, SeqStatus};

/// What admitting a remote-KV sequence did.
pub(super) enum RemoteAdmit {
    /// Every prompt block was cached here: it decodes this step.
    Ready,
    /// Blocks allocated; the listed pull was queued.
    Loading,
}

impl Scheduler {
    /// Takes waiting sequence `id` (with `KvHandoff::Load`) in, or returns
    /// `None` and changes nothing when the pool cannot hold it.
    pub(super) fn admit_remote(&mut self, id: SeqId) -> Option<RemoteAdmit> {
        let bs = self.config.block_size;
        let seq = self.seqs.get_mut(&id).expect("waiting ids exist");
        let prompt_len = seq.prompt_len;
        extend_block_hashes(&mut seq.block_hashes, &seq.tokens[..prompt_len], bs);
        // Unlike a local prefill no prompt token needs recomputing: the
        // first token was already sampled remotely.
        let hits = self.pool.lookup(&seq.block_hashes[..prompt_len / bs]);
        let need = (seq.tokens.len()).div_ceil(bs) - hits.len();
        let new = self.take_blocks(&hits, need)?;
        let seq = self.seqs.get_mut(&id).expect("waiting ids exist");
        let cached = hits.len() * bs;
        self.pool.record_query(prompt_len, cached);
        seq.num_cached_prompt_tokens = cached;
        seq.num_cached_blocks = hits.len();
        seq.block_table = hits;
        seq.block_table.extend(new);
        seq.first_scheduled
            .get_or_insert_with(std::time::Instant::now);
        let KvHandoff::Load { remote, .. } = std::mem::take(&mut seq.handoff) else {
            unreachable!("admit_remote is only called for KvHandoff::Load");
        };
        let prompt_blocks = prompt_len.div_ceil(bs);
        let reused = seq.num_cached_blocks;
        let pairs: Vec<(u32, u32)> = (reused..prompt_blocks)
            .map(|i| (remote.block_ids[i], seq.block_table[i]))
            .collect();
        if pairs.is_empty() {
            seq.num_computed = prompt_len;
            return Some(RemoteAdmit::Ready);
        }
        seq.num_computed = cached;
        seq.status = SeqStatus::LoadingKv;
        self.loading.push(id);
        self.kv_loads.push(KvLoad {
            seq: id,
            remote,
            pairs,
            reused_blocks: reused,
        });
        Some(RemoteAdmit::Loading)
    }

    /// Pulls the scheduler queued since the last call.
    pub fn take_kv_loads(&mut self) -> Vec<KvLoad> {
        std::mem::take(&mut self.kv_loads)
    }

    pub fn num_loading(&self) -> usize {
        self.loading.len()
    }

    /// A pull ended. On success the prompt is in the cache; on failure the
    /// engine computes the missing blocks itself (the sequence runs like a
    /// preempted one, from its locally cached prefix).
    pub fn kv_loaded(&mut self, id: SeqId, ok: bool) {
        if let Some(blocks) = self.orphaned_loads.remove(&id) {
            // Aborted while loading: only now may its blocks be reused.
            self.pool
                .release(blocks.iter().rev())
                .expect("an orphaned load holds each block once");
            return;
        }
        let Some(seq) = self.seqs.get_mut(&id) else {
            return;
        };
        if seq.status != SeqStatus::LoadingKv {
            return;
        }
        self.loading.retain(|&l| l != id);
        if ok {
            seq.num_computed = seq.prompt_len;
            blocks::cache_full_blocks(&mut self.pool, seq, self.config.block_size);
        }
        seq.status = SeqStatus::Running;
        self.running.push(id);
    }

    /// Ends prefill-side sequence `id` but keeps its blocks held: returns
    /// its block table, prompt length and the hashes of its full prompt
    /// blocks; the caller owns the references and must give them back with
    /// [`Scheduler::release_blocks`].
    pub fn detach(&mut self, id: SeqId) -> Option<(Vec<u32>, usize, Vec<BlockHash>)> {
        let mut seq = self.seqs.remove(&id)?;
        self.running.retain(|&r| r != id);
        self.waiting.retain(|&w| w != id);
        let full = seq.prompt_len / self.config.block_size;
        extend_block_hashes(
            &mut seq.block_hashes,
            &seq.tokens[..full * self.config.block_size],
            self.config.block_size,
        );
        seq.block_hashes.truncate(full);
        Some((seq.block_table, seq.prompt_len, seq.block_hashes))
    }

    /// Drops the references `detach` handed out.
    pub fn release_blocks(&mut self, blocks: &[u32]) {
        self.pool
            .release(blocks.iter().rev())
            .expect("a lease holds each of its blocks once");
    }
}
