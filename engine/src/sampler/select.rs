//! Picks the heaviest tokens of a row without sorting it. Used for top-k
//! (every token counts 1) and top-p (every token counts its weight).
//!
//! Most requests need few tokens: a small top-k, or the nucleus of a peaked
//! distribution. One pass keeping the [`FAST`] heaviest answers those. The
//! rest go to a radix selection on the floats' bit patterns: two histogram
//! passes narrow the boundary down to tokens that agree on their top 22 bits,
//! and only those get sorted. Either way it is O(vocab).

use std::cmp::Ordering;

use super::math;

/// Bins per radix level; each level reads 11 bits of the key.
const BINS: usize = 1 << 11;

/// Interleaved histogram copies per level.
const COPIES: usize = 4;

/// Heaviest tokens the first pass keeps.
const FAST: usize = 64;

/// Values per block that [`top_n`] skips by looking at its maximum only.
const BLOCK: usize = 64;

/// Pools at most this large are sorted outright.
const SORT_POOL: usize = 4096;

/// Reusable buffers for [`select_heaviest`].
#[derive(Default)]
pub(crate) struct SelectScratch {
    best: Vec<(u32, f32)>,
    bins: Vec<f64>,
    boundary: Vec<u32>,
    next: Vec<u32>,
}

/// Larger value first, lower id first among equals, NaN last: the order of
/// [`key`], total, so sorts never see an inconsistent comparison.
pub(crate) fn descending(values: &[f32], a: u32, b: u32) -> Ordering {
    key(values[b as usize])
        .cmp(&key(values[a as usize]))
        .then(a.cmp(&b))
}

/// A u32 that orders floats by value (-0 just below +0), with NaN lowest of
/// all, as [`top_n`] treats it.
fn key(v: f32) -> u32 {
    let bits = v.to_bits();
    if v.is_nan() {
        0
    } else if bits >> 31 == 1 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

/// The `n` largest values as `(id, value)` into `best`, largest first, lower
/// id first among equals, NaN skipped. One pass with a small sorted buffer
/// that skips whole blocks whose maximum cannot enter it.
pub(crate) fn top_n(values: &[f32], n: usize, best: &mut Vec<(u32, f32)>) {
    best.clear();
    if n == 0 {
        return;
    }
    for (b, block) in values.chunks(BLOCK).enumerate() {
        if best.len() == n && math::max(block) <= best[n - 1].1 {
            continue;
        }
        for (j, &v) in block.iter().enumerate() {
            if v.is_nan() || (best.len() == n && v <= best[n - 1].1) {
                continue;
            }
            // After any equal values, which all have lower ids.
            let at = best.partition_point(|&(_, w)| w >= v);
            best.insert(at, ((b * BLOCK + j) as u32, v));
            best.truncate(n);
        }
    }
}

/// Appends to `out` (unordered) the shortest heaviest-first run of the
/// candidates whose `measure` adds up to at least `need` (> 0); all of them if
/// it never does. Candidates are `pool`, or every id of `values` when `None`.
/// Equal values go to the lower id first, as [`descending`] orders them.
pub(crate) fn select_heaviest(
    values: &[f32],
    pool: Option<&[u32]>,
    need: f64,
    measure: impl Fn(f32) -> f64 + Copy,
    out: &mut Vec<u32>,
    scratch: &mut SelectScratch,
) {
    match pool {
        None => {
            top_n(values, FAST, &mut scratch.best);
            let mut acc = 0.0;
            let reached = scratch.best.iter().position(|&(_, v)| {
                acc += measure(v);
                acc >= need
            });
            let complete = scratch.best.len() == values.len();
            if let Some(n) = reached.map(|j| j + 1).or(complete.then_some(values.len())) {
                out.extend(scratch.best[..n].iter().map(|&(id, _)| id));
                return;
            }
            radix(values, 0..values.len() as u32, need, measure, out, scratch);
        }
        Some(ids) if ids.len() <= SORT_POOL => {
            let start = out.len();
            out.extend_from_slice(ids);
            out[start..].sort_unstable_by(|&a, &b| descending(values, a, b));
            let mut acc = 0.0;
            let n = out[start..]
                .iter()
                .position(|&id| {
                    acc += measure(values[id as usize]);
                    acc >= need
                })
                .map_or(ids.len(), |j| j + 1);
            out.truncate(start + n);
        }
        Some(ids) => radix(values, ids.iter().copied(), need, measure, out, scratch),
    }
}

/// [`select_heaviest`] by radix selection, for candidates too many to sort.
fn radix(
    values: &[f32],
    candidates: impl ExactSizeIterator<Item = u32> + Clone,
    need: f64,
    measure: impl Fn(f32) -> f64 + Copy,
    out: &mut Vec<u32>,
    scratch: &mut SelectScratch,
) {
    let SelectScratch {
        bins,
        boundary,
        next,
        ..
    } = scratch;
    let level1 = |v: f32| (key(v) >> 21) as usize;
    let level2 = |v: f32| ((key(v) >> 10) as usize) & (BINS - 1);

    boundary.clear();
    let mut acc = split(
        values, candidates, level1, measure, need, 0.0, bins, out, boundary,
    );
    next.clear();
    let candidates = boundary.iter().copied();
    acc = split(
        values, candidates, level2, measure, need, acc, bins, out, next,
    );

    next.sort_unstable_by(|&a, &b| descending(values, a, b));
    for &id in next.iter() {
        if acc >= need {
            break;
        }
        out.push(id);
        acc += measure(values[id as usize]);
    }
}

/// One radix level. Histograms `measure` by `bin`, finds the highest bin at
/// which the running total (starting from `acc`) reaches `need`, appends the
/// candidates above it to `out` and those in it to `boundary`, and returns the
/// total with the ones above added.
///
/// Both loops are written for a 152k-token row: the histogram keeps
/// `COPIES` interleaved copies so that runs of tokens in one bin do not
/// serialise on one memory cell, and the split writes every id to both outputs
/// and advances each by 0 or 1, so that it has no branch to mispredict.
#[allow(clippy::too_many_arguments)]
fn split(
    values: &[f32],
    candidates: impl ExactSizeIterator<Item = u32> + Clone,
    bin: impl Fn(f32) -> usize,
    measure: impl Fn(f32) -> f64,
    need: f64,
    mut acc: f64,
    bins: &mut Vec<f64>,
    out: &mut Vec<u32>,
    boundary: &mut Vec<u32>,
) -> f64 {
    bins.clear();
    bins.resize(COPIES * BINS, 0.0);
    for (i, id) in candidates.clone().enumerate() {
        let v = values[id as usize];
        bins[(i % COPIES) * BINS + bin(v)] += measure(v);
    }
    let (merged, copies) = bins.split_at_mut(BINS);
    for copy in copies.chunks_exact(BINS) {
        for (m, &c) in merged.iter_mut().zip(copy) {
            *m += c;
        }
    }
    // If rounding keeps the total short of `need`, everything is in bin 0's
    // side of the cut and the final scan takes it all.
    let mut cut = 0;
    for b in (0..BINS).rev() {
        if acc + merged[b] >= need {
            cut = b;
            break;
        }
        acc += merged[b];
    }
    let (out_start, boundary_start, n) = (out.len(), boundary.len(), candidates.len());
    out.resize(out_start + n, 0);
    boundary.resize(boundary_start + n, 0);
    let (above, at) = (&mut out[out_start..], &mut boundary[boundary_start..]);
    let (mut o, mut q) = (0, 0);
    for id in candidates {
        let b = bin(values[id as usize]);
        above[o] = id;
        o += (b > cut) as usize;
        at[q] = id;
        q += (b == cut) as usize;
    }
    out.truncate(out_start + o);
    boundary.truncate(boundary_start + q);
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Selects from every id, or from `pool` (ids in any order).
    fn heaviest(values: &[f32], pool: Option<&[u32]>, need: f64, by_mass: bool) -> Vec<u32> {
        let mut out = Vec::new();
        let measure = move |v: f32| if by_mass { v as f64 } else { 1.0 };
        select_heaviest(
            values,
            pool,
            need,
            measure,
            &mut out,
            &mut SelectScratch::default(),
        );
        out.sort();
        out
    }

    fn reference(values: &[f32], pool: Option<&[u32]>, need: f64, by_mass: bool) -> Vec<u32> {
        let mut order: Vec<u32> =
            pool.map_or_else(|| (0..values.len() as u32).collect(), <[u32]>::to_vec);
        order.sort_by(|&a, &b| descending(values, a, b));
        let mut acc = 0.0;
        let n = order
            .iter()
            .position(|&i| {
                acc += if by_mass {
                    values[i as usize] as f64
                } else {
                    1.0
                };
                acc >= need
            })
            .map_or(order.len(), |j| j + 1);
        let mut taken = order[..n].to_vec();
        taken.sort();
        taken
    }

    #[test]
    fn key_orders_by_value_with_nan_lowest() {
        let v = [
            f32::NAN,
            f32::NEG_INFINITY,
            -3.5,
            -0.0,
            0.0,
            1e-40,
            2.0,
            f32::INFINITY,
        ];
        for w in v.windows(2) {
            assert!(key(w[0]) < key(w[1]), "{w:?}");
        }
    }

    #[test]
    fn top_k_by_count_breaks_ties_by_id() {
        let v = [1.0, 3.0, 2.0, 3.0, 3.0, -1.0];
        assert_eq!(heaviest(&v, None, 2.0, false), vec![1, 3]);
        assert_eq!(heaviest(&v, None, 4.0, false), vec![1, 2, 3, 4]);
    }

    #[test]
    fn from_a_pool_only_pool_members_count() {
        let v = [5.0, 4.0, 3.0, 2.0];
        let mut out = Vec::new();
        select_heaviest(
            &v,
            Some(&[1, 3]),
            1.0,
            |_| 1.0,
            &mut out,
            &mut SelectScratch::default(),
        );
        assert_eq!(out, vec![1]);
    }

    #[test]
    fn top_n_is_descending_with_ties_by_id() {
        let mut best = Vec::new();
        top_n(&[1.0, 5.0, 3.0, 5.0, f32::NAN, 3.0, 0.0], 4, &mut best);
        assert_eq!(best, vec![(1, 5.0), (3, 5.0), (2, 3.0), (5, 3.0)]);
        top_n(&[2.0, 1.0], 5, &mut best);
        assert_eq!(best, vec![(0, 2.0), (1, 1.0)]);
        top_n(&[2.0, 1.0], 0, &mut best);
        assert_eq!(best, vec![]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        #[test]
        fn matches_a_full_sort(
            values in prop_oneof![
                proptest::collection::vec(-30.0f32..30.0, 1..6000),
                // Heavy ties and near-ties exercise both levels and the final sort.
                proptest::collection::vec((0u8..6).prop_map(|b| b as f32 * 0.001 + 1.0), 1..6000),
            ],
            fraction in 1e-6f64..1.0,
            stride in 1usize..4,
        ) {
            // Small selections take the first pass, large ones the radix path;
            // pools above SORT_POOL take the radix path too.
            let pool: Vec<u32> = (0..values.len() as u32).rev().step_by(stride).collect();
            let weights: Vec<f32> = values.iter().map(|v| (v / 10.0).exp()).collect();
            for pool in [None, Some(pool.as_slice())] {
                let n = pool.map_or(values.len(), <[u32]>::len);
                let k = ((n as f64 * fraction) as usize).max(1) as f64;
                prop_assert_eq!(heaviest(&values, pool, k, false), reference(&values, pool, k, false));
                let ids: Vec<u32> = pool.map_or_else(|| (0..n as u32).collect(), <[u32]>::to_vec);
                let mass = fraction * ids.iter().map(|&i| weights[i as usize] as f64).sum::<f64>();
                prop_assert_eq!(heaviest(&weights, pool, mass, true), reference(&weights, pool, mass, true));
            }
        }
    }
}
