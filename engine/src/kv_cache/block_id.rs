//! Which block of the KV arena: an index into
//! `[num_blocks][num_layers][2][block_size][num_kv_heads][head_dim]`.

use std::fmt;

/// One block of a worker's KV arena. On the wire (a KV handle's block
/// table) it is the bare index.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct BlockId(pub u32);

impl BlockId {
    /// The block's position in per-block tables.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
