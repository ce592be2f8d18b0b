//! When each request is sent. Inter-arrival gaps are gamma-distributed with
//! shape `burstiness` and mean `1/rate` (vLLM's model): burstiness 1 is a
//! Poisson process, < 1 burstier, > 1 more even. Rate `inf` sends all at once.

use rand::Rng;
use rand_distr::{Distribution, Gamma};

/// Requests per second; `Infinite` means no pacing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RequestRate {
    Infinite,
    PerSecond(f64),
}

impl std::str::FromStr for RequestRate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("inf") {
            return Ok(Self::Infinite);
        }
        match s.parse::<f64>() {
            Ok(r) if r.is_infinite() => Ok(Self::Infinite),
            Ok(r) if r > 0.0 => Ok(Self::PerSecond(r)),
            _ => Err(format!(
                "request rate `{s}` must be a positive number of requests/s or `inf`"
            )),
        }
    }
}

impl std::fmt::Display for RequestRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Infinite => write!(f, "inf"),
            Self::PerSecond(r) => write!(f, "{r}"),
        }
    }
}

impl RequestRate {
    /// As a JSON number (vLLM writes `inf` as the float infinity; JSON has
    /// none, so an unpaced run is written as `null`).
    pub fn as_f64(self) -> Option<f64> {
        match self {
            Self::Infinite => None,
            Self::PerSecond(r) => Some(r),
        }
    }
}

/// Send times in seconds after the start, one per request (non-decreasing).
pub fn schedule(n: usize, rate: RequestRate, burstiness: f64, rng: &mut impl Rng) -> Vec<f64> {
    assert!(burstiness > 0.0, "burstiness must be positive");
    match rate {
        RequestRate::Infinite => vec![0.0; n],
        RequestRate::PerSecond(r) => {
            let gamma =
                Gamma::new(burstiness, 1.0 / (r * burstiness)).expect("positive shape and scale");
            let mut t = 0.0;
            (0..n)
                .map(|_| {
                    let at = t;
                    t += gamma.sample(rng);
                    at
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn gaps(rate: f64, burstiness: f64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let s = schedule(20_001, RequestRate::PerSecond(rate), burstiness, &mut rng);
        s.windows(2).map(|w| w[1] - w[0]).collect()
    }

    fn mean_cv(x: &[f64]) -> (f64, f64) {
        let m = x.iter().sum::<f64>() / x.len() as f64;
        let var = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / x.len() as f64;
        (m, var.sqrt() / m)
    }

    #[test]
    fn poisson_has_the_asked_mean_rate_and_cv_one() {
        let (mean, cv) = mean_cv(&gaps(4.0, 1.0));
        assert!((1.0 / mean - 4.0).abs() < 0.1, "rate {}", 1.0 / mean);
        assert!((cv - 1.0).abs() < 0.03, "cv {cv}");
    }

    #[test]
    fn gamma_burstiness_sets_cv_to_one_over_sqrt_shape() {
        for b in [0.25, 4.0] {
            let (mean, cv) = mean_cv(&gaps(10.0, b));
            assert!(
                (1.0 / mean - 10.0).abs() < 0.3,
                "b {b}: rate {}",
                1.0 / mean
            );
            let want = 1.0 / b.sqrt();
            assert!(
                (cv - want).abs() < 0.05 * want,
                "b {b}: cv {cv} want {want}"
            );
        }
    }

    #[test]
    fn infinite_rate_sends_everything_at_once() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(
            schedule(3, RequestRate::Infinite, 1.0, &mut rng),
            vec![0.0; 3]
        );
        assert_eq!("inf".parse::<RequestRate>(), Ok(RequestRate::Infinite));
        assert!("0".parse::<RequestRate>().is_err());
        assert!("-2".parse::<RequestRate>().is_err());
    }
}
