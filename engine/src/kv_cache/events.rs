//! KV events: what a worker's prefix cache gained or lost, in the block
//! hashes of [`super::block_hash`]. The router keeps a per-worker set of
//! hashes from these to score prefix overlap.

use serde::{Deserialize, Serialize};

use super::block_hash::BlockHash;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KvEvent {
    /// Full blocks became reusable; `parent` is the hash before the first.
    BlockStored {
        hashes: Vec<BlockHash>,
        parent: Option<BlockHash>,
    },
    /// Cached blocks were evicted.
    BlockRemoved { hashes: Vec<BlockHash> },
    /// The whole prefix cache was dropped.
    AllBlocksCleared,
}
