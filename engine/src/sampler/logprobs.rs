//! Log-probabilities of the raw model logits, as vLLM v1 reports them by
//! default: before penalties, temperature and truncation.

/// log Σ exp(l), computed around the maximum so it cannot overflow; the sum is
/// kept in f64 because a 152k-token vocab loses digits in f32.
pub(crate) fn log_normalizer(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return max;
    }
    let sum: f64 = logits.iter().map(|&l| (l - max).exp() as f64).sum();
    max + sum.ln() as f32
}

/// The `n` largest logits as `(id, logit)`, largest first, the lower id first
/// among equals. One pass with a small sorted buffer: n is at most 20, so this
/// beats selecting over the whole vocab.
pub(crate) fn top_n(logits: &[f32], n: usize) -> Vec<(u32, f32)> {
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(n + 1);
    if n == 0 {
        return best;
    }
    for (i, &l) in logits.iter().enumerate() {
        if l.is_nan() || (best.len() == n && l <= best[n - 1].1) {
            continue;
        }
        // After any equal logits, which all have lower ids.
        let at = best.partition_point(|&(_, b)| b >= l);
        best.insert(at, (i as u32, l));
        best.truncate(n);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizer_makes_probabilities_sum_to_one() {
        let logits = [1.0f32, -2.0, 0.5, 3.0, 3.0];
        let lse = log_normalizer(&logits);
        let sum: f32 = logits.iter().map(|l| (l - lse).exp()).sum();
        assert!((sum - 1.0).abs() < 1e-6);
    }

    #[test]
    fn normalizer_survives_huge_logits_and_large_vocabs() {
        assert!((log_normalizer(&[1000.0, 1000.0]) - (1000.0 + 2f32.ln())).abs() < 1e-3);
        let flat = vec![0.0f32; 151_936];
        assert!((log_normalizer(&flat) - (151_936f32).ln()).abs() < 1e-4);
    }

    #[test]
    fn top_n_is_descending_with_ties_by_id() {
        let logits = [1.0, 5.0, 3.0, 5.0, f32::NAN, 3.0, 0.0];
        assert_eq!(
            top_n(&logits, 4),
            vec![(1, 5.0), (3, 5.0), (2, 3.0), (5, 3.0)]
        );
        assert_eq!(top_n(&logits, 1), vec![(1, 5.0)]);
        assert_eq!(top_n(&logits, 0), vec![]);
        assert_eq!(top_n(&[2.0, 1.0], 5), vec![(0, 2.0), (1, 1.0)]);
    }
}
