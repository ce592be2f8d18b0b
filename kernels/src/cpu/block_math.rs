//! The two products of one KV block, with lanes as fixed-size arrays so
//! LLVM keeps them in vector registers.
//!
//! Scores come two ways. [`tile_scores`] puts one query vector in each lane
//! and broadcasts K elements: no horizontal sums, and each K element is
//! loaded once per 8 query vectors; it needs the queries transposed and
//! wastes lanes when a tile has few query vectors. [`block_scores`] is one
//! dot product per key (8-wide accumulator, then a lane sum) for those.
//! The weighted V sum runs strip by strip of the head dim, the strip held
//! in registers across all keys.

use crate::element::Rows;
use crate::vecmath::{dot, madd, LANES};

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

/// Scores of every query vector of a tile against block keys
/// `first..first + n`. `qt` is the tile's queries transposed, `[head_dim][nqp]`
/// with `nqp` a multiple of [`LANES`] (padding lanes zero). Writes
/// `s[(g * n + i) * LANES + l]` = query vector `g * LANES + l` · key `first + i`.
#[inline(always)]
pub(crate) fn tile_scores<const FMA: bool>(
    qt: &[f32],
    nqp: usize,
    k: &Rows<'_>,
    first: usize,
    n: usize,
    s: &mut Vec<f32>,
) {
    s.resize(nqp * n, 0.0);
    for (g, out) in s.chunks_exact_mut(n * LANES).enumerate() {
        let lanes = g * LANES;
        let mut i = 0;
        while i + 4 <= n {
            let key = first + i;
            let rows = [k.row(key), k.row(key + 1), k.row(key + 2), k.row(key + 3)];
            let acc = four_keys::<FMA>(qt, nqp, lanes, rows);
            for (o, a) in out[i * LANES..(i + 4) * LANES]
                .chunks_exact_mut(LANES)
                .zip(&acc)
            {
                o.copy_from_slice(a);
            }
            i += 4;
        }
        for i in i..n {
            let acc = one_key::<FMA>(qt, nqp, lanes, k.row(first + i));
            out[i * LANES..(i + 1) * LANES].copy_from_slice(&acc);
        }
    }
}

/// Query-vector lanes `lanes..lanes + 8` against four keys. Written out per
/// key (not as a loop over keys) because that is the shape LLVM keeps in
/// four registers.
#[inline(always)]
fn four_keys<const FMA: bool>(
    qt: &[f32],
    nqp: usize,
    lanes: usize,
    rows: [&[f32]; 4],
) -> [[f32; LANES]; 4] {
    let (mut a0, mut a1, mut a2, mut a3) = ([0.0; LANES], [0.0; LANES], [0.0; LANES], [0.0; LANES]);
    let columns = qt
        .chunks_exact(nqp)
        .zip(rows[0])
        .zip(rows[1])
        .zip(rows[2])
        .zip(rows[3]);
    for ((((column, &k0), &k1), &k2), &k3) in columns {
        let q: &[f32; LANES] = column[lanes..lanes + LANES]
            .try_into()
            .expect("lane group in range");
        a0 = broadcast_madd::<FMA>(q, k0, a0);
        a1 = broadcast_madd::<FMA>(q, k1, a1);
        a2 = broadcast_madd::<FMA>(q, k2, a2);
        a3 = broadcast_madd::<FMA>(q, k3, a3);
    }
    [a0, a1, a2, a3]
}

#[inline(always)]
fn one_key<const FMA: bool>(qt: &[f32], nqp: usize, lanes: usize, row: &[f32]) -> [f32; LANES] {
    let mut a = [0.0; LANES];
    for (column, &k) in qt.chunks_exact(nqp).zip(row) {
        let q: &[f32; LANES] = column[lanes..lanes + LANES]
            .try_into()
            .expect("lane group in range");
        a = broadcast_madd::<FMA>(q, k, a);
    }
    a
}

/// `q * k + acc` lane-wise.
#[inline(always)]
fn broadcast_madd<const FMA: bool>(q: &[f32; LANES], k: f32, acc: [f32; LANES]) -> [f32; LANES] {
    std::array::from_fn(|l| madd::<FMA>(q[l], k, acc[l]))
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
    fn lane_scores_match_dot_products() {
        let (d, n, nq) = (20, 7, 11);
        let data: Vec<f32> = (0..n * d)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let mut scratch = Vec::new();
        let k = <f32 as crate::element::Element>::rows(&data, n, d, d, &mut scratch);
        let q: Vec<f32> = (0..nq * d).map(|i| (i as f32 * 0.3).sin()).collect();
        let nqp = nq.div_ceil(LANES) * LANES;
        let mut qt = vec![0.0; d * nqp];
        for (qi, row) in q.chunks_exact(d).enumerate() {
            for (c, &x) in row.iter().enumerate() {
                qt[c * nqp + qi] = x;
            }
        }
        let mut s = Vec::new();
        tile_scores::<true>(&qt, nqp, &k, 1, n - 1, &mut s);
        for qi in 0..nq {
            for i in 0..n - 1 {
                let want: f32 = q[qi * d..][..d]
                    .iter()
                    .zip(k.row(1 + i))
                    .map(|(a, b)| a * b)
                    .sum();
                let got = s[((qi / LANES) * (n - 1) + i) * LANES + qi % LANES];
                assert!((got - want).abs() < 1e-5, "query {qi} key {i}");
            }
        }
    }

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
