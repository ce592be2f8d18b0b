//! The two products of one KV block. Scores are one dot product per key
//! (8-wide accumulator; consecutive keys are independent, so out-of-order
//! execution overlaps their FMA chains). The weighted V sum runs strip by
//! strip of the head dim, the strip held in registers across all keys.
//! Lanes are fixed-size arrays so LLVM keeps them in vector registers.

use crate::element::Rows;
use crate::vecmath::{dot, madd};

const LANES: usize = 8;

/// `scores[i] = q · k.row(first + i)`.
#[inline(always)]
pub(crate) fn block_scores<const FMA: bool>(
    q: &[f32],
    k: &Rows<'_>,
    first: usize,
    scores: &mut [f32],
) {
    for (i, s) in scores.iter_mut().enumerate() {
        *s = dot::<FMA>(q, k.row(first + i));
    }
}

/// `acc += sum_i weights[i] * v.row(first + i)`.
#[inline(always)]
pub(crate) fn block_accumulate<const FMA: bool>(
    acc: &mut [f32],
    weights: &[f32],
    v: &Rows<'_>,
    first: usize,
) {
    const WIDE: usize = 4 * LANES;
    let d = acc.len();
    let mut off = 0;
    while off + WIDE <= d {
        strip::<FMA, WIDE>(acc, off, weights, v, first);
        off += WIDE;
    }
    while off + LANES <= d {
        strip::<FMA, LANES>(acc, off, weights, v, first);
        off += LANES;
    }
    while off < d {
        strip::<FMA, 1>(acc, off, weights, v, first);
        off += 1;
    }
}

/// Columns `off..off + W` of the weighted sum, kept in a local array across
/// all keys (one bounds check per key, none per lane).
#[inline(always)]
fn strip<const FMA: bool, const W: usize>(
    acc: &mut [f32],
    off: usize,
    weights: &[f32],
    v: &Rows<'_>,
    first: usize,
) {
    let out: &mut [f32; W] = (&mut acc[off..off + W]).try_into().expect("strip in range");
    let mut a = *out;
    for (i, &w) in weights.iter().enumerate() {
        let row: &[f32; W] = v.row(first + i)[off..off + W]
            .try_into()
            .expect("strip in range");
        for l in 0..W {
            a[l] = madd::<FMA>(row[l], w, a[l]);
        }
    }
    *out = a;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_products_match_scalar_math() {
        for d in [3, 8, 20, 64, 72] {
            let n = 7;
            let data: Vec<f32> = (0..n * d + 5)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                .collect();
            let mut scratch = Vec::new();
            let k = <f32 as crate::element::Element>::rows(&data[5..], n, d, d, &mut scratch);
            let q: Vec<f32> = (0..d).map(|i| (i as f32 * 0.3).sin()).collect();
            let mut scores = vec![0.0; n - 1];
            block_scores::<false>(&q, &k, 1, &mut scores);
            let mut acc: Vec<f32> = vec![0.5; d];
            block_accumulate::<true>(&mut acc, &scores, &k, 1);
            for (i, s) in scores.iter().enumerate() {
                let want: f32 = q.iter().zip(k.row(1 + i)).map(|(a, b)| a * b).sum();
                assert!((s - want).abs() < 1e-5, "d {d} slot {i}");
            }
            for (c, got) in acc.iter().enumerate() {
                let want: f32 = 0.5 + (0..n - 1).map(|i| scores[i] * k.row(1 + i)[c]).sum::<f32>();
                assert!((got - want).abs() < 1e-4, "d {d} col {c}");
            }
        }
    }
}
