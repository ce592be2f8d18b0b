//! The server's own account of a run: where time to first token went, as
//! its `/metrics` histograms saw it (a client sees only the total). Read
//! before and after the run; each phase is the mean over the requests the
//! server recorded in between. Servers without these series (or without
//! `/metrics`) give no split, and the report says nothing about it.

use std::collections::HashMap;

use serde::Serialize;

/// The phases, in order, by histogram.
const PHASES: [(&str, &str); 4] = [
    ("queue", "vllm:request_queue_time_seconds"),
    ("prefill", "vllm:request_prefill_time_seconds"),
    ("kv_transfer", "tandem_request_kv_transfer_seconds"),
    (
        "first_decode_step",
        "tandem_request_first_decode_step_seconds",
    ),
];

/// Sum and count of every histogram, over all its label sets.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scrape(HashMap<String, SumCount>);

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct SumCount {
    sum: f64,
    count: f64,
}

/// One phase's mean over the run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PhaseMean {
    pub phase: &'static str,
    pub metric: &'static str,
    pub mean_ms: f64,
    pub requests: u64,
}

impl Scrape {
    /// Parses Prometheus text: `<name>_sum{...} v` and `<name>_count{...} v`.
    pub fn parse(text: &str) -> Self {
        let mut map: HashMap<String, SumCount> = HashMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((key, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let name = key.split('{').next().unwrap_or(key);
            if let Some(base) = name.strip_suffix("_sum") {
                map.entry(base.to_string()).or_default().sum += value;
            } else if let Some(base) = name.strip_suffix("_count") {
                map.entry(base.to_string()).or_default().count += value;
            }
        }
        Scrape(map)
    }

    /// `GET {base_url}/metrics`, or `None` when the server has none.
    pub async fn fetch(http: &reqwest::Client, base_url: &str) -> Option<Self> {
        let url = format!("{}/metrics", base_url.trim_end_matches('/'));
        let resp = http.get(url).send().await.ok()?.error_for_status().ok()?;
        Some(Self::parse(&resp.text().await.ok()?))
    }
}

/// The mean of each phase between two scrapes (phases with no new
/// requests are left out).
pub fn split(before: &Scrape, after: &Scrape) -> Vec<PhaseMean> {
    PHASES
        .iter()
        .filter_map(|&(phase, metric)| {
            let a = after.0.get(metric)?;
            let b = before.0.get(metric).copied().unwrap_or_default();
            let count = a.count - b.count;
            (count >= 1.0).then(|| PhaseMean {
                phase,
                metric,
                mean_ms: (a.sum - b.sum) / count * 1e3,
                requests: count as u64,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_come_from_the_difference_of_two_scrapes() {
        let before = Scrape::parse(
            "# HELP x\nvllm:request_queue_time_seconds_sum{model_name=\"m\"} 1.0\n\
             vllm:request_queue_time_seconds_count{model_name=\"m\"} 2\n",
        );
        let after = Scrape::parse(
            "vllm:request_queue_time_seconds_sum{model_name=\"m\"} 1.5\n\
             vllm:request_queue_time_seconds_count{model_name=\"m\"} 12\n\
             vllm:request_queue_time_seconds_bucket{le=\"0.1\"} 12\n\
             tandem_request_kv_transfer_seconds_sum 0.02\n\
             tandem_request_kv_transfer_seconds_count 4\n\
             tandem_request_first_decode_step_seconds_count 0\n",
        );
        let s = split(&before, &after);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!((s[0].phase, s[0].requests), ("queue", 10));
        assert!((s[0].mean_ms - 50.0).abs() < 1e-9);
        assert_eq!((s[1].phase, s[1].requests), ("kv_transfer", 4));
        assert!((s[1].mean_ms - 5.0).abs() < 1e-9);
    }
}
