//! The scheduler's KV bookkeeping over the [`crate::kv_cache::KvCacheManager`]:
//! admitting a waiting sequence (prefix-cache hits, then new blocks),
//! growing a running one, and preemption when the pool runs short.

use super::Scheduler;
use crate::kv_cache::ComputedBlocks;
use crate::sequence::{KvHandoff, SeqId, SeqStatus};

/// What admitting a waiting sequence did.
pub(super) enum Admitted {
    /// It runs this step, with this many of its tokens.
    Run(usize),
    /// Its blocks are allocated and a pull of its remote prompt KV is
    /// queued; it runs once the pull ends.
    Loading,
}

impl Scheduler {
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
            let seq = self.seqs.get_mut(&id).expect("running ids exist");
            let num_tokens = seq.num_computed() + n;
            if self
                .kv
                .allocate_slots(seq.blocks_mut(), num_tokens, ComputedBlocks::none())
            {
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
        seq.reset_for_recompute(&mut self.kv);
        self.num_preemptions += 1;
        self.waiting.push_front(id);
    }

    /// Takes waiting sequence `id` in: shares the blocks of its cached
    /// prefix and allocates the rest, for up to `budget` new tokens of a
    /// prompt computed here, or for every token of a prompt whose KV is on a
    /// prefill worker (then the pull of what is not cached here is queued).
    /// `None`, with nothing changed, when the pool cannot hold them.
    pub(super) fn admit(&mut self, id: SeqId, budget: usize) -> Option<Admitted> {
        let seq = self.seqs.get_mut(&id).expect("waiting ids exist");
        let remote = matches!(seq.handoff(), KvHandoff::Load { .. });
        // A local prompt always recomputes its last token, as its logits are
        // needed; a remote one had its first token sampled on the prefill
        // worker, so every full prompt block may come from the cache.
        let max_hit = if remote {
            seq.prompt_len()
        } else {
            seq.num_tokens() - 1
        };
        let computed = self.kv.computed_blocks(seq.blocks(), max_hit);
        let (cached, hit_blocks) = (computed.num_tokens(), computed.len());
        // A remote sequence needs slots for all its tokens at once.
        let n = if remote {
            seq.num_tokens() - cached
        } else {
            (seq.num_tokens() - cached).min(budget)
        };
        if !self
            .kv
            .allocate_slots(seq.blocks_mut(), cached + n, computed)
        {
            return None;
        }
        if let Some(hit) = seq.admit(cached) {
            self.kv.record_query(seq.prompt_len(), hit);
        }
        if remote {
            return Some(self.start_load(id, hit_blocks));
        }
        seq.set_status(SeqStatus::Running);
        Some(Admitted::Run(n))
    }
}
