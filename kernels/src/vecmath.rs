//! f32 vector loops for the attention inner loops. Each is written over
//! 8-wide chunks with independent lanes so LLVM vectorises it without
//! fast-math (it may not reassociate a plain `sum()`), and each is
//! `#[inline(always)]` so it picks up the AVX2/FMA target features of the
//! kernel it is inlined into.
//!
//! `FMA` selects fused multiply-add. It must only be true inside code
//! compiled with the `fma` target feature: elsewhere `mul_add` becomes a
//! slow libm call, and plain Rust never contracts `a * b + c` by itself.

pub(crate) const LANES: usize = 8;

/// `a * b + c`, fused when `FMA`.
#[inline(always)]
pub(crate) fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `a · b` over the common length (callers pass equal lengths).
#[inline(always)]
pub(crate) fn dot<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..LANES {
            acc[l] = madd::<FMA>(x[l], y[l], acc[l]);
        }
    }
    let mut tail = 0.0;
    for (x, y) in ar.iter().zip(br) {
        tail = madd::<FMA>(*x, *y, tail);
    }
    horizontal_sum(acc) + tail
}

/// `y *= a`.
#[inline(always)]
pub(crate) fn scale(y: &mut [f32], a: f32) {
    for v in y.iter_mut() {
        *v *= a;
    }
}

/// Largest element (`-inf` for an empty slice).
#[inline(always)]
pub(crate) fn max(xs: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            m[l] = if c[l] > m[l] { c[l] } else { m[l] };
        }
    }
    let mut best = rest
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    for v in m {
        best = if v > best { v } else { best };
    }
    best
}

/// Replaces each `x` with `exp(x - shift)` and returns their sum. Requires
/// `x <= shift` (true when `shift` is a running maximum), so only the
/// non-positive half of exp is needed.
#[inline(always)]
pub(crate) fn exp_shifted_sum<const FMA: bool>(xs: &mut [f32], shift: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = xs.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            c[l] = exp_nonpositive::<FMA>(c[l] - shift);
            acc[l] += c[l];
        }
    }
    let mut tail = 0.0;
    for x in chunks.into_remainder() {
        *x = exp_nonpositive::<FMA>(*x - shift);
        tail += *x;
    }
    horizontal_sum(acc) + tail
}

/// `exp(x)` for `x <= 0`, branch-free so it vectorises; relative error
/// about 2e-7. Writes `x = n ln2 + r` with `|r| <= ln2 / 2`, evaluates a
/// degree-6 Taylor polynomial for `e^r` and builds `2^n` from exponent bits.
/// Inputs below -87 are clamped, giving ~1.6e-38 instead of 0 (NaN stays NaN):
/// harmless where it only ever multiplies an accumulator.
#[inline(always)]
pub(crate) fn exp_nonpositive<const FMA: bool>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to the nearest integer and leaves it in the
    // low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 0.0);
    let t = madd::<FMA>(x, LOG2E, ROUND);
    let n = t - ROUND;
    let r = madd::<FMA>(n, -LN2_LO, madd::<FMA>(n, -LN2_HI, x));
    let mut p = 1.0 / 720.0;
    p = madd::<FMA>(p, r, 1.0 / 120.0);
    p = madd::<FMA>(p, r, 1.0 / 24.0);
    p = madd::<FMA>(p, r, 1.0 / 6.0);
    p = madd::<FMA>(p, r, 0.5);
    p = madd::<FMA>(p, r, 1.0);
    p = madd::<FMA>(p, r, 1.0);
    // n is in -126..=0, so n + 127 is a valid biased exponent.
    let n_int = t.to_bits().wrapping_sub(ROUND.to_bits());
    let two_n = f32::from_bits(n_int.wrapping_add(127) << 23);
    p * two_n
}

/// Lane sum. Summing in lane order matters: LLVM's SLP vectoriser then
/// keeps the accumulator as one 8-wide register, while a pairwise tree made
/// it split the accumulator into two 4-wide halves.
#[inline(always)]
fn horizontal_sum(acc: [f32; LANES]) -> f32 {
    acc.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_over_the_range_it_serves() {
        let mut worst = 0.0f32;
        for i in 0..=200_000 {
            let x = -87.0 * i as f32 / 200_000.0;
            let rel = (exp_nonpositive::<true>(x) - x.exp()).abs() / x.exp();
            worst = worst.max(rel);
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        for i in 0..=1000 {
            let x = -87.0 * i as f32 / 1000.0;
            assert!((exp_nonpositive::<false>(x) - x.exp()).abs() <= 5e-7 * x.exp());
        }
        assert_eq!(exp_nonpositive::<true>(0.0), 1.0);
        assert!(exp_nonpositive::<true>(f32::NEG_INFINITY) < 1e-37);
    }

    #[test]
    fn loops_match_scalar_math_on_odd_lengths() {
        let a: Vec<f32> = (0..21).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..21).map(|i| (i as f32 * 0.11).cos()).collect();
        let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot::<false>(&a, &b) - want).abs() < 1e-5);
        assert_eq!(max(&a), a.iter().cloned().fold(f32::MIN, f32::max));
        assert_eq!(max(&[]), f32::NEG_INFINITY);
        let mut e = a.clone();
        let m = max(&a);
        let s = exp_shifted_sum::<false>(&mut e, m);
        let want: f32 = a.iter().map(|x| (x - m).exp()).sum();
        assert!((s - want).abs() < 1e-5);
    }
}
