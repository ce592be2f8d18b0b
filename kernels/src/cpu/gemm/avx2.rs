//! The AVX2 + FMA builds of the register-block kernels, and the 8-lane
//! loads that widen each storage type to f32 in registers: bf16 by a 16-bit
//! shift, f16 with F16C.

#[cfg(target_arch = "x86_64")]
pub(super) use imp::{dot_block, pack_pairs, pack_panel, tile};

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    use super::super::Lanes;
    impl Lanes for f32 {}
    impl Lanes for half::bf16 {}
    impl Lanes for half::f16 {}
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::super::plan::{MR, NR};
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

    /// `R × C` dot products over `len` elements: `U × 8` lanes per step with
    /// one accumulator register per output and unroll slot (`R · C · U`
    /// independent FMA chains), reduced at the end; the last `len % (8 U)`
    /// elements 8 lanes at a time, the last `len % 8` in scalar.
    ///
    /// With `prefetch > 0` the `C` weight rows must be consecutive in
    /// memory (true for decode tiles): one linear prefetch stream runs that
    /// many bytes ahead of the loop's progress through the block. Prefetches
    /// never fault, so running past the end is harmless.
    ///
    /// # Safety
    /// Each `x[r]` and `w[c]` points at `len` readable elements, and the CPU
    /// has AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in super::super) unsafe fn dot_block<
        X: Lanes,
        W: Lanes,
        const R: usize,
        const C: usize,
        const U: usize,
    >(
        x: [*const X; R],
        w: [*const W; C],
        len: usize,
        prefetch: usize,
    ) -> [[f32; C]; R] {
        let mut acc = [[[_mm256_setzero_ps(); C]; R]; U];
        let mut i = 0;
        while i + 8 * U <= len {
            if prefetch > 0 {
                let ahead = w[0]
                    .cast::<i8>()
                    .wrapping_add(C * i * size_of::<W>() + prefetch);
                for line in (0..C * U * 8 * size_of::<W>()).step_by(64) {
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line));
                }
            }
            for (u, acc) in acc.iter_mut().enumerate() {
                // SAFETY: `i + 8 * U <= len`, so every lane read is in bounds.
                unsafe { step(&x, &w, i + 8 * u, acc) };
            }
            i += 8 * U;
        }
        while i + 8 <= len {
            // SAFETY: `i + 8 <= len`.
            unsafe { step(&x, &w, i, &mut acc[0]) };
            i += 8;
        }
        let mut out = [[0.0f32; C]; R];
        for r in 0..R {
            for c in 0..C {
                let mut v = acc[0][r][c];
                for a in &acc[1..] {
                    v = _mm256_add_ps(v, a[r][c]);
                }
                out[r][c] = hsum(v);
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

    /// `acc[r][c] += x[r][i..i + 8] · w[c][i..i + 8]`, lane-wise.
    ///
    /// # Safety
    /// Lanes `i..i + 8` of every row are readable; AVX2, FMA and F16C.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn step<X: Lanes, W: Lanes, const R: usize, const C: usize>(
        x: &[*const X; R],
        w: &[*const W; C],
        i: usize,
        acc: &mut [[__m256; C]; R],
    ) {
        let mut wv = [_mm256_setzero_ps(); C];
        for c in 0..C {
            // SAFETY: the caller guarantees lanes `i..i + 8` of `w[c]`.
            wv[c] = unsafe { W::load8(w[c].add(i)) };
        }
        for r in 0..R {
            // SAFETY: as above, for `x[r]`.
            let xv = unsafe { X::load8(x[r].add(i)) };
            for c in 0..C {
                acc[r][c] = _mm256_fmadd_ps(xv, wv[c], acc[r][c]);
            }
        }
    }

    /// The packed prefill kernel: `acc[r * ld + 0..NR] += Σ_k x[r][k] ·
    /// panel[k * NR + 0..NR]` for `r < MR`, on `MR × 2` accumulators.
    ///
    /// # Safety
    /// Each `x[r]` has `kc` readable elements, `panel` `kc * NR`, `acc`
    /// covers `(MR - 1) * ld + NR` elements; the CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(in super::super) unsafe fn tile(
        x: [*const f32; MR],
        panel: *const f32,
        kc: usize,
        acc: *mut f32,
        ld: usize,
    ) {
        // Pull the accumulator block toward L1 while the k loop runs.
        for r in 0..MR {
            let p = acc.wrapping_add(r * ld).cast::<i8>();
            _mm_prefetch::<_MM_HINT_T0>(p);
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(4 * NR - 4));
        }
        let mut c = [[_mm256_setzero_ps(); NR / 8]; MR];
        let mut kk = 0;
        // Unrolled by 4 so loop overhead stays off the FMA ports' way.
        while kk + 4 <= kc {
            for u in 0..4 {
                // SAFETY: `kk + u < kc`.
                unsafe { rank1(&x, panel, kk + u, &mut c) };
            }
            kk += 4;
        }
        while kk < kc {
            // SAFETY: `kk < kc`.
            unsafe { rank1(&x, panel, kk, &mut c) };
            kk += 1;
        }
        for (r, c) in c.iter().enumerate() {
            for (h, &v) in c.iter().enumerate() {
                // SAFETY: `r * ld + 8 * h + 8 <= (MR - 1) * ld + NR`.
                unsafe {
                    let p = acc.add(r * ld + 8 * h);
                    _mm256_storeu_ps(p, _mm256_add_ps(_mm256_loadu_ps(p), v));
                }
            }
        }
    }

    /// `c[r] += x[r][kk] · panel[kk]`: one step of the packed kernel.
    ///
    /// # Safety
    /// `x[r][kk]` and `panel[kk * NR..(kk + 1) * NR]` are readable; AVX2, FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rank1(
        x: &[*const f32; MR],
        panel: *const f32,
        kk: usize,
        c: &mut [[__m256; NR / 8]; MR],
    ) {
        // SAFETY: the caller guarantees the panel row and `x[r][kk]`.
        let (w0, w1) = unsafe {
            let p = panel.add(kk * NR);
            (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)))
        };
        for r in 0..MR {
            // SAFETY: as above.
            let b = _mm256_set1_ps(unsafe { x[r].add(kk).read() });
            c[r][0] = _mm256_fmadd_ps(b, w0, c[r][0]);
            c[r][1] = _mm256_fmadd_ps(b, w1, c[r][1]);
        }
    }

    /// Widens `NR` weight rows into a k-major panel, `out[k * NR + j] =
    /// rows[j][k]` for `k < kc`: 8 × 8 blocks are loaded row-wise and
    /// transposed in registers, the last `kc % 8` columns in scalar.
    ///
    /// # Safety
    /// Each `rows[j]` has `kc` readable elements, `out` has room for
    /// `kc * NR`; the CPU has AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in super::super) unsafe fn pack_panel<W: Lanes>(
        rows: [*const W; NR],
        kc: usize,
        out: *mut f32,
    ) {
        let mut kk = 0;
        while kk + 8 <= kc {
            for h in 0..NR / 8 {
                let mut v = [_mm256_setzero_ps(); 8];
                for (q, v) in v.iter_mut().enumerate() {
                    // SAFETY: `kk + 8 <= kc`.
                    *v = unsafe { W::load8(rows[8 * h + q].add(kk)) };
                }
                for (q, col) in transpose8(v).into_iter().enumerate() {
                    // SAFETY: `(kk + q) * NR + 8 * h + 8 <= kc * NR`.
                    unsafe { _mm256_storeu_ps(out.add((kk + q) * NR + 8 * h), col) };
                }
            }
            kk += 8;
        }
        for k in kk..kc {
            for (j, row) in rows.iter().enumerate() {
                // SAFETY: `k < kc`.
                unsafe { out.add(k * NR + j).write(row.add(k).read().to_f32()) };
            }
        }
    }

    /// Interleaves 16 bf16 weight rows (raw bits), `kc` values each (`kc`
    /// even), into `[kc / 2][16][2]`: for every k pair, each row's two
    /// values side by side, rows in order. A k pair is one 32-bit word, so
    /// this is a 16 × `kc / 2` transpose of words, 8 × 8 at a time.
    ///
    /// # Safety
    /// Each row has `kc` readable values, `out` room for `16 · kc`; AVX2.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in super::super) unsafe fn pack_pairs(rows: [*const u16; 16], kc: usize, out: *mut u16) {
        let (words, out) = (kc / 2, out.cast::<u32>());
        let mut p = 0;
        while p + 8 <= words {
            for h in 0..2 {
                // SAFETY: words `p..p + 8` of each row are readable.
                let v: [__m256; 8] = std::array::from_fn(|q| unsafe {
                    _mm256_loadu_ps(rows[8 * h + q].cast::<f32>().add(p))
                });
                // Words pass through the float shuffles bit for bit.
                for (q, col) in transpose8(v).into_iter().enumerate() {
                    // SAFETY: `(p + q) * 16 + 8 h + 8 <= words * 16`.
                    unsafe { _mm256_storeu_ps(out.add((p + q) * 16 + 8 * h).cast(), col) };
                }
            }
            p += 8;
        }
        for p in p..words {
            for (j, row) in rows.iter().enumerate() {
                // SAFETY: word `p < kc / 2` of each row is readable.
                unsafe {
                    out.add(p * 16 + j)
                        .write(row.cast::<u32>().add(p).read_unaligned())
                };
            }
        }
    }

    /// Transposes an 8 × 8 block held as 8 row vectors.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
        // Interleave pairs of rows, then pairs of pairs, then 128-bit halves.
        let t = [
            _mm256_unpacklo_ps(r[0], r[1]),
            _mm256_unpackhi_ps(r[0], r[1]),
            _mm256_unpacklo_ps(r[2], r[3]),
            _mm256_unpackhi_ps(r[2], r[3]),
            _mm256_unpacklo_ps(r[4], r[5]),
            _mm256_unpackhi_ps(r[4], r[5]),
            _mm256_unpacklo_ps(r[6], r[7]),
            _mm256_unpackhi_ps(r[6], r[7]),
        ];
        let s = [
            _mm256_shuffle_ps::<0x44>(t[0], t[2]),
            _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
            _mm256_shuffle_ps::<0x44>(t[1], t[3]),
            _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
            _mm256_shuffle_ps::<0x44>(t[4], t[6]),
            _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
            _mm256_shuffle_ps::<0x44>(t[5], t[7]),
            _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
        ];
        [
            _mm256_permute2f128_ps::<0x20>(s[0], s[4]),
            _mm256_permute2f128_ps::<0x20>(s[1], s[5]),
            _mm256_permute2f128_ps::<0x20>(s[2], s[6]),
            _mm256_permute2f128_ps::<0x20>(s[3], s[7]),
            _mm256_permute2f128_ps::<0x31>(s[0], s[4]),
            _mm256_permute2f128_ps::<0x31>(s[1], s[5]),
            _mm256_permute2f128_ps::<0x31>(s[2], s[6]),
            _mm256_permute2f128_ps::<0x31>(s[3], s[7]),
        ]
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }
}
