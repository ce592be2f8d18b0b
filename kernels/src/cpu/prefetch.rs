//! Software prefetch of the next KV block. Blocks sit at random places in
//! the arena (block tables are shuffled by allocation), so the hardware
//! prefetcher cannot guess the next one; asking one block ahead hides most
//! of the memory latency of large decode batches.

const CACHE_LINE: usize = 64;

/// Hints the CPU to load `n` rows of `d` elements, `stride` apart, starting
/// at `src[0]`. Only a hint: never faults, no-op off x86_64.
#[inline(always)]
pub(crate) fn prefetch_rows<E>(src: &[E], n: usize, stride: usize, d: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let size = std::mem::size_of::<E>();
        for r in 0..n {
            let Some(row) = src.get(r * stride..r * stride + d) else {
                return;
            };
            for line in (0..d * size).step_by(CACHE_LINE) {
                // SAFETY: prefetch never faults; the address is inside `row`.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(row.as_ptr().cast::<i8>().add(line)) };
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (src, n, stride, d);
}
