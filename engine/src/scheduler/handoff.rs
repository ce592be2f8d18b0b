//! Scheduling for disaggregated requests: queueing the pull of a
//! decode-side sequence's remote prompt KV (after [`Scheduler::admit`]
//! allocated its blocks and reused local prefix hits), finishing that
//! load, and detaching a prefill-side sequence's blocks into a lease.

use super::blocks::Admitted;
use super::Scheduler;
use crate::kv_cache::BlockChecksum;
use crate::kv_handoff::{BlockPair, KvHandle, KvLoad};
use std::time::Instant;

use crate::sequence::{KvLoadTimes, SeqId, SeqStatus};

impl Scheduler {
    /// Queues the pull of admitted remote sequence `id`'s prompt blocks
    /// past its first `reused` (found in the prefix cache here).
    pub(super) fn start_load(&mut self, id: SeqId, reused: usize) -> Admitted {
        let seq = self.seqs.get_mut(&id).expect("admitted ids exist");
        let remote = seq
            .take_remote_kv()
            .expect("start_load is only called for KvHandoff::Load");
        let prompt_blocks = seq.prompt_len().div_ceil(self.config.block_size);
        let pairs: Vec<BlockPair> = (reused..prompt_blocks)
            .map(|i| BlockPair {
                remote: remote.block_ids[i],
                local: seq.block_table()[i],
                checksum: remote.block_checksums[i],
            })
            .collect();
        if pairs.is_empty() {
            // Every prompt block was cached here: the token sampled
            // remotely is decoded this step.
            seq.set_status(SeqStatus::Running);
            return Admitted::Run(1);
        }
        seq.set_status(SeqStatus::LoadingKv);
        seq.set_kv_load_times(KvLoadTimes {
            started: Some(Instant::now()),
            finished: None,
        });
        self.loading.push(id);
        self.kv_loads.push(KvLoad {
            seq: id,
            remote,
            pairs,
            reused_blocks: reused,
        });
        Admitted::Loading
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
        if let Some(mut blocks) = self.orphaned_loads.remove(&id) {
            // Aborted while loading: only now may its blocks be reused.
            self.kv.free(&mut blocks);
            return;
        }
        let Some(seq) = self.seqs.get_mut(&id) else {
            return;
        };
        if seq.status() != SeqStatus::LoadingKv {
            return;
        }
        self.loading.retain(|&l| l != id);
        let times = seq.kv_load_times();
        seq.set_kv_load_times(KvLoadTimes {
            finished: Some(Instant::now()),
            ..times
        });
        if ok {
            let prompt_len = seq.prompt_len();
            seq.set_num_computed(prompt_len);
            self.kv.cache_blocks(seq.blocks_mut(), prompt_len);
        }
        seq.set_status(SeqStatus::Running);
        self.running.push(id);
    }

    /// Ends prefill-side sequence `id` but keeps its blocks held under lease
    /// `id` until [`Scheduler::release_lease`], and returns the handle a
    /// decode worker pulls them by (its `agent` left for the worker to fill
    /// in). `block_checksums` are the blocks' contents now, one per entry
    /// of the sequence's block table.
    pub fn detach(&mut self, id: SeqId, block_checksums: Vec<BlockChecksum>) -> Option<KvHandle> {
        let mut seq = self.seqs.remove(&id)?;
        self.running.retain(|&r| r != id);
        self.waiting.retain(|&w| w != id);
        let blocks = seq.take_blocks();
        let full = seq.prompt_len() / self.config.block_size;
        let handle = KvHandle {
            agent: Default::default(),
            lease: id,
            block_ids: blocks.table().to_vec(),
            block_hashes: blocks.hashes()[..full].to_vec(),
            block_checksums,
            num_tokens: seq.prompt_len(),
        };
        self.kv.hold(id, blocks);
        Some(handle)
    }

    /// Frees a lease's blocks (they stay in the prefix cache). False when
    /// the lease is unknown (already released or expired).
    pub fn release_lease(&mut self, lease: u64) -> bool {
        self.kv.release(lease)
    }
}
