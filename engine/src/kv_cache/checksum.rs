//! Content checksums of KV blocks, the guard on every prefill → decode
//! pull. A prefill engine records one per leased block when it hands the
//! prompt off; the decode engine hashes the blocks it pulled before it
//! decodes from them. A mismatch means the bytes changed under the read
//! (the lease expired while the pull was stalled and the blocks went to
//! another prompt, or a transport delivered something else), and the
//! decode engine computes the prompt itself instead of decoding from
//! another prompt's KV. Equal contents are the right contents by
//! definition, so a block reused with identical KV is not a false alarm.

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::{BlockId, KvCache};

/// XXH3-64 of one block's bytes. On the wire (a KV handle) the bare number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct BlockChecksum(pub u64);

/// Distinct from the block hash's seed: the two never stand in for each other.
const CHECKSUM_SEED: u64 = 0x6b76_2d62_7974_6573; // "kv-bytes"

impl KvCache {
    /// Checksum of block `block`'s bytes (every layer, K and V).
    ///
    /// Call it on the engine thread, for a block no transfer writes now: a
    /// block the engine owns, or one whose pull has finished.
    pub fn block_checksum(&self, block: BlockId) -> BlockChecksum {
        let bytes = self.block_bytes();
        let start = block.index() * bytes;
        assert!(
            start + bytes <= self.arena.len_bytes(),
            "block {block} is outside the arena"
        );
        // SAFETY: the range is inside the arena (checked above), which
        // stays allocated while `self` lives. This thread is the arena's
        // only Rust user (HostArena is not Sync), and the caller's rule
        // keeps transfers from writing this block while it is read: peers
        // only read leased blocks, and incoming pulls only write blocks of
        // a sequence that is still loading.
        let block_bytes =
            unsafe { std::slice::from_raw_parts(self.arena.as_ptr().add(start), bytes) };
        BlockChecksum(xxh3_64_with_seed(block_bytes, CHECKSUM_SEED))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::DType;

    use super::*;
    use crate::kv_cache::KvCacheLayout;

    fn cache() -> KvCache {
        let layout = KvCacheLayout {
            num_blocks: 4,
            num_layers: 2,
            block_size: 4,
            num_kv_heads: 1,
            head_dim: 8,
        };
        KvCache::new(layout, DType::F32).unwrap()
    }

    #[test]
    fn a_checksum_follows_its_blocks_bytes_only() {
        let kv = cache();
        let before: Vec<_> = (0..4).map(|b| kv.block_checksum(BlockId(b))).collect();
        assert_eq!(before[0], before[3], "equal bytes, equal checksums");
        // One byte of block 2's last layer changes: only block 2 differs.
        let at = 3 * kv.block_bytes() - 1;
        // SAFETY: `at` is inside the arena and this test is its only user.
        unsafe { *kv.arena.as_ptr().add(at) = 7 };
        let after: Vec<_> = (0..4).map(|b| kv.block_checksum(BlockId(b))).collect();
        assert_eq!(
            (after[0], after[1], after[3]),
            (before[0], before[1], before[3])
        );
        assert_ne!(after[2], before[2]);
    }
}
