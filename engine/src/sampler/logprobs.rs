//! Log-probabilities of the raw model logits, as vLLM v1 reports them by
//! default: before penalties, temperature and truncation.

use super::{math, select};

/// log Σ exp(l), computed around the maximum so it cannot overflow; the sum is
/// kept in f64 because a 152k-token vocab loses digits in f32.
pub(crate) fn log_normalizer(logits: &[f32]) -> f32 {
    let max = math::max(logits);
    if !max.is_finite() {
        return max;
    }
    max + math::sum_exp(logits, max).ln() as f32
}

/// The `n` largest logits as `(id, logit)`, largest first, the lower id first
/// among equals.
pub(crate) fn top_n(logits: &[f32], n: usize) -> Vec<(u32, f32)> {
    let mut best = Vec::with_capacity(n + 1);
    select::top_n(logits, n, &mut best);
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
        let row: Vec<f32> = (0..151_936u32)
            .map(|i| ((i * 7919) % 4001) as f32 / 200.0)
            .collect();
        let max = 4000.0f64 / 200.0;
        let want = max
            + row
                .iter()
                .map(|&l| (l as f64 - max).exp())
                .sum::<f64>()
                .ln();
        assert!((log_normalizer(&row) as f64 - want).abs() < 1e-5);
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
        // Across many blocks, against a full sort.
        let long: Vec<f32> = (0..1000u32).map(|i| ((i * 7919) % 613) as f32).collect();
        let mut sorted: Vec<(u32, f32)> = long
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        sorted.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        assert_eq!(top_n(&long, 20), sorted[..20].to_vec());
    }
}
