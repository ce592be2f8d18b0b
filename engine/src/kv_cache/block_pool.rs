//! Reference-counted KV blocks with a prefix cache, under the
//! [`super::KvCacheManager`]. A block with count zero is free, but if it
//! holds a full block's hash it stays findable until it is reused: free
//! blocks are handed out least-recently-freed first, so eviction is LRU and
//! only happens when a block is actually needed.

use std::collections::HashMap;

use super::block_hash::BlockHash;
use super::block_id::BlockId;
use super::events::KvEvent;
use super::free_queue::FreeQueue;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(super) enum BlockPoolError {
    #[error("block {0} is outside the pool")]
    OutOfRange(BlockId),
    #[error("block {0} was released more often than it was taken")]
    DoubleFree(BlockId),
}

/// Prefix-cache counters in tokens, as vLLM reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefixCacheStats {
    pub queries: u64,
    pub hits: u64,
}

pub(super) struct BlockPool {
    ref_counts: Vec<u32>,
    /// The hash a block is registered under in `cached`, if any.
    hashes: Vec<Option<BlockHash>>,
    free: FreeQueue,
    cached: HashMap<BlockHash, BlockId>,
    caching: bool,
    events: Vec<KvEvent>,
    stats: PrefixCacheStats,
}

impl BlockPool {
    pub fn new(num_blocks: usize, caching: bool) -> Self {
        BlockPool {
            ref_counts: vec![0; num_blocks],
            hashes: vec![None; num_blocks],
            free: FreeQueue::full(num_blocks),
            cached: HashMap::new(),
            caching,
            events: Vec::new(),
            stats: PrefixCacheStats::default(),
        }
    }

    pub fn num_blocks(&self) -> usize {
        self.ref_counts.len()
    }

    /// Blocks that can be allocated now (free, cached or not).
    pub fn num_free(&self) -> usize {
        self.free.len()
    }

    /// Fraction of blocks held by sequences.
    pub fn usage(&self) -> f64 {
        1.0 - self.num_free() as f64 / self.num_blocks().max(1) as f64
    }

    pub fn ref_count(&self, block: BlockId) -> u32 {
        self.ref_counts.get(block.index()).copied().unwrap_or(0)
    }

    /// Every hash in the prefix cache (for a KV-event snapshot).
    pub fn cached_hashes(&self) -> Vec<BlockHash> {
        self.cached.keys().copied().collect()
    }

    pub fn stats(&self) -> PrefixCacheStats {
        self.stats
    }

    /// Counts a prefix lookup of `query` tokens of which `hit` were cached.
    pub fn record_query(&mut self, query: usize, hit: usize) {
        self.stats.queries += query as u64;
        self.stats.hits += hit as u64;
    }

    /// Appends `n` blocks to `table` (evicting the least recently freed
    /// cached ones), or none at all and returns false when fewer than `n`
    /// are free.
    pub fn allocate_into(&mut self, n: usize, table: &mut Vec<BlockId>) -> bool {
        if n > self.free.len() {
            return false;
        }
        let mut evicted = Vec::new();
        table.reserve(n);
        for _ in 0..n {
            let b = self.free.pop_front().expect("length checked above");
            if let Some(h) = self.hashes[b.index()].take() {
                self.cached.remove(&h);
                evicted.push(h);
            }
            self.ref_counts[b.index()] = 1;
            table.push(b);
        }
        if !evicted.is_empty() {
            self.events.push(KvEvent::BlockRemoved { hashes: evicted });
        }
        true
    }

    /// The longest run of leading `hashes` whose blocks are cached.
    pub fn lookup(&self, hashes: &[BlockHash]) -> Vec<BlockId> {
        if !self.caching {
            return Vec::new();
        }
        hashes
            .iter()
            .map_while(|h| self.cached.get(h).copied())
            .collect()
    }

    /// Adds a holder to a block (a prefix hit), reviving it if it was free.
    pub fn share(&mut self, block: BlockId) -> Result<(), BlockPoolError> {
        let rc = self
            .ref_counts
            .get_mut(block.index())
            .ok_or(BlockPoolError::OutOfRange(block))?;
        if *rc == 0 {
            self.free.remove(block);
        }
        *rc += 1;
        Ok(())
    }

    /// Drops one holder of each block; unheld blocks become free (and stay
    /// cached). Pass a sequence's blocks tail first so its last blocks are
    /// evicted before its shared prefix.
    pub fn release<'a>(
        &mut self,
        blocks: impl IntoIterator<Item = &'a BlockId>,
    ) -> Result<(), BlockPoolError> {
        for &b in blocks {
            let rc = self
                .ref_counts
                .get_mut(b.index())
                .ok_or(BlockPoolError::OutOfRange(b))?;
            if *rc == 0 {
                return Err(BlockPoolError::DoubleFree(b));
            }
            *rc -= 1;
            if *rc == 0 {
                self.free.push_back(b);
            }
        }
        Ok(())
    }

    /// Registers full blocks (`blocks[i]` under `hashes[i]`, in sequence
    /// order, following `parent`) in the prefix cache. A hash already cached
    /// under another block keeps its first block; the duplicate simply stays
    /// uncached.
    pub fn cache(&mut self, blocks: &[BlockId], hashes: &[BlockHash], parent: Option<BlockHash>) {
        debug_assert_eq!(blocks.len(), hashes.len());
        if !self.caching || blocks.is_empty() {
            return;
        }
        let mut stored = Vec::new();
        for (&b, &h) in blocks.iter().zip(hashes) {
            if self.hashes[b.index()].is_some() || self.cached.contains_key(&h) {
                continue;
            }
            self.cached.insert(h, b);
            self.hashes[b.index()] = Some(h);
            stored.push(h);
        }
        if !stored.is_empty() {
            self.events.push(KvEvent::BlockStored {
                hashes: stored,
                parent,
            });
        }
    }

    /// Drops every cached hash; only when no block is held (as vLLM).
    pub fn reset_prefix_cache(&mut self) -> bool {
        if self.free.len() != self.num_blocks() {
            return false;
        }
        self.cached.clear();
        self.hashes.iter_mut().for_each(|h| *h = None);
        self.events.push(KvEvent::AllBlocksCleared);
        true
    }

    /// Events since the last call, oldest first.
    pub fn take_events(&mut self) -> Vec<KvEvent> {
        std::mem::take(&mut self.events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(raw: &[u32]) -> Vec<BlockId> {
        raw.iter().map(|&b| BlockId(b)).collect()
    }

    fn hashes(raw: &[u64]) -> Vec<BlockHash> {
        raw.iter().map(|&h| BlockHash(h)).collect()
    }

    fn allocate(pool: &mut BlockPool, n: usize) -> Option<Vec<BlockId>> {
        let mut table = Vec::new();
        pool.allocate_into(n, &mut table).then_some(table)
    }

    #[test]
    fn allocate_share_release_round_trip() {
        let mut pool = BlockPool::new(4, true);
        let a = allocate(&mut pool, 3).unwrap();
        assert_eq!(pool.num_free(), 1);
        assert!(allocate(&mut pool, 2).is_none(), "all-or-nothing");
        pool.share(a[0]).unwrap();
        pool.release(&a).unwrap();
        assert_eq!(pool.num_free(), 3, "shared block stays held");
        assert_eq!(pool.ref_count(a[0]), 1);
        pool.release(&a[..1]).unwrap();
        assert_eq!(pool.num_free(), 4);
        assert_eq!(pool.release(&a[..1]), Err(BlockPoolError::DoubleFree(a[0])));
        assert_eq!(
            pool.release(&ids(&[9])),
            Err(BlockPoolError::OutOfRange(BlockId(9)))
        );
    }

    #[test]
    fn freed_cached_blocks_are_found_until_evicted_lru() {
        let mut pool = BlockPool::new(3, true);
        let a = allocate(&mut pool, 2).unwrap();
        pool.cache(&a, &hashes(&[10, 11]), None);
        assert_eq!(
            pool.take_events(),
            vec![KvEvent::BlockStored {
                hashes: hashes(&[10, 11]),
                parent: None
            }]
        );
        pool.release(a.iter().rev()).unwrap();
        assert_eq!(
            pool.lookup(&hashes(&[10, 11, 12])),
            a,
            "free but still cached"
        );
        // Reviving a hit takes it out of the free list.
        pool.share(a[0]).unwrap();
        assert_eq!(pool.num_free(), 2);
        // Two allocations: the never-cached block first, then the LRU cached one (a[1]).
        let b = allocate(&mut pool, 2).unwrap();
        assert!(b.contains(&a[1]));
        assert_eq!(
            pool.take_events(),
            vec![KvEvent::BlockRemoved {
                hashes: hashes(&[11])
            }]
        );
        assert_eq!(pool.lookup(&hashes(&[10, 11])), vec![a[0]]);
    }

    #[test]
    fn reset_only_when_idle() {
        let mut pool = BlockPool::new(2, true);
        let a = allocate(&mut pool, 1).unwrap();
        pool.cache(&a, &hashes(&[1]), None);
        assert!(!pool.reset_prefix_cache());
        pool.release(&a).unwrap();
        assert!(pool.reset_prefix_cache());
        assert!(pool.lookup(&hashes(&[1])).is_empty());
    }
}
