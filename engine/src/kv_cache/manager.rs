//! The KV cache's one interface to the scheduler and the engine core, as
//! vLLM's `KVCacheManager`: find the cached prefix of a sequence, give it
//! slots for new tokens (all or nothing: whom to preempt when the pool is
//! short is the scheduler's call), register its blocks in the prefix cache
//! as they fill, free them, and hold a prefill's blocks under a lease until
//! a decode worker pulled them. The ref-counted block pool underneath is
//! its private detail.

use std::collections::HashMap;

use super::block_hash::{extend_block_hashes, BlockHash};
use super::block_id::BlockId;
use super::block_pool::{BlockPool, PrefixCacheStats};
use super::events::KvEvent;

/// A sequence's share of the KV cache: its block table (block `i` holds
/// tokens `i * block_size..`), the chained hashes of its full blocks, and
/// how many leading blocks are registered in the prefix cache. The sequence
/// keeps the hashes current as its tokens grow; the manager alone changes
/// the rest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeqBlocks {
    table: Vec<BlockId>,
    hashes: Vec<BlockHash>,
    num_cached: usize,
}

impl SeqBlocks {
    pub fn table(&self) -> &[BlockId] {
        &self.table
    }

    pub fn hashes(&self) -> &[BlockHash] {
        &self.hashes
    }

    /// Hashes the full blocks of `tokens` not hashed yet (a sequence's
    /// tokens only ever grow, so earlier hashes stay right).
    pub fn hash_full_blocks(&mut self, tokens: &[u32], block_size: usize) {
        extend_block_hashes(&mut self.hashes, tokens, block_size);
    }
}

/// The leading blocks of a sequence found in the prefix cache, to be
/// shared by [`KvCacheManager::allocate_slots`].
#[derive(Debug, Default)]
pub struct ComputedBlocks {
    blocks: Vec<BlockId>,
    num_tokens: usize,
}

impl ComputedBlocks {
    /// No hits: what a running sequence that grows passes.
    pub fn none() -> Self {
        ComputedBlocks::default()
    }

    /// Blocks found.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Tokens whose KV those blocks hold.
    pub fn num_tokens(&self) -> usize {
        self.num_tokens
    }
}

pub struct KvCacheManager {
    pool: BlockPool,
    block_size: usize,
    /// Prefill role: the blocks each lease holds for a decode worker.
    leases: HashMap<u64, Vec<BlockId>>,
}

impl KvCacheManager {
    pub fn new(num_blocks: usize, block_size: usize, enable_prefix_caching: bool) -> Self {
        KvCacheManager {
            pool: BlockPool::new(num_blocks, enable_prefix_caching),
            block_size,
            leases: HashMap::new(),
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn num_blocks(&self) -> usize {
        self.pool.num_blocks()
    }

    /// Blocks that can be allocated now (free, cached or not).
    pub fn num_free_blocks(&self) -> usize {
        self.pool.num_free()
    }

    /// Fraction of blocks held by sequences and leases.
    pub fn usage(&self) -> f64 {
        self.pool.usage()
    }

    /// How many sequences and leases hold `block`.
    pub fn ref_count(&self, block: BlockId) -> u32 {
        self.pool.ref_count(block)
    }

    pub fn prefix_cache_stats(&self) -> PrefixCacheStats {
        self.pool.stats()
    }

    /// Every hash in the prefix cache now (a KV-event snapshot).
    pub fn cached_hashes(&self) -> Vec<BlockHash> {
        self.pool.cached_hashes()
    }

    /// Prefix-cache changes since the last call, oldest first.
    pub fn take_events(&mut self) -> Vec<KvEvent> {
        self.pool.take_events()
    }

    /// Drops every cached hash; only when no block is held (as vLLM).
    pub fn reset_prefix_cache(&mut self) -> bool {
        self.pool.reset_prefix_cache()
    }

    /// The longest run of `seq`'s leading blocks in the prefix cache,
    /// covering at most `max_tokens` tokens.
    pub fn computed_blocks(&self, seq: &SeqBlocks, max_tokens: usize) -> ComputedBlocks {
        let usable = (max_tokens / self.block_size).min(seq.hashes.len());
        let blocks = self.pool.lookup(&seq.hashes[..usable]);
        let num_tokens = blocks.len() * self.block_size;
        ComputedBlocks { blocks, num_tokens }
    }

    /// Counts a prefix-cache query of `query` tokens of which `hit` were
    /// found (vLLM's hit rate, in tokens).
    pub fn record_query(&mut self, query: usize, hit: usize) {
        self.pool.record_query(query, hit);
    }

    /// Gives `seq` slots for its first `num_tokens` tokens: shares the
    /// `computed` prefix blocks (only for a sequence holding no blocks yet)
    /// and allocates the rest. All or nothing: false, with nothing changed,
    /// when the pool cannot do both.
    #[must_use]
    pub fn allocate_slots(
        &mut self,
        seq: &mut SeqBlocks,
        num_tokens: usize,
        computed: ComputedBlocks,
    ) -> bool {
        debug_assert!(
            computed.is_empty() || seq.table.is_empty(),
            "prefix hits are shared on admission only"
        );
        let held = seq.table.len() + computed.len();
        let need = num_tokens.div_ceil(self.block_size).saturating_sub(held);
        // Hits that sit free count against the pool once we take them.
        let revived = computed
            .blocks
            .iter()
            .filter(|&&b| self.pool.ref_count(b) == 0)
            .count();
        if self.pool.num_free() < need + revived {
            return false;
        }
        for &b in &computed.blocks {
            self.pool.share(b).expect("lookup returns pool blocks");
        }
        if !computed.is_empty() {
            // The hits are in the prefix cache already.
            seq.num_cached = computed.len();
            seq.table = computed.blocks;
        }
        let allocated = self.pool.allocate_into(need, &mut seq.table);
        debug_assert!(allocated, "room checked above");
        true
    }

    /// Registers the blocks of `seq` that are full and computed (its first
    /// `num_computed` tokens) in the prefix cache.
    pub fn cache_blocks(&mut self, seq: &mut SeqBlocks, num_computed: usize) {
        let full = num_computed / self.block_size;
        if full <= seq.num_cached {
            return;
        }
        assert!(
            full <= seq.hashes.len(),
            "a sequence hashes each block as it fills"
        );
        let start = seq.num_cached;
        let parent = start.checked_sub(1).map(|p| seq.hashes[p]);
        self.pool
            .cache(&seq.table[start..full], &seq.hashes[start..full], parent);
        seq.num_cached = full;
    }

    /// Gives back every block of `seq` (last first, so its tail is evicted
    /// before a prefix others may share); they stay in the prefix cache
    /// until reused. Its hashes stay: they describe its tokens.
    pub fn free(&mut self, seq: &mut SeqBlocks) {
        self.pool
            .release(seq.table.iter().rev())
            .expect("a sequence holds each of its blocks once");
        seq.table.clear();
        seq.num_cached = 0;
    }

    /// Keeps `seq`'s blocks held under `lease` after its sequence ended, for
    /// a decode worker to pull, until [`KvCacheManager::release`].
    pub fn hold(&mut self, lease: u64, seq: SeqBlocks) {
        let previous = self.leases.insert(lease, seq.table);
        debug_assert!(previous.is_none(), "lease {lease} is held twice");
    }

    /// Frees a lease's blocks (they stay in the prefix cache). False when
    /// the lease is unknown (already released or expired).
    pub fn release(&mut self, lease: u64) -> bool {
        match self.leases.remove(&lease) {
            Some(blocks) => {
                self.pool
                    .release(blocks.iter().rev())
                    .expect("a lease holds each of its blocks once");
                true
            }
            None => false,
        }
    }

    /// Leases still holding blocks.
    pub fn num_leases(&self) -> usize {
        self.leases.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sequence of `tokens` as the manager sees it, hashed in blocks of 4.
    fn seq(tokens: &[u32]) -> SeqBlocks {
        let mut s = SeqBlocks::default();
        s.hash_full_blocks(tokens, 4);
        s
    }

    #[test]
    fn a_second_sequence_shares_the_cached_prefix() {
        let mut kv = KvCacheManager::new(8, 4, true);
        let tokens: Vec<u32> = (0..10).collect();
        let mut a = seq(&tokens);
        assert!(kv.allocate_slots(&mut a, 10, ComputedBlocks::none()));
        assert_eq!(a.table().len(), 3);
        kv.cache_blocks(&mut a, 10);
        let mut b = seq(&tokens);
        let hits = kv.computed_blocks(&b, 9);
        assert_eq!((hits.len(), hits.num_tokens()), (2, 8));
        assert!(kv.allocate_slots(&mut b, 10, hits));
        assert_eq!(b.table()[..2], a.table()[..2], "the same blocks");
        assert_ne!(b.table()[2], a.table()[2]);
        assert_eq!(kv.ref_count(a.table()[0]), 2);
        assert_eq!(kv.num_free_blocks(), 8 - 4);
        kv.free(&mut a);
        kv.free(&mut b);
        assert!(a.table().is_empty() && b.table().is_empty());
        assert_eq!(kv.num_free_blocks(), 8);
        assert_eq!(
            kv.computed_blocks(&seq(&tokens), 9).len(),
            2,
            "still cached"
        );
    }

    #[test]
    fn allocation_is_all_or_nothing() {
        let mut kv = KvCacheManager::new(3, 4, true);
        let tokens: Vec<u32> = (0..8).collect();
        let mut a = seq(&tokens);
        assert!(kv.allocate_slots(&mut a, 8, ComputedBlocks::none()));
        kv.cache_blocks(&mut a, 8);
        kv.free(&mut a);
        // Both hits are free: reviving them takes two of the three blocks,
        // so the two new ones do not fit and nothing is taken.
        let mut b = seq(&tokens);
        let hits = kv.computed_blocks(&b, 8);
        assert!(!kv.allocate_slots(&mut b, 16, hits));
        assert!(b.table().is_empty());
        assert_eq!(kv.num_free_blocks(), 3);
        let hits = kv.computed_blocks(&b, 8);
        assert!(kv.allocate_slots(&mut b, 12, hits));
        assert_eq!(kv.num_free_blocks(), 0);
    }

    #[test]
    fn a_lease_keeps_blocks_until_released() {
        let mut kv = KvCacheManager::new(4, 4, true);
        let mut a = seq(&[1, 2, 3, 4, 5]);
        assert!(kv.allocate_slots(&mut a, 5, ComputedBlocks::none()));
        kv.hold(7, a);
        assert_eq!((kv.num_leases(), kv.num_free_blocks()), (1, 2));
        assert!(kv.release(7));
        assert!(!kv.release(7), "released once");
        assert_eq!((kv.num_leases(), kv.num_free_blocks()), (0, 4));
    }
}
