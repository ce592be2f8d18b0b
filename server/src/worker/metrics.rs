//! The worker's own series (KV transfer, internal requests), in the same
//! registry as the API's.

use metrics::{Counter, Histogram};

use crate::api::metrics::Metrics;

pub struct KvMetrics {
    pub blocks_pulled: Counter,
    pub blocks_reused: Counter,
    pub bytes_pulled: Counter,
    pub pull_seconds: Histogram,
    pub pull_failures: Counter,
    pub leases_released: Counter,
    pub leases_expired: Counter,
}

impl KvMetrics {
    pub fn new(m: &Metrics) -> Self {
        KvMetrics {
            blocks_pulled: m.counter(
                "tandem_kv_blocks_pulled_total",
                &[],
                "KV blocks this decode worker read from prefill workers.",
            ),
            blocks_reused: m.counter(
                "tandem_kv_blocks_reused_total",
                &[],
                "Prompt KV blocks a decode worker had cached and did not pull.",
            ),
            bytes_pulled: m.counter(
                "tandem_kv_pull_bytes_total",
                &[],
                "Bytes of KV read from prefill workers.",
            ),
            pull_seconds: m.histogram(
                "tandem_kv_pull_seconds",
                "Time to pull one request's missing KV blocks.",
            ),
            pull_failures: m.counter(
                "tandem_kv_pull_failures_total",
                &[],
                "KV pulls that failed (the decode worker computed the prompt itself).",
            ),
            leases_released: m.counter(
                "tandem_kv_leases_released_total",
                &[],
                "Held prompt KV released after a decode worker pulled it or the router gave it up.",
            ),
            leases_expired: m.counter(
                "tandem_kv_leases_expired_total",
                &[],
                "Held prompt KV freed because nobody pulled it within --kv-lease-timeout.",
            ),
        }
    }
}

/// Requests the router sent here, by internal route. A P/D worker's
/// requests bypass the OpenAI layer, so its `vllm:request_success_total`
/// stays at zero; this is how many requests each worker took (what a
/// load-balance check compares).
pub struct RequestMetrics {
    pub generate: Counter,
    pub prefill: Counter,
    pub decode: Counter,
}

impl RequestMetrics {
    pub fn new(m: &Metrics) -> Self {
        let route = |name| {
            m.counter(
                "tandem_worker_requests_total",
                &[("route", name)],
                "Internal requests this worker accepted, by route (generate, prefill, decode).",
            )
        };
        RequestMetrics {
            generate: route("generate"),
            prefill: route("prefill"),
            decode: route("decode"),
        }
    }
}
