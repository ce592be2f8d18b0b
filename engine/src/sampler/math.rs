//! Row primitives written so the compiler vectorises them: lane-wise
//! accumulators instead of one serial dependency chain, and a branch-free exp
//! instead of libm's. A 152k-token row is touched several times per token;
//! libm's `expf` alone costs ~0.5 ms a row, this one ~0.1 ms.

/// Independent accumulators per reduction; 8 f32 fill an AVX register.
const LANES: usize = 8;

/// Largest value, ignoring NaN; -inf for an empty or all-NaN row.
pub(crate) fn max(values: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a = if v > *a { v } else { *a };
        }
    }
    acc.iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

/// Index of the largest value, the lowest on ties; NaN never wins, and a row
/// with no number above -inf gives its first -inf, or 0.
pub(crate) fn argmax(values: &[f32]) -> u32 {
    let m = max(values);
    values.iter().position(|&v| v == m).unwrap_or(0) as u32
}

/// exp(x) to within 2 ulp for x in [-87, 0]; exactly 0 below -87 and for
/// NaN, so -inf and NaN logits get no weight. Cody–Waite reduction
/// x = n ln2 + r with |r| <= ln2 / 2, the Cephes minimax polynomial for e^r,
/// and 2^n built from exponent bits.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // Adding 1.5 * 2^23 rounds a float below 2^22 to an integer, branch-free.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.clamp(-87.0, 88.0);
    let shifted = xc * LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    // n is an integer in [-126, 127]: a normal power of two.
    let n_int = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let two_n = f32::from_bits(n_int.wrapping_add(127) << 23);
    // All ones where x >= -87, else zero (also for NaN): a mask, not a
    // branch, so the loops calling this stay vectorised.
    let keep = ((x >= -87.0) as u32).wrapping_neg();
    f32::from_bits((e_r * two_n).to_bits() & keep)
}

/// Values summed in f32 lanes before the block total goes into an f64: f32
/// alone loses digits over a 152k-token row, f64 lanes halve the vector width.
const BLOCK: usize = 256;

/// Σ f(v) over `values`, vectorised: f32 lanes within a block, f64 across blocks.
#[inline(always)]
fn sum_map(values: &[f32], f: impl Fn(f32) -> f32 + Copy) -> f64 {
    let mut total = 0.0f64;
    for block in values.chunks(BLOCK) {
        let mut acc = [0.0f32; LANES];
        let chunks = block.chunks_exact(LANES);
        let rest = chunks.remainder();
        for chunk in chunks {
            for (a, &v) in acc.iter_mut().zip(chunk) {
                *a += f(v);
            }
        }
        let tail = rest.iter().map(|&v| f(v));
        total += acc.into_iter().chain(tail).map(|a| a as f64).sum::<f64>();
    }
    total
}

/// Defines a function whose body is compiled twice, once for AVX2, picked
/// at run time: that doubles the vector width of the exp loops. Results are
/// bit-identical either way, since the code fixes the lanes and the order of
/// additions and Rust never fuses a * b + c on its own, so workers on
/// different CPUs still agree token for token.
macro_rules! with_avx2 {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty $body:block) => {
        $(#[$doc])*
        pub(crate) fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) -> $ret $body
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body
        }
    };
}

with_avx2! {
    /// Σ exp(v - shift).
    fn sum_exp(values: &[f32], shift: f32) -> f64 {
        sum_map(values, |v| exp(v - shift))
    }
}

/// Sum of the values.
pub(crate) fn sum(values: &[f32]) -> f64 {
    sum_map(values, |v| v)
}

with_avx2! {
    /// Writes `out[i] = exp((src[i] - shift) * scale)`, or 0 where that is
    /// below `floor`, and returns the sum of what it wrote.
    fn exp_into(src: &[f32], out: &mut [f32], shift: f32, scale: f32, floor: f32) -> f64 {
        for (o, &v) in out.iter_mut().zip(src) {
            let w = exp((v - shift) * scale);
            *o = if w < floor { 0.0 } else { w };
        }
        sum(&out[..src.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_over_the_range_logits_use() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 88.0 * i as f32 / 200_000.0;
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64) - want).abs() / want);
        }
        assert!(worst < 2.5e-7, "relative error {worst:e}");
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn exp_edges() {
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::NAN), 0.0);
        assert!((exp(1.0) - std::f32::consts::E).abs() < 1e-6);
    }

    #[test]
    fn max_and_argmax_skip_nan_and_prefer_the_first() {
        let v = [1.0, f32::NAN, 7.0, 3.0, 7.0, 0.0, 2.0, 1.0, 5.0, 6.0, 7.0];
        assert_eq!(max(&v), 7.0);
        assert_eq!(argmax(&v), 2);
        assert_eq!(argmax(&[f32::NAN, f32::NEG_INFINITY]), 1);
        assert_eq!(argmax(&[f32::NAN; 3]), 0);
        assert_eq!(max(&[]), f32::NEG_INFINITY);
    }

    #[test]
    fn dispatched_and_portable_code_agree_bit_for_bit() {
        // On an AVX2 machine the dispatched functions run AVX2 code; the
        // direct calls here are compiled for the baseline target.
        let v: Vec<f32> = (0..5003)
            .map(|i| ((i * 7919) % 1009) as f32 * -0.013)
            .collect();
        let portable = sum_map(&v, |x| exp(x - 0.5));
        assert_eq!(sum_exp(&v, 0.5).to_bits(), portable.to_bits());
        let mut out = vec![0.0; v.len()];
        let total = exp_into(&v, &mut out, 0.5, 1.7, 1e-3);
        for (&x, &w) in v.iter().zip(&out) {
            let want = exp((x - 0.5) * 1.7);
            assert_eq!(w.to_bits(), if want < 1e-3 { 0 } else { want.to_bits() });
        }
        assert_eq!(total.to_bits(), sum_map(&out, |w| w).to_bits());
    }

    #[test]
    fn sums_match_plain_loops() {
        let v: Vec<f32> = (0..1001).map(|i| (i % 17) as f32 * -0.5).collect();
        let plain: f64 = v.iter().map(|&x| (x as f64).exp()).sum();
        assert!((sum_exp(&v, 0.0) - plain).abs() / plain < 1e-6);
        let mut out = vec![0.0; v.len()];
        let total = exp_into(&v, &mut out, 0.0, 1.0, 0.01);
        assert!(out.iter().all(|&w| w == 0.0 || w >= 0.01));
        assert!((total - sum(&out)).abs() < 1e-9);
    }
}
