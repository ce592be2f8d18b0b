//! From per-request outputs to the run's numbers: latency summaries (mean,
//! median, std, percentiles with numpy's linear interpolation, so they match
//! `vllm bench serve`), throughputs and goodput.

use super::client::RequestOutput;

/// Mean / median / population std / chosen percentiles of one latency, in ms.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub mean: f64,
    pub median: f64,
    pub std: f64,
    /// `(percentile, value)` pairs, e.g. `(99.0, 412.5)`.
    pub percentiles: Vec<(f64, f64)>,
}

/// The `p`-th percentile (0..=100) of `sorted` with linear interpolation
/// between closest ranks (numpy's default). 0 for an empty slice, as vLLM.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = p.clamp(0.0, 100.0) / 100.0 * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

/// Summarise values given in seconds, reporting milliseconds.
pub fn summarize(values_s: &[f64], percentiles: &[f64]) -> Summary {
    let mut ms: Vec<f64> = values_s.iter().map(|v| v * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let n = ms.len().max(1) as f64;
    let mean = ms.iter().sum::<f64>() / n;
    let var = ms.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    Summary {
        mean,
        median: percentile(&ms, 50.0),
        std: var.sqrt(),
        percentiles: percentiles
            .iter()
            .map(|&p| (p, percentile(&ms, p)))
            .collect(),
    }
}

/// Service-level objectives a request must meet to count towards goodput
/// (vLLM's `--goodput ttft:MS tpot:MS e2el:MS`), in milliseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Slo {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2el_ms: Option<f64>,
}

impl Slo {
    /// Parse `KEY:MS` pairs; keys `ttft`, `tpot`, `e2el` (or `e2e`).
    pub fn parse(pairs: &[String]) -> Result<Self, String> {
        let mut slo = Slo::default();
        for pair in pairs {
            let (key, value) = pair.split_once(':').ok_or_else(|| {
                format!("goodput `{pair}` must be KEY:MS, e.g. ttft:500 tpot:50 e2el:5000")
            })?;
            let ms: f64 = value
                .parse()
                .ok()
                .filter(|v: &f64| *v > 0.0)
                .ok_or_else(|| {
                    format!("goodput `{pair}`: `{value}` is not a positive number of ms")
                })?;
            match key {
                "ttft" => slo.ttft_ms = Some(ms),
                "tpot" => slo.tpot_ms = Some(ms),
                "e2el" | "e2e" => slo.e2el_ms = Some(ms),
                _ => {
                    return Err(format!(
                        "goodput key `{key}` is not one of ttft, tpot, e2el"
                    ))
                }
            }
        }
        Ok(slo)
    }

    pub fn is_empty(&self) -> bool {
        self == &Slo::default()
    }

    /// Whether a request with these latencies (seconds) meets every SLO.
    pub fn met(&self, ttft: f64, tpot: f64, e2el: f64) -> bool {
        let ok = |limit: Option<f64>, v: f64| limit.is_none_or(|l| v * 1000.0 <= l);
        ok(self.ttft_ms, ttft) && ok(self.tpot_ms, tpot) && ok(self.e2el_ms, e2el)
    }
}

/// Everything a run reports, before serialisation.
#[derive(Debug, Clone)]
pub struct RunMetrics {
    pub completed: usize,
    pub failed: usize,
    pub total_input: usize,
    pub total_output: usize,
    pub request_throughput: f64,
    pub request_goodput: Option<f64>,
    pub output_throughput: f64,
    pub total_token_throughput: f64,
    pub ttft: Summary,
    pub tpot: Summary,
    pub itl: Summary,
    pub e2el: Summary,
    pub max_concurrent_requests: usize,
}

/// TPOT of one request: time after the first token per further token;
/// 0 when it produced at most one token (vLLM's convention).
pub fn tpot(out: &RequestOutput) -> f64 {
    if out.output_tokens > 1 {
        (out.latency - out.ttft) / (out.output_tokens - 1) as f64
    } else {
        0.0
    }
}

pub fn compute(
    outputs: &[RequestOutput],
    duration_s: f64,
    slo: &Slo,
    percentiles: &[f64],
) -> RunMetrics {
    let ok: Vec<&RequestOutput> = outputs.iter().filter(|o| o.success).collect();
    let ttfts: Vec<f64> = ok.iter().map(|o| o.ttft).collect();
    let tpots: Vec<f64> = ok
        .iter()
        .filter(|o| o.output_tokens > 1)
        .map(|o| tpot(o))
        .collect();
    let itls: Vec<f64> = ok.iter().flat_map(|o| o.itl.iter().copied()).collect();
    let e2els: Vec<f64> = ok.iter().map(|o| o.latency).collect();
    let total_input: usize = ok.iter().map(|o| o.prompt_tokens).sum();
    let total_output: usize = ok.iter().map(|o| o.output_tokens).sum();
    let good = ok
        .iter()
        .filter(|o| slo.met(o.ttft, tpot(o), o.latency))
        .count();
    let dur = duration_s.max(f64::MIN_POSITIVE);
    RunMetrics {
        completed: ok.len(),
        failed: outputs.len() - ok.len(),
        total_input,
        total_output,
        request_throughput: ok.len() as f64 / dur,
        request_goodput: (!slo.is_empty()).then(|| good as f64 / dur),
        output_throughput: total_output as f64 / dur,
        total_token_throughput: (total_input + total_output) as f64 / dur,
        ttft: summarize(&ttfts, percentiles),
        tpot: summarize(&tpots, percentiles),
        itl: summarize(&itls, percentiles),
        e2el: summarize(&e2els, percentiles),
        max_concurrent_requests: peak_concurrency(&ok),
    }
}

/// Most requests in flight at once (half-open `[start, end)` intervals).
fn peak_concurrency(ok: &[&RequestOutput]) -> usize {
    let mut events: Vec<(f64, i32)> = ok
        .iter()
        .flat_map(|o| [(o.start_time, 1), (o.start_time + o.latency, -1)])
        .collect();
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut peak) = (0i32, 0i32);
    for (_, d) in events {
        now += d;
        peak = peak.max(now);
    }
    peak as usize
}

#[cfg(test)]
mod tests;
