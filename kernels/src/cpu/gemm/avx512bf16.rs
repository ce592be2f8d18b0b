//! The AVX512-BF16 build of the packed kernel, for bf16 activations against
//! bf16 weights with f32 sums. `vdpbf16ps` takes 16 lanes of bf16 pairs
//! from each operand and adds both products of each pair into an f32 lane:
//! 32 multiply-adds where an f32 FMA does 16, with no widening of either
//! operand. A register block is `R` rows × `Q` panels of 16 columns (the
//! caller picks them), stepping k two at a time: each step loads one
//! 64-byte row of each weight panel, packed pair-interleaved (`[k / 2][16
//! columns][2]`, the layout AMX reads too), and broadcasts one 32-bit k
//! pair of each activation row, read where the row lies.

/// Whether this CPU has AVX512-BF16 (with AVX-512F).
pub(super) fn usable() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `acc[r * ld + 16 q..16 q + 16] += Σ_k x[r][k] · panels[q][k]` for
/// `r < R`, `q < Q`, over `pairs` k pairs.
///
/// # Safety
/// Each `x[r]` has `2 · pairs` readable bf16 (any alignment), each panel
/// `32 · pairs`, `acc` covers `(R - 1) * ld + Q * 16` writable
/// f32 nothing else accesses during the call; the CPU has AVX512-BF16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn tile<const R: usize, const Q: usize>(
    x: [*const u16; R],
    panels: [*const u16; Q],
    pairs: usize,
    acc: *mut f32,
    ld: usize,
) {
    use std::arch::x86_64::*;
    let x = x.map(<*const u16>::cast::<u32>);
    let mut c = [[_mm512_setzero_ps(); Q]; R];
    let mut p = 0;
    // 16 pairs (one cache line of each activation row) at a time, the
    // rows' next lines prefetched: that many row streams are more than the
    // hardware prefetcher follows.
    while p + 16 <= pairs {
        for row in x {
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(p + 32).cast());
        }
        for u in 0..16 {
            // SAFETY: `p + u < pairs`.
            unsafe { step(&x, &panels, p + u, &mut c) };
        }
        p += 16;
    }
    for p in p..pairs {
        // SAFETY: `p < pairs`.
        unsafe { step(&x, &panels, p, &mut c) };
    }
    for (r, row) in c.iter().enumerate() {
        for (q, &v) in row.iter().enumerate() {
            // SAFETY: `r * ld + 16 q + 16 <= (R - 1) * ld + 16 Q`.
            unsafe {
                let at = acc.add(r * ld + 16 * q);
                _mm512_storeu_ps(at, _mm512_add_ps(_mm512_loadu_ps(at), v));
            }
        }
    }
}

/// One k pair: adds row `r`'s pair `p` times pair row `p` of panel `q`
/// into `c[r][q]`, for every row and panel.
///
/// # Safety
/// Word `p` of each `x[r]` and 64 bytes at `panels[q] + 32 p` are
/// readable; AVX512-BF16.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn step<const R: usize, const Q: usize>(
    x: &[*const u32; R],
    panels: &[*const u16; Q],
    p: usize,
    c: &mut [[std::arch::x86_64::__m512; Q]; R],
) {
    use std::arch::x86_64::*;
    // SAFETY (all three): the caller vouches for the reads; a 512-bit
    // integer vector and a vector of 32 bf16 are the same 64 bytes, any
    // bit pattern valid for both.
    let w: [__m512bh; Q] =
        panels.map(|q| unsafe { std::mem::transmute(_mm512_loadu_si512(q.add(32 * p).cast())) });
    for (row, c) in x.iter().zip(c.iter_mut()) {
        let pair = unsafe { row.add(p).read_unaligned() };
        let b: __m512bh = unsafe { std::mem::transmute(_mm512_set1_epi32(pair as i32)) };
        for (c, &w) in c.iter_mut().zip(&w) {
            *c = _mm512_dpbf16_ps(*c, b, w);
        }
    }
}
