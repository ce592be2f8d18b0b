//! The paged KV cache of one worker: a single block-major arena
//! (`[num_blocks][num_layers][2][block_size][num_kv_heads][head_dim]`, see
//! DESIGN.md) and the [`KvCacheManager`] that hands its blocks out.

mod block_hash;
mod block_id;
mod block_pool;
mod events;
mod free_queue;
mod manager;

pub use block_hash::{block_hash, block_hashes, extend_block_hashes, BlockHash, BLOCK_HASH_SEED};
pub use block_id::BlockId;
pub use block_pool::PrefixCacheStats;
pub use events::KvEvent;
pub use manager::{ComputedBlocks, KvCacheManager, SeqBlocks};
pub use tandem_kernels::KvCacheLayout;

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};

use crate::config::ModelConfig;
use crate::error::Result;

pub struct KvCache {
    pub layout: KvCacheLayout,
    pub dtype: DType,
    /// One allocation, so a block is one contiguous region to transfer.
    pub arena: Tensor,
}

impl KvCache {
    pub fn new(layout: KvCacheLayout, dtype: DType, device: &Device) -> Result<Self> {
        let arena = Tensor::zeros(layout.shape().to_vec(), dtype, device)?;
        Ok(KvCache {
            layout,
            dtype,
            arena,
        })
    }

    /// Address of the arena's first byte in host memory, so a transfer
    /// agent can register it. Stable while the cache lives: the arena is
    /// written in place and never reallocated. `None` off the CPU.
    pub fn host_ptr(&self) -> Option<*mut u8> {
        let (storage, layout) = self.arena.storage_and_layout();
        let Storage::Cpu(cpu) = &*storage else {
            return None;
        };
        let base = match cpu {
            CpuStorage::F32(v) => v.as_ptr() as *const u8,
            CpuStorage::BF16(v) => v.as_ptr() as *const u8,
            CpuStorage::F16(v) => v.as_ptr() as *const u8,
            _ => return None,
        };
        let offset = layout.start_offset() * self.dtype.size_in_bytes();
        Some(base.wrapping_add(offset) as *mut u8)
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
