//! Temperature, top-k, top-p and min-p: which tokens stay candidates, and with
//! what weight.
//!
//! Everything here is O(vocab) plus a sort of the tokens that can matter: top-k
//! selects before it sorts, and top-p first bounds the nucleus with a histogram
//! of weights by binary exponent, so a 152k-token vocab is never fully sorted
//! unless the distribution is nearly flat.

use std::cmp::Ordering;

use super::SamplingParams;

/// Number of power-of-two weight buckets top-p uses to bound the nucleus;
/// the last one also holds every weight below 2^-(BUCKETS - 2).
const BUCKETS: usize = 64;

/// Size of the first chunk the nucleus search sorts; it doubles after.
const FIRST_CHUNK: usize = 64;

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
            None => pick_from(
                self.weights.iter().enumerate().map(|(i, &w)| (i as u32, w)),
                target,
            ),
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

/// Replaces the (penalised) `logits` in place with weights exp((l - max) / T)
/// for the tokens that survive top-k, then top-p, then min-p, and says which
/// they are. `ids` is reusable scratch. `params` must not be greedy.
pub(crate) fn truncate<'a>(
    logits: &'a mut [f32],
    ids: &'a mut Vec<u32>,
    params: &SamplingParams,
) -> Kept<'a> {
    let inv_t = 1.0 / params.temperature;
    let top_k = params.effective_top_k(logits.len());
    let top_p = params.top_p < 1.0;
    // The most likely token always survives and weighs exp(0) = 1, so min-p's
    // threshold `min_p * max_prob` is `min_p` in weights, before or after renormalising.
    let min_p = params.min_p;

    if top_k.is_none() && !top_p {
        let max = max_of(logits);
        let mut total = 0.0f64;
        for l in logits.iter_mut() {
            let w = ((*l - max) * inv_t).exp();
            *l = if w < min_p { 0.0 } else { w };
            total += *l as f64;
        }
        return Kept {
            weights: logits,
            ids: None,
            total,
        };
    }

    ids.clear();
    let mut total = 0.0f64;
    if let Some(k) = top_k {
        ids.extend(0..logits.len() as u32);
        ids.select_nth_unstable_by(k - 1, |&a, &b| descending(logits, a, b));
        ids.truncate(k);
        let max = ids
            .iter()
            .map(|&i| logits[i as usize])
            .fold(f32::NEG_INFINITY, f32::max);
        for &i in ids.iter() {
            let l = &mut logits[i as usize];
            *l = ((*l - max) * inv_t).exp();
            total += *l as f64;
        }
    } else {
        total = weights_within_nucleus_bound(logits, ids, inv_t, params.top_p as f64);
    }
    if top_p {
        let n = nucleus_len(ids, logits, params.top_p as f64 * total);
        ids.truncate(n);
    }
    if min_p > 0.0 {
        ids.retain(|&i| logits[i as usize] >= min_p);
    }
    let total = ids.iter().map(|&i| logits[i as usize] as f64).sum();
    Kept {
        weights: logits,
        ids: Some(ids),
        total,
    }
}

/// Turns every logit into its weight and collects into `ids` the tokens of the
/// heaviest power-of-two buckets that together reach `top_p` of the mass: the
/// nucleus lies within them. Returns the total weight of the whole row.
fn weights_within_nucleus_bound(
    logits: &mut [f32],
    ids: &mut Vec<u32>,
    inv_t: f32,
    top_p: f64,
) -> f64 {
    let max = max_of(logits);
    let mut mass = [0.0f64; BUCKETS];
    let mut total = 0.0f64;
    for l in logits.iter_mut() {
        *l = ((*l - max) * inv_t).exp();
        mass[bucket(*l)] += *l as f64;
        total += *l as f64;
    }
    let target = top_p * total;
    let mut acc = 0.0;
    let last = mass
        .iter()
        .position(|&m| {
            acc += m;
            acc >= target
        })
        .unwrap_or(BUCKETS - 1);
    ids.extend((0..logits.len() as u32).filter(|&i| bucket(logits[i as usize]) <= last));
    total
}

/// Bucket `b` holds weights in [2^-b, 2^-(b-1)), bucket 0 the weight 1; found
/// from the float's exponent bits so the histogram costs no logarithm.
fn bucket(w: f32) -> usize {
    let exponent = (w.to_bits() >> 23) as i32 & 0xff;
    (127 - exponent).clamp(0, BUCKETS as i32 - 1) as usize
}

/// Orders `ids` so that the shortest heaviest-first prefix whose weight
/// reaches `target` comes first, and returns its length (at least 1). Sorts
/// growing chunks, each selected from the rest, so only about as many tokens
/// as the nucleus holds get sorted.
fn nucleus_len(ids: &mut [u32], weights: &[f32], target: f64) -> usize {
    let (mut start, mut chunk, mut acc) = (0, FIRST_CHUNK, 0.0f64);
    while start < ids.len() {
        let rest = &mut ids[start..];
        let take = chunk.min(rest.len());
        if take < rest.len() {
            rest.select_nth_unstable_by(take - 1, |&a, &b| descending(weights, a, b));
        }
        rest[..take].sort_unstable_by(|&a, &b| descending(weights, a, b));
        for (j, &id) in rest[..take].iter().enumerate() {
            acc += weights[id as usize] as f64;
            if acc >= target {
                return start + j + 1;
            }
        }
        start += take;
        chunk *= 2;
    }
    ids.len()
}

/// Larger value first, lower id first among equals; a total order even with NaN.
fn descending(values: &[f32], a: u32, b: u32) -> Ordering {
    values[b as usize]
        .total_cmp(&values[a as usize])
        .then(a.cmp(&b))
}

fn max_of(values: &[f32]) -> f32 {
    values.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let (mut work, mut ids) = (logits.to_vec(), Vec::new());
        truncate(&mut work, &mut ids, p)
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
        let (mut work, mut ids) = (logits.to_vec(), Vec::new());
        let kept = truncate(&mut work, &mut ids, &SamplingParams::default());
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
        let (mut work, mut ids) = (vec![0.0, 1.0], Vec::new());
        let pairs = truncate(&mut work, &mut ids, &p).pairs();
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
        let (mut work, mut ids) = (logits_of(&[0.25, 0.5, 0.25]), Vec::new());
        let kept = truncate(&mut work, &mut ids, &SamplingParams::default());
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
                let (mut work, mut ids) = (row.clone(), Vec::new());
                assert_eq!(truncate(&mut work, &mut ids, &p).pick(0.5), None);
            }
        }
    }

    #[test]
    fn buckets_follow_binary_exponents() {
        assert_eq!(bucket(1.0), 0);
        assert_eq!(bucket(0.75), 1);
        assert_eq!(bucket(0.5), 1);
        assert_eq!(bucket(0.49), 2);
        assert_eq!(bucket(0.0), BUCKETS - 1);
        assert_eq!(bucket(1e-30), BUCKETS - 1);
    }

    /// Full-sort reference: the obvious implementation of the same rules.
    fn reference(logits: &[f32], p: &SamplingParams) -> Vec<u32> {
        let (max, inv_t) = (max_of(logits), 1.0 / p.temperature);
        let w: Vec<f32> = logits.iter().map(|l| ((l - max) * inv_t).exp()).collect();
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
