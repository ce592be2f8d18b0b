//! Temperature, top-k, top-p and min-p: which tokens stay candidates, and with
//! what weight.
//!
//! Everything here is O(vocab): top-k and top-p select their tokens by radix
//! selection ([`select`](super::select)) instead of sorting the row, and the
//! passes over the whole row are vectorised ([`math`](super::math)).

use super::math;
use super::select::{select_heaviest, SelectScratch};
use super::SamplingParams;

/// Weights summed at once while skipping ahead in a draw.
const PICK_CHUNK: usize = 256;

/// The tokens that survive truncation with their unnormalised probabilities.
pub(crate) struct Kept<'a> {
    /// Weight of token `id` at `weights[id]`; only the kept ids are meaningful.
    weights: &'a [f32],
    /// The kept ids, or `None` when every token is kept (zero weight = dropped).
    ids: Option<&'a [u32]>,
    /// Sum of the kept weights.
    total: f64,
}

impl Kept<'_> {
    /// The kept token whose cumulative weight first exceeds `u * total`, for a
    /// uniform `u` in [0, 1). `None` when no token has a positive, finite
    /// weight (a row of -inf or NaN logits).
    pub(crate) fn pick(&self, u: f64) -> Option<u32> {
        if !(self.total > 0.0 && self.total.is_finite()) {
            return None;
        }
        let target = u * self.total;
        match self.ids {
            None => pick_dense(self.weights, target),
            Some(ids) => pick_from(ids.iter().map(|&i| (i, self.weights[i as usize])), target),
        }
    }

    /// Kept `(id, weight)` pairs with positive weight, by id; for tests.
    #[cfg(test)]
    pub(crate) fn pairs(&self) -> Vec<(u32, f32)> {
        let mut pairs: Vec<(u32, f32)> = match self.ids {
            None => self
                .weights
                .iter()
                .enumerate()
                .map(|(i, &w)| (i as u32, w))
                .collect(),
            Some(ids) => ids.iter().map(|&i| (i, self.weights[i as usize])).collect(),
        };
        pairs.retain(|&(_, w)| w > 0.0);
        pairs.sort_by_key(|&(i, _)| i);
        pairs
    }
}

/// Walks the candidates until the running weight passes `target`; rounding
/// can leave it just short, and then the last positive candidate wins.
fn pick_from(candidates: impl Iterator<Item = (u32, f32)>, target: f64) -> Option<u32> {
    let (mut acc, mut last) = (0.0f64, None);
    for (id, w) in candidates {
        if w > 0.0 {
            acc += w as f64;
            last = Some(id);
            if acc > target {
                break;
            }
        }
    }
    last
}

/// [`pick_from`] over a whole row, skipping chunks whose (vectorised) sum
/// keeps the running weight short of `target`.
fn pick_dense(weights: &[f32], target: f64) -> Option<u32> {
    let mut acc = 0.0f64;
    for (c, chunk) in weights.chunks(PICK_CHUNK).enumerate() {
        let mass = math::sum(chunk);
        if acc + mass <= target {
            acc += mass;
            continue;
        }
        for (j, &w) in chunk.iter().enumerate() {
            acc += w as f64;
            if w > 0.0 && acc > target {
                return Some((c * PICK_CHUNK + j) as u32);
            }
        }
    }
    weights.iter().rposition(|&w| w > 0.0).map(|i| i as u32)
}

/// Reusable buffers for [`truncate`].
#[derive(Default)]
pub(crate) struct TruncateScratch {
    weights: Vec<f32>,
    ids: Vec<u32>,
    pool: Vec<u32>,
    select: SelectScratch,
}

/// Weighs the (penalised) `logits` as exp((l - max) / T) and keeps the tokens
/// that survive top-k, then top-p, then min-p. `params` must not be greedy.
pub(crate) fn truncate<'a>(
    logits: &[f32],
    params: &SamplingParams,
    scratch: &'a mut TruncateScratch,
) -> Kept<'a> {
    let TruncateScratch {
        weights,
        ids,
        pool,
        select,
    } = scratch;
    let vocab = logits.len();
    let inv_t = 1.0 / params.temperature;
    let top_k = params.effective_top_k(vocab);
    let top_p = params.top_p < 1.0;
    // The most likely token always survives and weighs exp(0) = 1, so min-p's
    // threshold `min_p * max_prob` is `min_p` in weights, before or after renormalising.
    let min_p = params.min_p;
    weights.resize(vocab, 0.0);

    ids.clear();
    let total = match top_k {
        None => {
            let floor = if top_p { 0.0 } else { min_p };
            let total = math::exp_into(logits, weights, math::max(logits), inv_t, floor);
            if !top_p {
                return Kept {
                    weights,
                    ids: None,
                    total,
                };
            }
            total
        }
        Some(k) => {
            select_heaviest(logits, None, k as f64, |_| 1.0, ids, select);
            let max = ids
                .iter()
                .map(|&i| logits[i as usize])
                .fold(f32::NEG_INFINITY, f32::max);
            let mut total = 0.0f64;
            for &i in ids.iter() {
                let w = math::exp((logits[i as usize] - max) * inv_t);
                weights[i as usize] = w;
                total += w as f64;
            }
            total
        }
    };
    if !(total > 0.0 && total.is_finite()) {
        return Kept {
            weights,
            ids: Some(ids),
            total,
        };
    }
    if top_p {
        let target = params.top_p as f64 * total;
        let candidates = match top_k {
            None => None,
            Some(_) => {
                std::mem::swap(ids, pool);
                ids.clear();
                Some(pool.as_slice())
            }
        };
        select_heaviest(weights, candidates, target, |w| w as f64, ids, select);
    }
    if min_p > 0.0 {
        ids.retain(|&i| weights[i as usize] >= min_p);
    }
    let total = ids.iter().map(|&i| weights[i as usize] as f64).sum();
    Kept {
        weights,
        ids: Some(ids),
        total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::select::descending;
    use proptest::prelude::*;

    fn params(top_k: Option<usize>, top_p: f32, min_p: f32) -> SamplingParams {
        SamplingParams {
            top_k,
            top_p,
            min_p,
            ..Default::default()
        }
    }

    fn kept_ids(logits: &[f32], p: &SamplingParams) -> Vec<u32> {
        truncate(logits, p, &mut TruncateScratch::default())
            .pairs()
            .into_iter()
            .map(|(i, _)| i)
            .collect()
    }

    /// Logits whose softmax is exactly `probs`.
    fn logits_of(probs: &[f32]) -> Vec<f32> {
        probs.iter().map(|p| p.ln()).collect()
    }

    #[test]
    fn no_truncation_keeps_every_token_with_softmax_weights() {
        let logits = [1.0, 2.0, 3.0];
        let mut scratch = TruncateScratch::default();
        let kept = truncate(&logits, &SamplingParams::default(), &mut scratch);
        let pairs = kept.pairs();
        assert_eq!(pairs.len(), 3);
        for (i, w) in pairs {
            assert!((w - (logits[i as usize] - 3.0f32).exp()).abs() < 1e-6);
        }
    }

    #[test]
    fn temperature_sharpens_weights() {
        let p = SamplingParams {
            temperature: 0.5,
            ..Default::default()
        };
        let pairs = truncate(&[0.0, 1.0], &p, &mut TruncateScratch::default()).pairs();
        assert!((pairs[0].1 - (-2.0f32).exp()).abs() < 1e-6);
        assert_eq!(pairs[1].1, 1.0);
    }

    #[test]
    fn top_k_keeps_the_k_largest_and_breaks_ties_by_id() {
        let logits = [0.5, 3.0, 1.0, 3.0, 1.0, 2.0];
        assert_eq!(kept_ids(&logits, &params(Some(2), 1.0, 0.0)), vec![1, 3]);
        assert_eq!(
            kept_ids(&logits, &params(Some(4), 1.0, 0.0)),
            vec![1, 2, 3, 5]
        );
        assert_eq!(kept_ids(&logits, &params(Some(1), 1.0, 0.0)), vec![1]);
    }

    #[test]
    fn top_p_keeps_the_smallest_prefix_reaching_the_mass() {
        let logits = logits_of(&[0.1, 0.4, 0.2, 0.3]);
        assert_eq!(kept_ids(&logits, &params(None, 0.5, 0.0)), vec![1, 3]);
        assert_eq!(kept_ids(&logits, &params(None, 0.7, 0.0)), vec![1, 3]);
        assert_eq!(kept_ids(&logits, &params(None, 0.75, 0.0)), vec![1, 2, 3]);
        // A tiny top_p still keeps the most likely token.
        assert_eq!(kept_ids(&logits, &params(None, 1e-6, 0.0)), vec![1]);
    }

    #[test]
    fn top_p_applies_to_the_distribution_top_k_left() {
        let logits = logits_of(&[0.4, 0.3, 0.2, 0.1]);
        // Alone, 0.5 needs two tokens; after top-2 the first weighs 4/7 > 0.5.
        assert_eq!(kept_ids(&logits, &params(None, 0.5, 0.0)), vec![0, 1]);
        assert_eq!(kept_ids(&logits, &params(Some(2), 0.5, 0.0)), vec![0]);
    }

    #[test]
    fn min_p_drops_tokens_below_a_fraction_of_the_top_one() {
        let logits = logits_of(&[0.5, 0.3, 0.15, 0.05]);
        assert_eq!(kept_ids(&logits, &params(None, 1.0, 0.25)), vec![0, 1, 2]);
        assert_eq!(kept_ids(&logits, &params(None, 1.0, 0.5)), vec![0, 1]);
        assert_eq!(kept_ids(&logits, &params(Some(3), 0.9, 0.5)), vec![0, 1]);
        assert_eq!(kept_ids(&logits, &params(None, 1.0, 1.0)), vec![0]);
    }

    #[test]
    fn pick_walks_cumulative_weight() {
        let mut scratch = TruncateScratch::default();
        let kept = truncate(
            &logits_of(&[0.25, 0.5, 0.25]),
            &SamplingParams::default(),
            &mut scratch,
        );
        assert_eq!(kept.pick(0.0), Some(0));
        assert_eq!(kept.pick(0.3), Some(1));
        assert_eq!(kept.pick(0.74), Some(1));
        assert_eq!(kept.pick(0.76), Some(2));
        assert_eq!(kept.pick(0.999_999_9), Some(2));
    }

    #[test]
    fn rows_without_finite_logits_pick_nothing() {
        for row in [vec![f32::NEG_INFINITY; 3], vec![f32::NAN; 3]] {
            for p in [params(None, 1.0, 0.0), params(Some(2), 0.5, 0.1)] {
                let mut scratch = TruncateScratch::default();
                assert_eq!(truncate(&row, &p, &mut scratch).pick(0.5), None);
            }
        }
    }

    /// Full-sort reference: the obvious implementation of the same rules.
    fn reference(logits: &[f32], p: &SamplingParams) -> Vec<u32> {
        let (max, inv_t) = (math::max(logits), 1.0 / p.temperature);
        let w: Vec<f32> = logits
            .iter()
            .map(|l| math::exp((l - max) * inv_t))
            .collect();
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        order.sort_by(|&a, &b| descending(logits, a, b));
        if let Some(k) = p.effective_top_k(logits.len()) {
            order.truncate(k);
        }
        if p.top_p < 1.0 {
            let total: f64 = order.iter().map(|&i| w[i as usize] as f64).sum();
            let mut acc = 0.0;
            let n = order
                .iter()
                .position(|&i| {
                    acc += w[i as usize] as f64;
                    acc >= p.top_p as f64 * total
                })
                .map_or(order.len(), |j| j + 1);
            order.truncate(n);
        }
        order.retain(|&i| w[i as usize] >= p.min_p && w[i as usize] > 0.0);
        order.sort();
        order
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn matches_full_sort_reference(
            logits in proptest::collection::vec(-20.0f32..20.0, 1..3000),
            temperature in 0.05f32..3.0,
            top_k in proptest::option::of(0usize..200),
            top_p in prop_oneof![Just(1.0f32), 0.01f32..1.0],
            min_p in prop_oneof![Just(0.0f32), 0.0f32..0.5],
        ) {
            let p = SamplingParams { temperature, top_k, top_p, min_p, ..Default::default() };
            prop_assert_eq!(kept_ids(&logits, &p), reference(&logits, &p));
        }
    }
}
