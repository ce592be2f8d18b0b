//! How many KV blocks fit on a GPU: vLLM's rule. `--gpu-memory-utilization`
//! is the share of the device's *total* memory this worker may end up
//! using; the KV cache gets what is left of it after everything already
//! allocated (weights, activation buffers, cuBLAS, other processes) and a
//! reserve for what a step still allocates (per-step metadata, cuBLAS
//! workspaces).

/// Bytes a step may still allocate besides the preallocated buffers.
pub const STEP_RESERVE_BYTES: usize = 256 << 20;

/// The device's memory as the driver reports it after loading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceMemory {
    pub total: usize,
    pub free: usize,
}

/// The sizing of a device KV cache.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KvSizing {
    pub num_blocks: usize,
    /// Bytes in use before the cache (by anyone).
    pub used: usize,
    /// Bytes the cache may take.
    pub available: usize,
}

/// Blocks of `block_bytes` that fit in `fraction` of `mem.total` once
/// `mem.total - mem.free` is used and [`STEP_RESERVE_BYTES`] kept back.
pub fn kv_blocks_for_device(mem: DeviceMemory, fraction: f64, block_bytes: usize) -> KvSizing {
    let used = mem.total.saturating_sub(mem.free);
    let budget = (mem.total as f64 * fraction.clamp(0.0, 1.0)) as usize;
    // Never more than is actually free, whatever the fraction says.
    let available = budget
        .saturating_sub(used)
        .saturating_sub(STEP_RESERVE_BYTES)
        .min(mem.free.saturating_sub(STEP_RESERVE_BYTES));
    KvSizing {
        num_blocks: available / block_bytes.max(1),
        used,
        available,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: usize = 1 << 30;

    #[test]
    fn the_cache_gets_the_fraction_minus_what_is_used() {
        // An H200-sized device with 2 GiB of weights loaded.
        let mem = DeviceMemory {
            total: 140 * GIB,
            free: 138 * GIB,
        };
        let s = kv_blocks_for_device(mem, 0.9, 2 << 20);
        assert_eq!(s.used, 2 * GIB);
        // 0.9 of 140 GiB is 126 GiB, of which 2 GiB are already used.
        assert_eq!(s.available, 124 * GIB - STEP_RESERVE_BYTES);
        assert_eq!(s.num_blocks, s.available / (2 << 20));
    }

    #[test]
    fn another_process_or_a_low_fraction_leaves_nothing() {
        let busy = DeviceMemory {
            total: 80 * GIB,
            free: 4 * GIB,
        };
        assert_eq!(kv_blocks_for_device(busy, 0.9, 1 << 20).num_blocks, 0);
        let mem = DeviceMemory {
            total: 80 * GIB,
            free: 79 * GIB,
        };
        assert_eq!(kv_blocks_for_device(mem, 0.01, 1 << 20).num_blocks, 0);
        // A fraction above 1 cannot promise more than is free.
        let s = kv_blocks_for_device(mem, 7.0, 1 << 20);
        assert_eq!(s.available, 79 * GIB - STEP_RESERVE_BYTES);
    }
}
