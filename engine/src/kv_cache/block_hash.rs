//! The one block hash of tandem: a seeded XXH3-64 over the parent block's
//! hash and the block's token ids. The block pool, the KV events and the
//! router all call this module, so a router's prediction of cached blocks is
//! the worker's own arithmetic, never an approximation of it.

use std::fmt;

use xxhash_rust::xxh3::Xxh3;

/// Identifies a full block by its content and everything before it. On the
/// wire (KV events, KV handles) it is the bare number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct BlockHash(pub u64);

impl fmt::Display for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Fixed so hashes agree across processes, restarts and machines.
pub const BLOCK_HASH_SEED: u64 = 0x7461_6e64_656d_4b56; // "tandemKV"

/// Hash of one full block whose predecessor has hash `parent` (`None` for
/// the first block of a sequence).
pub fn block_hash(parent: Option<BlockHash>, tokens: &[u32]) -> BlockHash {
    let mut h = Xxh3::with_seed(BLOCK_HASH_SEED);
    // A marker byte keeps "no parent" distinct from any parent value.
    match parent {
        Some(p) => {
            h.update(&[1]);
            h.update(&p.0.to_le_bytes());
        }
        None => h.update(&[0]),
    }
    for t in tokens {
        h.update(&t.to_le_bytes());
    }
    BlockHash(h.digest())
}

/// Chained hashes of every full block of `tokens`, continuing from `known`
/// (hashes already computed for the leading blocks).
pub fn extend_block_hashes(known: &mut Vec<BlockHash>, tokens: &[u32], block_size: usize) {
    let full = tokens.len() / block_size;
    for b in known.len()..full {
        let parent = b.checked_sub(1).map(|p| known[p]);
        let h = block_hash(parent, &tokens[b * block_size..(b + 1) * block_size]);
        known.push(h);
    }
}

/// Hashes of every full block of `tokens`.
pub fn block_hashes(tokens: &[u32], block_size: usize) -> Vec<BlockHash> {
    let mut out = Vec::with_capacity(tokens.len() / block_size);
    extend_block_hashes(&mut out, tokens, block_size);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chained_hash_depends_on_the_whole_prefix() {
        let a = block_hashes(&[1, 2, 3, 4, 5, 6, 7, 8], 4);
        let b = block_hashes(&[9, 2, 3, 4, 5, 6, 7, 8], 4);
        assert_eq!(a.len(), 2);
        assert_ne!(
            a[1], b[1],
            "same block after a different prefix hashes differently"
        );
        assert_eq!(
            a,
            block_hashes(&[1, 2, 3, 4, 5, 6, 7, 8, 9], 4),
            "partial blocks are not hashed"
        );
        assert_ne!(block_hash(None, &[1]), block_hash(Some(BlockHash(0)), &[1]));
    }

    #[test]
    fn extending_matches_hashing_from_scratch() {
        let tokens: Vec<u32> = (0..100).collect();
        let mut known = block_hashes(&tokens[..37], 16);
        extend_block_hashes(&mut known, &tokens, 16);
        assert_eq!(known, block_hashes(&tokens, 16));
    }

    const PINNED: u64 = 4_149_621_207_719_410_044;

    #[test]
    fn value_is_stable_across_builds() {
        // Routers in other processes rely on this exact value.
        assert_eq!(block_hash(None, &[0, 1, 2, 3]), BlockHash(PINNED));
    }

    #[test]
    fn serializes_as_the_bare_number() {
        let json = serde_json::to_string(&[BlockHash(PINNED)]).unwrap();
        assert_eq!(json, format!("[{PINNED}]"));
        let back: Vec<BlockHash> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, [BlockHash(PINNED)]);
    }
}
