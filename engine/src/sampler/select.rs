//! Picks the heaviest tokens of a row without sorting it: a radix selection
//! on the floats' bit patterns. Two histogram passes narrow the boundary down
//! to tokens that agree on their top 22 bits, and only those get sorted. Used
//! for top-k (every token counts 1) and top-p (every token counts its
//! weight), it is O(vocab) however many tokens end up selected.

use std::cmp::Ordering;

/// Bins per radix level; each level reads 11 bits of the key.
const BINS: usize = 1 << 11;

/// Reusable buffers for [`select_heaviest`].
#[derive(Default)]
pub(crate) struct SelectScratch {
    bins: Vec<f64>,
    boundary: Vec<u32>,
    next: Vec<u32>,
}

/// Larger value first, lower id first among equals; a total order even with
/// NaN (positive NaN above +inf, as `f32::total_cmp` has it).
pub(crate) fn descending(values: &[f32], a: u32, b: u32) -> Ordering {
    values[b as usize]
        .total_cmp(&values[a as usize])
        .then(a.cmp(&b))
}

/// A u32 that orders like `f32::total_cmp`.
fn key(v: f32) -> u32 {
    let bits = v.to_bits();
    if bits >> 31 == 1 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

/// Appends to `out` (unordered) the shortest heaviest-first run of the
/// candidates whose `measure` adds up to at least `need`; all of them if it
/// never does. Candidates are `pool`, or every id of `values` when `None`.
/// Equal values go to the lower id first, as [`descending`] orders them.
pub(crate) fn select_heaviest(
    values: &[f32],
    pool: Option<&[u32]>,
    need: f64,
    measure: impl Fn(f32) -> f64 + Copy,
    out: &mut Vec<u32>,
    scratch: &mut SelectScratch,
) {
    let SelectScratch {
        bins,
        boundary,
        next,
    } = scratch;
    let level1 = |v: f32| (key(v) >> 21) as usize;
    let level2 = |v: f32| ((key(v) >> 10) as usize) & (BINS - 1);

    boundary.clear();
    let mut acc = match pool {
        None => split(
            values,
            0..values.len() as u32,
            level1,
            measure,
            need,
            0.0,
            bins,
            out,
            boundary,
        ),
        Some(ids) => split(
            values,
            ids.iter().copied(),
            level1,
            measure,
            need,
            0.0,
            bins,
            out,
            boundary,
        ),
    };
    next.clear();
    acc = split(
        values,
        boundary.iter().copied(),
        level2,
        measure,
        need,
        acc,
        bins,
        out,
        next,
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
/// which the running total (starting from `acc`) reaches `need`, pushes the
/// candidates above it to `out` and those in it to `boundary`, and returns the
/// total with the pushed-out ones added.
#[allow(clippy::too_many_arguments)]
fn split(
    values: &[f32],
    candidates: impl Iterator<Item = u32> + Clone,
    bin: impl Fn(f32) -> usize,
    measure: impl Fn(f32) -> f64,
    need: f64,
    mut acc: f64,
    bins: &mut Vec<f64>,
    out: &mut Vec<u32>,
    boundary: &mut Vec<u32>,
) -> f64 {
    bins.clear();
    bins.resize(BINS, 0.0);
    for id in candidates.clone() {
        let v = values[id as usize];
        bins[bin(v)] += measure(v);
    }
    // If rounding keeps the total short of `need`, everything is in bin 0's
    // side of the cut and the final scan takes it all.
    let mut cut = 0;
    for b in (0..BINS).rev() {
        if acc + bins[b] >= need {
            cut = b;
            break;
        }
        acc += bins[b];
    }
    for id in candidates {
        let b = bin(values[id as usize]);
        if b > cut {
            out.push(id);
        } else if b == cut {
            boundary.push(id);
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn heaviest(values: &[f32], need: f64, by_mass: bool) -> Vec<u32> {
        let mut out = Vec::new();
        let measure = move |v: f32| if by_mass { v as f64 } else { 1.0 };
        select_heaviest(
            values,
            None,
            need,
            measure,
            &mut out,
            &mut SelectScratch::default(),
        );
        out.sort();
        out
    }

    fn reference(values: &[f32], need: f64, by_mass: bool) -> Vec<u32> {
        let mut order: Vec<u32> = (0..values.len() as u32).collect();
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
    fn key_orders_like_total_cmp() {
        let v = [
            f32::NEG_INFINITY,
            -3.5,
            -0.0,
            0.0,
            1e-40,
            2.0,
            f32::INFINITY,
            f32::NAN,
        ];
        for w in v.windows(2) {
            assert!(key(w[0]) < key(w[1]), "{w:?}");
        }
    }

    #[test]
    fn top_k_by_count_breaks_ties_by_id() {
        let v = [1.0, 3.0, 2.0, 3.0, 3.0, -1.0];
        assert_eq!(heaviest(&v, 2.0, false), vec![1, 3]);
        assert_eq!(heaviest(&v, 4.0, false), vec![1, 2, 3, 4]);
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        #[test]
        fn matches_a_full_sort(
            values in prop_oneof![
                proptest::collection::vec(-30.0f32..30.0, 1..4000),
                // Heavy ties and near-ties exercise both levels and the final sort.
                proptest::collection::vec((0u8..6).prop_map(|b| b as f32 * 0.001 + 1.0), 1..4000),
            ],
            fraction in 1e-6f64..1.0,
        ) {
            let k = ((values.len() as f64 * fraction) as usize).max(1);
            prop_assert_eq!(heaviest(&values, k as f64, false), reference(&values, k as f64, false));
            let weights: Vec<f32> = values.iter().map(|v| (v / 10.0).exp()).collect();
            let mass = fraction * weights.iter().map(|&w| w as f64).sum::<f64>();
            prop_assert_eq!(heaviest(&weights, mass, true), reference(&weights, mass, true));
        }
    }
}
