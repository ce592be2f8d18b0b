//! The scheduler's KV bookkeeping: growing a sequence's block table,
//! prefix-cache hits on admission, preemption, and registering full blocks.

use super::Scheduler;
use crate::kv_cache::{extend_block_hashes, BlockPool};
use crate::sequence::{SeqId, SeqStatus, Sequence};

impl Scheduler {
    fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.config.block_size)
    }

    /// Gives running sequence `id` blocks for `n` more tokens, preempting the
    /// newest running sequences while the pool is short. False when `id`
    /// itself had to be preempted.
    pub(super) fn grow_or_preempt(
        &mut self,
        id: SeqId,
        n: usize,
        preempted: &mut Vec<SeqId>,
    ) -> bool {
        loop {
            let seq = &self.seqs[&id];
            let need = self
                .blocks_for(seq.num_computed + n)
                .saturating_sub(seq.block_table.len());
            if let Some(new) = self.pool.allocate(need) {
                self.seqs
                    .get_mut(&id)
                    .expect("running ids exist")
                    .block_table
                    .extend(new);
                return true;
            }
            let victim = *self.running.last().expect("id is running");
            self.preempt(victim);
            preempted.push(victim);
            if victim == id {
                return false;
            }
        }
    }

    /// Frees a running sequence's blocks and puts it back at the head of the
    /// queue; its tokens (prompt and output so far) are recomputed later.
    fn preempt(&mut self, id: SeqId) {
        self.running.retain(|&r| r != id);
        let seq = self.seqs.get_mut(&id).expect("running ids exist");
        self.pool
            .release(seq.block_table.iter().rev())
            .expect("a sequence holds each of its blocks once");
        seq.block_table.clear();
        seq.num_computed = 0;
        seq.num_cached_blocks = 0;
        seq.status = SeqStatus::Waiting;
        seq.num_preemptions += 1;
        self.num_preemptions += 1;
        self.waiting.push_front(id);
    }

    /// Takes waiting sequence `id` in: reuses cached prefix blocks, allocates
    /// the rest for up to `budget` new tokens. Returns the tokens scheduled,
    /// or `None` (and changes nothing) when the pool cannot hold them.
    pub(super) fn admit(&mut self, id: SeqId, budget: usize) -> Option<usize> {
        let bs = self.config.block_size;
        let seq = self.seqs.get_mut(&id).expect("waiting ids exist");
        // The last token is always recomputed: its logits are needed.
        let lookup_tokens = seq.tokens.len() - 1;
        extend_block_hashes(&mut seq.block_hashes, &seq.tokens, bs);
        let usable = (lookup_tokens / bs).min(seq.block_hashes.len());
        let hits = self.pool.lookup(&seq.block_hashes[..usable]);
        let cached_tokens = hits.len() * bs;
        let n = (seq.tokens.len() - cached_tokens).min(budget);
        let need = (cached_tokens + n).div_ceil(bs) - hits.len();
        let new = self.take_blocks(&hits, need)?;
        let seq = self.seqs.get_mut(&id).expect("waiting ids exist");
        if seq.num_preemptions == 0 {
            self.pool
                .record_query(seq.prompt_len, cached_tokens.min(seq.prompt_len));
            seq.num_cached_prompt_tokens = cached_tokens.min(seq.prompt_len);
        }
        seq.num_cached_blocks = hits.len();
        seq.block_table = hits;
        seq.block_table.extend(new);
        seq.num_computed = cached_tokens;
        seq.first_scheduled
            .get_or_insert_with(std::time::Instant::now);
        Some(n)
    }
}

impl Scheduler {
    /// Shares the prefix-cache `hits` and allocates `need` new blocks, or
    /// changes nothing and returns `None` when the pool cannot do both.
    pub(super) fn take_blocks(&mut self, hits: &[u32], need: usize) -> Option<Vec<u32>> {
        // Hits that sit free count against the pool once we take them.
        let revived = hits
            .iter()
            .filter(|&&b| self.pool.ref_count(b) == 0)
            .count();
        if self.pool.num_free() < need + revived {
            return None;
        }
        for &b in hits {
            self.pool.share(b).expect("lookup returns pool blocks");
        }
        Some(self.pool.allocate(need).expect("room checked above"))
    }
}

/// Registers the blocks of `seq` that became full and computed.
pub(super) fn cache_full_blocks(pool: &mut BlockPool, seq: &mut Sequence, block_size: usize) {
    let full = seq.num_computed / block_size;
    if full <= seq.num_cached_blocks {
        return;
    }
    extend_block_hashes(
        &mut seq.block_hashes,
        &seq.tokens[..full * block_size],
        block_size,
    );
    let start = seq.num_cached_blocks;
    let parent = start.checked_sub(1).map(|p| seq.block_hashes[p]);
    let new: Vec<(u32, u64)> = (start..full)
        .map(|b| (seq.block_table[b], seq.block_hashes[b]))
        .collect();
    pool.cache(&new, parent);
    seq.num_cached_blocks = full;
}
