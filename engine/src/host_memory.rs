//! Process-wide allocator settings for an engine on the host.
//!
//! Every CPU step allocates its activations anew (candle's CPU ops return
//! fresh buffers): megabytes per op in a prefill step. glibc's malloc
//! serves blocks above its mmap threshold with fresh mappings and gives
//! freed memory at the top of the heap back to the kernel, so each step
//! page-faults its buffers in again (page faults were 8 % of the profile of
//! a 0.5B model's prefill; raising the thresholds took a 16 × 256-token
//! `tandem-bench throughput` run from 34.0 to 32.9 s, mean of 2 alternated
//! runs each). Raising both thresholds keeps freed buffers in
//! the heap for the next step; resident memory stays at its high-water
//! mark, as a serving process's does anyway.
//!
//! Threads other than `main` (the engine's, rayon's) allocate from arenas
//! of 64 MiB heaps, and glibc unmaps a heap once it is wholly free unless
//! the top pad covers it; a 64 MiB pad keeps them. Counted over 64 decode
//! steps at batch 32 (bf16, Qwen2.5-0.5B shapes): 18.5 k page faults
//! without the pad, 5.9 k with it.

/// Keeps freed step buffers for reuse (see the module docs). Call once,
/// early in `main`, before threads start allocating; a no-op off glibc.
pub fn keep_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc's ceiling for the mmap threshold on 64-bit targets.
        const MMAP_THRESHOLD_MAX: libc::c_int = 32 << 20;
        const TRIM_THRESHOLD: libc::c_int = 1 << 30;
        const TOP_PAD: libc::c_int = 64 << 20;
        // SAFETY: mallopt only changes malloc's tuning parameters; it is
        // called before other threads allocate, and any value is safe (an
        // out-of-range one is refused with a 0 return, leaving the default).
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
            libc::mallopt(libc::M_TOP_PAD, TOP_PAD);
        }
    }
}
