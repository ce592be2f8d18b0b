//! The saved JSON (field names of `vllm bench serve` where they exist) and
//! the printed summary table.

use serde_json::{json, Map, Value};

use super::client::RequestOutput;
use super::metrics::{RunMetrics, Summary};
use super::RunInfo;

/// vLLM's key for a percentile: `p99`, `p99.9`.
pub fn percentile_key(p: f64) -> String {
    if p.fract() == 0.0 {
        format!("p{}", p as i64)
    } else {
        format!("p{p}")
    }
}

fn put_summary(map: &mut Map<String, Value>, name: &str, s: &Summary) {
    map.insert(format!("mean_{name}_ms"), json!(s.mean));
    map.insert(format!("median_{name}_ms"), json!(s.median));
    map.insert(format!("std_{name}_ms"), json!(s.std));
    for (p, v) in &s.percentiles {
        map.insert(format!("{}_{name}_ms", percentile_key(*p)), json!(v));
    }
}

/// The result object of one run.
pub fn to_json(info: &RunInfo, m: &RunMetrics, outputs: &[RequestOutput], duration: f64) -> Value {
    let mut r = Map::new();
    r.insert("date".into(), json!(utc_now()));
    r.insert("backend".into(), json!("openai"));
    r.insert("endpoint_type".into(), json!(info.endpoint));
    r.insert("label".into(), json!(info.label));
    r.insert("model_id".into(), json!(info.model));
    r.insert("tokenizer_id".into(), json!(info.tokenizer));
    r.insert("dataset_name".into(), json!(info.dataset));
    r.insert("num_prompts".into(), json!(outputs.len()));
    r.insert("request_rate".into(), json!(info.request_rate.as_f64()));
    r.insert("burstiness".into(), json!(info.burstiness));
    r.insert("max_concurrency".into(), json!(info.max_concurrency));
    r.insert("goodput".into(), json!(info.goodput));
    r.insert("duration".into(), json!(duration));
    r.insert("completed".into(), json!(m.completed));
    r.insert("failed".into(), json!(m.failed));
    r.insert("total_input_tokens".into(), json!(m.total_input));
    r.insert("total_output_tokens".into(), json!(m.total_output));
    r.insert("request_throughput".into(), json!(m.request_throughput));
    r.insert("request_goodput".into(), json!(m.request_goodput));
    r.insert("output_throughput".into(), json!(m.output_throughput));
    r.insert(
        "total_token_throughput".into(),
        json!(m.total_token_throughput),
    );
    r.insert(
        "max_concurrent_requests".into(),
        json!(m.max_concurrent_requests),
    );
    put_summary(&mut r, "ttft", &m.ttft);
    put_summary(&mut r, "tpot", &m.tpot);
    put_summary(&mut r, "itl", &m.itl);
    put_summary(&mut r, "e2el", &m.e2el);
    let col = |f: &dyn Fn(&RequestOutput) -> Value| outputs.iter().map(f).collect::<Vec<_>>();
    r.insert("input_lens".into(), json!(col(&|o| json!(o.prompt_tokens))));
    r.insert(
        "output_lens".into(),
        json!(col(&|o| json!(if o.success { o.output_tokens } else { 0 }))),
    );
    r.insert("ttfts".into(), json!(col(&|o| json!(o.ttft))));
    r.insert("itls".into(), json!(col(&|o| json!(o.itl))));
    r.insert("request_classes".into(), json!(col(&|o| json!(o.class))));
    r.insert(
        "generated_texts".into(),
        json!(col(&|o| json!(o.generated_text))),
    );
    r.insert("errors".into(), json!(col(&|o| json!(o.error))));
    Value::Object(r)
}

/// Per-class metrics (e.g. `short` / `long` of the mixed dataset), so the
/// interference study can read the short requests' TPOT on its own.
/// Empty when every request has the same class.
pub fn by_class(
    outputs: &[RequestOutput],
    duration: f64,
    slo: &super::metrics::Slo,
    percentiles: &[f64],
) -> Map<String, Value> {
    let mut classes: Vec<&str> = outputs.iter().map(|o| o.class).collect();
    classes.sort_unstable();
    classes.dedup();
    let mut out = Map::new();
    if classes.len() < 2 {
        return out;
    }
    for class in classes {
        let subset: Vec<RequestOutput> = outputs
            .iter()
            .filter(|o| o.class == class)
            .cloned()
            .collect();
        let m = super::metrics::compute(&subset, duration, slo, percentiles);
        let mut c = Map::new();
        c.insert("completed".into(), json!(m.completed));
        c.insert("failed".into(), json!(m.failed));
        c.insert("total_input_tokens".into(), json!(m.total_input));
        c.insert("total_output_tokens".into(), json!(m.total_output));
        put_summary(&mut c, "ttft", &m.ttft);
        put_summary(&mut c, "tpot", &m.tpot);
        put_summary(&mut c, "itl", &m.itl);
        put_summary(&mut c, "e2el", &m.e2el);
        out.insert(class.to_string(), Value::Object(c));
    }
    out
}

/// The human-readable table printed after a run.
pub fn summary_text(m: &RunMetrics, duration: f64) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: String| s.push_str(&format!("{k:<40}{v:>12}\n"));
    line("Successful requests:", m.completed.to_string());
    line("Failed requests:", m.failed.to_string());
    line("Benchmark duration (s):", format!("{duration:.2}"));
    line("Total input tokens:", m.total_input.to_string());
    line("Total generated tokens:", m.total_output.to_string());
    line(
        "Request throughput (req/s):",
        format!("{:.2}", m.request_throughput),
    );
    if let Some(g) = m.request_goodput {
        line("Request goodput (req/s):", format!("{g:.2}"));
    }
    line(
        "Output token throughput (tok/s):",
        format!("{:.2}", m.output_throughput),
    );
    line(
        "Total token throughput (tok/s):",
        format!("{:.2}", m.total_token_throughput),
    );
    line(
        "Peak concurrent requests:",
        m.max_concurrent_requests.to_string(),
    );
    for (title, name, sum) in [
        ("Time to First Token", "TTFT", &m.ttft),
        ("Time per Output Token (excl. 1st token)", "TPOT", &m.tpot),
        ("Inter-token Latency", "ITL", &m.itl),
        ("End-to-end Latency", "E2EL", &m.e2el),
    ] {
        s.push_str(&format!("{:-^52}\n", title));
        let mut line = |k: String, v: f64| s.push_str(&format!("{k:<40}{v:>12.2}\n"));
        line(format!("Mean {name} (ms):"), sum.mean);
        line(format!("Median {name} (ms):"), sum.median);
        line(format!("Std {name} (ms):"), sum.std);
        for (p, v) in &sum.percentiles {
            line(format!("P{} {name} (ms):", &percentile_key(*p)[1..]), *v);
        }
    }
    s
}

/// The server-side split of time to first token, one line per phase.
pub fn split_text(split: &[super::server_split::PhaseMean]) -> String {
    let mut s = format!("{:-^52}\n", "Server-side split (means, from /metrics)");
    for p in split {
        let label = format!("Mean {} (ms, {} requests):", p.phase, p.requests);
        s.push_str(&format!("{label:<40}{:>12.2}\n", p.mean_ms));
    }
    s
}

/// `YYYYMMDD-HHMMSS` in UTC, as vLLM stamps its results.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_keys_match_vllm() {
        assert_eq!(percentile_key(99.0), "p99");
        assert_eq!(percentile_key(99.9), "p99.9");
    }

    #[test]
    fn by_class_splits_mixed_runs_only() {
        let req = |class: &'static str, ttft: f64| RequestOutput {
            success: true,
            ttft,
            latency: ttft + 0.9,
            output_tokens: 10,
            class,
            ..Default::default()
        };
        let slo = super::super::metrics::Slo::default();
        let mixed = [req("short", 0.1), req("long", 2.0), req("short", 0.3)];
        let classes = by_class(&mixed, 1.0, &slo, &[99.0]);
        assert_eq!(classes["short"]["completed"], 2);
        assert!((classes["short"]["mean_ttft_ms"].as_f64().unwrap() - 200.0).abs() < 1e-9);
        assert!((classes["long"]["p99_ttft_ms"].as_f64().unwrap() - 2000.0).abs() < 1e-9);
        assert!(by_class(&[req("all", 0.1)], 1.0, &slo, &[99.0]).is_empty());
    }

    #[test]
    fn date_stamp_has_vllm_shape() {
        let d = utc_now();
        assert_eq!(d.len(), 15);
        assert!(d.starts_with("20"));
        assert_eq!(&d[8..9], "-");
    }
}
