//! The AVX-512 build of the packed prefill kernel. With 32 zmm registers
//! the register block grows to `MR512 × 2` panels: 12 activation rows
//! against 32 weight columns, 24 accumulators of 16 lanes, so each k step
//! loads 2 weight vectors and broadcasts 12 activations (folded into the
//! FMAs) for 24 FMAs — under the two loads a cycle the FMA ports need, where
//! the AVX2 block (6 × 16 on 12 ymm accumulators) does 12 FMAs of 8 lanes
//! per 2 loads and 6 broadcasts.

/// Activation rows per AVX-512 register block.
pub(super) const MR512: usize = 12;
/// Weight panels (of `NR` columns) per AVX-512 register block.
pub(super) const PANELS512: usize = 2;

#[cfg(target_arch = "x86_64")]
pub(super) use imp::tile;

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::super::plan::NR;
    use super::{MR512, PANELS512};
    use std::arch::x86_64::*;

    /// `acc[r * ld + 16 q..16 q + 16] += Σ_k x[r][k] · panels[q][k * NR..]`
    /// for `r < MR512`, `q < PANELS512`.
    ///
    /// # Safety
    /// Each `x[r]` has `kc` readable elements, each panel `kc * NR`, `acc`
    /// covers `(MR512 - 1) * ld + PANELS512 * NR` writable elements nothing
    /// else accesses during the call; the CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(in super::super) unsafe fn tile(
        x: [*const f32; MR512],
        panels: [*const f32; PANELS512],
        kc: usize,
        acc: *mut f32,
        ld: usize,
    ) {
        const _: () = assert!(NR == 16, "one panel row is one zmm register");
        let mut c = [[_mm512_setzero_ps(); PANELS512]; MR512];
        let mut kk = 0;
        // 16 steps (one cache line of each activation row) at a time, the
        // rows' next lines prefetched: twelve row streams are more than the
        // hardware prefetcher follows.
        while kk + 16 <= kc {
            for row in x {
                _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(kk + 32).cast());
            }
            for u in 0..16 {
                // SAFETY: `kk + u < kc`.
                unsafe { rank1(&x, &panels, kk + u, &mut c) };
            }
            kk += 16;
        }
        while kk < kc {
            // SAFETY: `kk < kc`.
            unsafe { rank1(&x, &panels, kk, &mut c) };
            kk += 1;
        }
        for (r, row) in c.iter().enumerate() {
            for (q, &v) in row.iter().enumerate() {
                // SAFETY: `r * ld + 16 q + 16 <= (MR512 - 1) * ld + 32`.
                unsafe {
                    let p = acc.add(r * ld + NR * q);
                    _mm512_storeu_ps(p, _mm512_add_ps(_mm512_loadu_ps(p), v));
                }
            }
        }
    }

    /// `c[r][q] += x[r][kk] · panels[q][kk]`: one step of the kernel.
    ///
    /// # Safety
    /// `x[r][kk]` and `panels[q][kk * NR..(kk + 1) * NR]` are readable;
    /// AVX-512F.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn rank1(
        x: &[*const f32; MR512],
        panels: &[*const f32; PANELS512],
        kk: usize,
        c: &mut [[__m512; PANELS512]; MR512],
    ) {
        // SAFETY: the caller guarantees the panel rows.
        let w = panels.map(|p| unsafe { _mm512_loadu_ps(p.add(kk * NR)) });
        for r in 0..MR512 {
            // SAFETY: the caller guarantees `x[r][kk]`.
            let b = _mm512_set1_ps(unsafe { x[r].add(kk).read() });
            for q in 0..PANELS512 {
                c[r][q] = _mm512_fmadd_ps(b, w[q], c[r][q]);
            }
        }
    }
}
