//! Statistical check that the sampler draws from the distribution it claims:
//! 20,000 seeded draws from a 12-token softmax, compared with the expected
//! (truncated, renormalised) distribution by a chi-square goodness-of-fit test.
//!
//! Critical values are the chi-square quantiles at p = 0.001 for the test's
//! degrees of freedom (kept tokens - 1), from the standard table:
//! df 3 → 16.266, df 4 → 18.467, df 11 → 31.264. A correct sampler exceeds
//! them for one seed in a thousand; the seeds are fixed, so the tests are
//! deterministic, and every expected count is above 150, well past the
//! "at least 5" the approximation needs.

use tandem_engine::sampler::{sample_one, SampleInput, SamplingParams, SamplingState};

const DRAWS: usize = 20_000;
const LOGITS: [f32; 12] = [1.2, 0.3, 2.0, -0.4, 0.9, 1.6, 0.0, 0.5, 1.8, -0.2, 1.0, 0.7];

/// Softmax of `LOGITS / temperature`, in f64, restricted to `keep` and renormalised.
fn expected(temperature: f64, keep: &[u32]) -> Vec<f64> {
    let w: Vec<f64> = LOGITS
        .iter()
        .map(|&l| (l as f64 / temperature).exp())
        .collect();
    let total: f64 = keep.iter().map(|&i| w[i as usize]).sum();
    (0..LOGITS.len() as u32)
        .map(|i| {
            if keep.contains(&i) {
                w[i as usize] / total
            } else {
                0.0
            }
        })
        .collect()
}

fn draw_counts(params: &SamplingParams) -> Vec<usize> {
    let mut state = SamplingState::new(params, 0);
    let mut counts = vec![0; LOGITS.len()];
    for _ in 0..DRAWS {
        // Penalties are off, so the output history does not matter.
        let mut input = SampleInput {
            params,
            state: &mut state,
            prompt_tokens: &[],
            output_tokens: &[],
            guide: None,
        };
        counts[sample_one(&LOGITS, &mut input).token as usize] += 1;
    }
    counts
}

/// Pearson's statistic over the tokens with positive expected probability;
/// a draw of any other token fails the test outright.
fn chi_square(counts: &[usize], probs: &[f64]) -> f64 {
    let n: usize = counts.iter().sum();
    let mut stat = 0.0;
    for (id, (&c, &p)) in counts.iter().zip(probs).enumerate() {
        if p == 0.0 {
            assert_eq!(c, 0, "token {id} was truncated away but sampled {c} times");
            continue;
        }
        let e = p * n as f64;
        stat += (c as f64 - e).powi(2) / e;
    }
    stat
}

#[test]
fn temperature_samples_the_tempered_softmax() {
    let params = SamplingParams {
        temperature: 0.7,
        seed: Some(11),
        ..Default::default()
    };
    let counts = draw_counts(&params);
    let all: Vec<u32> = (0..12).collect();
    let stat = chi_square(&counts, &expected(0.7, &all));
    assert!(
        stat < 31.264,
        "chi-square {stat:.2} >= 31.264 (df 11, p 0.001): {counts:?}"
    );
    // The test has power: the untempered softmax is rejected by far.
    let wrong = chi_square(&counts, &expected(1.0, &all));
    assert!(wrong > 10.0 * 31.264, "T=1 not rejected: {wrong:.2}");
}

#[test]
fn top_p_samples_the_renormalised_nucleus() {
    // At T = 0.7 the heaviest tokens 2, 8, 5, 0 hold 0.737 of the mass and
    // token 10 brings it to 0.804, so top_p = 0.75 keeps those five.
    let params = SamplingParams {
        temperature: 0.7,
        top_p: 0.75,
        seed: Some(12),
        ..Default::default()
    };
    let counts = draw_counts(&params);
    let stat = chi_square(&counts, &expected(0.7, &[2, 8, 5, 0, 10]));
    assert!(
        stat < 18.467,
        "chi-square {stat:.2} >= 18.467 (df 4, p 0.001): {counts:?}"
    );
}

#[test]
fn top_k_then_min_p_samples_the_survivors() {
    // Top-6 keeps logits >= 0.9; min_p 0.4 then keeps logits >= 2 + ln 0.4 = 1.08.
    let params = SamplingParams {
        top_k: Some(6),
        min_p: 0.4,
        seed: Some(13),
        ..Default::default()
    };
    let counts = draw_counts(&params);
    let stat = chi_square(&counts, &expected(1.0, &[2, 8, 5, 0]));
    assert!(
        stat < 16.266,
        "chi-square {stat:.2} >= 16.266 (df 3, p 0.001): {counts:?}"
    );
}
