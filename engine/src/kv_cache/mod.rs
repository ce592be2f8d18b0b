//! The paged KV cache of one worker: a single block-major arena
//! (`[num_blocks][num_layers][2][block_size][num_kv_heads][head_dim]`, see
//! DESIGN.md) and the [`KvCacheManager`] that hands its blocks out.

mod block_hash;
mod block_id;
mod block_pool;
mod checksum;
mod events;
mod free_queue;
mod manager;

pub use block_hash::{block_hash, block_hashes, extend_block_hashes, BlockHash, BLOCK_HASH_SEED};
pub use block_id::BlockId;
pub use block_pool::PrefixCacheStats;
pub use checksum::BlockChecksum;
pub use events::KvEvent;
pub use manager::{ComputedBlocks, KvCacheManager, SeqBlocks};
pub use tandem_kernels::KvCacheLayout;

use candle_core::DType;
pub use tandem_kernels::HostArena;

use crate::config::ModelConfig;
use crate::error::{EngineError, Result};

/// Where a host arena's memory comes from, as `/internal/status` and the
/// logs report it.
pub const ARENA_MEMORY_PROCESS: &str = "process";
/// See [`ARENA_MEMORY_PROCESS`]: memory the UCX transfer agent allocated,
/// which a peer on the same host reads with one memcpy.
pub const ARENA_MEMORY_TRANSFER_AGENT: &str = "transfer-agent (UCX-allocated)";

pub struct KvCache {
    pub layout: KvCacheLayout,
    pub dtype: DType,
    /// One allocation, so a block is one contiguous region to transfer.
    pub arena: HostArena,
}

impl KvCache {
    /// A zeroed arena in memory this process owns.
    pub fn new(layout: KvCacheLayout, dtype: DType) -> Result<Self> {
        let arena = HostArena::for_layout(&layout, dtype)?;
        Ok(KvCache {
            layout,
            dtype,
            arena,
        })
    }

    /// A cache over `arena` (e.g. memory a transfer agent allocated), which
    /// must hold exactly `layout`'s elements of `dtype`.
    pub fn with_arena(layout: KvCacheLayout, dtype: DType, arena: HostArena) -> Result<Self> {
        let elems: usize = layout.shape().iter().product();
        if arena.dtype() != dtype || arena.len_elems() != elems {
            return Err(EngineError::KvArenaMismatch {
                num_blocks: layout.num_blocks,
                expected_bytes: elems * dtype.size_in_bytes(),
                expected_dtype: dtype,
                got_bytes: arena.len_bytes(),
                got_dtype: arena.dtype(),
            });
        }
        Ok(KvCache {
            layout,
            dtype,
            arena,
        })
    }

    /// Address of the arena's first byte, so a transfer agent can register
    /// it. Stable while the cache lives: the arena never moves.
    pub fn host_ptr(&self) -> *mut u8 {
        self.arena.as_ptr()
    }

    /// [`ARENA_MEMORY_TRANSFER_AGENT`] or [`ARENA_MEMORY_PROCESS`].
    pub fn memory(&self) -> &'static str {
        if self.arena.is_foreign() {
            ARENA_MEMORY_TRANSFER_AGENT
        } else {
            ARENA_MEMORY_PROCESS
        }
    }

    /// Bytes of one block.
    pub fn block_bytes(&self) -> usize {
        self.layout.block_elems() * self.dtype.size_in_bytes()
    }

    /// The layout a model needs for `num_blocks` blocks of `block_size` tokens.
    pub fn layout_for(cfg: &ModelConfig, num_blocks: usize, block_size: usize) -> KvCacheLayout {
        KvCacheLayout {
            num_blocks,
            num_layers: cfg.num_layers,
            block_size,
            num_kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
        }
    }

    /// Bytes one block takes for this model and dtype.
    pub fn bytes_per_block(cfg: &ModelConfig, block_size: usize, dtype: DType) -> usize {
        Self::layout_for(cfg, 1, block_size).block_elems() * dtype.size_in_bytes()
    }

    /// How many blocks fit in `bytes` (at least one).
    pub fn blocks_for_memory(
        cfg: &ModelConfig,
        block_size: usize,
        dtype: DType,
        bytes: usize,
    ) -> usize {
        (bytes / Self::bytes_per_block(cfg, block_size, dtype)).max(1)
    }
}

/// The KV budget when none is given: a quarter of the memory available now,
/// at most 4 GiB (vLLM-CPU's default space), at least 64 MiB.
pub fn default_kv_cache_memory() -> usize {
    const MIB: usize = 1 << 20;
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<usize>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(4096 * MIB);
    (available / 4).clamp(64 * MIB, 4096 * MIB)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const LAYOUT: KvCacheLayout = KvCacheLayout {
        num_blocks: 2,
        num_layers: 3,
        block_size: 4,
        num_kv_heads: 2,
        head_dim: 8,
    };

    #[test]
    fn with_arena_takes_an_arena_of_the_layouts_size_and_dtype_only() {
        let elems = 2 * LAYOUT.block_elems();
        let fits = HostArena::zeros(elems, DType::BF16).unwrap();
        let kv = KvCache::with_arena(LAYOUT, DType::BF16, fits).unwrap();
        assert_eq!(kv.memory(), ARENA_MEMORY_PROCESS);
        assert_eq!(kv.block_bytes(), LAYOUT.block_elems() * 2);

        let short = HostArena::zeros(elems - 1, DType::BF16).unwrap();
        let err = KvCache::with_arena(LAYOUT, DType::BF16, short)
            .err()
            .unwrap();
        assert!(matches!(
            err,
            EngineError::KvArenaMismatch { expected_bytes, got_bytes, .. }
                if expected_bytes == elems * 2 && got_bytes == (elems - 1) * 2
        ));
        let f32s = HostArena::zeros(elems, DType::F32).unwrap();
        assert!(matches!(
            KvCache::with_arena(LAYOUT, DType::BF16, f32s),
            Err(EngineError::KvArenaMismatch {
                got_dtype: DType::F32,
                ..
            })
        ));
    }

    #[test]
    fn a_foreign_arena_is_reported_as_transfer_agent_memory() {
        let elems = 2 * LAYOUT.block_elems();
        let mut buf = vec![0f32; elems];
        let ptr = buf.as_mut_ptr().cast::<u8>();
        let owner: Arc<dyn Send + Sync> = Arc::new(buf);
        // SAFETY: the bytes belong to `owner`'s Vec, kept alive by the arena.
        let arena = unsafe { HostArena::foreign(ptr, elems * 4, DType::F32, owner) }.unwrap();
        let kv = KvCache::with_arena(LAYOUT, DType::F32, arena).unwrap();
        assert_eq!(kv.memory(), ARENA_MEMORY_TRANSFER_AGENT);
        assert_eq!(kv.host_ptr(), ptr);
    }
}
