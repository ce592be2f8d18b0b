//! The AVX2 + FMA microkernel and the 8-lane loads that widen each storage
//! type to f32 in registers: bf16 by a 16-bit shift, f16 with F16C.

#[cfg(target_arch = "x86_64")]
pub(super) use imp::dot_block;

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::super::Lanes;
    use half::{bf16, f16};
    use std::arch::x86_64::*;

    impl Lanes for f32 {
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn load8(p: *const Self) -> __m256 {
            // SAFETY: the caller guarantees 8 readable lanes.
            unsafe { _mm256_loadu_ps(p) }
        }
    }

    impl Lanes for bf16 {
        /// bf16 is the top half of an f32: zero-extend to 32 bits, shift up.
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn load8(p: *const Self) -> __m256 {
            // SAFETY: the caller guarantees 8 readable lanes (16 bytes).
            let h = unsafe { _mm_loadu_si128(p.cast()) };
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
        }
    }

    impl Lanes for f16 {
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn load8(p: *const Self) -> __m256 {
            // SAFETY: the caller guarantees 8 readable lanes (16 bytes).
            _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p.cast()) })
        }
    }

    /// `R × C` dot products over `len` elements: 8 lanes at a time with one
    /// accumulator register per output, reduced at the end; the last
    /// `len % 8` elements in scalar.
    ///
    /// # Safety
    /// Each `x[r]` and `w[c]` points at `len` readable elements, and the CPU
    /// has AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in super::super) unsafe fn dot_block<X: Lanes, W: Lanes, const R: usize, const C: usize>(
        x: [*const X; R],
        w: [*const W; C],
        len: usize,
    ) -> [[f32; C]; R] {
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        let mut wv = [_mm256_setzero_ps(); C];
        let mut i = 0;
        while i + 8 <= len {
            for c in 0..C {
                // SAFETY: `i + 8 <= len` and `w[c]` has `len` elements.
                wv[c] = unsafe { W::load8(w[c].add(i)) };
            }
            for r in 0..R {
                // SAFETY: as above, for `x[r]`.
                let xv = unsafe { X::load8(x[r].add(i)) };
                for c in 0..C {
                    acc[r][c] = _mm256_fmadd_ps(xv, wv[c], acc[r][c]);
                }
            }
            i += 8;
        }
        let mut out = [[0.0f32; C]; R];
        for r in 0..R {
            for c in 0..C {
                out[r][c] = hsum(acc[r][c]);
            }
        }
        for j in i..len {
            for r in 0..R {
                // SAFETY: `j < len`.
                let xj = unsafe { x[r].add(j).read() }.to_f32();
                for c in 0..C {
                    // SAFETY: `j < len`.
                    let wj = unsafe { w[c].add(j).read() }.to_f32();
                    out[r][c] = xj.mul_add(wj, out[r][c]);
                }
            }
        }
        out
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }
}
